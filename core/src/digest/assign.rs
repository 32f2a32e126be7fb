//! Which core should digest which ingest partition: a pure function of Global's state and
//! a clock, so that every core computes the same answer from the same state.
//!
//! The live cores are those that digest (ingest-only cores announce `digest: false` in
//! their heartbeat) and whose last heartbeat (their own clock, carried in Global) is
//! within `node_timeout_ms` of this node's clock; partition `p` goes to the `p mod n`-th
//! live core by id. Round robin over sorted ids keeps the spread even (LogScale's digest
//! rules do the same per partition); it moves more partitions than rendezvous hashing
//! when a core joins, which costs one flush interval of re-digest per moved partition,
//! never correctness: the epoch fences the old owner.

use std::collections::BTreeMap;

use weir_global::State;

/// Ids of the digesting nodes whose heartbeat is at most `timeout_ms` old at `now_ms`,
/// sorted.
pub fn live_nodes(state: &State, now_ms: u64, timeout_ms: u64) -> Vec<String> {
    state
        .nodes()
        .iter()
        .filter(|(_, node)| node.digest && node.heartbeat_ms.saturating_add(timeout_ms) >= now_ms)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The core that should own each of `partitions`, or none when no core is live.
pub fn desired_owners(partitions: u32, live: &[String]) -> BTreeMap<u32, String> {
    if live.is_empty() {
        return BTreeMap::new();
    }
    (0..partitions).map(|p| (p, live[p as usize % live.len()].clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_global::{Cmd, Command};

    fn heartbeat(state: &mut State, offset: u64, node: &str, at_ms: u64) {
        heartbeat_as(state, offset, node, at_ms, true);
    }

    fn heartbeat_as(state: &mut State, offset: u64, node: &str, at_ms: u64, digest: bool) {
        let cmd = Cmd::NodeHeartbeat { node_id: node.into(), addresses: vec![], zone: "z".into(), at_ms, digest };
        state.apply(offset, &Command::new(format!("hb-{offset}"), node, cmd)).unwrap();
    }

    #[test]
    fn partitions_spread_over_live_nodes_and_leave_a_silent_one() {
        let mut state = State::default();
        heartbeat(&mut state, 0, "b", 10_000);
        heartbeat(&mut state, 1, "a", 10_000);
        let live = live_nodes(&state, 12_000, 5_000);
        assert_eq!(live, ["a", "b"]);
        let owners = desired_owners(4, &live);
        assert_eq!(owners.values().filter(|o| *o == "a").count(), 2);
        assert_eq!(owners[&0], "a");
        heartbeat(&mut state, 2, "a", 20_000);
        let live = live_nodes(&state, 20_500, 5_000);
        assert_eq!(live, ["a"], "b's heartbeat is 10.5 s old");
        assert!(desired_owners(4, &live).values().all(|o| o == "a"));
        assert!(desired_owners(4, &[]).is_empty());
    }

    #[test]
    fn an_ingest_only_core_gets_no_partitions_and_an_old_heartbeat_record_digests() {
        let mut state = State::default();
        heartbeat(&mut state, 0, "a", 10_000);
        heartbeat_as(&mut state, 1, "b", 10_000, false);
        assert_eq!(live_nodes(&state, 10_500, 5_000), ["a"]);
        heartbeat_as(&mut state, 2, "a", 11_000, false);
        assert!(live_nodes(&state, 11_500, 5_000).is_empty(), "a turned ingest-only");
        // A heartbeat written before `digest` existed means a digesting node.
        let old: Cmd = serde_json::from_str(r#"{"type":"node_heartbeat","node_id":"c","addresses":[],"zone":"z","at_ms":12000}"#).unwrap();
        assert!(matches!(old, Cmd::NodeHeartbeat { digest: true, .. }));
        state.apply(3, &Command::new("hb-old", "c", old)).unwrap();
        assert_eq!(live_nodes(&state, 12_500, 5_000), ["c"]);
    }
}

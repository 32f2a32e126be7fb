//! Which core should digest which ingest partition: a pure function of Global's state and
//! a clock, so that every core computes the same answer from the same state.
//!
//! The live cores are those that digest (ingest-only cores announce `digest: false` in
//! their heartbeat) and whose last heartbeat (their own clock, carried in Global) is
//! within `node_timeout_ms` of this node's clock. The partitions are spread evenly over
//! them (each gets ⌊P/n⌋ or ⌈P/n⌉), and a partition stays with its current owner while
//! that owner is live and within its share: a core joining or leaving moves only the
//! partitions the new spread needs moved. A moved partition costs up to one flush
//! interval of re-digest (the old owner's segment in progress is dropped), never
//! correctness: the epoch fences the old owner.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use weir_global::State;

/// Ids of the digesting nodes whose heartbeat is at most `timeout_ms` old at `now_ms`,
/// sorted.
pub fn live_nodes(state: &State, now_ms: u64, timeout_ms: u64) -> Vec<String> {
    state
        .nodes()
        .iter()
        .filter(|(id, node)| node.digest && state.is_live(id, now_ms, timeout_ms))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The core that should own each of `partitions`, or none when no core is live.
/// `current` is each partition's owner in Global now (absent or `None`: nobody).
pub fn desired_owners(partitions: u32, live: &[String], current: &BTreeMap<u32, Option<String>>) -> BTreeMap<u32, String> {
    if live.is_empty() {
        return BTreeMap::new();
    }
    let (base, extra) = (partitions as usize / live.len(), partitions as usize % live.len());
    let mut held: BTreeMap<&str, usize> = live.iter().map(|id| (id.as_str(), 0)).collect();
    for owner in current.values().flatten() {
        if let Some(n) = held.get_mut(owner.as_str()) {
            *n += 1;
        }
    }
    // The larger shares go to the cores holding the most now (ties by id), so that a
    // spread that is already even stays as it is.
    let mut order: Vec<&str> = live.iter().map(String::as_str).collect();
    order.sort_by_key(|id| (Reverse(held[id]), *id));
    let share: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, id)| (*id, base + usize::from(i < extra))).collect();
    let mut count: BTreeMap<&str, usize> = live.iter().map(|id| (id.as_str(), 0)).collect();
    let mut desired = BTreeMap::new();
    let mut free = Vec::new();
    for p in 0..partitions {
        match current.get(&p).and_then(|o| o.as_deref()).filter(|o| share.get(o).is_some_and(|s| count[o] < *s)) {
            Some(owner) => {
                *count.get_mut(owner).expect("a live core") += 1;
                desired.insert(p, owner.to_owned());
            }
            None => free.push(p),
        }
    }
    for p in free {
        // The shares add up to `partitions`, so some live core is below its share.
        let Some(id) = live.iter().map(String::as_str).find(|id| count[id] < share[id]) else { break };
        *count.get_mut(id).expect("a live core") += 1;
        desired.insert(p, id.to_owned());
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_global::{Cmd, Command};

    fn heartbeat(state: &mut State, offset: u64, node: &str, at_ms: u64) {
        heartbeat_as(state, offset, node, at_ms, true);
    }

    fn heartbeat_as(state: &mut State, offset: u64, node: &str, at_ms: u64, digest: bool) {
        let cmd = Cmd::NodeHeartbeat { node_id: node.into(), addresses: Default::default(), zone: "z".into(), at_ms, digest, disk_id: "d".into() };
        state.apply(offset, &Command::new(format!("hb-{offset}"), node, cmd)).unwrap();
    }

    #[test]
    fn partitions_spread_over_live_nodes_and_leave_a_silent_one() {
        let mut state = State::default();
        heartbeat(&mut state, 0, "b", 10_000);
        heartbeat(&mut state, 1, "a", 10_000);
        let live = live_nodes(&state, 12_000, 5_000);
        assert_eq!(live, ["a", "b"]);
        let owners = desired_owners(4, &live, &BTreeMap::new());
        assert_eq!(owners.values().filter(|o| *o == "a").count(), 2);
        assert_eq!(owners[&0], "a");
        heartbeat(&mut state, 2, "a", 20_000);
        let live = live_nodes(&state, 20_500, 5_000);
        assert_eq!(live, ["a"], "b's heartbeat is 10.5 s old");
        let current = owners.iter().map(|(p, o)| (*p, Some(o.clone()))).collect();
        assert!(desired_owners(4, &live, &current).values().all(|o| o == "a"));
        assert!(desired_owners(4, &[], &current).is_empty());
    }

    #[test]
    fn an_ingest_only_core_gets_no_partitions_and_an_old_heartbeat_record_digests() {
        let mut state = State::default();
        heartbeat(&mut state, 0, "a", 10_000);
        heartbeat_as(&mut state, 1, "b", 10_000, false);
        assert_eq!(live_nodes(&state, 10_500, 5_000), ["a"]);
        heartbeat_as(&mut state, 2, "a", 11_000, false);
        assert!(live_nodes(&state, 11_500, 5_000).is_empty(), "a turned ingest-only");
        // A heartbeat written before `digest` existed (version 1) means a digesting node.
        let old = br#"{"v":1,"id":"hb-old","node":"c","cmd":{"type":"node_heartbeat","node_id":"c","addresses":[],"zone":"z","at_ms":12000}}"#;
        let decoded = Command::decode(old).unwrap();
        assert!(matches!(decoded.cmd, Cmd::NodeHeartbeat { digest: true, .. }));
        state.apply_record(3, old).unwrap();
        assert_eq!(live_nodes(&state, 12_500, 5_000), ["c"]);
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn moved(before: &BTreeMap<u32, String>, after: &BTreeMap<u32, String>) -> usize {
        after.iter().filter(|(p, o)| before.get(p) != Some(o)).count()
    }

    fn as_current(owners: &BTreeMap<u32, String>) -> BTreeMap<u32, Option<String>> {
        owners.iter().map(|(p, o)| (*p, Some(o.clone()))).collect()
    }

    #[test]
    fn a_joining_or_leaving_core_moves_only_what_the_even_spread_needs() {
        let three = ids(&["a", "b", "c"]);
        let first = desired_owners(24, &three, &BTreeMap::new());
        let spread = |owners: &BTreeMap<u32, String>, id: &str| owners.values().filter(|o| *o == id).count();
        assert!(three.iter().all(|id| spread(&first, id) == 8), "{first:?}");
        // Stable: the same state gives the same answer, nothing moves.
        assert_eq!(desired_owners(24, &three, &as_current(&first)), first);

        // d joins: exactly its 6 partitions move (round robin moved 18 of 24 here).
        let four = ids(&["a", "b", "c", "d"]);
        let joined = desired_owners(24, &four, &as_current(&first));
        assert_eq!(moved(&first, &joined), 6);
        assert!(four.iter().all(|id| spread(&joined, id) == 6), "{joined:?}");
        assert!(joined.iter().filter(|(_, o)| *o == "d").all(|(p, _)| first[p] != "d"));

        // b leaves: only b's partitions move, to the others, evenly (8 each).
        let without_b = ids(&["a", "c", "d"]);
        let left = desired_owners(24, &without_b, &as_current(&joined));
        assert_eq!(moved(&joined, &left), 6, "b's 6");
        assert!(without_b.iter().all(|id| spread(&left, id) == 8), "{left:?}");

        // Uneven counts: shares of 3 and 2 over 5 partitions, the larger one kept by the
        // core that already had more; partitions owned by dead cores find a live one.
        let current: BTreeMap<u32, Option<String>> =
            [(0, Some("x")), (1, Some("a")), (2, Some("a")), (3, Some("a")), (4, None)].into_iter().map(|(p, o)| (p, o.map(str::to_owned))).collect();
        let owners = desired_owners(5, &ids(&["a", "b"]), &current);
        assert_eq!((spread(&owners, "a"), spread(&owners, "b")), (3, 2));
        assert_eq!((&owners[&1], &owners[&2], &owners[&3]), (&"a".to_owned(), &"a".to_owned(), &"a".to_owned()));
        assert_eq!(owners.len(), 5);
    }
}

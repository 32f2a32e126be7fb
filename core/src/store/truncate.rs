//! Truncation: the owner of a partition lets Kafka delete the ingest records that safe
//! segments hold. It records `truncate {partition, epoch, offset, at_ms, segments}` in Global
//! first, which Global refuses unless the epoch is current and the offset at most the safe
//! offset it computes itself; only once that applied does it call Kafka's DeleteRecords.
//! So Kafka's log start never passes what Global's segments justified, and after a crash
//! between the two the next round (or the next owner) asks Kafka again (harmless).
//!
//! Must never: move back, touch the Global topic, or delete before Global applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome, State};

use crate::cluster::GlobalLog;
use crate::config::{KafkaConfig, TruncationConfig};
use crate::kafka;

/// The truncation this node (owner of `partition` under `epoch`) may record now, with its
/// justification; `None` when the safe offset is not past the last truncation.
pub fn next(state: &State, node_id: &str, partition: u32, now_ms: u64) -> Option<(u64, Vec<String>)> {
    let rule = state.storage_rule()?;
    let part = state.partition(partition);
    if part.owner.as_deref() != Some(node_id) {
        return None;
    }
    let live = |node: &str| state.is_live(node, now_ms, rule.node_timeout_ms);
    let safe = state.safe_offset_under(partition, rule, live);
    if safe <= part.truncated {
        return None;
    }
    let from = part.truncated.max(part.log_start);
    let segments = state.segments(partition).into_iter().filter(|s| s.info.offset_end > from && s.info.offset_start < safe).map(|s| s.info.segment_id.clone()).collect();
    Some((safe, segments))
}

/// Truncates the partitions this node owns until `shutdown`.
pub async fn run(global: Arc<GlobalLog>, kafka: KafkaConfig, node_id: String, config: TruncationConfig, shutdown: CancellationToken) {
    let interval = Duration::from_millis(config.interval_ms.max(100));
    // Per partition, how far this process had Kafka delete.
    let mut deleted: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if global.not_ready().is_some() {
            continue;
        }
        let now_ms = weir_proto::event::now_ms().max(0) as u64;
        let owned: Vec<(u32, u64, u64, Option<(u64, Vec<String>)>)> = global.read(|state| {
            state
                .partitions()
                .filter(|p| state.partition(*p).owner.as_deref() == Some(node_id.as_str()))
                .map(|p| {
                    let part = state.partition(p);
                    let live = |node: &str| {
                        let timeout = state.storage_rule().map_or(0, |r| r.node_timeout_ms);
                        state.is_live(node, now_ms, timeout)
                    };
                    metrics::gauge!("weir_safe_offset", "partition" => p.to_string()).set(state.safe_offset(p, live) as f64);
                    (p, part.epoch, part.truncated, next(state, &node_id, p, now_ms))
                })
                .collect()
        });
        for (partition, epoch, truncated, next) in owned {
            let mut target = truncated;
            if config.enabled
                && let Some((offset, segments)) = next
            {
                let command = Command::new(
                    format!("truncate:{partition}:{offset}:{}", crate::cluster::commands::attempt()),
                    node_id.clone(),
                    Cmd::Truncate { partition, epoch, offset, at_ms: now_ms, segments },
                );
                match global.submit(&command).await {
                    Ok((_, Outcome::Applied)) => target = offset,
                    Ok((_, Outcome::Rejected { reason })) => tracing::info!(partition, offset, %reason, "truncation refused"),
                    Err(error) => tracing::warn!(partition, offset, %error, "truncation not confirmed"),
                }
            }
            metrics::gauge!("weir_truncated_offset", "partition" => partition.to_string()).set(target as f64);
            // Also what an earlier run (or owner) recorded but may not have had Kafka do.
            if target > 0 && deleted.get(&partition).is_none_or(|done| *done < target) {
                match kafka::delete_ingest_records(&kafka, partition, target).await {
                    Ok(()) => {
                        tracing::info!(partition, before = target, "Kafka deleted the ingest records safe segments hold");
                        metrics::counter!("weir_truncations_total", "partition" => partition.to_string()).increment(1);
                        deleted.insert(partition, target);
                    }
                    Err(error) => tracing::warn!(partition, before = target, %error, "Kafka did not delete the records yet; asked again next round"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_global::{Addresses, Location, SegmentInfo, StorageMode, StorageRule};

    use super::*;
    use crate::cluster::commands::node_copy;

    #[test]
    fn the_owner_truncates_to_the_safe_offset_with_its_segments() {
        let mut state = State::default();
        let hb = |node: &str| {
            let addresses = Addresses { http: format!("{node}:1"), quic: Some(format!("{node}:2")) };
            Command::new(format!("h-{node}"), node, Cmd::NodeHeartbeat { node_id: node.into(), addresses, zone: "z".into(), at_ms: 1_000, digest: true, disk_id: format!("d-{node}") })
        };
        let seg = |id: &str, start: u64| SegmentInfo {
            segment_id: id.into(),
            partition: 0,
            offset_start: start,
            offset_end: start + 10,
            n_events: 1,
            repositories: vec![],
            min_ts_ms: 0,
            max_ts_ms: 0,
            bytes: 1,
            blake3: blake3::hash(id.as_bytes()).to_hex().to_string(),
        };
        let rule = StorageRule { mode: StorageMode::Local, replication_factor: 2, node_timeout_ms: 5_000 };
        let mut log = vec![hb("a"), hb("b"), Command::new("c", "a", Cmd::ClaimPartition { partition: 0, node_id: "a".into(), epoch: 1 })];
        for (i, id) in ["s0", "s1", "s2"].iter().enumerate() {
            log.push(Command::new(format!("r{i}"), "a", Cmd::RegisterSegment { epoch: 1, segment: seg(id, i as u64 * 10), dedup: vec![] }));
            log.push(node_copy(id, &seg(id, 0).blake3, "a", "d-a"));
        }
        for id in ["s0", "s1"] {
            log.push(node_copy(id, &seg(id, 0).blake3, "b", "d-b"));
        }
        for (offset, command) in log.iter().enumerate() {
            assert_eq!(state.apply(offset as u64, command).unwrap(), Outcome::Applied, "{command:?}");
        }
        assert_eq!(next(&state, "a", 0, 2_000), None, "no rule yet: nothing is safe");
        state.apply(100, &Command::new("rule", "a", Cmd::SetStorageRule { rule })).unwrap();
        assert_eq!(next(&state, "a", 0, 2_000), Some((20, vec!["s0".to_string(), "s1".to_string()])));
        assert_eq!(next(&state, "b", 0, 2_000), None, "only the owner");
        assert_eq!(next(&state, "a", 0, 7_000), None, "b's heartbeat is too old then");
        let truncate = Command::new("t", "a", Cmd::Truncate { partition: 0, epoch: 1, offset: 20, at_ms: 2_000, segments: vec!["s0".into(), "s1".into()] });
        assert_eq!(state.apply(101, &truncate).unwrap(), Outcome::Applied);
        assert_eq!(next(&state, "a", 0, 2_000), None, "nothing new is safe");
        state.apply(102, &node_copy("s2", &seg("s2", 0).blake3, "b", "d-b")).unwrap();
        assert_eq!(next(&state, "a", 0, 2_000), Some((30, vec!["s2".to_string()])));
        assert!(state.segment("s2").unwrap().copies.contains(&Location::node("b", "d-b")));
    }
}

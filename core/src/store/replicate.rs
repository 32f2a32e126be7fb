//! Replication in local mode: every core looks at the segments Global has, and fetches a
//! copy of each segment it should hold and does not, from a core that has one, over the
//! mutual-TLS peer channel. Pull-based: nobody pushes, so a node never receives what it did
//! not ask for, and a dead node's segments are re-replicated by whoever ranks next.
//!
//! Which nodes hold a segment: the live nodes that hold a counted copy already, topped up
//! to `replication_factor` by a ranking every node computes alike (rendezvous hashing of
//! segment and node, nodes in zones that hold no copy yet first). A copy counts when it is
//! on a live node's current disk (`State::counted_node_copies`).
//!
//! A fetched file is written under a temporary name in this process's staging directory
//! (the peer client hashes the bytes on the way), fsynced, hashed again as it lies on disk,
//! moved into `segments/` and only then recorded (`add_copy`, from this node, with its disk
//! id). Must never: record a copy it did not hash on disk, fetch into the query cache, or
//! take more than `replication.concurrency` fetches and `replication.max_bytes_per_s` from
//! ingest and the digest.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use weir_global::{Outcome, SegmentInfo, State, StorageMode};

use super::DataDir;
use super::staging::Staging;
use crate::cluster::GlobalLog;
use crate::cluster::commands::node_copy;
use crate::config::ReplicationConfig;
use crate::peer::PeerClient;

/// What a replicating node needs.
pub struct Replicator {
    pub node_id: String,
    pub disk_id: String,
    pub global: Arc<GlobalLog>,
    pub data_dir: DataDir,
    pub client: PeerClient,
    pub config: ReplicationConfig,
    /// A node whose last heartbeat is older than this is not live (`digest.node_timeout_ms`).
    pub node_timeout_ms: u64,
}

/// One segment to fetch, and from where (node, QUIC address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub segment: SegmentInfo,
    pub sources: Vec<(String, String)>,
}

impl Replicator {
    /// Replicates until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.config.interval_ms.max(50));
        let staging = match Staging::create(&self.data_dir, "replication") {
            Ok(staging) => staging,
            Err(error) => {
                tracing::error!(%error, "cannot make the replication staging directory: this node holds no replicas");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
            if self.global.not_ready().is_some() {
                continue;
            }
            let now_ms = weir_proto::event::now_ms().max(0) as u64;
            let jobs = self.global.read(|state| plan(state, &self.node_id, now_ms, self.node_timeout_ms));
            metrics::gauge!("weir_replication_wanted_segments").set(jobs.len() as f64);
            if jobs.is_empty() {
                continue;
            }
            let concurrency = self.config.concurrency.max(1);
            let fetched = futures::stream::iter(jobs)
                .map(|job| self.replicate(job, &staging, &shutdown))
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await;
            let done = fetched.iter().filter(|ok| **ok).count();
            tracing::debug!(done, failed = fetched.len() - done, "replication round");
        }
    }

    /// Fetches, verifies, moves in and records one copy; `true` when recorded.
    async fn replicate(&self, job: Job, staging: &Staging, shutdown: &CancellationToken) -> bool {
        let id = job.segment.segment_id.clone();
        for (node, address) in &job.sources {
            if shutdown.is_cancelled() {
                return false;
            }
            let Some(addr) = tokio::net::lookup_host(address.as_str()).await.ok().and_then(|mut a| a.next()) else {
                tracing::warn!(segment = %id, %node, %address, "cannot resolve a holder's address");
                continue;
            };
            let started = std::time::Instant::now();
            let path = match self.client.fetch(node, addr, &job.segment, staging.path()).await {
                Ok(path) => path,
                Err(error) => {
                    metrics::counter!("weir_replication_failures_total").increment(1);
                    tracing::warn!(segment = %id, %node, %error, "replica fetch failed, trying the next holder");
                    continue;
                }
            };
            // Hashed on the way; hashed again as it lies on this disk, after an fsync.
            let expected = job.segment.blake3.clone();
            let checked = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
                std::fs::File::open(&path)?.sync_all()?;
                Ok(weir_segment::blake3_of_file(&path).map_err(std::io::Error::other)? == expected)
            })
            .await
            .expect("verify task");
            match checked {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    metrics::counter!("weir_replication_failures_total").increment(1);
                    tracing::error!(segment = %id, %node, ?checked, "a fetched replica does not hash to Global's blake3 on disk: discarded");
                    let _ = std::fs::remove_file(staging.path().join(super::data_dir::file_name(&id)));
                    continue;
                }
            }
            if let Err(error) = staging.promote(&self.data_dir, &id) {
                tracing::warn!(segment = %id, %error, "cannot move a replica into the segments directory");
                return false;
            }
            let recorded = match self.global.submit(&node_copy(&id, &job.segment.blake3, &self.node_id, &self.disk_id)).await {
                Ok((_, Outcome::Applied)) => true,
                Ok((_, Outcome::Rejected { reason })) => {
                    // The segment went (replaced, reparsed) while we fetched: the sweep takes the file.
                    tracing::info!(segment = %id, %reason, "replica not recorded");
                    false
                }
                Err(error) => {
                    // Unknown; the next start's reconciliation records it if it applied not.
                    tracing::warn!(segment = %id, %error, "replica copy not confirmed");
                    false
                }
            };
            if recorded {
                metrics::counter!("weir_replication_segments_total").increment(1);
                metrics::counter!("weir_replication_bytes_total").increment(job.segment.bytes);
                tracing::debug!(segment = %id, from = %node, bytes = job.segment.bytes, "replica recorded");
            }
            self.pace(job.segment.bytes, started.elapsed()).await;
            return recorded;
        }
        false
    }

    /// Waits so that this fetch, with the others running beside it, stays within
    /// `max_bytes_per_s`.
    async fn pace(&self, bytes: u64, took: Duration) {
        let rate = self.config.max_bytes_per_s.max(1) as f64;
        let share = bytes as f64 * self.config.concurrency.max(1) as f64 / rate;
        if let Some(wait) = Duration::try_from_secs_f64(share).ok().and_then(|d| d.checked_sub(took)) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The segments this node should fetch now, each with the live holders to fetch from (in
/// ranking order). Pure, so every node's choice can be tested.
pub fn plan(state: &State, node_id: &str, now_ms: u64, node_timeout_ms: u64) -> Vec<Job> {
    let Some(rule) = state.storage_rule() else { return Vec::new() };
    if rule.mode != StorageMode::Local {
        return Vec::new();
    }
    let live = |node: &str| {
        state.is_live(node, now_ms, node_timeout_ms) && state.nodes().get(node).is_some_and(|n| n.addresses.quic.is_some())
    };
    if !live(node_id) {
        return Vec::new();
    }
    // Replicas go to digesting cores (an ingest-only core runs no replication).
    let candidates: Vec<&str> = state.nodes().iter().filter(|(id, n)| n.digest && live(id)).map(|(id, _)| id.as_str()).collect();
    let mut jobs = Vec::new();
    for p in state.partitions() {
        for segment in state.segments(p) {
            let holders: BTreeSet<&str> = state.counted_node_copies(segment, live).collect();
            if holders.len() >= rule.replication_factor as usize || holders.contains(node_id) || holders.is_empty() {
                continue;
            }
            let zone = |node: &str| state.nodes().get(node).map(|n| n.zone.as_str());
            let held_zones: BTreeSet<_> = holders.iter().filter_map(|n| zone(n)).collect();
            // Rendezvous: every node ranks the non-holders alike; new zones first.
            let mut ranked: Vec<(bool, String, &str)> = candidates
                .iter()
                .filter(|n| !holders.contains(**n))
                .map(|n| (zone(n).is_some_and(|z| held_zones.contains(z)), blake3::hash(format!("{}:{n}", segment.info.segment_id).as_bytes()).to_hex().to_string(), *n))
                .collect();
            ranked.sort();
            let missing = rule.replication_factor as usize - holders.len();
            if !ranked.iter().take(missing).any(|(_, _, n)| *n == node_id) {
                continue;
            }
            let sources = holders
                .iter()
                .filter_map(|h| {
                    let quic = state.nodes().get(*h)?.addresses.quic.clone()?;
                    Some((h.to_string(), quic))
                })
                .collect();
            jobs.push(Job { segment: segment.info.clone(), sources });
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use weir_global::{Addresses, Cmd, Command, StorageRule};

    use super::*;

    fn seg(id: &str, start: u64) -> SegmentInfo {
        SegmentInfo {
            segment_id: id.into(),
            partition: 0,
            offset_start: start,
            offset_end: start + 10,
            n_events: 1,
            repositories: vec!["r".into()],
            min_ts_ms: 0,
            max_ts_ms: 0,
            bytes: 100,
            blake3: blake3::hash(id.as_bytes()).to_hex().to_string(),
        }
    }

    #[test]
    fn each_under_replicated_segment_is_fetched_by_exactly_the_nodes_that_rank_next() {
        let mut state = State::default();
        let hb = |node: &str, at_ms| {
            let addresses = Addresses { http: format!("{node}:1"), quic: Some(format!("{node}:2")) };
            Command::new(format!("h-{node}-{at_ms}"), node, Cmd::NodeHeartbeat { node_id: node.into(), addresses, zone: "z".into(), at_ms, digest: true, disk_id: format!("d-{node}") })
        };
        let rule = StorageRule { mode: StorageMode::Local, replication_factor: 2, node_timeout_ms: 5_000 };
        let mut log = vec![hb("a", 10_000), hb("b", 10_000), hb("c", 10_000), Command::new("rule", "a", Cmd::SetStorageRule { rule })];
        log.push(Command::new("c", "a", Cmd::ClaimPartition { partition: 0, node_id: "a".into(), epoch: 1 }));
        let segments: Vec<SegmentInfo> = (0..20).map(|i| seg(&format!("s{i}"), i * 10)).collect();
        for s in &segments {
            log.push(Command::new(format!("r-{}", s.segment_id), "a", Cmd::RegisterSegment { epoch: 1, segment: s.clone(), dedup: vec![] }));
            log.push(node_copy(&s.segment_id, &s.blake3, "a", "d-a"));
        }
        for (offset, command) in log.iter().enumerate() {
            assert_eq!(state.apply(offset as u64, command).unwrap(), Outcome::Applied, "{command:?}");
        }
        let wants = |node: &str, now_ms| plan(&state, node, now_ms, 5_000).into_iter().map(|j| j.segment.segment_id).collect::<BTreeSet<_>>();
        let (a, b, c) = (wants("a", 11_000), wants("b", 11_000), wants("c", 11_000));
        assert!(a.is_empty(), "a holds them all");
        assert!(b.is_disjoint(&c), "one more copy each: b or c, never both");
        assert_eq!(b.len() + c.len(), 20, "every segment gets its second copy");
        assert!(!b.is_empty() && !c.is_empty(), "spread: b {b:?}, c {c:?}");
        let job = plan(&state, "b", 11_000, 5_000).remove(0);
        assert_eq!(job.sources, [("a".to_string(), "a:2".to_string())]);
        // a is dead: nothing to fetch from, and its copies do not count.
        assert!(wants("b", 16_000).is_empty());
        assert!(wants("b", 11_000).iter().all(|id| !c.contains(id)));
        let segment = state.segment("s0").unwrap();
        assert_eq!(state.counted_node_copies(segment, |n| n != "a").count(), 0, "a dead node's copy does not count");
    }
}

//! This node's `node_heartbeat` on Global: once at start, then every
//! `global.heartbeat_interval_ms`, until shutdown.
//!
//! Owns only the timing and the command; must never retry a failed heartbeat faster than
//! the interval (the next one supersedes it) nor decide whether it applied: Global does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use weir_global::{Addresses, Cmd, Command, Outcome};

use crate::config::GlobalConfig;
use crate::cluster::GlobalLog;

/// What a heartbeat announces about this node.
#[derive(Debug, Clone)]
pub struct Announce {
    pub node_id: String,
    pub addresses: Addresses,
    /// Whether this node takes ingest partitions (`digest.enabled`).
    pub digest: bool,
    /// The data directory's id ([`crate::store::DataDir::disk_id`]).
    pub disk_id: String,
}

pub async fn run(
    global: Arc<GlobalLog>,
    announce: Announce,
    config: GlobalConfig,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_millis(config.heartbeat_interval_ms.max(1));
    let Announce { node_id, addresses, digest, disk_id } = announce;
    loop {
        // The clock is data in the command (Global reads no clock of its own).
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let command = Command::new(
            format!("heartbeat:{node_id}:{at_ms}"),
            node_id.clone(),
            Cmd::NodeHeartbeat {
                node_id: node_id.clone(),
                addresses: addresses.clone(),
                zone: config.zone.clone(),
                at_ms,
                digest,
                disk_id: disk_id.clone(),
            },
        );
        tokio::select! {
            result = global.submit(&command) => match result {
                Ok((offset, Outcome::Applied)) => tracing::debug!(offset, at_ms, "heartbeat applied"),
                Ok((offset, Outcome::Rejected { reason })) => tracing::warn!(offset, %reason, "heartbeat rejected"),
                Err(error) => tracing::warn!(%error, "heartbeat not written"),
            },
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

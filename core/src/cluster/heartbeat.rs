//! This node's `node_heartbeat` on Global: once at start, then every
//! `global.heartbeat_interval_ms`, until shutdown.
//!
//! Owns only the timing and the command; must never retry a failed heartbeat faster than
//! the interval (the next one supersedes it) nor decide whether it applied: Global does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome};

use crate::config::GlobalConfig;
use crate::cluster::GlobalLog;

/// `digest`: whether this node takes ingest partitions (`digest.enabled`).
pub async fn run(
    global: Arc<GlobalLog>,
    node_id: String,
    addresses: Vec<String>,
    digest: bool,
    config: GlobalConfig,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_millis(config.heartbeat_interval_ms.max(1));
    loop {
        // The clock is data in the command (Global reads no clock of its own).
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let command = Command::new(
            format!("heartbeat:{node_id}:{at_ms}"),
            node_id.clone(),
            Cmd::NodeHeartbeat { node_id: node_id.clone(), addresses: addresses.clone(), zone: config.zone.clone(), at_ms, digest },
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

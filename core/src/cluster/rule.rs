//! The storage rule in Global (`set_storage_rule`): every node computes the safe offset by
//! the one rule Global holds, not by its own config. A node whose config names another rule
//! writes its own once it caught up (the last one written wins, so a rolling config change
//! takes effect as the nodes restart), and says so when the rule cannot survive one node
//! loss.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome, StorageRule};

use super::GlobalLog;

/// Puts `rule` in Global unless it is there already; retries until it is, or `shutdown`.
pub async fn ensure(global: Arc<GlobalLog>, node_id: String, rule: StorageRule, shutdown: CancellationToken) {
    if let Some(weakness) = rule.weakness() {
        tracing::warn!(%weakness, "the storage rule cannot survive the loss of one node");
    }
    loop {
        if global.not_ready().is_none() {
            match global.read(|s| s.storage_rule().copied()) {
                Some(current) if current == rule => return,
                current => {
                    if let Some(current) = current {
                        tracing::warn!(?current, configured = ?rule, "Global's storage rule differs from this node's [storage]: this node's replaces it");
                    }
                    let command = Command::new(format!("storage-rule:{node_id}:{}", super::commands::attempt()), node_id.clone(), Cmd::SetStorageRule { rule });
                    match global.submit(&command).await {
                        Ok((_, Outcome::Applied)) => {
                            tracing::info!(?rule, "storage rule set in Global");
                            return;
                        }
                        Ok((_, Outcome::Rejected { reason })) => {
                            tracing::error!(%reason, "Global refused this node's storage rule: fix [storage]");
                            return;
                        }
                        Err(error) => tracing::warn!(%error, "storage rule not confirmed, retrying"),
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

//! Which Kafka cluster and topics this node's Global describes (`bind_topics`), and the
//! stop when they are not the ones Kafka has now.
//!
//! A topic deleted and created again under its name starts its offsets over: Global's
//! resume points, segments and truncations would then name records that are not there (or
//! other records at the same offsets). So the first node binds the cluster id and both
//! topic ids in Global, every node compares them with what Kafka answers before it
//! applies anything (its snapshot's binding, in [`super::GlobalLog::run`]) and after it
//! caught up (the log's binding, here), and a mismatch stops the node with both ids.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome, Rejection, Topics};

use super::GlobalLog;
use crate::config::KafkaConfig;
use crate::kafka::identity;

/// Why this node must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopicsChanged(pub String);

/// What Kafka answers now for `kafka`'s cluster and topics, asked until it answers (`None`
/// on shutdown). `on_failure` hears each failure (for readiness).
pub async fn describe_until_ready(
    kafka: &KafkaConfig,
    shutdown: &CancellationToken,
    mut on_failure: impl FnMut(String),
) -> Option<Topics> {
    let mut warned = String::new();
    loop {
        let config = kafka.clone();
        let described = tokio::task::spawn_blocking(move || {
            identity::describe(
                &config,
                &[&config.ingest_topic, &config.global_topic],
                Duration::from_secs(10),
            )
        })
        .await
        .expect("describe task");
        match described {
            Ok(identity) => {
                let id = |i: usize| identity.topics[i].1.clone();
                return Some(Topics {
                    cluster_id: identity.cluster_id.clone(),
                    ingest_topic: kafka.ingest_topic.clone(),
                    ingest_topic_id: id(0),
                    global_topic: kafka.global_topic.clone(),
                    global_topic_id: id(1),
                });
            }
            Err(reason) => {
                if reason != warned {
                    tracing::warn!(%reason, "cannot learn the Kafka cluster and topic ids yet, retrying");
                }
                on_failure(format!(
                    "cannot learn the Kafka cluster and topic ids: {reason}"
                ));
                warned = reason;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// `None` when `bound` (what Global describes) and `now` (what Kafka answers) are the same
/// cluster and topics; else the reason to stop, naming both.
pub fn mismatch(bound: &Topics, now: &Topics) -> Option<String> {
    let differ = |what: &str, was: &str, is: &str| {
        (was != is).then(|| format!("{what} was {was:?}, Kafka now says {is:?}"))
    };
    let differences: Vec<String> = [
        differ("the Kafka cluster id", &bound.cluster_id, &now.cluster_id),
        differ(
            &format!("the id of ingest topic {}", bound.ingest_topic),
            &bound.ingest_topic_id,
            &now.ingest_topic_id,
        ),
        differ(
            &format!("the id of Global topic {}", bound.global_topic),
            &bound.global_topic_id,
            &now.global_topic_id,
        ),
        differ("the ingest topic", &bound.ingest_topic, &now.ingest_topic),
        differ("the Global topic", &bound.global_topic, &now.global_topic),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!differences.is_empty()).then(|| {
        format!(
            "Global describes other Kafka topics than this node finds ({}): a topic was deleted and created again, or the node points at another cluster. \
             Its resume points and segments would name records that are not there: restore the topics, or start a new cluster with new topic names and empty data directories",
            differences.join("; ")
        )
    })
}

/// After Global caught up: binds the topics if nobody did, else compares. Returns the
/// reason to stop on a mismatch (also one [`GlobalLog::run`] found against the snapshot),
/// `Ok` once they match or on shutdown.
pub async fn guard(
    global: Arc<GlobalLog>,
    kafka: KafkaConfig,
    node_id: String,
    shutdown: CancellationToken,
) -> Result<(), TopicsChanged> {
    loop {
        if let Some(reason) = global.topics_mismatch() {
            return Err(TopicsChanged(reason));
        }
        if let (None, Some(now)) = (global.not_ready(), global.described_topics()) {
            let bound = global.read(|s| s.topics().cloned());
            let bound = match bound {
                Some(bound) => bound,
                None => {
                    // Before the binding, which the digest waits for.
                    record_log_starts(&global, &kafka, &node_id).await;
                    let command = Command::new(
                        format!("bind-topics:{node_id}:{}", now.global_topic_id),
                        node_id.clone(),
                        Cmd::BindTopics {
                            topics: now.clone(),
                        },
                    );
                    match global.submit(&command).await {
                        Ok((_, Outcome::Applied)) => {
                            tracing::info!(topics = ?now, "Global bound to this Kafka cluster and its topics");
                            return Ok(());
                        }
                        Ok((
                            _,
                            Outcome::Rejected {
                                reason: Rejection::TopicsBound { bound },
                            },
                        )) => *bound,
                        Ok((_, Outcome::Rejected { reason })) => {
                            tracing::warn!(%reason, "binding the topics refused, retrying");
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "binding the topics not confirmed, retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = shutdown.cancelled() => return Ok(()),
                            }
                            continue;
                        }
                    }
                }
            };
            return match mismatch(&bound, &now) {
                None => Ok(()),
                Some(reason) => Err(TopicsChanged(reason)),
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Before this node binds Global to the topics: a partition with no segment whose Kafka
/// log does not start at 0 lost those records before Weir read it, so its log start is
/// recorded (`set_log_start`, audited) instead of the digest waiting for an operator.
/// Records that go missing later are an operator's decision (`weir-core global
/// set-log-start`).
async fn record_log_starts(global: &GlobalLog, kafka: &KafkaConfig, node_id: &str) {
    let config = kafka.clone();
    let starts = match tokio::task::spawn_blocking(move || {
        crate::kafka::ingest_reader::log_starts(&config)
    })
    .await
    .expect("watermarks task")
    {
        Ok(starts) => starts,
        Err(reason) => {
            // The ingest topic may not have its partitions yet: then every log starts at 0.
            tracing::warn!(%reason, "cannot read where the ingest partitions start; a partition whose log does not start at 0 waits for an operator");
            return;
        }
    };
    for (partition, start) in starts
        .into_iter()
        .enumerate()
        .filter(|(_, start)| *start > 0)
    {
        let partition = partition as u32;
        if global.read(|s| {
            !s.segments(partition).is_empty() || s.partition(partition).log_start >= start
        }) {
            continue;
        }
        let reason = format!(
            "Kafka's log of the partition started at {start} when this Global was bound to the topic: the records below were deleted before Weir read them"
        );
        let command = Command::new(
            format!(
                "log-start:{partition}:{start}:{}",
                super::commands::attempt()
            ),
            node_id,
            Cmd::SetLogStart {
                partition,
                offset: start,
                reason,
            },
        );
        match global.submit(&command).await {
            Ok((_, Outcome::Applied)) => tracing::warn!(
                partition,
                start,
                "partition's log start recorded: its records below were gone before Weir read them"
            ),
            Ok((_, Outcome::Rejected { reason })) => {
                tracing::info!(partition, %reason, "log start not recorded")
            }
            Err(error) => {
                tracing::warn!(partition, %error, "log start not confirmed; the digest of the partition waits for an operator")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recreated_topic_is_named_with_both_ids() {
        let bound = Topics {
            cluster_id: "c".into(),
            ingest_topic: "weir-ingest".into(),
            ingest_topic_id: "AAA".into(),
            global_topic: "weir-global".into(),
            global_topic_id: "GGG".into(),
        };
        assert_eq!(mismatch(&bound, &bound.clone()), None);
        let recreated = Topics {
            ingest_topic_id: "BBB".into(),
            ..bound.clone()
        };
        let reason = mismatch(&bound, &recreated).expect("a mismatch");
        assert!(
            reason.contains("ingest topic weir-ingest was \"AAA\", Kafka now says \"BBB\""),
            "{reason}"
        );
        assert!(
            !reason.contains("cluster id"),
            "only what differs: {reason}"
        );
    }
}

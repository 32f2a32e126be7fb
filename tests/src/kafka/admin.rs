//! Questions to Kafka and topic administration: a topic's partitions, leaders and in-sync
//! replicas, a partition's high watermark, creating a topic, changing its config, deleting
//! records. Each asks again on Kafka's transient answers ([`retry_transient`]).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata as KafkaMetadata;

use super::retry::{KafkaFailure, METADATA_TIMEOUT, retry_transient, retry_transient_async};

fn admin_client(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    super::client_config(bootstrap).create().expect("create admin client")
}

/// Admin options for one attempt of `timeout`.
fn admin_options(timeout: Duration) -> AdminOptions {
    AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout))
}

/// Creates `topic` with topic-level `configs` (e.g. `min.insync.replicas`); panics with
/// Kafka's answer if that fails. An attempt that timed out may have created the topic
/// anyway: "already exists" after such an attempt is this call's own topic.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, replication: i32, configs: &[(&str, &str)]) {
    let admin = admin_client(bootstrap);
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let what = format!("create topic {topic} ({partitions} partitions, replication {replication}, {configs:?}) on {bootstrap}");
    let mut tried = false;
    retry_transient_async(&what, Instant::now() + METADATA_TIMEOUT, |timeout| {
        let earlier_attempt = std::mem::replace(&mut tried, true);
        let (admin, new_topic) = (&admin, &new_topic);
        async move {
            for result in admin.create_topics([new_topic], &admin_options(timeout)).await? {
                match result {
                    Ok(_) => {}
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if earlier_attempt => {}
                    Err((_, code)) => return Err(KafkaError::AdminOp(code)),
                }
            }
            Ok::<(), KafkaError>(())
        }
    })
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
}

/// Sets topic-level `configs` of `topic` with the AlterConfigs admin API (not incremental:
/// the topic's other overrides go back to the broker defaults); panics with Kafka's answer
/// if that fails. Setting the same configs twice is harmless, so timeouts are retried.
pub async fn alter_topic_config(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) {
    let admin = admin_client(bootstrap);
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in configs {
        alter = alter.set(key, value);
    }
    let what = format!("alter configs {configs:?} of topic {topic} on {bootstrap}");
    retry_transient_async(&what, Instant::now() + METADATA_TIMEOUT, |timeout| {
        let (admin, alter) = (&admin, &alter);
        async move {
            let options = AdminOptions::new().request_timeout(Some(timeout));
            for result in admin.alter_configs([alter], &options).await? {
                result.map_err(|(_, code)| KafkaError::AdminOp(code))?;
            }
            Ok::<(), KafkaError>(())
        }
    })
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
}

/// Deletes the records of `topic`/`partition` before offset `before` (the log then starts
/// there); panics with Kafka's answer if that fails. Deleting up to the same offset again
/// is harmless, so timeouts are retried.
pub async fn delete_records(bootstrap: &str, topic: &str, partition: i32, before: i64) {
    let admin = admin_client(bootstrap);
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset(topic, partition, rdkafka::Offset::Offset(before)).expect("partition offset");
    let what = format!("delete records of {topic}/{partition} before offset {before} on {bootstrap}");
    retry_transient_async(&what, Instant::now() + METADATA_TIMEOUT, |timeout| {
        let (admin, offsets) = (&admin, &offsets);
        async move {
            let deleted = admin.delete_records(offsets, &AdminOptions::new().operation_timeout(Some(timeout))).await?;
            deleted.elements().iter().try_for_each(|elem| elem.error())
        }
    })
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
}

/// Deletes `topic` and waits until a topic of that name can be created again; panics with
/// Kafka's answer if that fails. An attempt that timed out may have deleted it: "unknown
/// topic" after such an attempt is this call's own deletion.
pub async fn delete_topic(bootstrap: &str, topic: &str) {
    let admin = admin_client(bootstrap);
    let what = format!("delete topic {topic} on {bootstrap}");
    let mut tried = false;
    retry_transient_async(&what, Instant::now() + METADATA_TIMEOUT, |timeout| {
        let earlier_attempt = std::mem::replace(&mut tried, true);
        let admin = &admin;
        async move {
            for result in admin
                .delete_topics(&[topic], &admin_options(timeout))
                .await?
            {
                match result {
                    Ok(_) => {}
                    Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) if earlier_attempt => {}
                    Err((_, code)) => return Err(KafkaError::AdminOp(code)),
                }
            }
            Ok::<(), KafkaError>(())
        }
    })
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Deletion finishes in the background: gone from the metadata first.
    let metadata = Metadata::new(bootstrap);
    let deadline = Instant::now() + METADATA_TIMEOUT;
    while metadata.topic_layout(topic, Duration::from_secs(5)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "topic {topic} still listed after its deletion"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One partition of a topic as a broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLayout {
    pub partition: i32,
    /// -1 while the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// The partitions of `topic` in a metadata answer, or the topic-level error as a
/// [`KafkaError`] (so [`retry_transient`] can tell "not created yet" from "refused").
pub(super) fn topic_partitions<'a>(metadata: &'a KafkaMetadata, topic: &str) -> Result<&'a [rdkafka::metadata::MetadataPartition], KafkaError> {
    let found = metadata.topics().iter().find(|t| t.name() == topic).ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic))?;
    if let Some(error) = found.error() {
        return Err(KafkaError::MetadataFetch(error.into()));
    }
    Ok(found.partitions())
}

/// A client for metadata questions. Keep one for repeated questions: a fresh client per
/// question reconnects to every broker, and logs each dead one, every time.
pub struct Metadata {
    consumer: BaseConsumer,
    bootstrap: String,
}

impl Metadata {
    pub fn new(bootstrap: &str) -> Metadata {
        let consumer = super::client_config(bootstrap)
            .set("group.id", crate::unique("weir-test-metadata"))
            .create()
            .expect("create metadata client");
        Metadata { consumer, bootstrap: bootstrap.to_owned() }
    }

    /// Leaders, replicas and in-sync replicas of `topic`'s partitions, from whichever
    /// broker answers first, or why there are none after `timeout`.
    pub fn topic_layout(&self, topic: &str, timeout: Duration) -> Result<Vec<PartitionLayout>, KafkaFailure> {
        let what = format!("metadata of {topic} from {}", self.bootstrap);
        retry_transient(&what, Instant::now() + timeout, |attempt| {
            let metadata = self.consumer.fetch_metadata(Some(topic), attempt)?;
            let mut layout: Vec<PartitionLayout> = topic_partitions(&metadata, topic)?
                .iter()
                .map(|p| PartitionLayout { partition: p.id(), leader: p.leader(), replicas: p.replicas().to_vec(), isr: p.isr().to_vec() })
                .collect();
            layout.sort_by_key(|p| p.partition);
            Ok(layout)
        })
    }

    /// The high watermark (offset after the last committed record) of one partition.
    /// Transient answers (a leader moving or not elected yet, as right after a topic was
    /// created, or a broker too busy to answer) are asked again until `timeout`.
    pub fn high_watermark(&self, topic: &str, partition: i32, timeout: Duration) -> Result<i64, KafkaFailure> {
        let what = format!("high watermark of {topic}/{partition} from {}", self.bootstrap);
        retry_transient(&what, Instant::now() + timeout, |attempt| {
            self.consumer.fetch_watermarks(topic, partition, attempt).map(|(_, high)| high)
        })
    }

    /// Where `topic`/`partition`'s log starts now (Kafka's low watermark), asked again on
    /// transient answers until `timeout`.
    pub fn low_watermark(&self, topic: &str, partition: i32, timeout: Duration) -> Result<i64, KafkaFailure> {
        let what = format!("low watermark of {topic}/{partition} from {}", self.bootstrap);
        retry_transient(&what, Instant::now() + timeout, |attempt| {
            self.consumer.fetch_watermarks(topic, partition, attempt).map(|(low, _)| low)
        })
    }
}

/// [`Metadata::topic_layout`] with a client of its own.
pub fn topic_layout(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<PartitionLayout>, KafkaFailure> {
    Metadata::new(bootstrap).topic_layout(topic, timeout)
}

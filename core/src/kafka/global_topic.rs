//! The Global topic as Kafka sees it: its spec (one partition, infinite retention, never
//! compacted), a producer that writes a command record and learns its offset from the
//! delivery report, and a reader that goes through the partition in offset order from
//! where it is told.
//!
//! Mechanism only: what the records mean, where to resume and what to wait for is
//! `cluster::global_log`'s. Must never commit consumer group offsets (where to resume is
//! the snapshot's offset + 1, or 0) or skip to the log's end on its own.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{ClientError, DeliveryContext, Refusal, TopicSpec, client_config};
use crate::config::KafkaConfig;

impl ConsumerContext for DeliveryContext {}

/// Why a command record was not written.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Kafka refused the record for good (too large, not authorised, ...).
    #[error("kafka refused it ({code}): {reason}")]
    Refused { code: String, reason: String },
    /// Not acknowledged in time, or a transient failure: a retry can succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// The Global topic as this node creates and requires it.
fn spec(kafka: &KafkaConfig) -> TopicSpec {
    TopicSpec {
        name: kafka.global_topic.clone(),
        partitions: 1,
        exact_partitions: true,
        // Never compacted and never expired: a node must be able to rebuild from offset 0.
        configs: vec![("retention.ms", "-1"), ("cleanup.policy", "delete")],
    }
}

/// Creates or checks the Global topic until it is as required (`true`) or `shutdown`
/// (`false`); `on_failure` as in [`super::verify_until_ready`].
pub async fn verify_until_ready(kafka: &KafkaConfig, shutdown: &CancellationToken, on_failure: impl FnMut(String) -> String) -> bool {
    let spec = spec(kafka);
    let verified = super::verify_until_ready(kafka, &spec, shutdown, on_failure).await.is_some();
    if verified {
        tracing::info!(topic = %spec.name, "global topic ready");
    }
    verified
}

/// Writes command records to partition 0, with the ingest producer's durability.
pub struct GlobalProducer {
    topic: String,
    producer: FutureProducer<DeliveryContext>,
    timeout: Duration,
}

impl GlobalProducer {
    pub fn new(kafka: &KafkaConfig, timeout: Duration) -> Result<GlobalProducer, ClientError> {
        let producer = client_config(kafka)
            // Same durability as ingest: idempotent, acks=all, whatever the extra properties say.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("linger.ms", "0")
            .create_with_context(DeliveryContext::default())?;
        Ok(GlobalProducer { topic: kafka.global_topic.clone(), producer, timeout })
    }

    /// Writes one record and returns its offset once Kafka acknowledged it.
    pub async fn send(&self, key: &str, payload: &[u8]) -> Result<u64, SendError> {
        let record = FutureRecord::to(&self.topic).partition(0).key(key).payload(payload);
        let delivery = self.producer.send(record, Timeout::After(self.timeout)).await.map_err(|(error, _)| send_error(error))?;
        u64::try_from(delivery.offset).map_err(|_| SendError::Unavailable(format!("the delivery report has no offset ({})", delivery.offset)))
    }
}

fn send_error(error: KafkaError) -> SendError {
    match error.rdkafka_error_code() {
        Some(code) if Refusal::of(code).is_some() => SendError::Refused { code: code.to_string(), reason: error.to_string() },
        _ => SendError::Unavailable(error.to_string()),
    }
}

/// Reads partition 0 of the Global topic in offset order.
pub struct GlobalReader {
    topic: String,
    consumer: BaseConsumer<DeliveryContext>,
}

impl GlobalReader {
    pub fn open(kafka: &KafkaConfig, node_id: &str) -> Result<GlobalReader, ClientError> {
        let consumer = client_config(kafka)
            // Partition 0 is assigned by hand and nothing is committed: where to resume is
            // the snapshot's business, never a consumer group's.
            .set("group.id", format!("weir-global-{node_id}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An offset past the log's end means the snapshot and the topic disagree: say
            // so rather than silently jumping.
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50")
            .create_with_context(DeliveryContext::default())?;
        Ok(GlobalReader { topic: kafka.global_topic.clone(), consumer })
    }

    /// The topic's end (next offset to be written) now.
    pub fn high_watermark(&self) -> Result<u64, ClientError> {
        let (_, high) = self.consumer.fetch_watermarks(&self.topic, 0, Duration::from_secs(5))?;
        Ok(high.max(0) as u64)
    }

    /// Reads on from `from`.
    pub fn assign(&self, from: u64) -> Result<(), ClientError> {
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition_offset(&self.topic, 0, Offset::Offset(from as i64))?;
        Ok(self.consumer.assign(&partitions)?)
    }

    /// The next record (offset, payload), waiting up to `timeout`.
    pub fn poll(&self, timeout: Duration) -> Option<Result<(u64, Vec<u8>), ClientError>> {
        self.consumer.poll(timeout).map(|polled| {
            polled.map(|message| (message.offset() as u64, message.payload().unwrap_or_default().to_vec())).map_err(ClientError::from)
        })
    }
}

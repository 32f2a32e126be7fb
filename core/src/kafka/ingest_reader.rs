//! Reading one partition of the ingest topic for the digest, from an offset Global chose.
//!
//! Owns: the consumer of one ingest partition (assigned by hand, never in a consumer
//! group's hands, never committing: where to resume is Global's business), the record's
//! batch identity from its headers, and telling a resume point Kafka no longer holds
//! apart from any other error. Must never skip offsets: `auto.offset.reset` is `error`,
//! so a resume point below the log start is reported, not jumped over.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use weir_proto::wire::BatchId;

use super::{BATCH_ID_HEADER, BATCH_PART_HEADER, BATCH_PARTS_HEADER, DeliveryContext, client_config};
use crate::config::KafkaConfig;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The offset to resume from is below what Kafka still holds: records Global never saw
    /// stored were deleted (retention shorter than the digest's lag, or a recreated topic).
    #[error("partition {partition}: offset {wanted} is no longer in Kafka (the log starts at {log_start}); records {wanted}..{log_start} were deleted before they were digested")]
    OffsetGone { partition: u32, wanted: u64, log_start: u64 },
    #[error("partition {partition}: {source}")]
    Kafka { partition: u32, source: KafkaError },
}

/// One record of the ingest topic.
#[derive(Debug)]
pub struct IngestRecord {
    pub offset: u64,
    pub payload: Vec<u8>,
    /// From the `weir-batch-*` headers; `None` for records published by HTTP requests to a
    /// core (no batch identity) or written by something other than Weir.
    pub batch: Option<RecordBatch>,
    /// The record's Kafka timestamp (create time unless the topic says log-append time):
    /// how old the digest's position is, against the topic's retention.
    pub timestamp_ms: Option<i64>,
}

/// The batch a record belongs to, and its place among the batch's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub id: BatchId,
    pub part: u32,
    pub parts: u32,
}

/// The consumer of one ingest partition.
pub struct PartitionReader {
    consumer: BaseConsumer<DeliveryContext>,
    topic: String,
    partition: u32,
}

impl PartitionReader {
    /// Opens a consumer positioned at `from`, after checking Kafka still holds it.
    pub fn open(kafka: &KafkaConfig, node_id: &str, partition: u32, from: u64) -> Result<PartitionReader, ReadError> {
        let error = |source| ReadError::Kafka { partition, source };
        let consumer: BaseConsumer<DeliveryContext> = client_config(kafka)
            // A group id librdkafka requires; nothing is committed under it.
            .set("group.id", format!("weir-digest-{node_id}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "100")
            // Only what a producer committed: an aborted or pending transaction's records
            // are not events anyone was told are stored.
            .set("isolation.level", "read_committed")
            .create_with_context(DeliveryContext::default())
            .map_err(error)?;
        let reader = PartitionReader { consumer, topic: kafka.ingest_topic.clone(), partition };
        let (low, _) = reader.watermarks()?;
        if from < low {
            return Err(ReadError::OffsetGone { partition, wanted: from, log_start: low });
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&reader.topic, partition as i32, Offset::Offset(from as i64)).map_err(error)?;
        reader.consumer.assign(&assignment).map_err(error)?;
        Ok(reader)
    }

    /// The partition's log start and end (next offset to be written) now.
    pub fn watermarks(&self) -> Result<(u64, u64), ReadError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, self.partition as i32, Duration::from_secs(5))
            .map_err(|source| ReadError::Kafka { partition: self.partition, source })?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    /// The partition's end, asked of the broker with a short timeout: for the lag metric.
    pub fn high_watermark(&self) -> Option<u64> {
        self.consumer.fetch_watermarks(&self.topic, self.partition as i32, Duration::from_millis(500)).ok().map(|(_, high)| high.max(0) as u64)
    }

    /// The next record, `Ok(None)` when none came within `timeout`. Transient consumer
    /// errors are logged and answered `Ok(None)` (librdkafka retries on its own); a
    /// position Kafka no longer holds is [`ReadError::OffsetGone`].
    pub fn poll(&self, timeout: Duration, position: u64) -> Result<Option<IngestRecord>, ReadError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(IngestRecord {
                offset: message.offset().max(0) as u64,
                payload: message.payload().unwrap_or_default().to_vec(),
                batch: message.headers().and_then(record_batch),
                timestamp_ms: message.timestamp().to_millis(),
            })),
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)))
            | Some(Err(KafkaError::PartitionEOF(_)))
                if self.watermarks().is_ok_and(|(low, _)| position < low) =>
            {
                let (low, _) = self.watermarks()?;
                Err(ReadError::OffsetGone { partition: self.partition, wanted: position, log_start: low })
            }
            Some(Err(error)) => {
                tracing::warn!(partition = self.partition, %error, "ingest consumer error");
                Ok(None)
            }
        }
    }
}

/// How many partitions the ingest topic has now. Blocking.
pub fn partition_count(kafka: &KafkaConfig) -> Result<u32, String> {
    let consumer: BaseConsumer<DeliveryContext> =
        client_config(kafka).create_with_context(DeliveryContext::default()).map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(&kafka.ingest_topic), Duration::from_secs(5))
        .map_err(|e| format!("cannot describe topic {}: {e}", kafka.ingest_topic))?;
    let n = metadata.topics().iter().find(|t| t.name() == kafka.ingest_topic).map_or(0, |t| t.partitions().len());
    if n == 0 {
        return Err(format!("topic {} has no partitions yet", kafka.ingest_topic));
    }
    Ok(n as u32)
}

/// Where each partition of the ingest topic starts now (Kafka's low watermarks), in
/// partition order. Blocking.
pub fn log_starts(kafka: &KafkaConfig) -> Result<Vec<u64>, String> {
    Ok(watermarks(kafka)?.into_iter().map(|(low, _)| low).collect())
}

/// Each partition's log start and end (Kafka's low and high watermarks), in partition
/// order. Blocking.
pub fn watermarks(kafka: &KafkaConfig) -> Result<Vec<(u64, u64)>, String> {
    let n = partition_count(kafka)?;
    let consumer: BaseConsumer<DeliveryContext> = client_config(kafka).create_with_context(DeliveryContext::default()).map_err(|e| e.to_string())?;
    (0..n)
        .map(|p| {
            consumer
                .fetch_watermarks(&kafka.ingest_topic, p as i32, Duration::from_secs(5))
                .map(|(low, high)| (low.max(0) as u64, high.max(0) as u64))
                .map_err(|e| format!("cannot read the watermarks of partition {p} of {}: {e}", kafka.ingest_topic))
        })
        .collect()
}

/// The batch identity a forwarded record carries, if it carries a readable one.
fn record_batch(headers: &rdkafka::message::BorrowedHeaders) -> Option<RecordBatch> {
    let text = |key: &str| {
        headers.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned)
    };
    let id = BatchId::parse(&text(BATCH_ID_HEADER)?)?;
    let part = text(BATCH_PART_HEADER)?.parse().ok()?;
    let parts = text(BATCH_PARTS_HEADER)?.parse().ok()?;
    (part < parts).then_some(RecordBatch { id, part, parts })
}

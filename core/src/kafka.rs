//! Publishing to the Kafka ingest topic, and creating it when missing.
//!
//! Only this module touches rdkafka. A request's records go to an idempotent producer with
//! acks=all; the request completes when the delivery report of its last record arrived.
//! Delivery reports come through the producer context's callback and count down one
//! shared [`PendingRequest`] per request: a future per message costs rust-rdkafka about
//! half of its throughput, a counter per request costs nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use weir_proto::EventBatch;
use weir_proto::wire::BatchId;

use crate::config::KafkaConfig;

/// Kafka record header carrying the edge batch id, so a re-sent batch can be recognised.
pub const BATCH_ID_HEADER: &str = "weir-batch-id";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Kafka did not acknowledge every record in time. Some records may have been
    /// written; the request was not acknowledged, and a retry is safe.
    #[error("kafka did not acknowledge the events: {0}")]
    Unavailable(String),
    #[error("could not create the kafka producer: {0}")]
    Setup(#[from] KafkaError),
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One Kafka record to be: the source key and the JSON of an [`EventBatch`].
pub struct Record {
    pub key: String,
    /// Often a slice of a larger buffer (an edge's decompressed payload): librdkafka
    /// copies it at enqueue anyway.
    pub payload: bytes::Bytes,
}

/// Counts down the outstanding delivery reports of one request.
struct PendingRequest {
    remaining: AtomicUsize,
    first_error: Mutex<Option<String>>,
    done: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

impl PendingRequest {
    fn complete(&self, n: usize, error: Option<String>) {
        if let Some(error) = error {
            let mut first = self.first_error.lock().expect("lock");
            first.get_or_insert(error);
        }
        if self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            let result = match self.first_error.lock().expect("lock").take() {
                Some(error) => Err(error),
                None => Ok(()),
            };
            if let Some(done) = self.done.lock().expect("lock").take() {
                let _ = done.send(result);
            }
        }
    }
}

struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<PendingRequest>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<PendingRequest>) {
        pending.complete(1, result.as_ref().err().map(|(e, _)| e.to_string()));
    }
}

/// Publishes event batches to the ingest topic.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    ack_timeout: Duration,
    max_record_bytes: usize,
    topic_ready: AtomicBool,
}

impl Publisher {
    pub fn new(config: &KafkaConfig) -> Result<Publisher, PublishError> {
        let mut client = ClientConfig::new();
        for (key, value) in &config.producer_properties {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            // I1: acks=all from the idempotent producer, whatever the extra properties say.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.ack_timeout_ms.to_string())
            .set("linger.ms", config.linger_ms.to_string())
            .set("compression.type", "lz4")
            .set("message.max.bytes", (config.max_record_bytes + 64 * 1024).to_string());
        let producer = client.create_with_context(DeliveryContext)?;
        Ok(Publisher {
            producer,
            topic: config.ingest_topic.clone(),
            // librdkafka fails the message at message.timeout.ms; the margin lets its
            // report, with its reason, arrive before our own deadline.
            ack_timeout: Duration::from_millis(config.ack_timeout_ms) + Duration::from_millis(500),
            max_record_bytes: config.max_record_bytes,
            topic_ready: AtomicBool::new(false),
        })
    }

    pub fn is_topic_ready(&self) -> bool {
        self.topic_ready.load(Ordering::Acquire)
    }

    /// A fatal producer error (e.g. idempotence state lost) makes the node unready.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer.client().fatal_error().map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Encodes a batch as Kafka records (key, JSON payload), split below the record size.
    pub fn encode(&self, batch: EventBatch, records: &mut Vec<Record>) -> Result<(), PublishError> {
        let key = batch.source_key();
        for part in batch.split_by_size(self.max_record_bytes) {
            records.push(Record { key: key.clone(), payload: serde_json::to_vec(&part)?.into() });
        }
        Ok(())
    }

    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Publishes every event of `batches` and returns once Kafka acknowledged all of them,
    /// or fails. `batch_id` travels as a record header.
    pub async fn publish(&self, batches: Vec<EventBatch>, batch_id: Option<&BatchId>) -> Result<usize, PublishError> {
        let mut records = Vec::new();
        for batch in batches {
            self.encode(batch, &mut records)?;
        }
        self.publish_records(records, batch_id).await
    }

    /// Publishes already encoded records; returns once Kafka acknowledged all of them, or
    /// fails.
    pub async fn publish_records(&self, records: Vec<Record>, batch_id: Option<&BatchId>) -> Result<usize, PublishError> {
        self.enqueue(records, batch_id).await.acknowledged().await
    }

    /// Hands `records` to the producer, in order, and returns what waits for their delivery
    /// reports. Records enqueued by one call before those of a later call land before them
    /// in their partition (the producer is idempotent, so retries keep that order): callers
    /// that must keep an order across requests await `enqueue` in that order and only then
    /// wait for the acks, which lets several requests be in flight without reordering.
    pub async fn enqueue(&self, records: Vec<Record>, batch_id: Option<&BatchId>) -> Delivery {
        let n_records = records.len();
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        if records.is_empty() {
            return Delivery { n_records, done: None, deadline };
        }
        let (done_tx, done_rx) = oneshot::channel();
        let pending = Arc::new(PendingRequest {
            remaining: AtomicUsize::new(n_records),
            first_error: Mutex::new(None),
            done: Mutex::new(Some(done_tx)),
        });
        let header_value = batch_id.map(|id| id.to_string());
        for (i, Record { key, payload }) in records.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(&self.topic, pending.clone()).key(key).payload(payload.as_ref());
            if let Some(value) = &header_value {
                record = record.headers(OwnedHeaders::new().insert(Header { key: BATCH_ID_HEADER, value: Some(value) }));
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        // Backpressure from librdkafka's queue: wait for deliveries to
                        // drain it instead of failing the request.
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        pending.complete(n_records - i, Some(format!("could not enqueue record: {error}")));
                        return Delivery { n_records, done: Some(done_rx), deadline };
                    }
                }
            }
        }
        Delivery { n_records, done: Some(done_rx), deadline }
    }

    /// Creates the ingest topic if it is missing, retrying until it exists or `shutdown`.
    pub async fn ensure_topic(&self, config: &KafkaConfig, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            match create_topic(config).await {
                Ok(()) => {
                    self.topic_ready.store(true, Ordering::Release);
                    tracing::info!(topic = %config.ingest_topic, "ingest topic ready");
                    return;
                }
                Err(error) => {
                    tracing::warn!(topic = %config.ingest_topic, %error, "ingest topic not ready, retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Waits until every queued record got its delivery report, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "kafka producer flush at shutdown did not complete");
        }
    }
}

/// The delivery reports of one [`Publisher::enqueue`] call.
pub struct Delivery {
    n_records: usize,
    done: Option<oneshot::Receiver<Result<(), String>>>,
    deadline: tokio::time::Instant,
}

impl Delivery {
    /// Waits until Kafka acknowledged every record (returns how many), or fails: a
    /// failed delivery, or no answer by the deadline set at enqueue time.
    pub async fn acknowledged(self) -> Result<usize, PublishError> {
        let Some(done) = self.done else { return Ok(0) };
        let result = match tokio::time::timeout_at(self.deadline, done).await {
            Ok(Ok(Ok(()))) => Ok(self.n_records),
            Ok(Ok(Err(error))) => Err(PublishError::Unavailable(error)),
            Ok(Err(_)) => Err(PublishError::Unavailable("delivery report channel closed".into())),
            Err(_) => Err(PublishError::Unavailable("timed out waiting for delivery reports".into())),
        };
        // Counted per request, not in the per-record delivery callback.
        let outcome = if result.is_ok() { "acked" } else { "failed" };
        metrics::counter!("weir_kafka_records_total", "result" => outcome).increment(self.n_records as u64);
        result
    }
}

async fn create_topic(config: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .create()
        .map_err(|e| e.to_string())?;
    let topic = NewTopic::new(&config.ingest_topic, config.partitions, TopicReplication::Fixed(config.replication_factor));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5))).operation_timeout(Some(Duration::from_secs(5)));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("create topic {name}: {code}")),
        }
    }
    Ok(())
}

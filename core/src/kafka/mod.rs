//! Kafka as a mechanism: publishing to the ingest topic, creating it (or checking the
//! existing one's durability) at start, reading one ingest partition for the digest
//! ([`ingest_reader`]) and the Global topic's producer and reader ([`global_topic`]).
//!
//! Only this module (and its submodules) touches rdkafka; what the records mean is decided
//! elsewhere (`cluster`, `digest`). A request's records go to an idempotent producer with
//! acks=all; the request completes when the delivery report of its last record arrived.
//! Delivery reports come through the producer context's callback and count down one
//! shared [`PendingRequest`] per request: a future per message costs rust-rdkafka about
//! half of its throughput, a counter per request costs nothing.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use weir_proto::EventBatch;

use crate::config::KafkaConfig;

pub mod global_topic;
pub mod identity;
pub mod ingest_reader;

/// Kafka record header carrying the edge batch id (`edge:incarnation:seq`), so a re-sent
/// batch can be recognised.
pub const BATCH_ID_HEADER: &str = "weir-batch-id";
/// Headers with a record's place among the records of its batch (decimal text): a batch
/// over `max_record_bytes` travels as several records.
pub const BATCH_PART_HEADER: &str = "weir-batch-part";
pub const BATCH_PARTS_HEADER: &str = "weir-batch-parts";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Kafka did not acknowledge every record in time, or answered with an error a retry
    /// can get past (broker down, not enough in-sync replicas, leader moving). Some
    /// records may have been written; the request was not acknowledged, and a retry is
    /// safe.
    #[error("kafka did not acknowledge the events: {reason}")]
    Unavailable { code: Option<RDKafkaErrorCode>, reason: String },
    /// Kafka refused a record in a way no retry changes (too large, invalid, not
    /// authorised). Other records of the request may have been written; it was not
    /// acknowledged.
    #[error("kafka refused the events ({code}): {reason}")]
    Refused { refusal: Refusal, code: RDKafkaErrorCode, reason: String },
    #[error("could not create the kafka producer: {0}")]
    Setup(#[from] KafkaError),
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl PublishError {
    /// The answer to the request (HTTP or QUIC alike): 503/`Unavailable` with
    /// `retry_after` when a retry can succeed, 413/400/403 (`TooLarge`/`BadRequest`/
    /// `Forbidden`) when Kafka refused the events for good.
    pub fn into_refusal(self, retry_after: Duration) -> weir_proto::Refusal {
        use weir_proto::Refusal as Answer;
        match self {
            PublishError::Unavailable { reason, .. } => Answer::unavailable(format!("kafka did not acknowledge the events: {reason}"), retry_after),
            PublishError::Refused { refusal, reason, .. } => {
                let message = format!("kafka refused the events and a retry cannot change that: {reason}");
                match refusal {
                    Refusal::TooLarge => Answer::too_large(message),
                    Refusal::Invalid => Answer::bad_request(message),
                    Refusal::Unauthorized => Answer::forbidden(message),
                }
            }
            other => Answer::internal(other.to_string()),
        }
    }
}

/// Why Kafka refused a record for good. Decides the answer: HTTP 413/400/403, QUIC
/// `TooLarge`/`BadRequest`/`Forbidden` (the edge dead-letters the batch and goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The record exceeds a size limit of the producer or the broker.
    TooLarge,
    /// The broker cannot store the record as it is (invalid record, bad timestamp, policy).
    Invalid,
    /// This node's Kafka principal may not write the topic: an operator must act.
    Unauthorized,
}

impl Refusal {
    /// The permanent errors; everything else is worth a retry. Unknown topic or
    /// partition stays transient: a healthy cluster answers it while metadata propagates
    /// or a leader moves, and the core creates the ingest topic before it is ready.
    pub fn of(code: RDKafkaErrorCode) -> Option<Refusal> {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => Some(Refusal::TooLarge),
            C::InvalidMessage | C::InvalidRecord | C::InvalidTimestamp | C::PolicyViolation | C::InvalidTopic
            | C::UnsupportedForMessageFormat | C::InvalidArgument => Some(Refusal::Invalid),
            C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed | C::Authentication => Some(Refusal::Unauthorized),
            _ => None,
        }
    }
}

/// The first error of a request, the permanent one if any record failed for good.
#[derive(Debug, Clone)]
struct Failure {
    code: Option<RDKafkaErrorCode>,
    reason: String,
}

impl Failure {
    fn refusal(&self) -> Option<Refusal> {
        self.code.and_then(Refusal::of)
    }

    fn into_error(self) -> PublishError {
        match (self.refusal(), self.code) {
            (Some(refusal), Some(code)) => PublishError::Refused { refusal, code, reason: self.reason },
            _ => PublishError::Unavailable { code: self.code, reason: self.reason },
        }
    }
}

fn error_code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    error.rdkafka_error_code()
}

/// A Kafka client that could not be created or a call that failed, for callers outside
/// this module (which never name rdkafka's types).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ClientError(#[from] pub KafkaError);

/// One Kafka record to be: the source key and the JSON of an [`EventBatch`].
pub struct Record {
    pub key: String,
    /// Often a slice of a larger buffer (an edge's decompressed payload): librdkafka
    /// copies it at enqueue anyway.
    pub payload: bytes::Bytes,
    /// The forwarded batch this record is part of; none for HTTP requests to the core
    /// (a client retrying those gets no deduplication).
    pub batch: Option<BatchPart>,
}

/// A record's place in a forwarded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPart {
    pub id: String,
    pub index: u32,
    pub count: u32,
}

/// Counts down the outstanding delivery reports of one request.
pub(crate) struct PendingRequest {
    remaining: AtomicUsize,
    first_error: Mutex<Option<Failure>>,
    done: Mutex<Option<oneshot::Sender<Result<(), Failure>>>>,
}

impl PendingRequest {
    fn complete(&self, n: usize, error: Option<Failure>) {
        if let Some(error) = error {
            let mut first = self.first_error.lock().expect("lock");
            // A permanent refusal decides the answer even when a transient error came
            // first: retrying the request could never succeed.
            match first.as_ref() {
                Some(existing) if existing.refusal().is_some() || error.refusal().is_none() => {}
                _ => *first = Some(error),
            }
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

/// The producer's context: delivery reports, and the last problem librdkafka reported
/// on its connections (an authentication failure, brokers down), which `/ready` shows
/// beside the reason the topic is not verified: admin calls only say "timed out".
#[derive(Default)]
pub(crate) struct DeliveryContext {
    recent_errors: RecentErrors,
}

/// The last few distinct client errors, newest last: the telling one (authentication
/// failed) is usually followed by a generic one (all brokers down).
#[derive(Default)]
struct RecentErrors(Mutex<Vec<String>>);

impl RecentErrors {
    fn push(&self, message: String) {
        let mut recent = self.0.lock().expect("lock");
        recent.retain(|m| *m != message);
        recent.push(message);
        if recent.len() > 3 {
            recent.remove(0);
        }
    }

    pub(crate) fn describe(&self) -> Option<String> {
        let recent = self.0.lock().expect("lock");
        (!recent.is_empty()).then(|| recent.join("; "))
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(facility, message, "librdkafka");
                self.recent_errors.push(message.to_owned());
            }
            RDKafkaLogLevel::Warning => tracing::warn!(facility, message, "librdkafka"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(facility, message, "librdkafka"),
            RDKafkaLogLevel::Debug => tracing::debug!(facility, message, "librdkafka"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        self.recent_errors.push(format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<PendingRequest>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<PendingRequest>) {
        let failure = result.as_ref().err().map(|(e, _)| Failure { code: error_code(e), reason: e.to_string() });
        pending.complete(1, failure);
    }
}

/// Publishes event batches to the ingest topic.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    ack_timeout: Duration,
    max_record_bytes: usize,
    /// Why the ingest topic is not usable yet, or `Ok` once it is verified.
    topic_state: Mutex<Result<(), String>>,
    /// `kafka.source_shards`.
    source_shards: u32,
    /// The ingest topic's partition count when it was verified; 0 before (nothing is
    /// published then: the node is not ready).
    partitions: AtomicU32,
    /// The shard of the next HTTP request's records.
    next_request: AtomicU64,
}

impl Publisher {
    pub fn new(config: &KafkaConfig) -> Result<Publisher, PublishError> {
        let mut client = ClientConfig::new();
        for (key, value) in &config.client_properties {
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
            // librdkafka's own default queue holds up to 1 GiB: bounded here, and its
            // backpressure (QueueFull) is waited on in `enqueue`.
            .set("queue.buffering.max.kbytes", config.queue_max_bytes.div_ceil(1024).max(1).to_string())
            .set("message.max.bytes", (config.max_record_bytes + 64 * 1024).to_string());
        let producer = client.create_with_context(DeliveryContext::default())?;
        Ok(Publisher {
            producer,
            topic: config.ingest_topic.clone(),
            // librdkafka fails the message at message.timeout.ms; the margin lets its
            // report, with its reason, arrive before our own deadline.
            ack_timeout: Duration::from_millis(config.ack_timeout_ms) + Duration::from_millis(500),
            max_record_bytes: config.max_record_bytes,
            topic_state: Mutex::new(Err("the ingest topic is not verified yet".into())),
            source_shards: config.source_shards.get(),
            partitions: AtomicU32::new(0),
            next_request: AtomicU64::new(0),
        })
    }

    /// `Err(reason)` until the ingest topic exists with the configured durability.
    pub fn topic_ready(&self) -> Result<(), String> {
        self.topic_state.lock().expect("lock").clone()
    }

    /// Why this node must not acknowledge anything now: the topic is not verified, or the
    /// producer failed fatally.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(fatal) = self.fatal_error() {
            return Some(format!("kafka producer failed fatally: {fatal}"));
        }
        self.topic_ready().err()
    }

    /// A fatal producer error (e.g. idempotence state lost) makes the node unready.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer.client().fatal_error().map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Encodes a batch as Kafka records (key, JSON payload), split below the record size.
    pub fn encode(&self, batch: EventBatch, records: &mut Vec<Record>) -> Result<(), PublishError> {
        let key = batch.source_key();
        for payload in weir_proto::event::encode_parts(batch, self.max_record_bytes)? {
            records.push(Record { key: key.clone(), payload: payload.into(), batch: None });
        }
        Ok(())
    }

    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Publishes every event of `batches` and returns once Kafka acknowledged all of them,
    /// or fails.
    pub async fn publish(&self, batches: Vec<EventBatch>) -> Result<usize, PublishError> {
        let mut records = Vec::new();
        for batch in batches {
            self.encode(batch, &mut records)?;
        }
        self.publish_records(records).await
    }

    /// Publishes already encoded records that need no particular shard (an HTTP request:
    /// the next one); returns once Kafka acknowledged all of them, or fails.
    pub async fn publish_records(&self, records: Vec<Record>) -> Result<usize, PublishError> {
        let shard = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.enqueue(records, shard).await.acknowledged().await
    }

    /// The partition of a record of source `key` in shard `shard` (any number: taken
    /// modulo `kafka.source_shards`), or `None` before the topic's partition count is known
    /// (librdkafka's partitioner then decides, by key).
    pub fn partition(&self, key: &str, shard: u64) -> Option<i32> {
        let partitions = self.partitions.load(Ordering::Relaxed);
        (partitions > 0).then(|| shard_partition(key, shard, self.source_shards, partitions))
    }

    /// Hands `records` to the producer, in order, and returns what waits for their delivery
    /// reports. Records enqueued by one call before those of a later call land before them
    /// in their partition (the producer is idempotent, so retries keep that order): callers
    /// that must keep an order across requests await `enqueue` in that order and only then
    /// wait for the acks, which lets several requests be in flight without reordering.
    ///
    /// Every record goes to its source's partition for `shard` ([`Publisher::partition`]):
    /// a forwarded batch's records name its sequence number, so a resent copy goes where
    /// the first one went.
    pub async fn enqueue(&self, records: Vec<Record>, shard: u64) -> Delivery {
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
        for (i, Record { key, payload, batch }) in records.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(&self.topic, pending.clone()).key(key).payload(payload.as_ref());
            if let Some(partition) = self.partition(key, shard) {
                record = record.partition(partition);
            }
            if let Some(part) = batch {
                let (index, count) = (part.index.to_string(), part.count.to_string());
                record = record.headers(
                    OwnedHeaders::new_with_capacity(3)
                        .insert(Header { key: BATCH_ID_HEADER, value: Some(&part.id) })
                        .insert(Header { key: BATCH_PART_HEADER, value: Some(&index) })
                        .insert(Header { key: BATCH_PARTS_HEADER, value: Some(&count) }),
                );
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
                        let failure = Failure {
                            code: error_code(&error),
                            reason: format!("could not enqueue a record of {} bytes: {error}", payload.len()),
                        };
                        pending.complete(n_records - i, Some(failure));
                        return Delivery { n_records, done: Some(done_rx), deadline };
                    }
                }
            }
        }
        Delivery { n_records, done: Some(done_rx), deadline }
    }

    /// Creates the ingest topic if it is missing and checks that it is as durable as
    /// configured, retrying until it is or `shutdown`. Until then the node is not ready,
    /// and `/ready` says why.
    pub async fn ensure_topic(&self, config: &KafkaConfig, shutdown: &CancellationToken) {
        let spec = TopicSpec::ingest(config);
        let verified = verify_until_ready(config, &spec, shutdown, |reason| {
            let reason = match self.producer.context().recent_errors.describe() {
                Some(recent) => format!("{reason} (recent kafka client errors: {recent})"),
                None => reason,
            };
            *self.topic_state.lock().expect("lock") = Err(reason.clone());
            reason
        })
        .await;
        if let Some(partitions) = verified {
            self.partitions.store(partitions, Ordering::Relaxed);
            *self.topic_state.lock().expect("lock") = Ok(());
            tracing::info!(topic = %config.ingest_topic, partitions, source_shards = self.source_shards, replication_factor = config.replication_factor, min_insync_replicas = config.min_insync_replicas, "ingest topic ready");
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
    done: Option<oneshot::Receiver<Result<(), Failure>>>,
    deadline: tokio::time::Instant,
}

impl Delivery {
    /// Waits until Kafka acknowledged every record (returns how many), or fails: a
    /// failed delivery, or no answer by the deadline set at enqueue time.
    pub async fn acknowledged(self) -> Result<usize, PublishError> {
        let Some(done) = self.done else { return Ok(0) };
        let result = match tokio::time::timeout_at(self.deadline, done).await {
            Ok(Ok(Ok(()))) => Ok(self.n_records),
            Ok(Ok(Err(failure))) => Err(failure.into_error()),
            Ok(Err(_)) => Err(PublishError::Unavailable { code: None, reason: "delivery report channel closed".into() }),
            Err(_) => Err(PublishError::Unavailable { code: None, reason: "timed out waiting for delivery reports".into() }),
        };
        // Counted per request, not in the per-record delivery callback.
        let outcome = match &result {
            Ok(_) => "acked",
            Err(PublishError::Refused { .. }) => "refused",
            Err(_) => "failed",
        };
        metrics::counter!("weir_kafka_records_total", "result" => outcome).increment(self.n_records as u64);
        result
    }
}

/// The client properties every client of this node gets (security, timeouts), and the
/// bootstrap servers.
pub(crate) fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &config.bootstrap_servers);
    client
}

/// An admin client with the same client properties (security, timeouts) as the producer.
/// Has Kafka delete the records of ingest partition `partition` below `before`
/// (DeleteRecords; the partition's log then starts there). Asking again is harmless.
pub async fn delete_ingest_records(config: &KafkaConfig, partition: u32, before: u64) -> Result<(), ClientError> {
    let admin = admin_client(config).map_err(|e| ClientError(KafkaError::ClientCreation(e)))?;
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset(&config.ingest_topic, partition as i32, rdkafka::Offset::Offset(before as i64))?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deleted = admin.delete_records(&offsets, &options).await?;
    deleted.elements().iter().try_for_each(|element| element.error())?;
    Ok(())
}

/// The ingest topic's `retention.ms` now: `None` when records are kept forever (-1).
pub async fn ingest_retention_ms(config: &KafkaConfig) -> Result<Option<u64>, String> {
    let admin = admin_client(config)?;
    let name = &config.ingest_topic;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let described = topic_configs(&admin, name, &options).await?;
    let value = described.get("retention.ms").and_then(|entry| entry.value.clone()).ok_or_else(|| format!("topic {name} reports no retention.ms"))?;
    let ms: i64 = value.parse().map_err(|_| format!("topic {name} has retention.ms={value}, not a number"))?;
    Ok(u64::try_from(ms).ok())
}

/// Topic `name`'s configuration as the brokers describe it.
async fn topic_configs(admin: &AdminClient<DefaultClientContext>, name: &str, options: &AdminOptions) -> Result<rdkafka::admin::ConfigResource, String> {
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], options)
        .await
        .map_err(|e| format!("cannot describe the configuration of topic {name}: {e}"))?;
    configs
        .into_iter()
        .next()
        .ok_or_else(|| format!("no configuration returned for topic {name}"))?
        .map_err(|code| format!("cannot describe the configuration of topic {name}: {code}"))
}

fn admin_client(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, String> {
    client_config(config).create().map_err(|e| e.to_string())
}

/// A topic this node creates when missing and then checks.
pub(crate) struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// The topic must have exactly `partitions` (the Global log is one ordered partition).
    pub exact_partitions: bool,
    /// Topic configs set at creation and required of an existing topic.
    pub configs: Vec<(&'static str, &'static str)>,
}

impl TopicSpec {
    fn ingest(config: &KafkaConfig) -> TopicSpec {
        // Records leave by DeleteRecords below the safe offset (and by retention): a
        // compacted topic would drop records no segment holds yet.
        TopicSpec { name: config.ingest_topic.clone(), partitions: config.partitions, exact_partitions: false, configs: vec![("cleanup.policy", "delete")] }
    }
}

/// Verifies `spec` until it is as configured (its partition count) or `shutdown` (`None`), with jittered
/// backoff. `on_failure` turns each failure into the reason to publish (it may add
/// context and record it for `/ready`); a reason is logged only when it changes, so a
/// topic short of replicas is waited on, not repeated every few seconds.
pub(crate) async fn verify_until_ready(
    config: &KafkaConfig,
    spec: &TopicSpec,
    shutdown: &CancellationToken,
    mut on_failure: impl FnMut(String) -> String,
) -> Option<u32> {
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times(),
    );
    let mut last_reason = String::new();
    loop {
        match verify_topic(config, spec).await {
            Ok(partitions) => return Some(partitions),
            Err(reason) => {
                let reason = on_failure(reason);
                if reason != last_reason {
                    tracing::warn!(topic = %spec.name, %reason, "topic not ready, retrying");
                }
                last_reason = reason;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Creates the topic when missing (replication factor and `min.insync.replicas` from the
/// config), then checks the existing one: a topic made by someone else with fewer
/// replicas would let an ack mean less than the operator asked for. Returns the topic's
/// partition count.
pub(crate) async fn verify_topic(config: &KafkaConfig, spec: &TopicSpec) -> Result<u32, String> {
    let admin = admin_client(config)?;
    let min_isr = config.min_insync_replicas.to_string();
    let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(config.replication_factor))
        .set("min.insync.replicas", &min_isr);
    for (key, value) in &spec.configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5))).operation_timeout(Some(Duration::from_secs(5)));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| format!("cannot reach kafka to create topic {}: {e}", spec.name))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, RDKafkaErrorCode::InvalidReplicationFactor)) => {
                return Err(format!(
                    "cannot create topic {name} with replication factor {}: the cluster has fewer brokers; add brokers or lower kafka.replication_factor (1 only for a single-broker test setup)",
                    config.replication_factor
                ));
            }
            Err((name, code)) => return Err(format!("cannot create topic {name}: {code}")),
        }
    }
    let name = spec.name.clone();
    let metadata = {
        let admin = admin_client(config)?;
        let topic = name.clone();
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&topic), Duration::from_secs(5)))
            .await
            .map_err(|e| format!("metadata task failed: {e}"))?
            .map_err(|e| format!("cannot describe topic {name}: {e}"))?
    };
    // Metadata holds raw pointers (not Send): read what is needed before the next await.
    let (fewest_replicas, partitions) = {
        let described = metadata.topics().iter().find(|t| t.name() == name).ok_or_else(|| format!("topic {name} is not in the cluster's metadata yet"))?;
        if let Some(error) = described.error() {
            return Err(format!("topic {name}: {:?}", RDKafkaErrorCode::from(error)));
        }
        if described.partitions().is_empty() {
            return Err(format!("topic {name} has no partitions yet"));
        }
        if spec.exact_partitions && described.partitions().len() as i32 != spec.partitions {
            return Err(format!(
                "topic {name} has {} partitions, it must have exactly {}: its records must have one order",
                described.partitions().len(),
                spec.partitions
            ));
        }
        if let Some(partition) = described.partitions().iter().find(|p| (p.replicas().len() as i32) < config.replication_factor) {
            return Err(format!(
                "topic {name} partition {} has {} replicas, below kafka.replication_factor {}: increase its replication (kafka-reassign-partitions) or lower the setting",
                partition.id(),
                partition.replicas().len(),
                config.replication_factor
            ));
        }
        (described.partitions().iter().map(|p| p.replicas().len() as i32).min().unwrap_or(0), described.partitions().len() as u32)
    };
    drop(metadata);
    let described = topic_configs(&admin, &name, &options).await?;
    for (key, expected) in &spec.configs {
        let actual = described.get(key).and_then(|entry| entry.value.as_deref());
        if actual != Some(*expected) {
            return Err(format!(
                "topic {name} has {key}={}, it must be {expected} (kafka-configs --alter --add-config {key}={expected})",
                actual.unwrap_or("<unset>")
            ));
        }
    }
    let min_isr = described
        .get("min.insync.replicas")
        .and_then(|entry| entry.value.as_deref())
        .and_then(|value| value.parse::<i32>().ok())
        .ok_or_else(|| format!("topic {name} reports no min.insync.replicas"))?;
    // A broker enforces min(min.insync.replicas, replicas) (Kafka 4), so that is what an
    // ack means.
    let min_isr = min_isr.min(fewest_replicas);
    if min_isr < config.min_insync_replicas {
        return Err(format!(
            "topic {name} has min.insync.replicas={min_isr}, below kafka.min_insync_replicas {}: an ack would survive fewer broker failures than configured; raise it (kafka-configs --alter --add-config min.insync.replicas={}) or lower the setting",
            config.min_insync_replicas, config.min_insync_replicas
        ));
    }
    Ok(partitions)
}

/// Shard `shard` of source `key`: `source_shards` consecutive partitions from one picked by
/// a hash of the key, wrapping around. A fixed hash (CRC-32C), so every core and version
/// maps alike.
fn shard_partition(key: &str, shard: u64, source_shards: u32, partitions: u32) -> i32 {
    let first = u64::from(crc32c::crc32c(key.as_bytes()));
    ((first + shard % u64::from(source_shards.max(1))) % u64::from(partitions.max(1))) as i32
}

#[cfg(test)]
mod tests {
    use super::shard_partition;

    #[test]
    fn a_source_spreads_over_consecutive_partitions_and_a_shard_always_maps_alike() {
        let key = "web\u{1f}host=a";
        let first = shard_partition(key, 0, 4, 8);
        let spread: Vec<i32> = (0..8).map(|seq| shard_partition(key, seq, 4, 8)).collect();
        // Four shards, four consecutive partitions (wrapping), round and round by seq.
        let expected: Vec<i32> = (0..8).map(|seq| (first + seq % 4) % 8).collect();
        assert_eq!(spread, expected);
        // More shards than partitions: every partition, none past the last.
        let all: std::collections::BTreeSet<i32> = (0..100).map(|seq| shard_partition(key, seq, 16, 3)).collect();
        assert_eq!(all, [0, 1, 2].into());
        // One shard: one partition whatever the seq, as before sharding.
        let one: std::collections::BTreeSet<i32> = (0..100).map(|seq| shard_partition(key, seq, 1, 8)).collect();
        assert_eq!(one.len(), 1);
        // The hash is fixed (CRC-32C), so cores of any version agree: a resent batch goes
        // where its first copy went.
        assert_eq!(shard_partition("web", 0, 1, 1 << 20), (crc32c::crc32c(b"web") % (1 << 20)) as i32);
        // Different sources start at different partitions.
        let starts: std::collections::BTreeSet<i32> = (0..64).map(|i| shard_partition(&format!("repo-{i}"), 0, 1, 16)).collect();
        assert!(starts.len() > 8, "{starts:?}");
    }
}

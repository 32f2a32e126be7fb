//! An independent consumer that reads back what the core published (no consumer group,
//! partitions assigned by hand, `read_committed`), and counts of the events it found.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use weir_proto::EventBatch;

use super::admin::{Metadata, topic_partitions};
use super::retry::{KafkaFailure, METADATA_TIMEOUT, retry_transient};

/// Reads `topic` from the beginning up to the high watermarks its partitions had when
/// called, so everything written before is in the result; panics naming the partitions
/// that fell short if that takes longer than `timeout`.
pub fn consume_all(bootstrap: &str, topic: &str, timeout: Duration) -> Vec<Record> {
    let metadata = Metadata::new(bootstrap);
    let layout = metadata
        .topic_layout(topic, METADATA_TIMEOUT)
        .unwrap_or_else(|failure| panic!("{failure}"));
    let high: BTreeMap<i32, i64> = layout
        .iter()
        .map(|p| {
            let high = metadata
                .high_watermark(topic, p.partition, METADATA_TIMEOUT)
                .unwrap_or_else(|failure| panic!("{failure}"));
            (p.partition, high)
        })
        .collect();
    let reached = |records: &[Record]| {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for record in records {
            let entry = next.entry(record.partition).or_insert(0);
            *entry = (*entry).max(record.offset + 1);
        }
        next
    };
    let records = consume_until(bootstrap, topic, timeout, |records| {
        let next = reached(records);
        high.iter().all(|(partition, high)| next.get(partition).copied().unwrap_or(0) >= *high)
    });
    let next = reached(&records);
    let short: Vec<String> = high
        .iter()
        .filter(|(partition, high)| next.get(partition).copied().unwrap_or(0) < **high)
        .map(|(partition, high)| format!("partition {partition}: read up to {:?}, high watermark {high}", next.get(partition)))
        .collect();
    assert!(short.is_empty(), "could not read all of {topic} within {timeout:?}: {}", short.join("; "));
    records
}

/// One record as an independent consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub batch_id: Option<String>,
    /// `(part index, part count)` from the record's headers, when it has them.
    pub part: Option<(u32, u32)>,
    pub batch: EventBatch,
}

/// Reads `topic` from the beginning until `done(records so far)` holds or `timeout`
/// passes; returns everything read.
pub fn consume_until(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    consume_until_with(bootstrap, &[], topic, timeout, done)
}

/// [`consume_until`] by a consumer with extra librdkafka `client_properties` (e.g. SASL
/// credentials from [`super::Broker::client_properties`]).
pub fn consume_until_with(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let mut config = super::client_config(bootstrap);
    for (key, value) in client_properties {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::unique("weir-test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("create consumer");
    // Partitions assigned by hand, from the beginning: a consumer group's join costs
    // seconds on a broker busy with many tests, and nothing here needs a group. Finding
    // them is a metadata question with the harness's patience for those; reading gets
    // `timeout` from then on.
    let what = format!("partitions of {topic} from {bootstrap}");
    let found: Result<Vec<i32>, KafkaFailure> = retry_transient(&what, Instant::now() + timeout.max(METADATA_TIMEOUT), |attempt| {
        let metadata = consumer.fetch_metadata(Some(topic), attempt)?;
        let partitions: Vec<i32> = topic_partitions(&metadata, topic)?.iter().map(|p| p.id()).collect();
        if partitions.is_empty() {
            return Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::error::RDKafkaErrorCode::UnknownPartition));
        }
        Ok(partitions)
    });
    let partitions = match found {
        Ok(partitions) => partitions,
        // Nothing to read yet: the caller's checks say what is missing.
        Err(failure @ KafkaFailure::TimedOut { .. }) => {
            eprintln!("test consumer: {failure}");
            return Vec::new();
        }
        Err(failure) => panic!("test consumer: {failure}"),
    };
    let deadline = Instant::now() + timeout;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).expect("partition offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    while Instant::now() < deadline && !done(&records) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                eprintln!("test consumer: {error}");
                continue;
            }
        };
        let batch: EventBatch = serde_json::from_slice(message.payload().unwrap_or_default())
            .unwrap_or_else(|e| panic!("record at {}:{} is not an EventBatch: {e}", message.partition(), message.offset()));
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers.iter().find(|h| h.key == name).and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
        };
        let batch_id = header(weir_core::kafka::BATCH_ID_HEADER);
        let part = header(weir_core::kafka::BATCH_PART_HEADER)
            .zip(header(weir_core::kafka::BATCH_PARTS_HEADER))
            .map(|(index, count)| (index.parse().expect("numeric part index"), count.parse().expect("numeric part count")));
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            batch_id,
            part,
            batch,
        });
    }
    records
}

/// Raw texts of all events in `records`, with how often each occurs.
pub fn raw_counts<'a>(records: impl IntoIterator<Item = &'a Record>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        for event in &record.batch.events {
            *counts.entry(event.raw.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Like [`raw_counts`], but each forwarded batch part counted once, as the digest stores
/// it: an edge may send a batch twice (same batch id) when its core failed to answer in
/// time, which is delivery, not reading, repeating. Records without a batch id (HTTP to a
/// core) all count.
pub fn first_copy_counts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeSet::new();
    raw_counts(records.iter().filter(|r| r.batch_id.is_none() || seen.insert((r.batch_id.clone(), r.part))))
}

/// Consumes until every raw text in `expected` was seen, then returns the counts. Panics
/// naming up to ten missing events.
pub fn expect_events(bootstrap: &str, topic: &str, expected: &[String], timeout: Duration) -> BTreeMap<String, usize> {
    let records = consume_until(bootstrap, topic, timeout, |records| {
        let counts = raw_counts(records);
        expected.iter().all(|raw| counts.contains_key(raw))
    });
    let counts = raw_counts(&records);
    let missing: Vec<&String> = expected.iter().filter(|raw| !counts.contains_key(*raw)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are not in topic {topic} after {timeout:?}; first missing: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    counts
}

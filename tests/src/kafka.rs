//! Real Kafka brokers for tests, run by `deploy/kafka.sh`, and an independent consumer
//! that reads back what the core published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use weir_proto::EventBatch;

use crate::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("deploy/kafka.sh")
}

fn kafka_sh(args: &[&str]) -> std::process::Output {
    let output = Command::new("bash").arg(script()).args(args).output().expect("run deploy/kafka.sh");
    if !output.status.success() && args[0] != "status" {
        panic!(
            "deploy/kafka.sh {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// The broker most tests share: `WEIR_TEST_KAFKA` if set (CI starts one), otherwise a
/// broker this harness starts under `target/test-kafka` on port 29092 and leaves running
/// for the next test run (`deploy/kafka.sh stop target/test-kafka` stops it).
pub fn shared_bootstrap() -> String {
    static SHARED: Mutex<Option<String>> = Mutex::new(None);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bootstrap) = shared.as_ref() {
        return bootstrap.clone();
    }
    let bootstrap = match std::env::var("WEIR_TEST_KAFKA") {
        Ok(bootstrap) if !bootstrap.is_empty() => bootstrap,
        _ => {
            let dir = workspace_root().join("target/test-kafka");
            let out = kafka_sh(&["start", dir.to_str().unwrap(), "29092"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    *shared = Some(bootstrap.clone());
    bootstrap
}

/// A broker of one test's own, for fault tests that stop or kill it. Killed on drop.
pub struct Broker {
    pub dir: PathBuf,
    pub port: u16,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        // The controller listens on port + 1, so both must be free.
        let port = crate::free_ports(2);
        let broker = Broker { dir: dir.to_owned(), port };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) with the same data: what was acknowledged before is still there.
    pub fn restart(&self) {
        kafka_sh(&["start", self.dir.to_str().unwrap(), &self.port.to_string()]);
    }

    pub fn kill(&self) {
        kafka_sh(&["kill", self.dir.to_str().unwrap()]);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["kill", self.dir.to_str().unwrap()]).output();
    }
}

/// One record as an independent consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub batch_id: Option<String>,
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::unique("weir-test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
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
        let batch_id = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == weir_core::kafka::BATCH_ID_HEADER)
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        });
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            batch_id,
            batch,
        });
    }
    records
}

/// Raw texts of all events in `records`, with how often each occurs.
pub fn raw_counts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        for event in &record.batch.events {
            *counts.entry(event.raw.clone()).or_insert(0) += 1;
        }
    }
    counts
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

//! Real Kafka brokers for tests, run by `deploy/kafka.sh` (one broker, one whose client
//! listener requires SASL, or a cluster of several), topic administration, and an
//! independent consumer that reads back what the core published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use weir_proto::EventBatch;

use crate::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("deploy/kafka.sh")
}

fn kafka_sh(args: &[&str]) -> std::process::Output {
    kafka_sh_env(args, &[])
}

/// [`kafka_sh`] with extra environment variables (named in the panic message, values not).
fn kafka_sh_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run deploy/kafka.sh");
    if !output.status.success() && !args[0].ends_with("status") {
        let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
        panic!(
            "deploy/kafka.sh {} (with {names:?} set) failed ({}):\nstdout: {}\nstderr: {}",
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

/// The broker of a benchmark: `WEIR_BENCH_KAFKA` if set, otherwise one started under
/// `target/bench-kafka` on port 39392 and left running for the next run.
pub fn bench_bootstrap() -> String {
    match std::env::var("WEIR_BENCH_KAFKA") {
        Ok(bootstrap) if !bootstrap.is_empty() => bootstrap,
        _ => {
            let dir = workspace_root().join("target/bench-kafka");
            let out = kafka_sh(&["start", dir.to_str().unwrap(), "39392"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    }
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

/// A SASL mechanism a [`SaslBroker`] requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Users in the broker's JAAS config.
    Plain,
    /// Users' salted credentials in the metadata log, written when the broker's storage is
    /// formatted.
    ScramSha512,
}

impl SaslMechanism {
    /// The name clients give as `sasl.mechanism`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "WEIR_KAFKA_SASL_PLAIN",
            SaslMechanism::ScramSha512 => "WEIR_KAFKA_SASL_SCRAM",
        }
    }

    /// librdkafka properties that log in with this mechanism over `SASL_PLAINTEXT`.
    pub fn client_properties(self, user: &str, password: &str) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", self.name()),
            ("sasl.username", user),
            ("sasl.password", password),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }
}

/// A broker of one test's own whose client listener requires SASL (`deploy/kafka.sh start`
/// with `WEIR_KAFKA_SASL_PLAIN` or `WEIR_KAFKA_SASL_SCRAM`); the controller listener stays
/// PLAINTEXT. Killed on drop.
pub struct SaslBroker {
    pub dir: PathBuf,
    pub port: u16,
    pub mechanism: SaslMechanism,
    /// `(user, password)`; the first is the broker's own identity.
    pub users: Vec<(String, String)>,
}

impl SaslBroker {
    /// Starts it and returns once the script's probe, logged in as the first user, got a
    /// Metadata reply listing the broker.
    pub fn start(dir: &Path, mechanism: SaslMechanism, users: &[(&str, &str)]) -> SaslBroker {
        assert!(!users.is_empty(), "a SASL broker needs at least one user");
        let port = crate::free_ports(2);
        let users = users.iter().map(|(user, password)| ((*user).to_owned(), (*password).to_owned())).collect();
        let broker = SaslBroker { dir: dir.to_owned(), port, mechanism, users };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) with the same data and users.
    pub fn restart(&self) {
        let users: Vec<String> = self.users.iter().map(|(user, password)| format!("{user}:{password}")).collect();
        let users = users.join(",");
        kafka_sh_env(
            &["start", self.dir.to_str().expect("broker dir is UTF-8"), &self.port.to_string()],
            &[(self.mechanism.env_var(), users.as_str())],
        );
    }

    /// Client properties that log in as `user` with `password` (right or wrong).
    pub fn client_properties(&self, user: &str, password: &str) -> Vec<(String, String)> {
        self.mechanism.client_properties(user, password)
    }

    pub fn kill(&self) {
        kafka_sh(&["kill", self.dir.to_str().expect("broker dir is UTF-8")]);
    }

    /// The last `lines` lines of the broker log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.dir.join("logs/server.log");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for SaslBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["kill", self.dir.to_str().unwrap_or_default()]).output();
    }
}

/// Where a [`Cluster`]'s KRaft controllers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// Every node is a broker and a controller (all are voters): with a majority of the
    /// nodes dead there is no controller, so no leader or ISR changes until they return.
    Combined,
    /// The brokers are broker-only; one more node (`brokers + 1`) is the only controller.
    /// Brokers can die down to the last one and the controller still fences them and
    /// shrinks ISRs, so `min.insync.replicas` is what refuses writes.
    Dedicated,
}

/// A KRaft cluster of one test's own (`deploy/kafka.sh cluster-start`), for fault tests that
/// kill and restart single brokers. Brokers have node ids `1..=brokers`. Killed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    /// Node `i` listens on `base_port + 2 (i - 1)`, its controller on the port after.
    pub base_port: u16,
    pub brokers: u16,
    pub quorum: Quorum,
}

impl Cluster {
    /// Starts the cluster and returns once every broker serves and lists all brokers.
    pub fn start(dir: &Path, brokers: u16, quorum: Quorum) -> Cluster {
        let nodes = brokers + u16::from(quorum == Quorum::Dedicated);
        let base_port = crate::free_ports(2 * nodes);
        let cluster = Cluster { dir: dir.to_owned(), base_port, brokers, quorum };
        let mode = match quorum {
            Quorum::Combined => "combined",
            Quorum::Dedicated => "dedicated",
        };
        let out = kafka_sh(&["cluster-start", cluster.dir_str(), &base_port.to_string(), &brokers.to_string(), mode]);
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(printed, cluster.bootstrap(), "deploy/kafka.sh cluster-start printed another bootstrap list");
        cluster
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("cluster dir is UTF-8")
    }

    /// All nodes: the brokers, then the dedicated controller if there is one.
    pub fn nodes(&self) -> u16 {
        self.brokers + u16::from(self.quorum == Quorum::Dedicated)
    }

    fn check(&self, node: u16) {
        assert!((1..=self.nodes()).contains(&node), "node {node} is not in 1..={}", self.nodes());
    }

    /// The client port of broker `node` (1-based).
    pub fn port(&self, node: u16) -> u16 {
        assert!((1..=self.brokers).contains(&node), "broker {node} is not in 1..={}", self.brokers);
        self.base_port + 2 * (node - 1)
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,...`
    pub fn bootstrap(&self) -> String {
        (1..=self.brokers).map(|node| format!("127.0.0.1:{}", self.port(node))).collect::<Vec<_>>().join(",")
    }

    /// SIGKILL to node `node`; returns once its process is gone.
    pub fn kill(&self, node: u16) {
        self.check(node);
        kafka_sh(&["node-kill", self.dir_str(), &node.to_string()]);
    }

    /// Starts node `node` again with its data; returns once it serves as a registered
    /// broker (a controller: once it listens).
    pub fn restart(&self, node: u16) {
        self.check(node);
        kafka_sh(&["node-start", self.dir_str(), &node.to_string()]);
    }

    /// Stops every node (SIGTERM, then SIGKILL after the script's timeout).
    pub fn stop(&self) {
        kafka_sh(&["cluster-stop", self.dir_str()]);
    }

    /// The last `lines` lines of node `node`'s broker log, for failure messages.
    pub fn log_tail(&self, node: u16, lines: usize) -> String {
        self.check(node);
        let path = self.dir.join(format!("node-{node}/logs/server.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["cluster-kill", self.dir_str()]).output();
    }
}

/// Creates `topic` with topic-level `configs` (e.g. `min.insync.replicas`); panics with
/// Kafka's answer if that fails.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, replication: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("create admin client");
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .unwrap_or_else(|e| panic!("create topic {topic} ({partitions} partitions, replication {replication}, {configs:?}) on {bootstrap}: {e}"));
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name} ({partitions} partitions, replication {replication}, {configs:?}) on {bootstrap}: {code}");
        }
    }
}

/// Sets topic-level `configs` of `topic` with the AlterConfigs admin API (not incremental:
/// the topic's other overrides go back to the broker defaults); panics with Kafka's answer
/// if that fails.
pub async fn alter_topic_config(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("create admin client");
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in configs {
        alter = alter.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .alter_configs([&alter], &options)
        .await
        .unwrap_or_else(|e| panic!("alter configs {configs:?} of topic {topic} on {bootstrap}: {e}"));
    for result in results {
        if let Err((resource, code)) = result {
            panic!("alter configs {configs:?} of {resource:?} on {bootstrap}: {code}");
        }
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

/// A client for metadata questions. Keep one for repeated questions: a fresh client per
/// question reconnects to every broker, and logs each dead one, every time.
pub struct Metadata(BaseConsumer);

impl Metadata {
    pub fn new(bootstrap: &str) -> Metadata {
        Metadata(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("group.id", crate::unique("weir-test-metadata"))
                .create()
                .expect("create metadata client"),
        )
    }

    /// Leaders, replicas and in-sync replicas of `topic`'s partitions, from whichever
    /// broker answers first, or why there are none.
    pub fn topic_layout(&self, topic: &str, timeout: Duration) -> Result<Vec<PartitionLayout>, String> {
        let metadata = self.0.fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
        let topic_metadata = metadata.topics().iter().find(|t| t.name() == topic).ok_or("topic not in the metadata")?;
        if let Some(error) = topic_metadata.error() {
            return Err(format!("topic error {error:?}"));
        }
        let mut layout: Vec<PartitionLayout> = topic_metadata
            .partitions()
            .iter()
            .map(|p| PartitionLayout {
                partition: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
            })
            .collect();
        layout.sort_by_key(|p| p.partition);
        Ok(layout)
    }

    /// The high watermark (offset after the last committed record) of one partition.
    /// Transient answers (a leader moving or not elected yet, as right after a topic was
    /// created) are asked again until `timeout`.
    pub fn high_watermark(&self, topic: &str, partition: i32, timeout: Duration) -> Result<i64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Each attempt is short, so a request the broker dropped is asked again.
            let left = deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(500), Duration::from_secs(5));
            match self.0.fetch_watermarks(topic, partition, left) {
                Ok((_, high)) => return Ok(high),
                Err(error) if Instant::now() + Duration::from_millis(200) < deadline => {
                    tracing::debug!(%error, topic, partition, "watermarks not available yet, asking again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}

/// How long the harness waits for a metadata answer: a loaded two-core CI machine has
/// stalled the broker's answer for over 10 s (seen once, a timeout in `consume_all`).
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// [`Metadata::topic_layout`] with a client of its own.
pub fn topic_layout(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<PartitionLayout>, String> {
    Metadata::new(bootstrap).topic_layout(topic, timeout)
}

/// Reads `topic` from the beginning up to the high watermarks its partitions had when
/// called, so everything written before is in the result; panics naming the partitions
/// that fell short if that takes longer than `timeout`.
pub fn consume_all(bootstrap: &str, topic: &str, timeout: Duration) -> Vec<Record> {
    let metadata = Metadata::new(bootstrap);
    let layout = metadata
        .topic_layout(topic, METADATA_TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata of {topic} from {bootstrap}: {e}"));
    let high: BTreeMap<i32, i64> = layout
        .iter()
        .map(|p| {
            let high = metadata
                .high_watermark(topic, p.partition, METADATA_TIMEOUT)
                .unwrap_or_else(|e| panic!("high watermark of {topic}/{} from {bootstrap}: {e}", p.partition));
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
/// credentials from [`SaslMechanism::client_properties`]).
pub fn consume_until_with(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let mut config = ClientConfig::new();
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
    // seconds on a broker busy with many tests, and nothing here needs a group.
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>()))
            .filter(|p| !p.is_empty());
        match found {
            Some(partitions) => break partitions,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => return Vec::new(),
        }
    };
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

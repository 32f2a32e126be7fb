//! Core and edge nodes for tests: config files, and real processes (the `weir-core` and
//! `weir-edge` binaries) that can be killed with SIGKILL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "test-token";
pub const REPOSITORY: &str = "test-repo";
/// A read token of every core under test (`[[read_tokens]]`, all repositories).
pub const READ_TOKEN: &str = "test-read-token";

/// Settings of a core under test.
#[derive(Debug, Clone)]
pub struct CoreSpec {
    pub node_id: String,
    pub http_port: u16,
    pub quic_port: u16,
    pub bootstrap: String,
    pub topic: String,
    pub certs: PathBuf,
    pub ack_timeout_ms: u64,
    /// Largest decompressed batch accepted from an edge (`quic.max_batch_bytes`).
    pub max_batch_bytes: usize,
    /// `ingest.max_body_bytes` and `ingest.max_event_bytes`.
    pub max_body_bytes: usize,
    pub max_event_bytes: usize,
    /// What the core requires of its topic (1 and 1 fit the shared single broker).
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    /// The Global topic (`kafka.global_topic`): unique per spec, so tests do not share
    /// their Global state; cores of one cluster under test share a spec's topic.
    pub global_topic: String,
    /// `data_dir` (the Global snapshot, segments): `<certs>/../<node_id>-data` unless set.
    pub data_dir: PathBuf,
    /// `digest.flush_interval_ms`: short, so tests see segments soon.
    pub digest_flush_ms: u64,
    /// `digest.node_timeout_ms` (heartbeats are every 300 ms in tests).
    pub node_timeout_ms: u64,
    /// `digest.enabled`: false makes an ingest-only core.
    pub digest: bool,
    /// `kafka.source_shards` (1: each source in one partition, in order).
    pub source_shards: u32,
    /// Appended to the config: whole tables such as `[parsers]` (tests that append keys
    /// to `[kafka]` rely on it being the last table otherwise).
    pub extra_toml: String,
    /// `storage.replication_factor`: 1 (no replication) unless a test is about replicas.
    pub storage_copies: u32,
    /// `storage.mode`: `local` unless a test is about the bucket (then `extra_toml` has
    /// its `[bucket]`).
    pub storage_mode: &'static str,
    /// `truncation.enabled`: off unless a test is about truncation (others read Kafka).
    pub truncation: bool,
    /// `storage.scrub_interval_ms`, if a test is about the scrub (else the default: hours).
    pub scrub_interval_ms: Option<u64>,
}

impl CoreSpec {
    pub fn new(node_id: &str, bootstrap: &str, topic: &str, certs: &Path) -> CoreSpec {
        CoreSpec {
            node_id: node_id.into(),
            http_port: crate::free_port(),
            quic_port: crate::free_port(),
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            certs: certs.to_owned(),
            ack_timeout_ms: 5_000,
            max_batch_bytes: 64 << 20,
            max_body_bytes: 1 << 20,
            max_event_bytes: 512 << 10,
            replication_factor: 1,
            min_insync_replicas: 1,
            global_topic: crate::unique("weir-test-global"),
            data_dir: certs.parent().unwrap_or(certs).join(format!("{node_id}-data")),
            digest_flush_ms: 500,
            node_timeout_ms: 3_000,
            digest: true,
            source_shards: 4,
            extra_toml: String::new(),
            storage_copies: 1,
            storage_mode: "local",
            truncation: false,
            scrub_interval_ms: None,
        }
    }

    /// `core-1` and `core-2` of one cluster (one Global topic) on `topic`.
    pub fn pair(bootstrap: &str, topic: &str, certs: &Path) -> [CoreSpec; 2] {
        let one = CoreSpec::new("core-1", bootstrap, topic, certs);
        let mut two = CoreSpec::new("core-2", bootstrap, topic, certs);
        two.global_topic = one.global_topic.clone();
        [one, two]
    }

    pub fn quic_addr(&self) -> String {
        format!("127.0.0.1:{}", self.quic_port)
    }

    pub fn toml(&self) -> String {
        let certs = self.certs.display();
        format!(
            r#"version = 1
node_id = "{node_id}"
data_dir = "{data_dir}"

[http]
listen = "127.0.0.1:{http_port}"

[ingest]
max_body_bytes = {max_body_bytes}
max_event_bytes = {max_event_bytes}
tokens = [{{ token = "{TOKEN}", repository = "{REPOSITORY}" }}]

[quic]
listen = "127.0.0.1:{quic_port}"
tls = {{ cert = "{certs}/{node_id}.pem", key = "{certs}/{node_id}.key", ca = "{certs}/ca.pem" }}
max_batch_bytes = {max_batch_bytes}

[[read_tokens]]
token = "{READ_TOKEN}"
repositories = ["*"]

[global]
heartbeat_interval_ms = 300

[digest]
enabled = {digest}
flush_interval_ms = {digest_flush_ms}
node_timeout_ms = {node_timeout_ms}
assign_interval_ms = 200
redigest_after_ms = 1000

[storage]
mode = "{storage_mode}"
replication_factor = {storage_copies}
{scrub}

[replication]
interval_ms = 300

[truncation]
enabled = {truncation}
interval_ms = 500

# Last: tests append [kafka] keys to it (extra_toml).
[kafka]
bootstrap_servers = "{bootstrap}"
ingest_topic = "{topic}"
global_topic = "{global_topic}"
partitions = 2
source_shards = {source_shards}
replication_factor = {replication_factor}
min_insync_replicas = {min_insync_replicas}
ack_timeout_ms = {ack_timeout_ms}
"#,
            node_id = self.node_id,
            http_port = self.http_port,
            quic_port = self.quic_port,
            bootstrap = self.bootstrap,
            topic = self.topic,
            ack_timeout_ms = self.ack_timeout_ms,
            max_batch_bytes = self.max_batch_bytes,
            max_body_bytes = self.max_body_bytes,
            max_event_bytes = self.max_event_bytes,
            replication_factor = self.replication_factor,
            min_insync_replicas = self.min_insync_replicas,
            data_dir = self.data_dir.display(),
            global_topic = self.global_topic,
            digest_flush_ms = self.digest_flush_ms,
            node_timeout_ms = self.node_timeout_ms,
            digest = self.digest,
            source_shards = self.source_shards,
            storage_copies = self.storage_copies,
            storage_mode = self.storage_mode,
            truncation = self.truncation,
            scrub = self.scrub_interval_ms.map(|ms| format!("scrub_interval_ms = {ms}")).unwrap_or_default(),
        ) + &self.extra_toml
    }

    /// Writes the config and loads it the way the binary does.
    pub fn config(&self, dir: &Path) -> weir_core::config::CoreConfig {
        let path = dir.join(format!("{}.toml", self.node_id));
        std::fs::write(&path, self.toml()).expect("write core config");
        weir_core::config::CoreConfig::load(&path).expect("load core config")
    }
}

/// Settings of an edge under test.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    pub edge_id: String,
    pub http_port: u16,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_segment_bytes: u64,
    pub cores: Vec<String>,
    pub certs: PathBuf,
    /// Certificate name the edge presents (`edge-1` is signed by the test CA).
    pub cert_name: String,
    pub ack_mode: &'static str,
    /// Syslog input on these (UDP, TCP) ports, if any.
    pub syslog_ports: Option<(u16, u16)>,
    /// `ingest.max_event_bytes`.
    pub max_event_bytes: usize,
    /// `forward.max_in_flight`; the edge's default when `None`.
    pub max_in_flight: Option<usize>,
    /// `syslog.batch_max_events`; the edge's default when `None`.
    pub syslog_batch_max_events: Option<usize>,
}

impl EdgeSpec {
    pub fn new(dir: &Path, cores: Vec<String>, certs: &Path) -> EdgeSpec {
        EdgeSpec {
            edge_id: "edge-1".into(),
            http_port: crate::free_port(),
            spool_dir: dir.join("spool"),
            spool_max_bytes: 256 * 1024 * 1024,
            spool_segment_bytes: 8 * 1024 * 1024,
            cores,
            certs: certs.to_owned(),
            cert_name: "edge-1".into(),
            ack_mode: "spool",
            syslog_ports: None,
            max_event_bytes: 512 << 10,
            max_in_flight: None,
            syslog_batch_max_events: None,
        }
    }

    pub fn toml(&self) -> String {
        let certs = self.certs.display();
        let cores: Vec<String> = self.cores.iter().map(|c| format!("\"{c}\"")).collect();
        let syslog = self.syslog_ports.map_or(String::new(), |(udp, tcp)| {
            let batch = self.syslog_batch_max_events.map_or(String::new(), |n| format!("batch_max_events = {n}\n"));
            format!(
                "\n[syslog]\nudp_listen = \"127.0.0.1:{udp}\"\ntcp_listen = \"127.0.0.1:{tcp}\"\nrepository = \"{REPOSITORY}\"\nparser = \"syslog\"\nbatch_max_delay_ms = 20\n{batch}"
            )
        });
        let config = format!(
            r#"version = 1
edge_id = "{edge_id}"
ack_mode = "{ack_mode}"
core_ack_timeout_ms = 20000

[http]
listen = "127.0.0.1:{http_port}"

[ingest]
max_event_bytes = {max_event_bytes}
tokens = [{{ token = "{TOKEN}", repository = "{REPOSITORY}" }}]

[spool]
dir = "{spool_dir}"
max_bytes = {max_bytes}
segment_bytes = {segment_bytes}

[forward]
cores = [{cores}]
tls = {{ cert = "{certs}/{cert_name}.pem", key = "{certs}/{cert_name}.key", ca = "{certs}/ca.pem" }}
connect_timeout_ms = 1000
ack_timeout_ms = 10000
idle_timeout_ms = 3000
backoff_initial_ms = 50
backoff_max_ms = 500
{max_in_flight}"#,
            edge_id = self.edge_id,
            ack_mode = self.ack_mode,
            http_port = self.http_port,
            spool_dir = self.spool_dir.display(),
            max_bytes = self.spool_max_bytes,
            segment_bytes = self.spool_segment_bytes,
            cores = cores.join(", "),
            cert_name = self.cert_name,
            max_event_bytes = self.max_event_bytes,
            max_in_flight = self.max_in_flight.map_or(String::new(), |n| format!("max_in_flight = {n}\n")),
        );
        config + &syslog
    }
}

/// Where cargo put the binaries (`cargo build --bins` must have run).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` before the tests", path.display());
    path
}

/// A running node process. Killed with SIGKILL on drop.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `binary run --config <dir>/<name>.toml`, logging to `<dir>/<name>.log`, and
    /// waits until its `/health` answers.
    pub async fn spawn(binary_name: &str, name: &str, config_toml: &str, http_port: u16, dir: &Path) -> Node {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_toml).expect("write node config");
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("open node log");
        let child = Command::new(binary(binary_name))
            .args(["run", "--config"])
            .arg(&config)
            .env("WEIR_LOG", "info")
            .env_remove("WEIR_CONFIG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn node");
        let mut node = Node { name: name.into(), http: SocketAddr::from(([127, 0, 0, 1], http_port)), child, log };
        node.wait_healthy().await;
        node
    }

    async fn wait_healthy(&mut self) {
        let url = format!("http://{}/health", self.http);
        let client = crate::http();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} at start:\n{}", self.name, self.log_tail());
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not become healthy:\n{}", self.name, self.log_tail());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/<pid>/status` in KiB (e.g. `VmRSS`, `VmHWM`: the peak RSS).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit; its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for node") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "{} did not exit within {timeout:?} of SIGTERM:\n{}", self.name, self.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `weir-core` process for `spec`, once its `/ready` answers 200 (its topic verified).
pub async fn core_process(spec: &CoreSpec, dir: &Path) -> Node {
    let node = Node::spawn("weir-core", &spec.node_id, &spec.toml(), spec.http_port, dir).await;
    let client = crate::http();
    let url = node.url("/ready");
    crate::eventually(&format!("{} ready", spec.node_id), Duration::from_secs(30), || {
        let request = client.get(&url);
        async move { request.send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    node
}

/// A `weir-edge` process for `spec`, once its `/health` answers.
pub async fn edge_process(spec: &EdgeSpec, dir: &Path) -> Node {
    Node::spawn("weir-edge", &spec.edge_id, &spec.toml(), spec.http_port, dir).await
}

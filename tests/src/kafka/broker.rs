//! Kafka brokers run by `deploy/kafka.sh`: the broker most tests share, a broker of one
//! test's own (plain, or requiring SASL on its client listener) that fault tests kill and
//! restart, and a KRaft cluster whose brokers die one by one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

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

/// `deploy/kafka.sh VERB DIR` from a `Drop`: never panics (a drop during a panic would
/// abort), and a broker already gone is fine.
fn kafka_sh_quietly(verb: &str, dir: &Path) {
    let _ = Command::new("bash").arg(script()).arg(verb).arg(dir).output();
}

/// The last `lines` lines of the broker log at `path`, for failure messages.
fn log_tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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

/// A SASL mechanism a [`Broker`] can require.
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

/// What a [`Broker`]'s client listener requires (the controller listener stays PLAINTEXT).
#[derive(Debug, Clone)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    /// `(user, password)`; the first is the broker's own identity.
    pub users: Vec<(String, String)>,
}

/// A single-node broker of one test's own, for fault tests that kill and restart it, with
/// a PLAINTEXT client listener or one that requires SASL. Killed on drop.
pub struct Broker {
    pub dir: PathBuf,
    pub port: u16,
    /// `None`: PLAINTEXT.
    pub sasl: Option<Sasl>,
}

impl Broker {
    /// Starts a PLAINTEXT broker; returns once it serves.
    pub fn start(dir: &Path) -> Broker {
        Broker::start_with(dir, None)
    }

    /// Starts a broker whose client listener requires `mechanism` (`deploy/kafka.sh start`
    /// with `WEIR_KAFKA_SASL_PLAIN` or `WEIR_KAFKA_SASL_SCRAM`); returns once the script's
    /// probe, logged in as the first user, got a Metadata reply listing the broker.
    pub fn start_sasl(dir: &Path, mechanism: SaslMechanism, users: &[(&str, &str)]) -> Broker {
        assert!(!users.is_empty(), "a SASL broker needs at least one user");
        let users = users.iter().map(|(user, password)| ((*user).to_owned(), (*password).to_owned())).collect();
        Broker::start_with(dir, Some(Sasl { mechanism, users }))
    }

    fn start_with(dir: &Path, sasl: Option<Sasl>) -> Broker {
        // The controller listens on port + 1, so both must be free.
        let port = crate::free_ports(2);
        let broker = Broker { dir: dir.to_owned(), port, sasl };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("broker dir is UTF-8")
    }

    /// Starts (again) with the same data (and users): what was acknowledged before is
    /// still there.
    pub fn restart(&self) {
        let port = self.port.to_string();
        let args = ["start", self.dir_str(), port.as_str()];
        match &self.sasl {
            None => kafka_sh(&args),
            Some(sasl) => {
                let users: Vec<String> = sasl.users.iter().map(|(user, password)| format!("{user}:{password}")).collect();
                kafka_sh_env(&args, &[(sasl.mechanism.env_var(), users.join(",").as_str())])
            }
        };
    }

    /// SIGKILL; returns once the process is gone.
    pub fn kill(&self) {
        kafka_sh(&["kill", self.dir_str()]);
    }

    /// Client properties that log in as `user` with `password` (right or wrong); panics on
    /// a PLAINTEXT broker, which has no users.
    pub fn client_properties(&self, user: &str, password: &str) -> Vec<(String, String)> {
        let sasl = self.sasl.as_ref().unwrap_or_else(|| panic!("the broker in {} requires no SASL login", self.dir.display()));
        sasl.mechanism.client_properties(user, password)
    }

    /// The last `lines` lines of the broker log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail_of(&self.dir.join("logs/server.log"), lines)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        kafka_sh_quietly("kill", &self.dir);
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
        log_tail_of(&self.dir.join(format!("node-{node}/logs/server.log")), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        kafka_sh_quietly("cluster-kill", &self.dir);
    }
}

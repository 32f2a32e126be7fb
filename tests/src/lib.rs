//! Shared helpers for Weir's integration tests (the `it` binary, `tests/it/`) and
//! benchmarks: real Apache Kafka brokers (through `deploy/kafka.sh`) and questions to them
//! that ask again on Kafka's transient answers, real core and edge processes that can be
//! killed, their operator commands, the check of what the digest stored, dev certificates,
//! an independent Kafka consumer, polling with deadlines, which tests may run side by
//! side, a real S3 server (versitygw through `deploy/s3.sh`) with a fault-injecting
//! proxy to put in front of it, and a real headless browser (`browser`: Chromium over
//! WebDriver, `deploy/chromium.sh`).
//!
//! Every test gets its own directory, topic and ports. On failure, helpers panic with the
//! command, the directory and the tail of the logs involved.

pub mod browser;
pub mod cli;
pub mod gate;
pub mod kafka;
pub mod nodes;
pub mod s3;
pub mod stored;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// A unique, readable name: `prefix-<pid>-<counter>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A free loopback port for both TCP and UDP (HTTP and QUIC of one node may share it).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive loopback ports that are free for TCP and UDP (a Kafka
/// broker's controller listens on its port + 1).
///
/// Ports come from 20000–28999, below the kernel's ephemeral range (32768–60999 by
/// default), so no client socket (reqwest's, rdkafka's, an edge's QUIC endpoint) can be
/// handed a port between the moment a test picks it and the moment its node binds it:
/// a port picked from the ephemeral range lost that race in CI. Each test process walks
/// the range from its own offset and never hands out a port twice, so tests running in
/// parallel do not collide either.
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const LEN: u32 = 9_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, (std::process::id() * 97) % LEN, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..LEN {
        let offset = NEXT.fetch_add(u32::from(n), Ordering::Relaxed) % LEN;
        if offset + u32::from(n) > LEN {
            continue;
        }
        let first = (FIRST + offset) as u16;
        let free = (first..first + n).all(|port| {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        });
        if free {
            return first;
        }
    }
    panic!("no {n} consecutive free loopback ports in {FIRST}-{}", FIRST + LEN - 1);
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs of the code under test go to the test's stderr (shown on failure).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

/// Dev certificates (CA, `core-1`, `core-2`, `edge-1`) in `dir`.
pub fn certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    weir_core::certs::generate(
        &certs,
        &[
            ("core-1".into(), weir_core::certs::Role::Core),
            ("core-2".into(), weir_core::certs::Role::Core),
            ("edge-1".into(), weir_core::certs::Role::Edge),
        ],
    )
    .expect("generate certificates");
    certs
}

/// The value of metric `name` whose labels include `labels`, from Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        let has = |(k, v): &(&str, &str)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\""));
        (series_name == name && labels.iter().all(has)).then(|| value.parse().ok()).flatten()
    })
}

/// The sum of every series of metric `name` in a Prometheus text `text`, whatever its
/// labels (0 when there is none).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` of a node.
pub async fn scrape(base_url: &str) -> String {
    let response = http().get(format!("{base_url}/metrics")).send().await.expect("scrape /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics text")
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (Linux; 0
/// elsewhere): what the benchmarks divide by their events. Clock ticks are 100 per second
/// on every Linux this runs on.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// An HTTP client for the ingest API.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client")
}

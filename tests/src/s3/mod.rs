//! Real S3 for tests: versitygw (an S3 gateway over a directory) run by `deploy/s3.sh`, the
//! server most tests share or one of a test's own that fault tests kill, the fixed test
//! credentials, an `aws-sdk-s3` client set up the way Weir talks to a bucket (path-style,
//! static credentials, rustls on ring), unique buckets, and a fault-injecting proxy
//! ([`proxy`]) to put between a client and the server.
//!
//! Environment, set by `tests/run.sh` (each optional here): `WEIR_TEST_S3` (the shared
//! server's endpoint, `http://127.0.0.1:PORT`; without it the harness starts one),
//! `WEIR_TEST_S3_ACCESS_KEY`, `WEIR_TEST_S3_SECRET_KEY`, `WEIR_TEST_S3_REGION` (default: the
//! fixed test credentials `deploy/s3.sh` starts the server with).

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::workspace_root;

pub use proxy::{Fault, On, Rule, S3Proxy, Seen};

fn script() -> PathBuf {
    workspace_root().join("deploy/s3.sh")
}

fn s3_sh(args: &[&str]) -> std::process::Output {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run deploy/s3.sh");
    if !output.status.success() && args[0] != "status" {
        panic!(
            "deploy/s3.sh {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// The keys a client signs with (SigV4) and the region it signs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Credentials {
    /// `WEIR_TEST_S3_ACCESS_KEY`, `WEIR_TEST_S3_SECRET_KEY` and `WEIR_TEST_S3_REGION`, each
    /// defaulting to the value `deploy/s3.sh` starts its server with.
    pub fn from_env() -> Credentials {
        let var = |name: &str, default: &str| match std::env::var(name) {
            Ok(value) if !value.is_empty() => value,
            _ => default.to_owned(),
        };
        Credentials {
            access_key: var("WEIR_TEST_S3_ACCESS_KEY", "weir-test-access-key"),
            secret_key: var("WEIR_TEST_S3_SECRET_KEY", "weir-test-secret-key"),
            region: var("WEIR_TEST_S3_REGION", "us-east-1"),
        }
    }
}

/// The server most tests share: `WEIR_TEST_S3` if set (`tests/run.sh` starts one),
/// otherwise a server this harness starts under `target/test-s3` on port 29096 and leaves
/// running for the next test run (`deploy/s3.sh stop target/test-s3` stops it).
pub fn shared_endpoint() -> String {
    static SHARED: Mutex<Option<String>> = Mutex::new(None);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(endpoint) = shared.as_ref() {
        return endpoint.clone();
    }
    let endpoint = match std::env::var("WEIR_TEST_S3") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => {
            let dir = workspace_root().join("target/test-s3");
            let out = s3_sh(&["start", dir.to_str().unwrap(), "29096"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    *shared = Some(endpoint.clone());
    endpoint
}

/// A versitygw of one test's own, for fault tests that kill and restart it (the buckets
/// under `dir/data` stay). Killed on drop.
pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts the server on a free port; returns once it answers HTTP.
    pub fn start(dir: &Path) -> Server {
        let server = Server {
            dir: dir.to_owned(),
            port: crate::free_port(),
        };
        server.restart();
        server
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("server dir is UTF-8")
    }

    /// Starts (again) with the same buckets and objects.
    pub fn restart(&self) {
        let out = s3_sh(&["start", self.dir_str(), &self.port.to_string()]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            self.endpoint(),
            "deploy/s3.sh start printed another endpoint"
        );
    }

    /// SIGKILL; returns once the process is gone.
    pub fn kill(&self) {
        s3_sh(&["kill", self.dir_str()]);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never panics (a drop during a panic would abort); a server already gone is fine.
        let _ = Command::new("bash")
            .arg(script())
            .arg("kill")
            .arg(&self.dir)
            .output();
    }
}

/// The client config Weir's tests start from: `endpoint`, path-style addressing, the test
/// credentials, behaviour version latest (standard retries: 3 attempts with jittered
/// backoff; request checksums when an operation supports them, CRC32 unless the request
/// names an algorithm), a 5 s connect and 30 s attempt timeout, and a hyper 1 client with
/// rustls on ring. Change retries, timeouts or checksums on the builder.
pub fn client_config(endpoint: &str) -> aws_sdk_s3::config::Builder {
    let credentials = Credentials::from_env();
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .region(Region::new(credentials.region.clone()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            credentials.access_key,
            credentials.secret_key,
            None,
            None,
            "weir-tests",
        ))
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .http_client(http_client)
}

/// A client of the server at `endpoint` with [`client_config`].
pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(client_config(endpoint).build())
}

/// A unique, valid bucket name (3-63 characters of `a-z`, `0-9` and `-`): `prefix` made
/// lowercase, then [`crate::unique`]'s process id, counter and nanoseconds.
pub fn bucket_name(prefix: &str) -> String {
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    let name = crate::unique(prefix.trim_matches('-'));
    let name = name.trim_start_matches('-');
    assert!(
        (3..=63).contains(&name.len()),
        "bucket name {name:?} is not 3-63 characters"
    );
    name.to_owned()
}

/// Creates bucket `name` on the shared server ([`shared_endpoint`]).
pub async fn create_bucket(name: &str) {
    create_bucket_at(&shared_endpoint(), name).await;
}

/// Creates bucket `name` on the server at `endpoint`; panics with the server's answer if
/// it refuses.
pub async fn create_bucket_at(endpoint: &str, name: &str) {
    if let Err(error) = client(endpoint).create_bucket().bucket(name).send().await {
        panic!(
            "create bucket {name} at {endpoint}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&error)
        );
    }
}

/// A new bucket of the shared server with a [`bucket_name`] from `prefix`; returns its name.
pub async fn unique_bucket(prefix: &str) -> String {
    let name = bucket_name(prefix);
    create_bucket(&name).await;
    name
}

/// A file `<id>.parquet` in `dir` of `len` pseudo-random bytes (from `seed`, xorshift), and
/// a segment that says it is that file: what an upload test or benchmark sends.
pub fn segment_file(dir: &Path, id: &str, len: usize, seed: u64) -> (PathBuf, weir_global::SegmentInfo) {
    let mut state = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = dir.join(format!("{id}.parquet"));
    std::fs::write(&path, &bytes).expect("write the segment file");
    let info = weir_global::SegmentInfo {
        segment_id: id.to_owned(),
        partition: 0,
        offset_start: 0,
        offset_end: 1,
        n_events: 1,
        repositories: vec![crate::nodes::REPOSITORY.into()],
        min_ts_ms: 0,
        max_ts_ms: 0,
        bytes: len as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
    };
    (path, info)
}

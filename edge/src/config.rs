//! The edge node's configuration (`weir-edge run --config FILE`). See
//! `deploy/edge.example.toml` for every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_http_ingest::{AckMode, HttpIngestConfig};
use weir_node::config::ConfigError;
use weir_node::tls::TlsFiles;

use crate::files::FilesConfig;
use crate::spool::SpoolConfig;
use crate::syslog::SyslogConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Config format version; must be 1.
    pub version: u32,
    /// Unique per edge: with the spool sequence it forms the batch id cores see.
    #[serde(default = "default_edge_id")]
    pub edge_id: String,
    /// When a client's request is answered: `spool` (fsync'd here) or `core` (in Kafka).
    /// A client may choose per request with the `x-weir-ack` header.
    #[serde(default = "default_ack_mode")]
    pub ack_mode: AckMode,
    /// In `core` ack mode, how long a request waits for the core's ack before it is
    /// answered 503 (the batch stays spooled and is still forwarded).
    #[serde(default = "default_core_ack_timeout_ms")]
    pub core_ack_timeout_ms: u64,
    pub http: HttpConfig,
    #[serde(default)]
    pub ingest: HttpIngestConfig,
    pub spool: SpoolConfig,
    pub forward: ForwardConfig,
    /// Syslog input (UDP and/or TCP); absent: none.
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
    /// File inputs, one per `[[files]]` section; none by default.
    #[serde(default)]
    pub files: Vec<FilesConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes held at once by HTTP request bodies (after inflation, with what decoding
    /// them builds); beyond it requests get 429 at once.
    #[serde(default = "default_in_flight_bytes")]
    pub in_flight_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { in_flight_bytes: default_in_flight_bytes() }
    }
}

fn default_in_flight_bytes() -> usize {
    256 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Core nodes; the edge uses any reachable one. Each is `"host:port"` (its
    /// certificate checked against `server_name`) or `{ addr = "host:port", name = "core-2" }`
    /// (checked against its own name).
    pub cores: Vec<CoreAddress>,
    /// Name a core's certificate is checked against when its entry names none.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    pub tls: TlsFiles,
    /// Batches sent to a core before the first of them is acknowledged.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A batch without an answer after this long counts as failed; the link is dropped
    /// and the batch re-sent, possibly to another core.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// A silent link is declared dead after this long (keep-alives run at a third of it).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Times one batch the core could not take yet (Kafka did not acknowledge) is sent
    /// again on the same link, after a jittered backoff, before the edge fails over.
    #[serde(default = "default_retries_per_link")]
    pub retries_per_link: u32,
    /// Where batches a core refused as unacceptable go (see `dead_letter`); default
    /// `<spool.dir>/dead-letter`.
    #[serde(default)]
    pub dead_letter_dir: Option<PathBuf>,
}

/// One core in `forward.cores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreAddress {
    pub addr: String,
    /// The name its certificate must carry; `None`: `forward.server_name`.
    pub name: Option<String>,
}

impl<'de> Deserialize<'de> for CoreAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            addr: String,
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a core as \"host:port\" or { addr = \"host:port\", name = \"certificate name\" }")]
        enum Entry {
            Addr(String),
            Named(Named),
        }
        Ok(match Entry::deserialize(deserializer)? {
            Entry::Addr(addr) => CoreAddress { addr, name: None },
            Entry::Named(Named { addr, name }) => CoreAddress { addr, name: Some(name) },
        })
    }
}

impl std::fmt::Display for CoreAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

fn default_edge_id() -> String {
    "edge-1".into()
}
fn default_ack_mode() -> AckMode {
    AckMode::Spool
}
fn default_core_ack_timeout_ms() -> u64 {
    30_000
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_max_in_flight() -> usize {
    8
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_ack_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    6_000
}
fn default_backoff_initial_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    5_000
}
fn default_retries_per_link() -> u32 {
    3
}

impl EdgeConfig {
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let config: EdgeConfig = weir_node::config::load(path, &["edge_id", "ack_mode", "core_ack_timeout_ms"])?;
        let max_streams = weir_proto::wire::MAX_STREAMS_PER_CONNECTION as usize;
        if !(1..=max_streams).contains(&config.forward.max_in_flight) {
            return Err(ConfigError::Value {
                key: "forward.max_in_flight",
                reason: format!(
                    "{} is outside 1..={max_streams} (a core accepts {max_streams} batches in flight per edge)",
                    config.forward.max_in_flight
                ),
            });
        }
        crate::files::validate(&config.files, config.ingest.max_event_bytes, config.spool.segment_bytes)?;
        Ok(config)
    }

    pub fn dead_letter_dir(&self) -> PathBuf {
        self.forward.dead_letter_dir.clone().unwrap_or_else(|| self.spool.dir.join(crate::spool::DEAD_LETTER_DIR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.example.toml");
        let config = EdgeConfig::load(&path).unwrap();
        assert_eq!(config.forward.max_in_flight, default_max_in_flight());
        assert_eq!(config.forward.idle_timeout_ms, default_idle_timeout_ms());
        assert_eq!(config.ack_mode, AckMode::Spool);
    }

    #[test]
    fn cores_are_addresses_or_address_and_name() {
        #[derive(Deserialize)]
        struct Cores {
            cores: Vec<CoreAddress>,
        }
        let cores: Cores = serde_json::from_str(r#"{"cores": ["a:1", {"addr": "b:2", "name": "core-2"}]}"#).unwrap();
        assert_eq!(
            cores.cores,
            [CoreAddress { addr: "a:1".into(), name: None }, CoreAddress { addr: "b:2".into(), name: Some("core-2".into()) }]
        );
        let error = serde_json::from_str::<Cores>(r#"{"cores": [{"addr": "b:2", "nmae": "x"}]}"#).err().unwrap().to_string();
        assert!(error.contains("host:port"), "{error}");
    }

    #[test]
    fn in_flight_window_beyond_a_cores_stream_limit_is_refused() {
        let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.example.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (value, ok) in [("256", true), ("257", false), ("0", false)] {
            let path = dir.path().join("edge.toml");
            std::fs::write(&path, example.replace("max_in_flight = 8", &format!("max_in_flight = {value}"))).unwrap();
            match EdgeConfig::load(&path) {
                Ok(config) => assert!(ok, "{value} accepted: {}", config.forward.max_in_flight),
                Err(e) => assert!(!ok && e.to_string().contains("forward.max_in_flight"), "{value}: {e}"),
            }
        }
    }
}

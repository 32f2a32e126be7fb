//! The core node's configuration (`weir-core run --config FILE`). See
//! `deploy/core.example.toml` for every key with its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_http_ingest::HttpIngestConfig;
use weir_node::config::ConfigError;
use weir_node::tls::TlsFiles;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// Config format version; must be 1.
    pub version: u32,
    /// Names this node in logs and metadata.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    pub http: HttpConfig,
    /// Token list and body limit of the HTTP ingest API.
    #[serde(default)]
    pub ingest: HttpIngestConfig,
    /// The QUIC endpoint for edges; absent means this core accepts no edges.
    #[serde(default)]
    pub quic: Option<QuicConfig>,
    pub kafka: KafkaConfig,
    /// This node's own files: the Global snapshot, its segment files, segments fetched for
    /// queries, reparse scratch (the layout is `store::DataDir`'s). Relative paths are
    /// relative to the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The Global log: snapshots and heartbeats.
    #[serde(default)]
    pub global: GlobalConfig,
    /// Parser plugins and which repository or token uses which (see weir-plugin-host).
    #[serde(default)]
    pub parsers: weir_plugin_host::ParsersConfig,
    /// How much this node takes on at once.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Reading the ingest topic into segment files.
    #[serde(default)]
    pub digest: DigestConfig,
    /// The read API's limits.
    #[serde(default)]
    pub query: weir_query::QueryConfig,
    /// Tokens that may read (never ingest); none: the read API answers 403 to everyone.
    #[serde(default)]
    pub read_tokens: Vec<weir_query::ReadTokenConfig>,
    /// How segments are made safe (the rule this node puts in Global).
    #[serde(default)]
    pub storage: StorageConfig,
    /// Copying segments between cores (local mode).
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// Letting Kafka delete the ingest records that safe segments hold.
    #[serde(default)]
    pub truncation: TruncationConfig,
    /// The S3-compatible bucket of `bucket` and `hybrid` mode.
    #[serde(default)]
    pub bucket: Option<BucketConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The S3 endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Prepended to every key (e.g. `cluster-a/`).
    #[serde(default)]
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), as S3-compatible servers want it.
    #[serde(default = "default_enabled")]
    pub path_style: bool,
    /// How often a core looks for segments it holds that the bucket lacks.
    #[serde(default = "default_upload_interval_ms")]
    pub upload_interval_ms: u64,
    /// Uploads at once.
    #[serde(default = "default_replication_concurrency")]
    pub concurrency: usize,
    /// One attempt of one request, at most.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Segment files larger than this go up in parts (a multipart upload), each part
    /// checksummed, the whole object's CRC-64/NVME checked at completion.
    #[serde(default = "default_multipart_threshold_bytes")]
    pub multipart_threshold_bytes: u64,
    /// The size of each part but the last (S3 wants at least 5 MiB).
    #[serde(default = "default_part_bytes")]
    pub part_bytes: u64,
    /// Parts of one upload sent at once (each holds `part_bytes` in memory while it goes).
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: usize,
    /// How often a core puts its Global snapshot in the bucket (when Global moved on since
    /// its last one), so a core with an empty disk starts from there instead of replaying
    /// the whole Global topic.
    #[serde(default = "default_snapshot_interval_ms")]
    pub snapshot_interval_ms: u64,
    /// Global snapshots kept in the bucket, newest first; older ones are deleted.
    #[serde(default = "default_snapshots_kept")]
    pub snapshots_kept: usize,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_upload_interval_ms() -> u64 {
    1_000
}
fn default_request_timeout_ms() -> u64 {
    120_000
}
fn default_multipart_threshold_bytes() -> u64 {
    64 << 20
}
fn default_part_bytes() -> u64 {
    16 << 20
}
fn default_parts_in_flight() -> usize {
    4
}
fn default_snapshot_interval_ms() -> u64 {
    60_000
}
fn default_snapshots_kept() -> usize {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `local` (copies on the cores' disks), `bucket` (one verified upload is safe) or
    /// `hybrid` (copies on disks, everything uploaded).
    #[serde(default = "default_storage_mode")]
    pub mode: weir_global::StorageMode,
    /// Local mode: a segment is safe with verified copies on this many distinct cores.
    /// Below 2, losing one disk after truncation loses its events (said at start).
    #[serde(default = "default_storage_copies")]
    pub replication_factor: u32,
    /// How often this node re-hashes its segment files against Global's blake3 (a damaged
    /// one is set aside and served from another copy); 0: only at start.
    #[serde(default = "default_scrub_interval_ms")]
    pub scrub_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { mode: default_storage_mode(), replication_factor: default_storage_copies(), scrub_interval_ms: default_scrub_interval_ms() }
    }
}

fn default_scrub_interval_ms() -> u64 {
    6 * 3_600_000
}

impl StorageConfig {
    /// The rule this node puts in Global (`set_storage_rule`), with `node_timeout_ms`.
    pub fn rule(&self, node_timeout_ms: u64) -> weir_global::StorageRule {
        weir_global::StorageRule { mode: self.mode, replication_factor: self.replication_factor, node_timeout_ms }
    }
}

fn default_storage_mode() -> weir_global::StorageMode {
    weir_global::StorageMode::Local
}
fn default_storage_copies() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// How often this node looks for segments it should hold a copy of.
    #[serde(default = "default_replication_interval_ms")]
    pub interval_ms: u64,
    /// Segments fetched at once.
    #[serde(default = "default_replication_concurrency")]
    pub concurrency: usize,
    /// Bytes per second this node fetches for replication, at most (ingest and the digest
    /// come first).
    #[serde(default = "default_replication_max_bytes_per_s")]
    pub max_bytes_per_s: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            interval_ms: default_replication_interval_ms(),
            concurrency: default_replication_concurrency(),
            max_bytes_per_s: default_replication_max_bytes_per_s(),
        }
    }
}

fn default_replication_interval_ms() -> u64 {
    2_000
}
fn default_replication_concurrency() -> usize {
    2
}
fn default_replication_max_bytes_per_s() -> u64 {
    64 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncationConfig {
    /// Whether the owner of a partition lets Kafka delete the records below its safe
    /// offset (after Global recorded the truncation).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// At most one truncation per partition this often.
    #[serde(default = "default_truncation_interval_ms")]
    pub interval_ms: u64,
}

impl Default for TruncationConfig {
    fn default() -> Self {
        TruncationConfig { enabled: default_enabled(), interval_ms: default_truncation_interval_ms() }
    }
}

fn default_truncation_interval_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// False makes an ingest-only core (LogScale's ingest-only node role): it accepts and
    /// acknowledges events and answers queries, but takes no ingest partitions to digest.
    /// Its heartbeats say so, and the digesting cores share every partition.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// A segment is written and registered this long after its first record was read
    /// (LogScale's "flush interval"): an acknowledged event is queryable within about this
    /// plus a second.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// ... or once this many bytes of Kafka records went into it, whichever comes first.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// A core whose last heartbeat is older than this (by this node's clock; keep the
    /// cores' clocks within a second or two, e.g. with NTP) gets no partitions, and its
    /// partitions are claimed by the live cores.
    #[serde(default = "default_node_timeout_ms")]
    pub node_timeout_ms: u64,
    /// How often this node compares the partitions it should digest with the ones it does.
    #[serde(default = "default_assign_interval_ms")]
    pub assign_interval_ms: u64,
    /// The repository of records in the ingest topic that are not Weir event batches
    /// (kept raw, with `@error`).
    #[serde(default = "default_foreign_repository")]
    pub foreign_repository: String,
    /// A segment of a partition this node digests whose every copy has been unreachable
    /// (holders dead past `node_timeout_ms`, no bucket copy) this much longer is re-digested
    /// from Kafka: a holder that is only restarting gets this long to come back.
    #[serde(default = "default_redigest_after_ms")]
    pub redigest_after_ms: u64,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            enabled: default_enabled(),
            flush_interval_ms: default_flush_interval_ms(),
            segment_bytes: default_segment_bytes(),
            node_timeout_ms: default_node_timeout_ms(),
            assign_interval_ms: default_assign_interval_ms(),
            foreign_repository: default_foreign_repository(),
            redigest_after_ms: default_redigest_after_ms(),
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_flush_interval_ms() -> u64 {
    5_000
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_node_timeout_ms() -> u64 {
    15_000
}
fn default_assign_interval_ms() -> u64 {
    1_000
}
fn default_redigest_after_ms() -> u64 {
    30_000
}
fn default_foreign_repository() -> String {
    "weir-foreign".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes held at once by HTTP request bodies (after inflation, with what decoding
    /// them builds) and edge batches (compressed and decompressed). Beyond it, requests
    /// get 429 and edge batches `Unavailable`, at once: the node pushes back instead of
    /// growing until the kernel kills it.
    #[serde(default = "default_in_flight_bytes")]
    pub in_flight_bytes: usize,
    /// Edge connections held at once; more are refused (during the handshake while the
    /// endpoint holds this many plus `max_peer_connections`, else right after it).
    #[serde(default = "default_max_edge_connections")]
    pub max_edge_connections: usize,
    /// Connections from other cores (segment fetches) held at once, counted apart from
    /// edges so that neither kind can crowd out the other.
    #[serde(default = "default_max_peer_connections")]
    pub max_peer_connections: usize,
    /// Bytes of segment files fetched from other cores for queries kept on disk
    /// (`<data_dir>/segments-fetched`); past it the least recently used go (files used in
    /// the last minute stay).
    #[serde(default = "default_fetched_segments_bytes")]
    pub fetched_segments_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            in_flight_bytes: default_in_flight_bytes(),
            max_edge_connections: default_max_edge_connections(),
            max_peer_connections: default_max_peer_connections(),
            fetched_segments_bytes: default_fetched_segments_bytes(),
        }
    }
}

fn default_in_flight_bytes() -> usize {
    1 << 30
}
fn default_max_edge_connections() -> usize {
    1024
}
fn default_max_peer_connections() -> usize {
    64
}
fn default_fetched_segments_bytes() -> u64 {
    10 << 30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// A snapshot is written after this many applied records (and at shutdown).
    #[serde(default = "default_snapshot_every_records")]
    pub snapshot_every_records: u64,
    /// ... or when this many seconds passed since the last one and something was applied.
    #[serde(default = "default_snapshot_every_s")]
    pub snapshot_every_s: u64,
    /// How often this node writes its `node_heartbeat` (also once at start).
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// How long a command may take to be acknowledged by Kafka and then applied locally.
    #[serde(default = "default_submit_timeout_ms")]
    pub submit_timeout_ms: u64,
    /// The zone this node announces in its heartbeats.
    #[serde(default = "default_zone")]
    pub zone: String,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            snapshot_every_records: default_snapshot_every_records(),
            snapshot_every_s: default_snapshot_every_s(),
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            submit_timeout_ms: default_submit_timeout_ms(),
            zone: default_zone(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".weir/core-data")
}
fn default_snapshot_every_records() -> u64 {
    10_000
}
fn default_snapshot_every_s() -> u64 {
    60
}
fn default_heartbeat_interval_ms() -> u64 {
    5_000
}
fn default_submit_timeout_ms() -> u64 {
    10_000
}
fn default_zone() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `host:port` other nodes and clients reach this listener at, announced in Global
    /// heartbeats; default: the bound address (wrong when binding 0.0.0.0 or behind NAT).
    #[serde(default)]
    pub advertise: Option<String>,
    /// The web console (`weir_core::console`) at `/` (to browsers) and `/ui/`; it reads
    /// through the read API with the token the user pastes. `false`: no `/ui/` routes, and
    /// `/` stays the Elasticsearch root probe for everyone.
    #[serde(default = "default_console")]
    pub console: bool,
}

fn default_console() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicConfig {
    pub listen: SocketAddr,
    /// `host:port` other cores fetch segments from (announced in heartbeats); default: the
    /// bound address, which another core cannot reach when it is 0.0.0.0.
    #[serde(default)]
    pub advertise: Option<String>,
    pub tls: TlsFiles,
    /// Largest forwarded batch, compressed, on the wire.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Largest forwarded batch after decompression.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// At shutdown, how long edge connections may take to answer the batches they
    /// already have (no new ones are taken) before they are closed.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

fn default_drain_timeout_ms() -> u64 {
    15_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port]` of the Kafka cluster.
    pub bootstrap_servers: String,
    #[serde(default = "default_ingest_topic")]
    pub ingest_topic: String,
    /// The Global topic: created if missing with one partition, the same replication
    /// factor and min ISR as the ingest topic, and infinite retention (never compacted: a
    /// node must be able to rebuild from offset 0).
    #[serde(default = "default_global_topic")]
    pub global_topic: String,
    /// Used when the core creates a missing ingest topic.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replicas of each ingest partition. The core creates the topic with it and stays
    /// not ready while an existing topic has fewer. 3 by default: an acknowledged event
    /// survives the loss of a broker; 1 only for a single-broker test setup.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// The topic's `min.insync.replicas`: with acks=all, an ack means this many brokers
    /// hold the record. Checked like the replication factor.
    #[serde(default = "default_min_insync_replicas")]
    pub min_insync_replicas: i32,
    /// How long an ingest request may wait for Kafka's acknowledgement before it is
    /// answered 503 (the bound of I1's failure path).
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Partitions one source (repository + tags) is spread over. A source in one
    /// partition is one digest worker on one core however busy it is; spread, its
    /// batches take `source_shards` consecutive partitions (from a hash of the source,
    /// wrapping around the topic's partition count). An edge batch's shard follows from its
    /// sequence number, so a resent batch lands where its first copy did and the digest
    /// can drop it; an HTTP request's records take the next shard. Must be the same on
    /// every core: a core shard-mapping differently can store a resent batch twice (never
    /// lose it). 1 keeps each source in one partition, in order.
    #[serde(default = "default_source_shards")]
    pub source_shards: std::num::NonZeroU32,
    /// Largest Kafka record; batches are split to stay below it.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Producer batching delay; trades a little latency for throughput.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Seconds a client is told to wait after a 503.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// Bytes of records librdkafka may hold waiting for Kafka's acks
    /// (`queue.buffering.max.kbytes`); a request finding it full waits up to
    /// `ack_timeout_ms`, then gets 503.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: usize,
    /// Extra librdkafka client properties (security settings such as
    /// `security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`),
    /// given to the producer and the admin client alike. May not override acks or
    /// idempotence.
    #[serde(default, alias = "producer_properties")]
    pub client_properties: BTreeMap<String, String>,
}

fn default_node_id() -> String {
    "core-1".into()
}
fn default_max_frame_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_batch_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_ingest_topic() -> String {
    "weir-ingest".into()
}
fn default_global_topic() -> String {
    "weir-global".into()
}
fn default_partitions() -> i32 {
    4
}
fn default_replication_factor() -> i32 {
    3
}
fn default_queue_max_bytes() -> usize {
    256 << 20
}
fn default_min_insync_replicas() -> i32 {
    2
}
fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_source_shards() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(4).expect("non-zero")
}
fn default_max_record_bytes() -> usize {
    900_000
}
fn default_linger_ms() -> u64 {
    5
}
fn default_retry_after_s() -> u64 {
    2
}

impl CoreConfig {
    pub fn load(path: &Path) -> Result<CoreConfig, ConfigError> {
        let config: CoreConfig = weir_node::config::load(path, &["node_id", "data_dir"])?;
        let kafka = &config.kafka;
        if kafka.min_insync_replicas < 1 || kafka.min_insync_replicas > kafka.replication_factor {
            return Err(ConfigError::Value {
                key: "kafka.min_insync_replicas",
                reason: format!(
                    "{} must be between 1 and kafka.replication_factor ({}): a broker cannot require more in-sync replicas than a partition has",
                    kafka.min_insync_replicas, kafka.replication_factor
                ),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/core.example.toml");
        let config = CoreConfig::load(&path).unwrap();
        assert_eq!(config.kafka.ack_timeout_ms, default_ack_timeout_ms());
        assert_eq!(config.kafka.partitions, default_partitions());
        assert_eq!(config.kafka.source_shards, default_source_shards());
        assert_eq!(config.ingest.tokens[0].repository, "main");
        assert!(config.quic.is_some());
        assert_eq!(config.kafka.global_topic, default_global_topic());
        assert_eq!(config.data_dir, default_data_dir());
        assert_eq!(config.global.snapshot_every_records, default_snapshot_every_records());
        assert_eq!(config.global.heartbeat_interval_ms, default_heartbeat_interval_ms());
    }

    #[test]
    fn zero_source_shards_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.toml");
        std::fs::write(&path, "version = 1\n[ingest]\ntokens = []\n[kafka]\nbootstrap_servers = \"k:9092\"\nsource_shards = 0\n").unwrap();
        let error = CoreConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("source_shards") && error.contains("nonzero"), "{error}");
    }
}

//! The cluster at a glance, from one Global state and Kafka's watermarks: nodes (alive,
//! zone, disk), partitions (owner, epoch, digest lag, safe offset, last truncation, Kafka's
//! log start), and segments by place (node copies, bucket) with what is under-replicated,
//! without any copy, or unavailable. Served as `GET /api/v1/cluster` (a read token) and
//! printed by `weir-core status`; its counts are also metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use weir_global::{Location, State, StorageRule};

use super::GlobalLog;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The node that answered, and how far its Global is applied.
    pub answered_by: String,
    pub global_applied_offset: Option<u64>,
    pub storage_rule: Option<StorageRule>,
    /// Why the rule cannot survive the loss of one node, if it cannot.
    pub storage_warning: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub partitions: Vec<PartitionStatus>,
    pub segments: SegmentCounts,
    /// Why Kafka's watermarks are missing, if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub alive: bool,
    pub zone: String,
    pub disk_id: String,
    pub digest: bool,
    pub http: String,
    pub quic: Option<String>,
    pub last_heartbeat_ms: u64,
    /// Segments with a copy on this node's current disk, and their bytes.
    pub segments: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    pub owner: Option<String>,
    pub epoch: u64,
    /// Where the digest resumes: the end of the last registered segment.
    pub resume_point: u64,
    pub log_start: u64,
    /// Below it every record is in segments safe under the storage rule now.
    pub safe_offset: u64,
    /// The last truncation Global recorded.
    pub truncated: u64,
    /// Kafka's log start and end now.
    pub kafka_low_watermark: Option<u64>,
    pub kafka_high_watermark: Option<u64>,
    /// Records in Kafka the digest has not put in a segment yet.
    pub digest_lag: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SegmentCounts {
    pub registered: u64,
    pub bytes: u64,
    /// Staged: waiting to replace others (reparse).
    pub staged: u64,
    pub in_bucket: u64,
    /// Not safe under the storage rule (too few counted copies, no bucket copy).
    pub under_replicated: u64,
    /// Registered with no copy anywhere (a crash before `add_copy`; repaired at the
    /// holder's next start, or re-digested).
    pub without_copy: u64,
    /// No copy on a live node and none in the bucket: a query for it answers 503.
    pub unavailable: u64,
    /// Node copies that do not count: on dead nodes, or on a disk the node no longer has.
    pub copies_not_counted: u64,
}

/// The status from `state` at `now_ms` (nodes silent for `node_timeout_ms` are dead), with
/// Kafka's `(low, high)` watermarks per partition when known.
pub fn status(state: &State, answered_by: &str, now_ms: u64, node_timeout_ms: u64, watermarks: Result<Vec<(u64, u64)>, String>) -> Status {
    let timeout = state.storage_rule().map_or(node_timeout_ms, |r| r.node_timeout_ms);
    let alive = |node: &str| state.is_live(node, now_ms, timeout);
    let mut per_node: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut counts = SegmentCounts::default();
    for p in state.partitions() {
        for segment in state.segments(p) {
            counts.registered += 1;
            counts.bytes += segment.info.bytes;
            let counted: Vec<&str> = state.counted_node_copies(segment, alive).collect();
            for node in &counted {
                let entry = per_node.entry(node).or_default();
                entry.0 += 1;
                entry.1 += segment.info.bytes;
            }
            let in_bucket = segment.copies.iter().any(|l| matches!(l, Location::Bucket(_)));
            counts.in_bucket += u64::from(in_bucket);
            counts.without_copy += u64::from(segment.copies.is_empty());
            counts.unavailable += u64::from(!in_bucket && counted.is_empty());
            counts.copies_not_counted += (segment.copies.iter().filter(|l| l.node_id().is_some()).count() - counted.len()) as u64;
            if !state.storage_rule().is_some_and(|rule| state.is_safe(segment, rule, alive)) {
                counts.under_replicated += 1;
            }
        }
    }
    counts.staged = state.staged().count() as u64;
    let (watermarks, kafka_error) = match watermarks {
        Ok(w) => (w, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let nodes = state
        .nodes()
        .iter()
        .map(|(id, node)| {
            let (segments, bytes) = per_node.get(id.as_str()).copied().unwrap_or_default();
            NodeStatus {
                node_id: id.clone(),
                alive: alive(id),
                zone: node.zone.clone(),
                disk_id: node.disk_id.clone(),
                digest: node.digest,
                http: node.addresses.http.clone(),
                quic: node.addresses.quic.clone(),
                last_heartbeat_ms: node.heartbeat_ms,
                segments,
                bytes,
            }
        })
        .collect();
    let n_partitions = state.partitions().max().map_or(0, |p| p + 1).max(watermarks.len() as u32);
    let partitions = (0..n_partitions)
        .map(|p| {
            let part = state.partition(p);
            let marks = watermarks.get(p as usize).copied();
            PartitionStatus {
                partition: p,
                owner: part.owner,
                epoch: part.epoch,
                resume_point: part.next_offset,
                log_start: part.log_start,
                safe_offset: state.safe_offset(p, alive),
                truncated: part.truncated,
                kafka_low_watermark: marks.map(|m| m.0),
                kafka_high_watermark: marks.map(|m| m.1),
                digest_lag: marks.map(|m| m.1.saturating_sub(part.next_offset)),
            }
        })
        .collect();
    Status {
        answered_by: answered_by.to_owned(),
        global_applied_offset: state.applied_offset(),
        storage_rule: state.storage_rule().copied(),
        storage_warning: state.storage_rule().and_then(StorageRule::weakness),
        nodes,
        partitions,
        segments: counts,
        kafka_error,
    }
}

/// The status as this node sees it now (Kafka asked for its watermarks off the async
/// workers).
pub async fn current(global: &GlobalLog, kafka: &crate::config::KafkaConfig, node_id: &str, node_timeout_ms: u64) -> Status {
    let config = kafka.clone();
    let watermarks = tokio::task::spawn_blocking(move || crate::kafka::ingest_reader::watermarks(&config)).await.expect("watermarks task");
    let now_ms = weir_proto::event::now_ms().max(0) as u64;
    global.read(|state| status(state, node_id, now_ms, node_timeout_ms, watermarks))
}

/// The status as text for a terminal (`weir-core status`).
pub fn render(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let rule = status.storage_rule.map_or("none set yet (nothing is safe, nothing is truncated)".to_owned(), |r| {
        format!("{:?}, {} copies, node timeout {} ms", r.mode, r.replication_factor, r.node_timeout_ms).to_lowercase()
    });
    let _ = writeln!(out, "storage rule: {rule}");
    if let Some(warning) = &status.storage_warning {
        let _ = writeln!(out, "WARNING: {warning}");
    }
    let _ = writeln!(out, "\nnodes:");
    for n in &status.nodes {
        let state = if n.alive { "alive" } else { "DEAD" };
        let _ = writeln!(out, "  {:<16} {:<5} zone {:<8} disk {:<22} {} segments, {} bytes", n.node_id, state, n.zone, n.disk_id, n.segments, n.bytes);
    }
    let _ = writeln!(out, "\npartitions:");
    for p in &status.partitions {
        let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "  {:>3} owner {:<12} epoch {:<3} resume {:<8} safe {:<8} truncated {:<8} kafka log {}..{} lag {}",
            p.partition,
            p.owner.as_deref().unwrap_or("-"),
            p.epoch,
            p.resume_point,
            p.safe_offset,
            p.truncated,
            opt(p.kafka_low_watermark),
            opt(p.kafka_high_watermark),
            opt(p.digest_lag)
        );
    }
    let s = &status.segments;
    let _ = writeln!(
        out,
        "\nsegments: {} registered ({} bytes), {} staged, {} in the bucket, {} under-replicated, {} without a copy, {} unavailable, {} copies not counted (dead nodes, old disks)",
        s.registered, s.bytes, s.staged, s.in_bucket, s.under_replicated, s.without_copy, s.unavailable, s.copies_not_counted
    );
    if let Some(error) = &status.kafka_error {
        let _ = writeln!(out, "kafka: {error}");
    }
    out
}

/// What `GET /api/v1/cluster` needs.
#[derive(Clone)]
pub struct ClusterApi {
    pub query: Arc<weir_query::QueryService>,
    pub global: Arc<GlobalLog>,
    pub kafka: crate::config::KafkaConfig,
    pub node_id: String,
    pub node_timeout_ms: u64,
}

/// `GET /api/v1/cluster` with a read token: the [`Status`] as JSON.
pub fn router(api: ClusterApi) -> axum::Router {
    axum::Router::new().route("/api/v1/cluster", axum::routing::get(cluster)).with_state(api)
}

async fn cluster(axum::extract::State(api): axum::extract::State<ClusterApi>, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(refused) = api.query.authorize_reader(&headers) {
        return refused;
    }
    if let Some(reason) = api.global.not_ready() {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response();
    }
    axum::Json(current(&api.global, &api.kafka, &api.node_id, api.node_timeout_ms).await).into_response()
}

/// Keeps the status counts as metrics, every 5 s until `shutdown`.
pub async fn metrics_loop(global: Arc<GlobalLog>, kafka: crate::config::KafkaConfig, node_id: String, node_timeout_ms: u64, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
        if global.not_ready().is_some() {
            continue;
        }
        let status = current(&global, &kafka, &node_id, node_timeout_ms).await;
        let s = &status.segments;
        metrics::gauge!("weir_segments_registered").set(s.registered as f64);
        metrics::gauge!("weir_segments_under_replicated").set(s.under_replicated as f64);
        metrics::gauge!("weir_segments_without_copy").set(s.without_copy as f64);
        metrics::gauge!("weir_segments_unavailable").set(s.unavailable as f64);
        metrics::gauge!("weir_segments_in_bucket").set(s.in_bucket as f64);
        metrics::gauge!("weir_nodes_dead").set(status.nodes.iter().filter(|n| !n.alive).count() as f64);
        for p in &status.partitions {
            if let Some(low) = p.kafka_low_watermark {
                metrics::gauge!("weir_kafka_log_start", "partition" => p.partition.to_string()).set(low as f64);
            }
        }
    }
}

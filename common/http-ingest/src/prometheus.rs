//! `GET /metrics`: the node's counters and gauges in the Prometheus text format.
//!
//! Code records with the `metrics` crate's macros wherever something happens; this module
//! installs the process-wide recorder once and renders it on the ingest port, so an
//! operator scrapes edge and core nodes the same way. Gauges that describe state (spool
//! fill, topic readiness) are set by the sink just before rendering ([`IngestSink::observe`]),
//! so they are never stale.
//!
//! Metric names, all prefixed `weir_`:
//! - `http_requests_total{endpoint,status}`, `http_events_total{endpoint}` (events
//!   acknowledged): here;
//! - edge: `spool_used_bytes`, `spool_max_bytes`, `spool_pending_batches`,
//!   `forward_batches_acked_total`, `forward_session_failures_total`,
//!   `forward_connected{core}`, `dead_letters_total`;
//! - core: `kafka_records_total{result}`, `edge_batches_total{result}`,
//!   `kafka_topic_ready`.
//!
//! [`IngestSink::observe`]: crate::IngestSink::observe

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's recorder; installed on first use. Several nodes in one process (tests,
/// benchmarks) share it, as they share the process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows nothing of it");
        }
        handle
    })
}

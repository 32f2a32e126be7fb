//! The Weir core node. This file only wires the rooms together; each room is one stage of
//! the data path (ARCHITECTURE.md's code map says what each owns and must never do):
//!
//! - [`accept`]: the QUIC door (edges and other cores, by ALPN) and the HTTP ingest sink;
//!   answers only after Kafka acknowledged (I1).
//! - [`kafka`]: the only module that touches rdkafka: producer, consumers, admin.
//! - [`cluster`]: this node's view of Global and the commands it writes, heartbeats, who
//!   should digest which partition.
//! - [`digest`]: ingest partitions → parsed events in segment files registered in Global.
//! - [`store`]: the data directory ([`store::DataDir`]), sweep, fetched cache, segment
//!   tools and reparse.
//! - [`peer`]: core ↔ core segment transfer (protocol, server, client).
//! - [`read`]: where a query finds each segment (the query language is `weir-query`'s).
//! - [`console`]: the web console's page, embedded, at `/` (to browsers) and `/ui/`.
//!
//! Beside them: [`config`] (TOML + env), `certs` (dev PKI, only with the `dev-certs`
//! feature: never in a production build), [`alloc`] (the binary's global allocator). The
//! binary's `main` parses arguments and calls [`run`]; tests call the same
//! [`start`]/[`run`].

pub mod accept;
pub mod alloc;
#[cfg(feature = "dev-certs")]
pub mod certs;
pub mod cluster;
pub mod config;
pub mod console;
pub mod digest;
pub mod kafka;
pub mod peer;
pub mod read;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accept::edge::EdgeConnections;
use crate::accept::http::KafkaSink;
use crate::accept::quic::QuicDoor;
use crate::cluster::{GlobalError, GlobalLog, heartbeat};
use crate::config::CoreConfig;
use crate::kafka::{PublishError, Publisher};
use crate::store::DataDir;
use crate::store::sweep::Pending;
use weir_global::Addresses;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for QUIC on {addr}: {source}")]
    QuicBind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid TLS setup for the edge endpoint: {0}")]
    Tls(#[from] weir_node::tls::TlsError),
    #[error(transparent)]
    Kafka(#[from] PublishError),
    #[error(transparent)]
    Global(#[from] GlobalError),
    #[error("invalid parser plugin setup: {0}")]
    Parsers(#[from] weir_plugin_host::Error),
    #[error("cannot create the directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("invalid read API setup: {0}")]
    Query(#[from] weir_query::ConfigError),
    #[error(transparent)]
    Peer(#[from] peer::PeerSetupError),
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    #[error("stopped: {0}")]
    TopicsChanged(#[from] cluster::topics::TopicsChanged),
    #[error("invalid [storage]: {0}")]
    Storage(String),
}

/// A started core: its bound addresses and the task that runs it until shutdown.
pub struct RunningCore {
    pub http_addr: SocketAddr,
    pub quic_addr: Option<SocketAddr>,
    pub task: JoinHandle<Result<(), CoreError>>,
    global: Arc<GlobalLog>,
}

impl RunningCore {
    /// This node's Global log: its applied state, and the way to submit commands.
    pub fn global(&self) -> Arc<GlobalLog> {
        self.global.clone()
    }
}

/// Runs a core until `shutdown` is cancelled.
pub async fn run(config: CoreConfig, shutdown: CancellationToken) -> Result<(), CoreError> {
    let running = start(config, shutdown).await?;
    running.task.await.unwrap_or_else(|join| panic!("core task panicked: {join}"))
}

/// Binds every listener (so port 0 works and bind errors surface here), then serves in a
/// background task.
pub async fn start(config: CoreConfig, shutdown: CancellationToken) -> Result<RunningCore, CoreError> {
    let publisher = Arc::new(Publisher::new(&config.kafka)?);
    // The metrics recorder first: what start-up records (the bootstrap) must count.
    weir_http_ingest::prometheus::handle();
    if let Some(bucket) = &config.bucket {
        store::bucket::bootstrap_snapshot(bucket, &DataDir::new(&config.data_dir).snapshot_path()).await;
    }
    let global = GlobalLog::open(&config)?;
    // Plugins are loaded and configured at start, so a bad plugin or setting stops the
    // node with a clear error instead of failing batches later. The digest is their caller.
    let parsers = if config.parsers.plugins.is_empty() && config.parsers.plugin_dir.is_none() {
        None
    } else {
        Some(Arc::new(digest::load_parsers(&config.parsers).await?))
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| CoreError::HttpBind { addr: config.http.listen, source })?;
    let http_addr = listener.local_addr().map_err(|source| CoreError::HttpBind { addr: config.http.listen, source })?;

    // One budget for both inputs: a burst on either is bounded by the same number.
    let budget = weir_http_ingest::MemoryBudget::new(config.limits.in_flight_bytes);
    let data_dir = DataDir::new(&config.data_dir);
    let storage_rule = config.storage.rule(config.digest.node_timeout_ms);
    let replicates = storage_rule.mode == weir_global::StorageMode::Local && storage_rule.replication_factor >= 2 && config.digest.enabled;
    if replicates && config.quic.is_none() {
        return Err(CoreError::Storage(format!(
            "mode = \"local\" with replication_factor = {} copies segments between cores over the peer channel, which needs a [quic] section (or set replication_factor = 1, digest.enabled = false, or use a bucket)",
            storage_rule.replication_factor
        )));
    }
    if storage_rule.mode != weir_global::StorageMode::Local && config.bucket.is_none() {
        return Err(CoreError::Storage(format!("mode = {:?} makes segments safe by uploading them: add a [bucket] section (endpoint, bucket, access_key_id, secret_access_key)", storage_rule.mode).to_lowercase()));
    }
    let disk_id = data_dir.disk_id().map_err(|source| CoreError::DataDir { path: config.data_dir.clone(), source })?;
    let quic_door = match &config.quic {
        Some(quic) => {
            let server = weir_node::tls::server_config(&quic.tls)?;
            let endpoint = quinn::Endpoint::server(server, quic.listen)
                .map_err(|source| CoreError::QuicBind { addr: quic.listen, source })?;
            Some(QuicDoor {
                endpoint,
                edges: Arc::new(EdgeConnections { publisher: publisher.clone(), config: quic.clone(), budget: budget.clone() }),
                peers: Arc::new(peer::PeerServer { global: global.clone(), data_dir: data_dir.clone() }),
                max_edge_connections: config.limits.max_edge_connections,
                max_peer_connections: config.limits.max_peer_connections,
                drain_timeout: Duration::from_millis(quic.drain_timeout_ms),
            })
        }
        None => None,
    };
    let quic_addr = quic_door.as_ref().and_then(|e| e.endpoint.local_addr().ok());
    tracing::info!(node_id = %config.node_id, %http_addr, quic_addr = ?quic_addr, topic = %config.kafka.ingest_topic, "core started");

    let sink = Arc::new(KafkaSink {
        publisher: publisher.clone(),
        global: global.clone(),
        retry_after: Duration::from_secs(config.kafka.retry_after_s),
    });
    let files = Arc::new(read::locate::SegmentFiles::open(&config, global.clone())?);
    let query = weir_query::QueryService::new(config.query.clone(), &config.read_tokens, Arc::new(read::ClusterSegments { files }))?
        .with_ingest_tokens(config.ingest.tokens.iter().map(|t| t.token.as_str()));
    let query = Arc::new(query);
    let cluster_api = cluster::status::ClusterApi {
        query: query.clone(),
        global: global.clone(),
        kafka: config.kafka.clone(),
        node_id: config.node_id.clone(),
        node_timeout_ms: config.digest.node_timeout_ms,
    };
    let app = weir_http_ingest::router(&ingest_tokens_with_parsers(&config), sink, budget)
        .merge(weir_query::router(query))
        .merge(cluster::status::router(cluster_api));
    let app = if config.http.console { console::serve(app) } else { app };

    let segments_dir = data_dir.segments_dir();
    std::fs::create_dir_all(&segments_dir).map_err(|source| CoreError::DataDir { path: segments_dir, source })?;
    let digest_context = Arc::new(digest::partition::Context {
        node_id: config.node_id.clone(),
        global: global.clone(),
        kafka: config.kafka.clone(),
        config: config.digest.clone(),
        parsers,
        data_dir,
        disk_id: disk_id.clone(),
        pending: Pending::default(),
        runtime: tokio::runtime::Handle::current(),
    });
    let running_global = global.clone();
    let task = tokio::spawn(async move {
        // The applier stops last, after everything that submits commands (heartbeats, the
        // digest) stopped, so its final snapshot holds their last commands.
        let global_stop = CancellationToken::new();
        // Also when this task is dropped instead of finishing (a runtime shutting down):
        // the applier is a blocking thread the runtime would wait for forever.
        let _stop_applier_on_drop = global_stop.clone().drop_guard();
        let applier = tokio::spawn(global.clone().run(config.kafka.clone(), config.global.clone(), global_stop.clone()));
        let announce = heartbeat::Announce {
            node_id: config.node_id.clone(),
            addresses: announced_addresses(&config, http_addr, quic_addr),
            digest: config.digest.enabled,
            disk_id: disk_id.clone(),
        };
        let heartbeats = tokio::spawn(heartbeat::run(
            global.clone(),
            announce,
            config.global.clone(),
            shutdown.clone(),
        ));
        let storage = {
            let mut tasks = vec![tokio::spawn(cluster::rule::ensure(global.clone(), config.node_id.clone(), storage_rule, shutdown.clone()))];
            let status_metrics = cluster::status::metrics_loop(global.clone(), config.kafka.clone(), config.node_id.clone(), config.digest.node_timeout_ms, shutdown.clone());
            tasks.push(tokio::spawn(status_metrics));
            if config.digest.enabled {
                let scrub = store::reconcile::scrub(
                    global.clone(),
                    DataDir::new(&config.data_dir),
                    config.node_id.clone(),
                    disk_id.clone(),
                    Duration::from_millis(config.storage.scrub_interval_ms),
                    shutdown.clone(),
                );
                tasks.push(tokio::spawn(scrub));
                let truncation = store::truncate::run(global.clone(), config.kafka.clone(), config.node_id.clone(), config.truncation.clone(), shutdown.clone());
                tasks.push(tokio::spawn(truncation));
            }
            if let (true, Some(bucket)) = (config.digest.enabled, &config.bucket) {
                let uploads = store::bucket::run(
                    Arc::new(store::bucket::Bucket::new(bucket)),
                    global.clone(),
                    DataDir::new(&config.data_dir),
                    config.node_id.clone(),
                    bucket.clone(),
                    shutdown.clone(),
                );
                tasks.push(tokio::spawn(uploads));
            }
            if let Some(bucket) = &config.bucket {
                let snapshots = store::bucket::snapshots(Arc::new(store::bucket::Bucket::new(bucket)), global.clone(), bucket.clone(), shutdown.clone());
                tasks.push(tokio::spawn(snapshots));
            }
            if let (true, Some(quic)) = (replicates, &config.quic) {
                match peer::PeerClient::new(&quic.tls) {
                    Ok(client) => {
                        let replicator = store::replicate::Replicator {
                            node_id: config.node_id.clone(),
                            disk_id: disk_id.clone(),
                            global: global.clone(),
                            data_dir: DataDir::new(&config.data_dir),
                            client,
                            config: config.replication.clone(),
                            node_timeout_ms: config.digest.node_timeout_ms,
                        };
                        tasks.push(tokio::spawn(replicator.run(shutdown.clone())));
                    }
                    Err(error) => tracing::error!(%error, "cannot set up the replication client: this node holds no replicas"),
                }
            }
            tasks
        };
        // A Global of other topics (recreated under this one's names) stops the node.
        let topics = {
            let (global, kafka, node_id, shutdown) = (
                global.clone(),
                config.kafka.clone(),
                config.node_id.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                let checked =
                    cluster::topics::guard(global, kafka, node_id, shutdown.clone()).await;
                if let Err(reason) = &checked {
                    tracing::error!(%reason, "the core stops");
                    shutdown.cancel();
                }
                checked
            })
        };
        let topic = {
            let publisher = publisher.clone();
            let kafka = config.kafka.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { publisher.ensure_topic(&kafka, &shutdown).await })
        };
        let edges = quic_door.map(|door| tokio::spawn(door.serve(shutdown.clone())));
        // An ingest-only core (`digest.enabled = false`) runs no digest; its heartbeats say
        // so, and the digesting cores take every partition.
        let digest = config.digest.enabled.then(|| tokio::spawn(digest::run(digest_context, shutdown.clone())));
        if digest.is_none() {
            tracing::info!("ingest-only core (digest.enabled = false): it takes no partitions; the cores with the digest on store what it ingests");
        }
        let http = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .map_err(CoreError::Http);
        shutdown.cancel();
        if let Some(edges) = edges {
            let _ = edges.await;
        }
        let _ = topic.await;
        if let Some(digest) = digest {
            let _ = digest.await;
        }
        for task in storage {
            let _ = task.await;
        }
        let _ = heartbeats.await;
        let topics = topics.await.expect("topics guard task");
        // The applier reads to the topic's end and writes the last snapshot on its way out.
        global_stop.cancel();
        let _ = applier.await;
        let flush = publisher.clone();
        let _ = tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(5))).await;
        tracing::info!("core stopped");
        topics.map_err(CoreError::from).and(http)
    });
    Ok(RunningCore { http_addr, quic_addr, task, global: running_global })
}

/// The HTTP ingest settings with `[parsers.by_token]` applied: a token without a
/// `parser` key of its own gets the parser `by_token` names for it, which the batches it
/// sends then carry into Kafka (the digest never sees tokens). A token's own key wins.
fn ingest_tokens_with_parsers(config: &CoreConfig) -> weir_http_ingest::HttpIngestConfig {
    let mut ingest = config.ingest.clone();
    for token in &mut ingest.tokens {
        if token.parser.is_none() {
            token.parser = config.parsers.by_token.get(&token.token).cloned();
        }
    }
    ingest
}

/// What heartbeats announce: the HTTP address and the QUIC one (`peer::SegmentFiles`
/// fetches from it), each the configured `advertise` or else the bound address.
fn announced_addresses(config: &CoreConfig, http_addr: SocketAddr, quic_addr: Option<SocketAddr>) -> Addresses {
    let http = config.http.advertise.clone().unwrap_or_else(|| http_addr.to_string());
    let quic = config.quic.as_ref().zip(quic_addr).map(|(quic, bound)| quic.advertise.clone().unwrap_or_else(|| bound.to_string()));
    Addresses { http, quic }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_announce_the_advertised_addresses_else_the_bound_ones() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/core.example.toml");
        let mut config = CoreConfig::load(&path).unwrap();
        let (http, quic) = ("0.0.0.0:8080".parse().unwrap(), Some("0.0.0.0:4433".parse().unwrap()));
        let both = |http: &str, quic: &str| Addresses { http: http.into(), quic: Some(quic.into()) };
        assert_eq!(announced_addresses(&config, http, quic), both("0.0.0.0:8080", "0.0.0.0:4433"));
        config.http.advertise = Some("core-1.example:8080".into());
        config.quic.as_mut().unwrap().advertise = Some("core-1.example:4433".into());
        assert_eq!(announced_addresses(&config, http, quic), both("core-1.example:8080", "core-1.example:4433"));
        config.quic = None;
        assert_eq!(announced_addresses(&config, http, None), Addresses { http: "core-1.example:8080".into(), quic: None });
    }
}

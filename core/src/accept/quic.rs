//! The core's one QUIC endpoint: the door for edges (`weir-edge/1`) and other cores
//! (`weir-peer/1`). Mutual TLS during the handshake (I8: a peer without a certificate from
//! the CA never gets a stream), then the ALPN the client chose picks the handler.
//!
//! Owns the connection limits: a bound on handshakes in progress, then one limit per kind
//! (`limits.max_edge_connections`, `limits.max_peer_connections`), so many edges cannot
//! starve the cores' segment fetches and the other way round; a refusal is counted and
//! logged with its kind. An edge is turned away while the core is not ready (it could
//! acknowledge nothing). Must never read a frame itself: the handlers do.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_proto::wire;

use super::edge::EdgeConnections;
use crate::peer::PeerServer;

/// Application close code: the client presented no certificate (cannot happen with the
/// TLS config's verifier; a bug, not a client).
const CLOSE_NO_CERTIFICATE: u32 = 3;
/// Application close code: this core holds its limit of connections of this kind.
const CLOSE_LIMIT: u32 = 4;
/// Application close code: this core cannot acknowledge batches yet (its ingest topic is
/// not verified); the edge backs off or tries another core rather than send a window
/// that would be refused in part.
const CLOSE_NOT_READY: u32 = 5;

/// Which handler a connection goes to, by its ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Edge,
    Peer,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Edge => "edge",
            Kind::Peer => "peer",
        }
    }
}

pub struct QuicDoor {
    pub endpoint: quinn::Endpoint,
    pub edges: Arc<EdgeConnections>,
    pub peers: Arc<PeerServer>,
    pub max_edge_connections: usize,
    pub max_peer_connections: usize,
    /// How long connections may take to answer their batches in flight at shutdown.
    pub drain_timeout: Duration,
}

impl QuicDoor {
    pub async fn serve(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let this = Arc::new(self);
        // Handshakes (and connections) of either kind at once: the per-kind limits are
        // known only after the handshake told the ALPN.
        let handshakes = Arc::new(Semaphore::new((this.max_edge_connections + this.max_peer_connections).max(1)));
        let edges = Arc::new(Semaphore::new(this.max_edge_connections.max(1)));
        let peers = Arc::new(Semaphore::new(this.max_peer_connections.max(1)));
        let refusals = RateLimitedLog::new(Duration::from_secs(10));
        loop {
            let incoming = tokio::select! {
                incoming = this.endpoint.accept() => incoming,
                _ = shutdown.cancelled() => break,
            };
            let Some(incoming) = incoming else { break };
            let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                // Counted as edges, as before peers had a limit of their own: nearly all are.
                metrics::counter!("weir_edge_connections_refused_total", "reason" => "limit").increment(1);
                refusals.warn(|n| tracing::warn!(remote = %incoming.remote_address(), refused_since_last_log = n, "quic connection refused: this core holds its limit of edge and peer connections together"));
                incoming.refuse();
                continue;
            };
            let (this, shutdown, refusals, edges, peers) = (this.clone(), shutdown.clone(), refusals.clone(), edges.clone(), peers.clone());
            tasks.spawn(async move {
                let _slot = slot;
                let remote = incoming.remote_address();
                let connection = match incoming.await {
                    Ok(connection) => connection,
                    // Includes clients without a valid certificate: counted, and logged at
                    // most every few seconds, since anyone can send handshakes.
                    Err(error) => {
                        metrics::counter!("weir_edge_connections_refused_total", "reason" => "handshake").increment(1);
                        refusals.warn(|n| tracing::warn!(%remote, %error, refused_since_last_log = n, "quic connection refused in the handshake"));
                        return;
                    }
                };
                let Some(certificate) = peer_certificate(&connection) else {
                    tracing::error!(%remote, "quic connection without a client certificate; closing it");
                    connection.close(CLOSE_NO_CERTIFICATE.into(), b"no client certificate");
                    return;
                };
                let (kind, limit, semaphore) = match alpn(&connection).as_deref() {
                    Some(wire::PEER_ALPN) => (Kind::Peer, this.max_peer_connections, peers),
                    _ => (Kind::Edge, this.max_edge_connections, edges),
                };
                let Ok(_kind_slot) = semaphore.try_acquire_owned() else {
                    match kind {
                        Kind::Edge => metrics::counter!("weir_edge_connections_refused_total", "reason" => "limit").increment(1),
                        Kind::Peer => metrics::counter!("weir_peer_connections_refused_total", "reason" => "limit").increment(1),
                    }
                    refusals.warn(|n| tracing::warn!(%remote, kind = kind.label(), limit, refused_since_last_log = n, "{} connection refused: this core holds its limit of {} connections", kind.label(), kind.label()));
                    connection.close(CLOSE_LIMIT.into(), b"this core holds its limit of connections: try another core");
                    return;
                };
                if kind == Kind::Edge
                    && let Some(reason) = this.edges.publisher.not_ready()
                {
                    metrics::counter!("weir_edge_connections_refused_total", "reason" => "not_ready").increment(1);
                    refusals.warn(|n| tracing::info!(%remote, %reason, refused_since_last_log = n, "edge connection refused: this core is not ready"));
                    connection.close(CLOSE_NOT_READY.into(), format!("this core is not ready: {reason}").as_bytes());
                    return;
                }
                match kind {
                    Kind::Edge => this.edges.clone().serve_connection(connection, certificate, shutdown).await,
                    Kind::Peer => this.peers.clone().serve_connection(connection, certificate).await,
                }
            });
        }
        // Drain: every connection answers the batches it already has, then closes itself;
        // only then does the endpoint go (closing it first would cut them off and make
        // their edges resend batches Kafka may already hold).
        tasks.close();
        if tokio::time::timeout(this.drain_timeout + Duration::from_secs(1), tasks.wait()).await.is_err() {
            tracing::warn!(drain_timeout_ms = this.drain_timeout.as_millis() as u64, "quic connections not drained in time; closing them");
        }
        this.endpoint.close(0u32.into(), b"core shutting down");
    }
}

/// The protocol the client chose in the handshake.
fn alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data().and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok()).and_then(|data| data.protocol)
}

/// The client's leaf certificate, as the handshake verified it against the CA.
fn peer_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.into_iter().next()
}

/// A warning that anyone on the network can trigger, logged at most once per interval
/// with the number of occurrences in between.
#[derive(Clone)]
struct RateLimitedLog {
    interval: Duration,
    state: Arc<std::sync::Mutex<(Option<std::time::Instant>, u64)>>,
}

impl RateLimitedLog {
    fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog { interval, state: Arc::new(std::sync::Mutex::new((None, 0))) }
    }

    /// Calls `log` with the occurrences since the last log, or only counts this one.
    fn warn(&self, log: impl FnOnce(u64)) {
        let mut state = self.state.lock().expect("lock");
        state.1 += 1;
        let now = std::time::Instant::now();
        if state.0.is_none_or(|last| now.duration_since(last) >= self.interval) {
            let n = std::mem::take(&mut state.1);
            state.0 = Some(now);
            drop(state);
            log(n);
        }
    }
}


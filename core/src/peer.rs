//! Core ↔ core: fetching a segment file from the core that has it, over the QUIC endpoint
//! edges use, with its mutual TLS, under ALPN `weir-peer/1` (`weir_proto::wire::PEER_ALPN`).
//! The next step (replication) reuses this channel.
//!
//! ```text
//! request  = JSON {"segment_id": "..."}            (at most 1 KiB; the client finishes its side)
//! response = u32 BE header length | JSON header | file bytes
//! header   = {"status":"ok","bytes":N,"blake3":"..."} | {"status":"error","message":"..."}
//! ```
//!
//! Owns: who may fetch (a client certificate naming a node Global knows: edges have
//! certificates from the same CA but are no nodes), which files may be served (registered
//! segments of this node's segments directory, by id only), and the fetcher's check that
//! the bytes it got hash to the blake3 Global registered (I6) before the file is used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use weir_global::SegmentInfo;
use weir_node::tls::TlsFiles;

use crate::fetched::FetchedCache;
use crate::kafka::global_log::GlobalLog;

const MAX_REQUEST_BYTES: usize = 1024;
const MAX_HEADER_BYTES: u32 = 4096;
/// Connection closed: the client certificate names no node Global knows.
const CLOSE_NOT_A_CORE: u32 = 0x10;

#[derive(Debug, Serialize, Deserialize)]
struct FetchRequest {
    segment_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum FetchHeader {
    Ok { bytes: u64, blake3: String },
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("segment {segment_id}: no live copy on another node is known to Global")]
    NoCopy { segment_id: String },
    #[error("segment {segment_id} from {node}: {reason}")]
    Transfer { segment_id: String, node: String, reason: String },
    #[error("segment {segment_id} from {node}: the bytes hash to {got}, Global registered {expected}; the copy is not used")]
    HashMismatch { segment_id: String, node: String, expected: String, got: String },
    #[error("segment {segment_id}: {source}")]
    Io { segment_id: String, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum PeerSetupError {
    #[error(transparent)]
    Tls(#[from] weir_node::tls::TlsError),
    #[error("cannot open a QUIC socket for fetching segments from other cores: {0}")]
    Bind(std::io::Error),
}

/// Serves this node's segment files to other cores.
pub struct PeerServer {
    pub global: Arc<GlobalLog>,
    pub segments_dir: PathBuf,
}

impl PeerServer {
    pub async fn serve_connection(self: Arc<Self>, connection: quinn::Connection, certificate: CertificateDer<'static>) {
        let remote = connection.remote_address();
        let peer = self.global.read(|s| s.nodes().keys().find(|id| weir_node::tls::certificate_names(&certificate, id).is_ok()).cloned());
        let Some(peer) = peer else {
            tracing::warn!(%remote, "peer connection refused: its certificate names no core known to Global");
            connection.close(CLOSE_NOT_A_CORE.into(), b"not a core of this cluster");
            return;
        };
        while let Ok((send, recv)) = connection.accept_bi().await {
            let this = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                if let Err(error) = this.serve_stream(send, recv).await {
                    tracing::warn!(%peer, %error, "segment fetch failed");
                }
            });
        }
    }

    async fn serve_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<(), String> {
        let request = recv.read_to_end(MAX_REQUEST_BYTES).await.map_err(|e| e.to_string())?;
        let (header, file) = match self.open(&request).await {
            Ok((file, bytes, blake3)) => (FetchHeader::Ok { bytes, blake3 }, Some(file)),
            Err(message) => (FetchHeader::Error { message }, None),
        };
        let header = serde_json::to_vec(&header).expect("header encodes");
        send.write_all(&(header.len() as u32).to_be_bytes()).await.map_err(|e| e.to_string())?;
        send.write_all(&header).await.map_err(|e| e.to_string())?;
        if let Some(mut file) = file {
            tokio::io::copy(&mut file, &mut send).await.map_err(|e| e.to_string())?;
        }
        send.finish().map_err(|e| e.to_string())?;
        // Wait until the client has everything (or went away) before the stream is dropped.
        let _ = send.stopped().await;
        Ok(())
    }

    async fn open(&self, request: &[u8]) -> Result<(tokio::fs::File, u64, String), String> {
        let request: FetchRequest = serde_json::from_slice(request).map_err(|e| format!("malformed fetch request: {e}"))?;
        let id = request.segment_id;
        let blake3 = self
            .global
            .read(|s| s.segment(&id).map(|seg| seg.info.blake3.clone()))
            .ok_or_else(|| format!("segment {id} is not registered in Global"))?;
        // Only ids Global registered reach the file system, so no path can be smuggled in.
        let path = self.segments_dir.join(weir_segment::segment_file_name(&id));
        let file = tokio::fs::File::open(&path).await.map_err(|e| format!("segment {id} is not on this node: {e}"))?;
        let bytes = file.metadata().await.map_err(|e| e.to_string())?.len();
        Ok((file, bytes, blake3))
    }
}

/// Fetches segment files from other cores into a local directory.
pub struct PeerClient {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
}

impl PeerClient {
    pub fn new(tls: &TlsFiles) -> Result<PeerClient, PeerSetupError> {
        let config = weir_node::tls::peer_client_config(tls, Duration::from_secs(30))?;
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(PeerSetupError::Bind)?;
        Ok(PeerClient { endpoint, config })
    }

    /// Fetches `segment` from `node` at `addr` into `dir/<id>.parquet`, checking its blake3
    /// against Global's before the file appears under that name.
    pub async fn fetch(&self, node: &str, addr: SocketAddr, segment: &SegmentInfo, dir: &Path) -> Result<PathBuf, FetchError> {
        let id = &segment.segment_id;
        let transfer = |reason: String| FetchError::Transfer { segment_id: id.clone(), node: node.to_owned(), reason };
        let io = |source| FetchError::Io { segment_id: id.clone(), source };
        let connecting = self.endpoint.connect_with(self.config.clone(), addr, node).map_err(|e| transfer(e.to_string()))?;
        let connection = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| transfer("no QUIC handshake within 10 s".into()))?
            .map_err(|e| transfer(e.to_string()))?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| transfer(e.to_string()))?;
        let request = serde_json::to_vec(&FetchRequest { segment_id: id.clone() }).expect("request encodes");
        send.write_all(&request).await.map_err(|e| transfer(e.to_string()))?;
        send.finish().map_err(|e| transfer(e.to_string()))?;
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await.map_err(|e| transfer(e.to_string()))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER_BYTES {
            return Err(transfer(format!("answer header of {len} bytes")));
        }
        let mut header = vec![0u8; len as usize];
        recv.read_exact(&mut header).await.map_err(|e| transfer(e.to_string()))?;
        let (bytes, blake3) = match serde_json::from_slice(&header).map_err(|e| transfer(format!("malformed answer header: {e}")))? {
            FetchHeader::Ok { bytes, blake3 } => (bytes, blake3),
            FetchHeader::Error { message } => return Err(transfer(message)),
        };
        if blake3 != segment.blake3 {
            return Err(FetchError::HashMismatch { segment_id: id.clone(), node: node.to_owned(), expected: segment.blake3.clone(), got: blake3 });
        }
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let final_path = dir.join(weir_segment::segment_file_name(id));
        let tmp = dir.join(format!(".{id}.{}.tmp", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = blake3::Hasher::new();
        let mut received = 0u64;
        let outcome = async {
            while let Some(chunk) = recv.read_chunk(1 << 20, true).await.map_err(|e| transfer(e.to_string()))? {
                received += chunk.bytes.len() as u64;
                if received > bytes {
                    return Err(transfer(format!("more than the {bytes} bytes announced")));
                }
                hasher.update(&chunk.bytes);
                file.write_all(&chunk.bytes).await.map_err(io)?;
            }
            if received != bytes {
                return Err(transfer(format!("{received} of {bytes} bytes arrived")));
            }
            let got = hasher.finalize().to_hex().to_string();
            if got != segment.blake3 {
                return Err(FetchError::HashMismatch { segment_id: id.clone(), node: node.to_owned(), expected: segment.blake3.clone(), got });
            }
            file.sync_all().await.map_err(io)?;
            tokio::fs::rename(&tmp, &final_path).await.map_err(io)?;
            Ok(())
        }
        .await;
        connection.close(0u32.into(), b"done");
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        outcome.map(|()| final_path)
    }
}

/// Where a query finds a segment's file: this node's own segments directory, the files
/// fetched before, or another core that has a copy (fetched, verified and kept in the
/// bounded [`FetchedCache`]).
pub struct SegmentFiles {
    pub node_id: String,
    pub global: Arc<GlobalLog>,
    pub segments_dir: PathBuf,
    pub fetched: Arc<FetchedCache>,
    /// `None` on a core without a QUIC endpoint (no certificate to present to peers).
    pub client: Option<PeerClient>,
}

impl SegmentFiles {
    pub async fn local_path(&self, segment: &SegmentInfo) -> Result<PathBuf, FetchError> {
        let name = weir_segment::segment_file_name(&segment.segment_id);
        let own = self.segments_dir.join(&name);
        if tokio::fs::try_exists(&own).await.unwrap_or(false) {
            return Ok(own);
        }
        let fetched = self.fetched.dir().join(&name);
        if tokio::fs::try_exists(&fetched).await.unwrap_or(false) {
            self.fetched.touch(&name);
            return Ok(fetched);
        }
        let no_copy = || FetchError::NoCopy { segment_id: segment.segment_id.clone() };
        let client = self.client.as_ref().ok_or_else(no_copy)?;
        // Nodes with a copy, and their QUIC address (the second address of a heartbeat).
        let holders: Vec<(String, String)> = self.global.read(|state| {
            let Some(registered) = state.segment(&segment.segment_id) else { return Vec::new() };
            registered
                .copies
                .iter()
                .filter_map(|location| match location {
                    weir_global::Location::Node(node) if *node != self.node_id => {
                        let addr = state.nodes().get(node)?.addresses.get(1)?.clone();
                        Some((node.clone(), addr))
                    }
                    _ => None,
                })
                .collect()
        });
        let mut last = no_copy();
        for (node, address) in holders {
            // An advertised address may be a host name: resolved here, at fetch time.
            let Some(addr) = tokio::net::lookup_host(address.as_str()).await.ok().and_then(|mut a| a.next()) else {
                last = FetchError::Transfer { segment_id: segment.segment_id.clone(), node: node.clone(), reason: format!("cannot resolve its address {address}") };
                continue;
            };
            match client.fetch(&node, addr, segment, self.fetched.dir()).await {
                Ok(path) => {
                    metrics::counter!("weir_segments_fetched_total").increment(1);
                    let bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
                    let (cache, global) = (self.fetched.clone(), self.global.clone());
                    let name = name.clone();
                    // Eviction removes files: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || {
                        cache.added(&name, bytes, |file| {
                            let id = file.strip_suffix(".parquet").unwrap_or(file);
                            global.read(|state| state.segment(id).is_some())
                        })
                    })
                    .await;
                    return Ok(path);
                }
                Err(error) => {
                    tracing::warn!(segment = %segment.segment_id, %node, %error, "segment fetch failed, trying the next copy");
                    last = error;
                }
            }
        }
        Err(last)
    }
}

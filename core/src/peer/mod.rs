//! Core ↔ core: fetching a segment file from the core that has it, over the QUIC endpoint
//! edges use, with its mutual TLS, under ALPN `weir-peer/1` (`weir_proto::wire::PEER_ALPN`;
//! `accept` hands such connections to [`server`]). Replication will reuse this channel.
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
//! Module map: this file (the protocol's messages and errors), [`server`], [`client`].

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

pub use client::PeerClient;
pub use server::PeerServer;

const MAX_REQUEST_BYTES: usize = 1024;
const MAX_HEADER_BYTES: u32 = 4096;

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

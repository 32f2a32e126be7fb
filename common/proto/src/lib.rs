//! Shared vocabulary of edge and core: the event model (`event`) and the edge↔core wire
//! protocol (`wire`: frames, payload encoding, ALPN).
//!
//! Architecture invariant: this crate is light: serde, serde_json, bytes, zstd and
//! thiserror only. It must never depend on rdkafka, wasmtime or the AWS SDK (the edge links
//! it), nor on a log subscriber, TLS or config loading: those belong to `weir-node`, so
//! that a crate speaking only the vocabulary (e.g. `weir-http-ingest`) does not pull them.

pub mod event;
pub mod fields;
pub mod refusal;
pub mod wire;

pub use event::{Event, EventBatch};
pub use fields::Fields;
pub use refusal::{Refusal, RefusalKind};

//! Shared vocabulary of edge and core: the event model, the edge↔core wire protocol and
//! the mutual-TLS setup for QUIC.
//!
//! Architecture invariant: this crate is light. It must never depend on rdkafka, wasmtime
//! or the AWS SDK, because the edge links it.

pub mod config;
pub mod event;
pub mod process;
pub mod tls;
pub mod wire;

pub use event::{Event, EventBatch};

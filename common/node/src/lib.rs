//! What a node process needs around its run: config loading (`config`: figment, versioned,
//! unknown keys rejected), logging and signals (`process`), the mutual-TLS configs of the
//! edge↔core QUIC link (`tls`), and replacing a file atomically (`atomic_write`).
//!
//! Kept apart from `weir-proto` so the shared vocabulary (event model, wire frames) stays
//! free of a log subscriber, TLS and figment; crates that only speak the vocabulary (such as
//! `weir-http-ingest`) do not link this one.
//!
//! Architecture invariant: this crate must never depend on rdkafka, wasmtime or the AWS SDK,
//! because the edge links it.

pub mod atomic_write;
pub mod config;
pub mod process;
pub mod tls;

//! Parsing logic of Weir's built-in parsers, in plain Rust.
//!
//! This crate owns *what* each built-in parser extracts from a line. It compiles
//! both natively (tests, the host's benchmark) and to `wasm32-wasip2`, where the
//! plugin crates wrap it with the guest SDK. It must never depend on
//! wit-bindgen, wasmtime or anything that only exists on one target.

pub mod access;
pub mod json;
pub mod kv;
pub mod model;
#[cfg(feature = "pattern")]
pub mod pattern;
pub mod syslog;
pub mod time;

pub use model::{Input, Parsed, Settings, Sink, Value};

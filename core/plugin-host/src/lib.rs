//! Runs WebAssembly parser plugins (`wit/parser.wit`, `weir:parser@0.2.0`) in a sandbox.
//!
//! This crate owns everything about plugins at run time: compiling components
//! (with an on-disk cache), instantiating them with no ambient capabilities,
//! enforcing a per-batch deadline and a per-instance memory cap, replacing
//! instances that fail and isolating the events that made them fail, hot-reloading changed plugin files, and choosing the
//! parser of a repository or ingest token. Only this crate touches wasmtime:
//! the rest of Weir sees [`ParserRegistry`], [`RawEvent`], [`Event`] and
//! [`ParsersConfig`]; `scaffold` writes new plugin projects (`weir-core plugin new`).
//! It must never drop an event: whatever a plugin does, every
//! input comes back, parsed or with `@error` / `@error_msg` fields.

mod bindings;
mod cache;
mod cli;
mod config;
mod decode;
mod error;
mod event;
mod isolate;
mod plugin;
mod registry;
mod sandbox;
pub mod scaffold;

pub use cli::{TestSummary, plugin_test, plugin_test_expect};
pub use config::{ParsersConfig, PluginConfig, SettingValue};
pub use error::Error;
pub use event::{ERROR_FIELD, ERROR_MSG_FIELD, ErrorKind, Event, Field, PARSER_FIELD, RawEvent, Value};
pub use plugin::{ParseStats, PluginInfo};
pub use registry::ParserRegistry;

//! The read API: events back out of segments, through LogScale's query endpoints.
//!
//! Owns: the query language subset ([`lang`]), time ranges ([`time`]), how a stored row
//! looks as a LogScale event ([`render`]), running a query's steps in bounded memory
//! ([`pipeline`], [`exec`]), who may read what and how a request becomes a query
//! ([`service`]), and the HTTP endpoints ([`http`]: streaming and live, `jobs`: query jobs, `graphql`: the
//! repositories a token may read). README "Reading events back" documents the user's view.
//!
//! Must never: know how segments are found or fetched (that is the [`SegmentSource`] the
//! core implements over Global and its segment directory), answer from a segment it has
//! not checked against the blake3 Global registered, or hold a whole result in memory
//! (only `tail`, `sort`, `table`, the aggregates and query jobs keep rows or values, each
//! under a configured cap).

pub mod config;
pub mod exec;
mod graphql;
pub mod http;
mod jobs;
pub mod lang;
pub mod pipeline;
pub mod render;
pub mod service;
pub mod time;

pub use config::{ConfigError, QueryConfig, ReadTokenConfig};
pub use exec::{QueryError, SegmentSource, SourceError};
pub use http::router;
pub use service::QueryService;

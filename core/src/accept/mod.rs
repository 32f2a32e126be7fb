//! Where events and other cores come in: the QUIC door with its mutual TLS, limits and
//! ALPN dispatch ([`quic`]), edge connections and their batch frames ([`edge`]), and the
//! HTTP ingest sink that publishes `weir-http-ingest`'s decoded requests ([`http`]).
//!
//! Must never answer success before Kafka acknowledged every event of a request (I1),
//! nor publish a batch from an edge whose certificate does not name it (I8).

pub mod edge;
pub mod http;
pub mod quic;

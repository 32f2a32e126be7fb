//! Weir's integration tests against real Kafka, real QUIC and real processes, one module
//! per area. One binary, not one per area: each links weir-core (rdkafka, wasmtime,
//! parquet), about 320 MB apiece, and their link time dominated a warm CI run. Helpers
//! shared by the areas live in the harness library (`weir_tests`, `tests/src`); every
//! test takes its place on the machine first (`weir_tests::gate`).

mod architecture;
mod brokers;
mod bucket;
mod console;
mod core_ingest;
mod digest;
mod edge;
mod edge_files;
mod global;
mod grafana;
mod kafka_security;
mod local_stack;
mod memory;
mod s3;
mod shippers;
mod storage;
mod tidy;

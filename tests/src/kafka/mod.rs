//! Real Kafka for tests: brokers run by `deploy/kafka.sh` (the one most tests share, one
//! of a test's own with or without SASL, or a cluster of several), topic administration
//! and metadata questions that ask again on Kafka's transient answers, and an independent
//! consumer that reads back what the core published.

mod admin;
mod broker;
mod consume;
mod retry;

pub use admin::{
    Metadata, PartitionLayout, alter_topic_config, create_topic, delete_records, delete_topic,
    topic_layout,
};
pub use broker::{Broker, Cluster, Quorum, Sasl, SaslMechanism, bench_bootstrap, shared_bootstrap};
pub use consume::{Record, consume_all, consume_until, consume_until_with, expect_events, first_copy_counts, raw_counts};
pub use retry::{KafkaFailure, METADATA_TIMEOUT, Transient, is_transient, is_transient_code, retry_transient, retry_transient_async};

/// The librdkafka config every harness client starts from. `socket.timeout.ms` is 10 s
/// instead of librdkafka's 60 s: a request a loaded broker never answers holds back every
/// later metadata question of the client (librdkafka does not send a second one while one
/// is in flight) until it times out and the connection is made again, and the harness asks
/// again well within [`METADATA_TIMEOUT`].
pub fn client_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("socket.timeout.ms", "10000");
    config
}

//! The core's Kafka connection is as secure and as durable as configured, against real
//! brokers. A core whose Kafka requires SASL (SCRAM-SHA-512) gets ready only with the
//! right credentials, which proves its admin client logs in too (it creates and describes
//! the ingest topic before the core is ready), and what it acknowledges is read back by a
//! consumer that logs in; with a wrong password, or without SASL, it never gets ready and
//! acknowledges nothing. A core never gets ready while its ingest topic is less durable
//! than it requires (too few brokers for the replication factor, `min.insync.replicas`
//! below the setting), `/ready` says why and what to do, and once an operator raises the
//! topic's `min.insync.replicas` the core gets ready without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_tests::kafka::{self, Broker, SaslMechanism};
use weir_tests::nodes::{CoreSpec, TOKEN};
use weir_tests::{certs, gate, http, init_tracing, unique};

/// A core running in this process; shut down on drop.
struct InProcessCore {
    name: String,
    base: String,
    shutdown: CancellationToken,
}

impl Drop for InProcessCore {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl InProcessCore {
    /// Starts a core from `spec` plus `[kafka.client_properties]`, through the TOML the
    /// binary would read; does not wait for it to be ready.
    async fn start(name: &str, spec: &CoreSpec, client_properties: &[(String, String)], dir: &Path) -> InProcessCore {
        let mut toml = spec.toml();
        if !client_properties.is_empty() {
            toml.push_str("\n[kafka.client_properties]\n");
            for (key, value) in client_properties {
                toml.push_str(&format!("{key:?} = {value:?}\n"));
            }
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &toml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let config = weir_core::config::CoreConfig::load(&path).unwrap_or_else(|e| panic!("load {}: {e}\n{toml}", path.display()));
        assert_eq!(
            config.kafka.client_properties.len(),
            client_properties.len(),
            "{name}: the client properties did not reach the config:\n{toml}"
        );
        let shutdown = CancellationToken::new();
        let running = weir_core::start(config, shutdown.clone()).await.unwrap_or_else(|e| panic!("start {name}: {e}"));
        InProcessCore { name: name.into(), base: format!("http://{}", running.http_addr), shutdown }
    }

    /// `GET /ready`: status and body.
    async fn ready(&self) -> (u16, String) {
        let response = http()
            .get(format!("{}/ready", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET /ready: {e}", self.name));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Polls `/ready` until it answers 200; panics with the last answer after `timeout`.
    async fn wait_ready(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut last = (0, String::new());
        while start.elapsed() < timeout {
            last = self.ready().await;
            if last.0 == 200 {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} not ready after {timeout:?}; last /ready answer {}: {}", self.name, last.0, last.1);
    }

    /// Polls `/ready` for `period`: it must answer 503 every time. Returns the last body,
    /// which says why.
    async fn stays_unready(&self, period: Duration) -> String {
        let start = Instant::now();
        let mut polls = 0;
        loop {
            let (status, body) = self.ready().await;
            polls += 1;
            assert_eq!(status, 503, "{} answered /ready with {status} after {:?} (poll {polls}): {body}", self.name, start.elapsed());
            if start.elapsed() >= period {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `POST /api/v1/ingest/raw` with one event: status and body.
    async fn ingest(&self, raw: &str) -> (u16, String) {
        let response = http()
            .post(format!("{}/api/v1/ingest/raw", self.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(raw.to_owned())
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: POST /api/v1/ingest/raw: {e}", self.name));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

/// Case-insensitive: does `text` contain every one of `needles`?
fn mentions(text: &str, needles: &[&str]) -> bool {
    let text = text.to_lowercase();
    needles.iter().all(|needle| text.contains(&needle.to_lowercase()))
}

#[tokio::test(flavor = "multi_thread")]
async fn core_publishes_to_a_broker_that_requires_sasl() {
    let _gate = gate::shared();
    init_tracing();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let broker = Broker::start_sasl(
        &dir.path().join("kafka"),
        SaslMechanism::ScramSha512,
        &[("broker", "broker-secret"), ("weir-core", "core-secret"), ("reader", "reader-secret")],
    );
    let bootstrap = broker.bootstrap();
    let broker_started = started.elapsed();

    // The right credentials: ready means the admin client logged in, created the topic
    // and described it; an ack means the producer logged in and Kafka has the event.
    let spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-sasl"), &certs);
    let core = InProcessCore::start("core-sasl", &spec, &broker.client_properties("weir-core", "core-secret"), dir.path()).await;
    let ready_after = core.wait_ready(Duration::from_secs(30)).await;
    let event = unique("sasl-event");
    let (status, body) = core.ingest(&event).await;
    assert_eq!(status, 200, "ingest through a SASL-authenticated producer: {body}\nbroker log:\n{}", broker.log_tail(20));
    let reader = broker.client_properties("reader", "reader-secret");
    let (topic, consume_bootstrap, expected) = (spec.topic.clone(), bootstrap.clone(), event.clone());
    let records = tokio::task::spawn_blocking(move || {
        kafka::consume_until_with(&consume_bootstrap, &reader, &topic, Duration::from_secs(20), |records| {
            kafka::raw_counts(records).contains_key(&expected)
        })
    })
    .await
    .unwrap();
    let counts = kafka::raw_counts(&records);
    assert_eq!(counts.get(&event), Some(&1), "the acknowledged event, read by a consumer that logs in: {counts:?}");
    drop(core);

    // A wrong password and no SASL at all, side by side: neither core gets ready, nor
    // acknowledges an event.
    let mut wrong = CoreSpec::new("core-1", &bootstrap, &unique("weir-sasl-wrong"), &certs);
    wrong.ack_timeout_ms = 2_000;
    let mut plain = CoreSpec::new("core-2", &bootstrap, &unique("weir-sasl-none"), &certs);
    plain.ack_timeout_ms = 2_000;
    let wrong_core =
        InProcessCore::start("core-wrong-password", &wrong, &broker.client_properties("weir-core", "not-the-secret"), dir.path()).await;
    let plain_core = InProcessCore::start("core-without-sasl", &plain, &[], dir.path()).await;
    let unready_for = Duration::from_secs(8);
    let (wrong_reason, plain_reason) = tokio::join!(wrong_core.stays_unready(unready_for), plain_core.stays_unready(unready_for));
    eprintln!("wrong password: /ready says {wrong_reason}");
    eprintln!("without SASL: /ready says {plain_reason}");
    // The reason carries librdkafka's last connection error, which names the cause.
    assert!(mentions(&wrong_reason, &["not ready", "cannot reach kafka", "recent kafka client errors", "authentication"]), "{wrong_reason}");
    assert!(mentions(&plain_reason, &["not ready", "cannot reach kafka", "recent kafka client errors"]), "{plain_reason}");
    // And the broker saw the wrong password.
    let log = std::fs::read_to_string(broker.dir.join("logs/server.log")).unwrap_or_default();
    assert!(
        log.contains("Failed authentication") && log.contains("invalid credentials with SASL mechanism SCRAM-SHA-512"),
        "the broker refused the wrong password; broker log:\n{}",
        broker.log_tail(30)
    );
    let (wrong_event, plain_event) = (unique("wrong-password"), unique("without-sasl"));
    let (wrong_ingest, plain_ingest) = tokio::join!(wrong_core.ingest(&wrong_event), plain_core.ingest(&plain_event));
    assert_ne!(wrong_ingest.0, 200, "a core with a wrong Kafka password acknowledged an event: {}", wrong_ingest.1);
    assert_ne!(plain_ingest.0, 200, "a core without SASL acknowledged an event: {}", plain_ingest.1);
    eprintln!(
        "timings: broker start {broker_started:?}, core ready {ready_after:?}, wrong-password ingest {} and no-SASL ingest {}, total {:?}",
        wrong_ingest.0,
        plain_ingest.0,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_core_stays_unready_while_the_topic_is_less_durable_than_required() {
    let _gate = gate::shared();
    init_tracing();
    let started = Instant::now();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());

    // (a) Three replicas asked of a one-broker cluster: the topic cannot be created.
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-rf3"), &certs);
    spec.replication_factor = 3;
    spec.min_insync_replicas = 2;
    spec.ack_timeout_ms = 2_000;
    let core = InProcessCore::start("core-rf3", &spec, &[], dir.path()).await;
    let reason = core.stays_unready(Duration::from_secs(3)).await;
    assert!(
        mentions(&reason, &["replication factor 3", "add brokers or lower kafka.replication_factor"]),
        "/ready names the replication factor and what to do: {reason}"
    );
    let (status, body) = core.ingest(&unique("rf3")).await;
    assert_eq!(status, 503, "an ingest request to a core without its topic: {body}");
    drop(core);

    // (b) On three brokers, the topic exists with min.insync.replicas 1, the core
    // requires 2. (A broker enforces min(min.insync.replicas, replicas), so this needs a
    // topic of several replicas, hence a cluster.)
    let cluster = tokio::task::block_in_place(|| kafka::Cluster::start(&dir.path().join("kafka"), 3, kafka::Quorum::Combined));
    let bootstrap = cluster.bootstrap();
    let topic = unique("weir-minisr");
    kafka::create_topic(&bootstrap, &topic, 2, 3, &[("min.insync.replicas", "1")]).await;
    let mut spec = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    spec.replication_factor = 3;
    spec.min_insync_replicas = 2;
    spec.ack_timeout_ms = 2_000;
    let core = InProcessCore::start("core-minisr", &spec, &[], dir.path()).await;
    let reason = core.stays_unready(Duration::from_secs(3)).await;
    assert!(
        mentions(&reason, &["min.insync.replicas=1", "kafka.min_insync_replicas 2", "--add-config min.insync.replicas=2"]),
        "/ready names min.insync.replicas and what to do: {reason}"
    );
    // The topic takes writes, but not as durably as required: nothing is acknowledged.
    let (status, body) = core.ingest(&unique("minisr-early")).await;
    assert_eq!(status, 503, "an unready core acknowledged an event: {body}");
    assert!(body.contains("min.insync.replicas"), "the answer says why: {body}");

    // An operator raises it; the core re-checks with backoff and gets ready, no restart.
    kafka::alter_topic_config(&bootstrap, &topic, &[("min.insync.replicas", "2")]).await;
    let ready_after = core.wait_ready(Duration::from_secs(15)).await;
    let (status, body) = core.ingest(&unique("minisr-ready")).await;
    assert_eq!(status, 200, "ready, so acknowledged: {body}");
    eprintln!("timings: ready {ready_after:?} after raising min.insync.replicas, total {:?}", started.elapsed());
}

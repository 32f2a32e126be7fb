//! Ingest benchmark, one run against one local broker (not a timed test):
//!
//!   (a) raw rdkafka producer baseline: idempotent, acks=all, the same records (batches
//!       of the same events, same JSON encoding, same linger and compression);
//!   (b) core HTTP ingest: acknowledged events/s, p50/p99 acknowledgement latency;
//!   (c) edge → QUIC → core → Kafka, client ack after the core's Kafka-backed ack;
//!
//! and prints (b) and (c) as ratios to (a).
//!
//!   cargo bench -p weir-tests --bench ingest
//!
//! Environment: WEIR_BENCH_KAFKA=host:port (else a broker is started under
//! target/bench-kafka), WEIR_BENCH_EVENTS (default 400000), WEIR_BENCH_BATCH (events per
//! request, default 500), WEIR_BENCH_CONCURRENCY (requests in flight, default 16),
//! WEIR_BENCH_EVENT_BYTES (default 200), WEIR_BENCH_ROUNDS (interleaved rounds, default 5),
//! WEIR_BENCH_PROFILE=c|c-spool (only path (c), or the edge acking after its own fsync;
//! e.g. under `perf record`; prints no ratios).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;
use weir_proto::{Event, EventBatch};
use weir_tests::nodes::{CoreSpec, EdgeSpec, TOKEN};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Settings {
    events: usize,
    batch: usize,
    concurrency: usize,
    event_bytes: usize,
}

struct Outcome {
    events_per_s: f64,
    latency: Histogram<u64>,
    /// CPU time of this process (clients, rdkafka, and the core and edge, which run
    /// in-process) per event; the broker is another process and not counted.
    cpu_us_per_event: f64,
}

impl Outcome {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<44} {:>10.0} events/s   p50 {:>7.2} ms   p99 {:>7.2} ms   cpu {:>5.2} us/event",
            self.events_per_s,
            self.latency.value_at_quantile(0.5) as f64 / 1000.0,
            self.latency.value_at_quantile(0.99) as f64 / 1000.0,
            self.cpu_us_per_event
        )
    }
}

fn lines(settings: &Settings, request: usize) -> Vec<String> {
    (0..settings.batch)
        .map(|i| {
            let head = format!("2024-05-01T10:00:00Z host=web-{} req={request} n={i} msg=", i % 7);
            let pad = settings.event_bytes.saturating_sub(head.len());
            format!("{head}{}", "GET /index.html 200 ".repeat(pad / 20 + 1)[..pad].to_owned())
        })
        .collect()
}

// ---- (a) raw rdkafka baseline ------------------------------------------------------

struct Done(Mutex<Option<oneshot::Sender<()>>>, AtomicUsize);

struct Ctx;
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = Arc<Done>;
    fn delivery(&self, result: &DeliveryResult<'_>, done: Arc<Done>) {
        if let Err((e, _)) = result {
            panic!("baseline delivery failed: {e}");
        }
        if done.1.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(tx) = done.0.try_lock().ok().and_then(|mut g| g.take())
        {
            let _ = tx.send(());
        }
    }
}

async fn baseline(bootstrap: &str, topic: &str, settings: &Settings) -> Outcome {
    let producer: Arc<ThreadedProducer<Ctx>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create_with_context(Ctx)
            .expect("baseline producer"),
    );
    let topic = topic.to_owned();
    run_clients(settings, |request| lines(settings, request), move |request, raws: Vec<String>| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            // The same record the core writes: one JSON batch of the request's events.
            let batch = EventBatch {
                repository: "bench".into(),
                tags: Default::default(),
                parser: None,
                ingest_ts_ms: weir_proto::event::now_ms(),
                attributes: Default::default(),
                events: raws.into_iter().map(Event::raw).collect(),
            };
            let key = batch.source_key();
            let (tx, rx) = oneshot::channel();
            let done = Arc::new(Done(Mutex::new(Some(tx)), AtomicUsize::new(0)));
            let parts = weir_proto::event::encode_parts(batch, 900_000).unwrap();
            done.1.store(parts.len(), Ordering::Release);
            for payload in parts {
                let mut record = BaseRecord::with_opaque_to(&topic, done.clone()).key(&key).payload(&payload);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
            let _ = request;
            rx.await.map_err(|_| "delivery channel closed".to_string())
        }
    })
    .await
}

// ---- (b), (c): HTTP clients -----------------------------------------------------------

async fn http_clients(base: String, ack_core: bool, settings: &Settings) -> Outcome {
    let client = reqwest::Client::builder().pool_max_idle_per_host(settings.concurrency).build().unwrap();
    // Request bodies are the client's work, not the system's: encode them before the clock.
    let prepare = |request| bytes::Bytes::from(serde_json::to_vec(&serde_json::json!([{"messages": lines(settings, request)}])).unwrap());
    run_clients(settings, prepare, move |_request, body: bytes::Bytes| {
        let client = client.clone();
        let url = format!("{base}/api/v1/ingest/humio-unstructured");
        async move {
            let mut request = client.post(url).header("authorization", format!("Bearer {TOKEN}")).body(body);
            if ack_core {
                request = request.header("x-weir-ack", "core");
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            if response.status() != 200 {
                return Err(format!("{}: {}", response.status(), response.text().await.unwrap_or_default()));
            }
            Ok(())
        }
    })
    .await
}

/// `concurrency` clients send `events / batch` requests; measures acknowledged events/s
/// and per-request latency.
async fn run_clients<T, P, F, Fut>(settings: &Settings, prepare: P, send: F) -> Outcome
where
    T: Clone + Send + Sync + 'static,
    P: Fn(usize) -> T,
    F: Fn(usize, T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let n_requests = settings.events / settings.batch;
    let bodies: Arc<Vec<T>> = Arc::new((0..n_requests).map(prepare).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let send = Arc::new(send);
    let cpu_before = weir_tests::process_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..settings.concurrency {
        let (bodies, next, send) = (bodies.clone(), next.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).unwrap();
            loop {
                let request = next.fetch_add(1, Ordering::Relaxed);
                if request >= bodies.len() {
                    return latency;
                }
                let t = Instant::now();
                if let Err(e) = send(request, bodies[request].clone()).await {
                    panic!("request {request} failed: {e}");
                }
                latency.record(t.elapsed().as_micros() as u64).unwrap();
            }
        }));
    }
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        latency.add(task.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed();
    let n_events = (n_requests * settings.batch) as f64;
    let cpu_us_per_event = (weir_tests::process_cpu_seconds() - cpu_before) * 1e6 / n_events;
    Outcome { events_per_s: n_events / elapsed.as_secs_f64(), latency, cpu_us_per_event }
}

fn main() {
    let settings = Settings {
        events: env("WEIR_BENCH_EVENTS", 400_000),
        batch: env("WEIR_BENCH_BATCH", 500),
        concurrency: env("WEIR_BENCH_CONCURRENCY", 16),
        event_bytes: env("WEIR_BENCH_EVENT_BYTES", 200),
    };
    let bootstrap = weir_tests::kafka::bench_bootstrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let certs = weir_tests::certs(dir.path());
        let run = weir_tests::unique("bench");
        println!(
            "ingest benchmark: {} events of {} bytes, {} per request, {} requests in flight, broker {bootstrap}",
            settings.events, settings.event_bytes, settings.batch, settings.concurrency
        );

        let topic_a = format!("{run}-raw");
        weir_tests::kafka::create_topic(&bootstrap, &topic_a, 2, 1, &[]).await;
        let shutdown = CancellationToken::new();
        let core_spec = CoreSpec::new("core-1", &bootstrap, &format!("{run}-core"), &certs);
        let mut core_config = core_spec.config(dir.path());
        core_config.ingest.max_body_bytes = 64 << 20;
        let core = weir_core::start(core_config, shutdown.clone()).await.expect("start core");
        let core_base = format!("http://{}", core.http_addr);
        wait_ready(&core_base).await;
        let edge_spec = EdgeSpec::new(dir.path(), vec![core.quic_addr.unwrap().to_string()], &certs);
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, edge_spec.toml()).unwrap();
        let mut edge_config = weir_edge::config::EdgeConfig::load(&path).unwrap();
        edge_config.ingest.max_body_bytes = 64 << 20;
        edge_config.forward.max_in_flight = settings.concurrency.max(8);
        let edge = weir_edge::start(edge_config, shutdown.clone()).await.expect("start edge");
        let edge_base = format!("http://{}", edge.http_addr);

        // Warm-up so topic creation and connection setup are outside the measurements.
        let warm = Settings { events: settings.batch * 4, ..settings };
        baseline(&bootstrap, &topic_a, &warm).await;
        http_clients(core_base.clone(), false, &warm).await;
        http_clients(edge_base.clone(), true, &warm).await;

        // Interleaved rounds, so that a slow moment of this shared machine hits every path
        // alike; each path is reported by its median round.
        let rounds = env("WEIR_BENCH_ROUNDS", 5);
        // One path alone, e.g. under `perf record`: `c`, or `c-spool` (the edge answering
        // after its own fsync, to split (c)'s latency into edge and forwarding).
        if let Ok(path) = std::env::var("WEIR_BENCH_PROFILE") {
            for round in 1..=rounds {
                let c = http_clients(edge_base.clone(), path == "c", &settings).await;
                println!("round {round}: {}", c.line(&format!("({path}) edge")));
            }
            shutdown.cancel();
            return;
        }
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            a.push(baseline(&bootstrap, &topic_a, &settings).await);
            b.push(http_clients(core_base.clone(), false, &settings).await);
            c.push(http_clients(edge_base.clone(), true, &settings).await);
            println!(
                "round {round}: (a) {:.0}  (b) {:.0}  (c) {:.0} events/s",
                a[round - 1].events_per_s,
                b[round - 1].events_per_s,
                c[round - 1].events_per_s
            );
        }
        let (a, b, c) = (median(a), median(b), median(c));
        println!();
        println!("median of {rounds} rounds:");
        println!("{}", a.line("(a) raw rdkafka producer (acks=all, idempotent)"));
        println!("{}", b.line("(b) core HTTP ingest"));
        println!("{}", c.line("(c) edge -> QUIC -> core -> Kafka (core ack)"));
        println!();
        println!("ratio (b)/(a) = {:.2}   target >= 0.70", b.events_per_s / a.events_per_s);
        println!("ratio (c)/(a) = {:.2}   target >= 0.50", c.events_per_s / a.events_per_s);
        shutdown.cancel();
        let _ = core.task.await;
        let _ = edge.task.await;
    });
}

fn median(mut outcomes: Vec<Outcome>) -> Outcome {
    outcomes.sort_by(|x, y| x.events_per_s.total_cmp(&y.events_per_s));
    outcomes.swap_remove(outcomes.len() / 2)
}

async fn wait_ready(base: &str) {
    for _ in 0..300 {
        if reqwest::get(format!("{base}/ready")).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} not ready");
}


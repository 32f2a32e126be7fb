//! Digest benchmark, one run against one local broker (not a timed test). The same
//! pre-filled ingest topic (2 partitions, records as an edge forwards them: one JSON
//! `EventBatch` per record, batch-id headers, JSON log lines as events) is read into
//! segment files by:
//!
//!   (a) a raw consume+write baseline of our own: an rdkafka consumer per partition,
//!       decode the batch JSON, one `SegmentWriter` row per event, nothing else;
//!   (b) the digest with no parser: a real core (`weir_core::start`), timed from the
//!       moment Global shows its first partition claimed;
//!   (c) the digest's row building (`digest::rows::RowBuilder`: dedup, parser choice,
//!       event → row) with the native build of the JSON parser, on the digest's own
//!       partition reader and segment writer (a core cannot load a native parser);
//!   (d) the same with the JSON parser as Wasm (`plugins/target/wasm/json.wasm`) through
//!       `weir-plugin-host`, and also a real core with it;
//!
//! then prints the ratios, and the ingest-to-visible latency p50/p99 of a core with the
//! Wasm parser at half of (d)'s measured rate.
//!
//!   bash plugins/build.sh && cargo bench -p weir-tests --bench digest
//!
//! Every path of a round writes the same segments: a segment ends at `segment_bytes` of
//! records or `flush_interval` after its first record, as `digest::partition` does.
//! Throughput counts from the first record asked for to the last segment finished; for
//! a core, the end is when its digest turned the last event into a row (the core's own
//! `weir_digest_events_total`, caught by this process's metrics recorder) plus the
//! duration of its final flush (`weir_digest_flush_seconds`: write, fsync, register in
//! Global), which leaves out only the wait for the flush interval of the last, partial
//! segment. That wait is in "visible after", printed next to it, and so is the core's
//! start-up (start → first partition claimed).
//!
//! Latency: requests of `WEIR_BENCH_LATENCY_BATCH` events are posted to the core's HTTP
//! ingest at half the rate; the first event of each carries a marker. A watcher polls
//! the core's Global (`RunningCore::global()`) every 5 ms and notes when each segment
//! appears; afterwards every segment is read back, and each marker's latency is the
//! moment its segment appeared minus the moment its request was sent. Visible means
//! registered in Global, which is what a query consults.
//!
//! Environment: WEIR_BENCH_KAFKA=host:port (else a broker is started under
//! target/bench-kafka), WEIR_BENCH_EVENTS (pre-filled events, default 400000),
//! WEIR_BENCH_BATCH (events per record, default 500), WEIR_BENCH_ROUNDS (interleaved
//! rounds, default 5), WEIR_BENCH_SEGMENT_BYTES (default 8 MiB), WEIR_BENCH_FLUSH_MS
//! (flush interval of the throughput runs, default 1000), WEIR_BENCH_LATENCY_S (default
//! 20; 0 skips the latency run), WEIR_BENCH_LATENCY_FLUSH_MS (default 5000, the
//! digest's default), WEIR_BENCH_LATENCY_BATCH (default 200), WEIR_BENCH_ONLY=a|b|c|d|
//! d-core (one path alone, e.g. under `perf record`; prints no ratios).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use weir_core::config::{CoreConfig, KafkaConfig};
use weir_core::digest::rows::{BatchParser, RowBuilder, StoredSet};
use weir_core::kafka::ingest_reader::PartitionReader;
use weir_core::kafka::{BatchPart, Publisher, Record};
use weir_global::Dedup;
use weir_parsers::json::JsonParser;
use weir_parsers::model::{Input, Value as NativeValue};
use weir_plugin_host::{ErrorKind, Event as ParsedEvent, Field, ParserRegistry, ParsersConfig, PluginConfig, RawEvent, Value};
use weir_proto::{Event, EventBatch};
use weir_segment::{SegmentMeta, SegmentReader, SegmentRow, SegmentWriter};
use weir_tests::nodes::{CoreSpec, REPOSITORY, TOKEN};

const PARTITIONS: u32 = 2;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone)]
struct Settings {
    events: usize,
    batch: usize,
    segment_bytes: u64,
    flush: Duration,
}

/// One JSON log line, ~260 bytes, 14 fields once flattened (the plugin host's
/// native-vs-component benchmark uses the same shape).
fn line(i: usize, marker: Option<u64>) -> String {
    let marker = marker.map_or(String::new(), |m| format!(r#","bench_marker":{m}"#));
    format!(
        r#"{{"@timestamp":"2024-05-01T10:{:02}:{:02}.{:03}Z","level":"{}","service":"api-{}","message":"request {} done","http":{{"method":"GET","path":"/v1/items/{}","status":{},"latency_ms":{}.5,"bytes":{}}},"user":{{"id":{},"roles":["admin","dev"]}},"trace_id":"{:016x}"{marker}}}"#,
        i / 60 % 60,
        i % 60,
        i % 1000,
        ["info", "warn", "error"][i % 3],
        i % 7,
        i,
        i * 31 % 10_000,
        [200, 404, 500][i % 3],
        i % 250,
        i * 17 % 100_000,
        i % 5000,
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

// ---- what a run measured ---------------------------------------------------------------

struct Outcome {
    events: u64,
    elapsed: Duration,
    cpu_s: f64,
    segments: usize,
    /// Cores only: start → first partition claimed, and from then → every offset in a
    /// registered segment (includes the last segment's wait for the flush interval).
    startup: Option<Duration>,
    visible_after: Option<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn line(&self, name: &str) -> String {
        let mut text = format!(
            "{name:<52} {:>9.0} events/s  {:>6.2} us cpu/event ({:>7.0} events per cpu-s)  {:>3} segments",
            self.rate(),
            self.cpu_s * 1e6 / self.events as f64,
            self.events as f64 / self.cpu_s.max(1e-9),
            self.segments
        );
        if let (Some(startup), Some(visible)) = (self.startup, self.visible_after) {
            text += &format!("\n{:<52} start-up {:.2} s, all visible in Global after {:.2} s", "", startup.as_secs_f64(), visible.as_secs_f64());
        }
        text
    }
}

fn median(mut outcomes: Vec<Outcome>) -> Outcome {
    outcomes.sort_by(|x, y| x.rate().total_cmp(&y.rate()));
    outcomes.swap_remove(outcomes.len() / 2)
}

// ---- the native JSON parser where the digest expects its parsers ----------------------

/// `weir_parsers::json` compiled into this benchmark, answering like the plugin host's
/// registry would for a `json` plugin: every input back, parsed or with `@error`.
struct NativeJson(JsonParser);

impl BatchParser for NativeJson {
    fn has_parser(&self, name: &str) -> bool {
        name == "json"
    }
    fn parser_for(&self, _repository: &str) -> Option<&str> {
        Some("json")
    }
    fn parse_with(&self, parser: &str, batch: Vec<RawEvent>) -> Option<Vec<ParsedEvent>> {
        (parser == "json").then(|| {
            batch
                .into_iter()
                .map(|event| {
                    let input = Input { raw: &event.raw, repository: &event.repository, tags: &event.tags, ingest_time_ns: event.ingest_time_ns };
                    match self.0.parse(&input) {
                        Ok(parsed) => ParsedEvent {
                            raw: parsed.raw.unwrap_or(event.raw),
                            timestamp_ns: parsed.timestamp_ns,
                            fields: parsed.fields.into_iter().map(|(name, value)| Field { name, value: host_value(value) }).collect(),
                        },
                        Err(message) => ParsedEvent::failed(event.raw, "json", ErrorKind::ParseFailed, &message),
                    }
                })
                .collect()
        })
    }
}

fn host_value(value: NativeValue) -> Value {
    match value {
        NativeValue::Text(s) => Value::Text(s),
        NativeValue::Int(i) => Value::Int(i),
        NativeValue::Float(f) => Value::Float(f),
        NativeValue::Bool(b) => Value::Boolean(b),
        NativeValue::Null => Value::Null,
    }
}

fn wasm_parsers() -> ParsersConfig {
    let root = weir_tests::workspace_root();
    let wasm = root.join("plugins/target/wasm/json.wasm");
    assert!(wasm.is_file(), "{} is missing: run `bash plugins/build.sh` first", wasm.display());
    ParsersConfig {
        plugins: [("json".to_string(), PluginConfig::new(&wasm, &[]))].into(),
        default: Some("json".into()),
        cache_dir: Some(root.join("plugins/target/host-test-cache")),
        ..ParsersConfig::default()
    }
}

// ---- the core's metrics, caught in-process --------------------------------------------

/// The digest's event counter and flush timings, from the metrics the core emits.
#[derive(Default)]
struct DigestProbe {
    events: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// (when recorded, seconds): recorded once a flush's segment is registered.
    flushes: Arc<FlushLog>,
}

#[derive(Default)]
struct FlushLog(Mutex<Vec<(Instant, f64)>>);

impl metrics::HistogramFn for FlushLog {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push((Instant::now(), value));
    }
}

struct ProbeRecorder(Arc<DigestProbe>);

impl metrics::Recorder for ProbeRecorder {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() != "weir_digest_events_total" {
            return metrics::Counter::noop();
        }
        if key.labels().any(|l| l.key() == "result" && l.value() == "failed") {
            metrics::Counter::from_arc(self.0.failed.clone())
        } else {
            metrics::Counter::from_arc(self.0.events.clone())
        }
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        if key.name() == "weir_digest_flush_seconds" {
            metrics::Histogram::from_arc(self.0.flushes.clone())
        } else {
            metrics::Histogram::noop()
        }
    }
}

// ---- pre-filling the topic --------------------------------------------------------------

/// Publishes `settings.events` events through the core's own publisher, as forwarded
/// batches (with batch ids, so the digest's dedup runs as it does for an edge's records);
/// returns each partition's end offset.
async fn prefill(kafka: &KafkaConfig, settings: &Settings) -> Vec<u64> {
    let publisher = Publisher::new(kafka).expect("publisher");
    publisher.ensure_topic(kafka, &CancellationToken::new()).await;
    let mut records = Vec::new();
    for (seq, start) in (0..settings.events).step_by(settings.batch).enumerate() {
        let batch = EventBatch {
            repository: REPOSITORY.into(),
            // Eight sources, so that the records' keys spread over both partitions.
            tags: [("host".to_string(), format!("web-{}", seq % 8))].into(),
            parser: None,
            ingest_ts_ms: weir_proto::event::now_ms(),
            attributes: Default::default(),
            events: (start..(start + settings.batch).min(settings.events)).map(|i| Event::raw(line(i, None))).collect(),
        };
        let mut parts = Vec::new();
        publisher.encode(batch, &mut parts).expect("encode");
        let count = parts.len() as u32;
        for (index, part) in parts.into_iter().enumerate() {
            let id = format!("bench-edge:inc-1:{seq}");
            records.push(Record { batch: Some(BatchPart { id, index: index as u32, count }), ..part });
        }
        if records.len() >= 64 {
            publisher.publish_records(std::mem::take(&mut records)).await.expect("pre-fill");
        }
    }
    publisher.publish_records(records).await.expect("pre-fill");
    let metadata = weir_tests::kafka::Metadata::new(&kafka.bootstrap_servers);
    (0..PARTITIONS)
        .map(|p| metadata.high_watermark(&kafka.ingest_topic, p as i32, Duration::from_secs(10)).expect("watermark") as u64)
        .collect()
}

// ---- (a) raw baseline ----------------------------------------------------------------------

/// One partition, the plainest way: consume, decode, one row per event, a segment per
/// `segment_bytes` or flush interval. No dedup, no parser choice, no Global.
fn raw_partition(kafka: &KafkaConfig, p: u32, end: u64, dir: &Path, settings: &Settings) -> (u64, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", weir_tests::unique("bench-raw"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    // As the digest's reader does: the watermarks first (which also connects to the
    // partition's leader), then the partition from offset 0.
    let what = format!("watermarks of {}/{p}", kafka.ingest_topic);
    let deadline = Instant::now() + weir_tests::kafka::METADATA_TIMEOUT;
    weir_tests::kafka::retry_transient(&what, deadline, |timeout| consumer.fetch_watermarks(&kafka.ingest_topic, p as i32, timeout)).expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&kafka.ingest_topic, p as i32, Offset::Offset(0)).unwrap();
    consumer.assign(&assignment).unwrap();
    let (mut events, mut segments) = (0, 0);
    let mut current: Option<(SegmentWriter, Instant, u64)> = None;
    let mut position = 0;
    while position < end {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.expect("consume");
        let offset = message.offset() as u64;
        let payload = message.payload().unwrap_or_default();
        let batch: EventBatch = serde_json::from_slice(payload).expect("a batch");
        let (writer, _, bytes) = current.get_or_insert_with(|| (new_writer(dir, "raw", p, offset), Instant::now(), 0));
        for (i, event) in batch.events.into_iter().enumerate() {
            let row = SegmentRow {
                repository: batch.repository.clone(),
                timestamp_ms: event.timestamp_ms.unwrap_or(batch.ingest_ts_ms),
                ingest_timestamp_ms: batch.ingest_ts_ms,
                raw: event.raw,
                id: SegmentRow::event_id(p as i32, offset as i64, i as u32),
                offset: offset as i64,
                tags: batch.tags.clone(),
                fields: batch.attributes.clone().into(),
                parser: None,
                error: None,
            };
            writer.push(row).expect("push");
            events += 1;
        }
        *bytes += payload.len() as u64;
        position = offset + 1;
        if current.as_ref().is_some_and(|(_, started, bytes)| *bytes >= settings.segment_bytes || started.elapsed() >= settings.flush) {
            current.take().unwrap().0.finish(position as i64).expect("finish");
            segments += 1;
        }
    }
    if let Some((writer, _, _)) = current {
        writer.finish(position as i64).expect("finish");
        segments += 1;
    }
    (events, segments)
}

fn new_writer(dir: &Path, path: &str, p: u32, offset: u64) -> SegmentWriter {
    let meta = SegmentMeta { segment_id: format!("{path}-p{p}-o{offset}"), partition: p as i32, offset_start: offset as i64 };
    SegmentWriter::create(dir, meta).expect("segment writer")
}

// ---- (b), (c), (d): the digest's row building on its reader and writer ----------------------

/// One partition as `digest::partition::run` does it, minus Global: the digest's reader,
/// `RowBuilder` (dedup, parser, rows) and the segment writer, flushing on the same rule.
fn digest_partition<P: BatchParser + ?Sized>(kafka: &KafkaConfig, p: u32, end: u64, dir: &Path, settings: &Settings, parsers: Option<&P>) -> (u64, usize) {
    let reader = PartitionReader::open(kafka, &weir_tests::unique("bench-loop"), p, 0).expect("partition reader");
    let builder = RowBuilder { partition: p, parsers, foreign_repository: "foreign" };
    let mut dedup = Dedup::default();
    let (mut events, mut segments, mut position) = (0, 0, 0);
    let mut current: Option<(SegmentWriter, Instant, u64, StoredSet)> = None;
    let mut rows = Vec::new();
    while position < end {
        let Some(record) = reader.poll(Duration::from_millis(100), position).expect("read") else { continue };
        let (writer, _, bytes, stored) =
            current.get_or_insert_with(|| (new_writer(dir, "loop", p, record.offset), Instant::now(), 0, StoredSet::default()));
        rows.clear();
        let outcome = builder.rows(&record, &mut dedup, stored, &mut rows);
        assert!(!outcome.duplicate && !outcome.foreign && outcome.failed == 0, "offset {}: {outcome:?}", record.offset);
        for row in rows.drain(..) {
            writer.push(row).expect("push");
        }
        events += outcome.events;
        *bytes += record.payload.len() as u64;
        position = record.offset + 1;
        if current.as_ref().is_some_and(|(_, started, bytes, _)| *bytes >= settings.segment_bytes || started.elapsed() >= settings.flush) {
            let (writer, _, _, stored) = current.take().unwrap();
            std::hint::black_box(stored.to_stored());
            writer.finish(position as i64).expect("finish");
            segments += 1;
        }
    }
    if let Some((writer, _, _, stored)) = current {
        std::hint::black_box(stored.to_stored());
        writer.finish(position as i64).expect("finish");
        segments += 1;
    }
    (events, segments)
}

/// Runs `one` for every partition on a thread of its own (as the digest does) and times
/// it all.
fn per_partition(ends: &[u64], one: impl Fn(u32, u64, &Path) -> (u64, usize) + Sync) -> Outcome {
    let dir = tempfile::tempdir().expect("segments dir");
    let cpu = weir_tests::process_cpu_seconds();
    let started = Instant::now();
    let (one, path) = (&one, dir.path());
    let results: Vec<(u64, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ends.iter().enumerate().map(|(p, &end)| scope.spawn(move || one(p as u32, end, path))).collect();
        handles.into_iter().map(|h| h.join().expect("partition thread")).collect()
    });
    Outcome {
        events: results.iter().map(|r| r.0).sum(),
        elapsed: started.elapsed(),
        cpu_s: weir_tests::process_cpu_seconds() - cpu,
        segments: results.iter().map(|r| r.1).sum(),
        startup: None,
        visible_after: None,
    }
}

// ---- (b), (d) in a real core -----------------------------------------------------------------

struct Bench {
    bootstrap: String,
    topic: String,
    certs: PathBuf,
    dir: PathBuf,
    probe: Arc<DigestProbe>,
}

impl Bench {
    fn core_config(&self, node_id: &str, topic: &str, parsers: Option<ParsersConfig>, settings: &Settings) -> CoreConfig {
        let mut spec = CoreSpec::new(node_id, &self.bootstrap, topic, &self.certs);
        spec.data_dir = self.dir.join(weir_tests::unique(node_id));
        spec.max_body_bytes = 64 << 20;
        let mut config = spec.config(&self.dir);
        // No edges here: the records come pre-filled or over HTTP. Without QUIC no replicas
        // (one copy), and nothing truncated: the digest alone is measured.
        config.quic = None;
        config.storage.replication_factor = 1;
        config.truncation.enabled = false;
        config.digest.flush_interval_ms = settings.flush.as_millis() as u64;
        config.digest.segment_bytes = settings.segment_bytes;
        if let Some(parsers) = parsers {
            config.parsers = parsers;
        }
        config
    }

    /// A core digesting the pre-filled topic from offset 0 (its Global is new).
    async fn core_run(&self, node_id: &str, parsers: Option<ParsersConfig>, settings: &Settings, ends: &[u64]) -> Outcome {
        let config = self.core_config(node_id, &self.topic, parsers, settings);
        let total_events = settings.events as u64;
        let events_before = self.probe.events.load(Ordering::Acquire);
        let failed_before = self.probe.failed.load(Ordering::Acquire);
        let shutdown = CancellationToken::new();
        let launched = Instant::now();
        let core = weir_core::start(config, shutdown.clone()).await.expect("start core");
        let global = core.global();
        // The first partition claimed: its worker starts reading now (the second follows
        // one Global round trip later; counting from the first is the conservative end).
        loop {
            if global.read(|s| (0..PARTITIONS).any(|p| s.partition(p).epoch > 0)) {
                break;
            }
            assert!(launched.elapsed() < Duration::from_secs(60), "the core claimed no partitions within 60 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let claimed = Instant::now();
        let cpu = weir_tests::process_cpu_seconds();
        let mut rows_done = None;
        loop {
            if rows_done.is_none() && self.probe.events.load(Ordering::Acquire) - events_before >= total_events {
                rows_done = Some(Instant::now());
            }
            if global.read(|s| (0..PARTITIONS).all(|p| s.resume_point(p) >= ends[p as usize])) {
                break;
            }
            assert!(claimed.elapsed() < Duration::from_secs(300), "the core did not digest the topic within 300 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let visible = Instant::now();
        // Until everything is visible: the wait for the last flush costs next to nothing.
        let cpu_s = weir_tests::process_cpu_seconds() - cpu;
        let rows_done = rows_done.unwrap_or(visible);
        let final_flush = self.probe.flushes.0.lock().unwrap().iter().filter(|(at, _)| *at >= rows_done).map(|(_, s)| *s).fold(0.0, f64::max);
        let segments = global.read(|s| (0..PARTITIONS).map(|p| s.segments(p).len()).sum());
        let events: u64 = global.read(|s| (0..PARTITIONS).flat_map(|p| s.segments(p)).map(|seg| seg.info.n_events).sum());
        assert_eq!(events, total_events, "events in registered segments");
        assert_eq!(self.probe.failed.load(Ordering::Acquire), failed_before, "events failed to parse");
        shutdown.cancel();
        let _ = core.task.await;
        let elapsed = rows_done - claimed + Duration::from_secs_f64(final_flush);
        Outcome { events, elapsed, cpu_s, segments, startup: Some(claimed - launched), visible_after: Some(visible - claimed) }
    }

    /// A core with the Wasm parser, fed over HTTP at `rate` events/s for `duration`:
    /// p50/p99 of request sent → its segment registered in Global.
    async fn latency(&self, rate: f64, duration: Duration, batch: usize, flush: Duration) -> (Histogram<u64>, Histogram<u64>, usize) {
        let topic = weir_tests::unique("bench-digest-live");
        let settings = Settings { events: 0, batch, segment_bytes: 64 << 20, flush };
        let config = self.core_config("core-live", &topic, Some(wasm_parsers()), &settings);
        let segments_dir = weir_core::store::DataDir::new(&config.data_dir).segments_dir();
        let shutdown = CancellationToken::new();
        let core = weir_core::start(config, shutdown.clone()).await.expect("start core");
        let base = format!("http://{}", core.http_addr);
        weir_tests::eventually("the live core ready", Duration::from_secs(60), || {
            let url = format!("{base}/ready");
            async move { reqwest::get(url).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        let global = core.global();
        weir_tests::eventually("both partitions claimed", Duration::from_secs(60), || {
            let claimed = global.read(|s| (0..PARTITIONS).all(|p| s.partition(p).epoch > 0));
            async move { claimed.then_some(()) }
        })
        .await;

        // The watcher: when each segment became visible.
        let seen: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let watching = CancellationToken::new();
        let watcher = {
            let (global, seen, watching) = (global.clone(), seen.clone(), watching.clone());
            tokio::spawn(async move {
                while !watching.is_cancelled() {
                    let ids: Vec<String> = global.read(|s| (0..PARTITIONS).flat_map(|p| s.segments(p)).map(|seg| seg.info.segment_id.clone()).collect());
                    let now = Instant::now();
                    {
                        let mut seen = seen.lock().unwrap();
                        for id in ids {
                            seen.entry(id).or_insert(now);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };

        // Open loop at a fixed rate: a request every `batch / rate` seconds, whatever the
        // answers take.
        let client = reqwest::Client::new();
        let url = format!("{base}/api/v1/ingest/humio-unstructured");
        let n_requests = ((rate * duration.as_secs_f64()) / batch as f64).ceil().max(1.0) as u64;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n_requests as usize]));
        let acks = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
        let mut requests = Vec::new();
        for seq in 0..n_requests {
            ticker.tick().await;
            let lines: Vec<String> = (0..batch).map(|i| line(seq as usize * batch + i, (i == 0).then_some(seq))).collect();
            // Eight sources, as in the pre-fill: one source's records all go to one partition.
            let body = serde_json::to_vec(&serde_json::json!([{ "tags": { "host": format!("web-{}", seq % 8) }, "messages": lines }])).unwrap();
            let (client, url, sent, acks) = (client.clone(), url.clone(), sent.clone(), acks.clone());
            requests.push(tokio::spawn(async move {
                let at = Instant::now();
                sent.lock().unwrap()[seq as usize] = Some(at);
                let response = client.post(url).header("authorization", format!("Bearer {TOKEN}")).body(body).send().await.expect("post");
                assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
                acks.lock().unwrap().record(at.elapsed().as_micros() as u64).unwrap();
            }));
        }
        for request in requests {
            request.await.expect("request task");
        }
        let metadata = weir_tests::kafka::Metadata::new(&self.bootstrap);
        let ends: Vec<u64> =
            (0..PARTITIONS).map(|p| metadata.high_watermark(&topic, p as i32, Duration::from_secs(10)).expect("watermark") as u64).collect();
        weir_tests::eventually("every posted event in a registered segment", flush * 4 + Duration::from_secs(30), || {
            let done = global.read(|s| (0..PARTITIONS).all(|p| s.resume_point(p) >= ends[p as usize]));
            async move { done.then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        watching.cancel();
        watcher.await.unwrap();

        // Which segment holds each marker.
        let seen = seen.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        let mut visible = Histogram::<u64>::new(3).unwrap();
        let mut found = vec![false; n_requests as usize];
        for (id, at) in &seen {
            let path = segments_dir.join(weir_segment::segment_file_name(id));
            let reader = SegmentReader::open(&path).expect("open segment");
            for row in reader.all_rows().expect("rows") {
                let row = row.expect("row");
                assert!(row.error.is_none(), "{row:?}");
                let Some(marker) = row.fields.get("bench_marker").and_then(|m| m.as_u64()) else { continue };
                assert!(!found[marker as usize], "marker {marker} stored twice");
                found[marker as usize] = true;
                let sent_at = sent[marker as usize].expect("sent");
                visible.record(at.saturating_duration_since(sent_at).as_micros() as u64).unwrap();
            }
        }
        assert!(found.iter().all(|f| *f), "{} of {n_requests} markers not found in any segment", found.iter().filter(|f| !**f).count());
        shutdown.cancel();
        let _ = core.task.await;
        let acks = acks.lock().unwrap().clone();
        (visible, acks, n_requests as usize)
    }
}

fn main() {
    let settings = Settings {
        events: env("WEIR_BENCH_EVENTS", 400_000),
        batch: env("WEIR_BENCH_BATCH", 500),
        segment_bytes: env("WEIR_BENCH_SEGMENT_BYTES", 8 << 20) as u64,
        flush: Duration::from_millis(env("WEIR_BENCH_FLUSH_MS", 1_000) as u64),
    };
    let rounds = env("WEIR_BENCH_ROUNDS", 5);
    let latency_s = env("WEIR_BENCH_LATENCY_S", 20);
    let only = std::env::var("WEIR_BENCH_ONLY").ok();
    let probe = Arc::new(DigestProbe::default());
    metrics::set_global_recorder(ProbeRecorder(probe.clone())).expect("the only metrics recorder");
    let bootstrap = weir_tests::kafka::bench_bootstrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let certs = weir_tests::certs(dir.path());
        let bench = Bench { bootstrap: bootstrap.clone(), topic: weir_tests::unique("bench-digest"), certs, dir: dir.path().to_owned(), probe };
        let kafka = bench.core_config("core-fill", &bench.topic, None, &settings).kafka;
        let ends = prefill(&kafka, &settings).await;
        let bytes: u64 = (0..10).map(|i| line(i, None).len() as u64).sum::<u64>() / 10;
        println!(
            "digest benchmark: {} events (JSON lines of ~{bytes} bytes) in records of {}, {PARTITIONS} partitions {:?}, \
             segments of {} MiB or {} ms, broker {bootstrap}, {} CPUs",
            settings.events,
            settings.batch,
            ends,
            settings.segment_bytes >> 20,
            settings.flush.as_millis(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        let registry = ParserRegistry::new(&wasm_parsers()).expect("load json.wasm");
        let native = NativeJson(JsonParser::default());

        // The loop paths block this thread; no core runs while they do.
        let run = |path: &str| match path {
            "a" => per_partition(&ends, |p, end, dir| raw_partition(&kafka, p, end, dir, &settings)),
            "b" => per_partition(&ends, |p, end, dir| digest_partition::<ParserRegistry>(&kafka, p, end, dir, &settings, None)),
            "c" => per_partition(&ends, |p, end, dir| digest_partition(&kafka, p, end, dir, &settings, Some(&native))),
            "d" => per_partition(&ends, |p, end, dir| digest_partition(&kafka, p, end, dir, &settings, Some(&registry))),
            _ => unreachable!("paths are listed below"),
        };
        // Warm-up: connections, the component cache, the page cache of the topic.
        run("a");
        run("d");

        if let Some(path) = only {
            for round in 1..=rounds {
                let outcome = match path.as_str() {
                    "b-core" => bench.core_run(&format!("core-b{round}"), None, &settings, &ends).await,
                    "d-core" => bench.core_run(&format!("core-d{round}"), Some(wasm_parsers()), &settings, &ends).await,
                    "a" | "b" | "c" | "d" => run(&path),
                    other => panic!("WEIR_BENCH_ONLY={other}: expected a, b, b-core, c, d or d-core"),
                };
                println!("round {round}: {}", outcome.line(&format!("({path})")));
            }
            return;
        }

        let names = [
            "(a) raw consume+write baseline",
            "(b) digest, no parser (real core)",
            "(b') digest rows, no parser (loop)",
            "(c) digest rows, native JSON parser (loop)",
            "(d) digest rows, Wasm JSON parser (loop)",
            "(d') digest, Wasm JSON parser (real core)",
        ];
        let mut results: Vec<Vec<Outcome>> = names.iter().map(|_| Vec::new()).collect();
        for round in 1..=rounds {
            results[0].push(run("a"));
            results[1].push(bench.core_run(&format!("core-b{round}"), None, &settings, &ends).await);
            results[2].push(run("b"));
            results[3].push(run("c"));
            results[4].push(run("d"));
            results[5].push(bench.core_run(&format!("core-d{round}"), Some(wasm_parsers()), &settings, &ends).await);
            let rates: Vec<String> = results.iter().map(|r| format!("{:.0}", r[round - 1].rate())).collect();
            println!("round {round}: (a) (b) (b') (c) (d) (d') events/s: {}", rates.join("  "));
        }
        let [a, b, b_loop, c, d, d_core]: [Outcome; 6] = results.into_iter().map(median).collect::<Vec<_>>().try_into().ok().unwrap();
        println!();
        println!("median of {rounds} rounds (one core = one process digesting both partitions):");
        for (outcome, name) in [&a, &b, &b_loop, &c, &d, &d_core].into_iter().zip(names) {
            println!("{}", outcome.line(name));
        }
        println!();
        println!("ratio (b) no-parser digest / (a) raw baseline   = {:.2}   target >= 0.80", b.rate() / a.rate());
        println!("ratio (b') no-parser rows / (a) raw baseline     = {:.2}", b_loop.rate() / a.rate());
        println!("ratio (d) Wasm / (c) native JSON parser          = {:.2}   target >= 0.60", d.rate() / c.rate());
        println!("ratio (d') Wasm digest / (b) no-parser digest    = {:.2}", d_core.rate() / b.rate());
        // Wall-clock rates swing with whatever else this machine runs; CPU per event much
        // less, so the same ratios by CPU cost (this process's; the broker's is not in it).
        let per_cpu = |o: &Outcome| o.events as f64 / o.cpu_s.max(1e-9);
        println!(
            "by CPU cost:  (b)/(a) = {:.2}   (b')/(a) = {:.2}   (d)/(c) = {:.2}   (d')/(b) = {:.2}",
            per_cpu(&b) / per_cpu(&a),
            per_cpu(&b_loop) / per_cpu(&a),
            per_cpu(&d) / per_cpu(&c),
            per_cpu(&d_core) / per_cpu(&b)
        );

        if latency_s > 0 {
            let rate = d_core.rate() / 2.0;
            let batch = env("WEIR_BENCH_LATENCY_BATCH", 200);
            let flush = Duration::from_millis(env("WEIR_BENCH_LATENCY_FLUSH_MS", 5_000) as u64);
            let (visible, acks, n) = bench.latency(rate, Duration::from_secs(latency_s as u64), batch, flush).await;
            let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!();
            println!(
                "ingest-to-visible at half load ({rate:.0} events/s, {n} requests of {batch} over {latency_s} s, flush interval {} ms, Wasm JSON parser):",
                flush.as_millis()
            );
            println!(
                "  request sent -> its segment registered in Global: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
                ms(&visible, 0.5),
                ms(&visible, 0.99),
                visible.max() as f64 / 1000.0
            );
            println!("  request sent -> HTTP 200 (Kafka ack):              p50 {:.1} ms  p99 {:.1} ms", ms(&acks, 0.5), ms(&acks, 0.99));
        }
    });
}

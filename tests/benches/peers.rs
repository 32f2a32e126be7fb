//! Peer benchmark (issue 8, part 5; not a test, not part of CI): the same load, on one
//! machine, into one Kafka broker, at the same durability (acks=all, idempotent producer,
//! lz4), through
//!
//!   (1) OTLP/HTTP protobuf → the OpenTelemetry Collector (OTLP receiver → Kafka exporter,
//!       sending queue off, so its 200 means Kafka acknowledged) vs. → Weir's core;
//!   (2) syslog over TCP → rsyslog (imtcp → omkafka, disk-assisted queue, retries forever)
//!       vs. → Weir's edge (spool) → QUIC → Weir's core.
//!
//! Weir runs twice on each path: as configured (the core also digests what it wrote; the
//! bench then also waits for the digest and prints the whole job's rate and CPU), and
//! as an ingest-only core (`digest.enabled = false`), the like-for-like figure against
//! peers that only forward.
//!
//! Events/s acknowledged into Kafka: for OTLP, events / time until the last request was
//! answered 200 (both systems answer only after Kafka acknowledged), with an independent
//! consumer counting the events in Kafka afterwards; for syslog (no answers), events /
//! time until that consumer, reading while the load runs, saw the last one. CPU per event
//! is the ingest processes' utime+stime from /proc/<pid>/stat over the same time (the
//! Collector, rsyslogd, weir-core, weir-edge + weir-core). p99 latency: the request
//! latency for OTLP; for syslog, write → seen in Kafka, sampled by markers.
//!
//! Run through `deploy/bench/peers.sh`, which builds and installs the peers and passes:
//! WEIR_BENCH_KAFKA (broker), WEIR_PEERS_OTELCOL (collector binary; its part is skipped
//! when unset), WEIR_PEERS_RSYSLOGD (rsyslogd; likewise), WEIR_PEERS_EVENTS (per run,
//! default 2000000: shorter runs mostly measure start-up), WEIR_PEERS_BATCH (log records
//! per OTLP request, default 500), WEIR_PEERS_CONCURRENCY (OTLP requests in flight,
//! default 16), WEIR_PEERS_CONNECTIONS (syslog TCP connections, default 8),
//! WEIR_PEERS_EVENT_BYTES (default 200), WEIR_PEERS_ONLY (otlp or syslog: run that half
//! only), WEIR_PEERS_SKIP containing `digest` (leave out the runs whose core digests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio::io::AsyncWriteExt;
use weir_proto::EventBatch;
use weir_tests::nodes::{CoreSpec, EdgeSpec, Node, TOKEN};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Settings {
    events: usize,
    batch: usize,
    concurrency: usize,
    connections: usize,
    event_bytes: usize,
}

/// Every this many syslog messages carries a `mark=<unix µs>` the consumer times.
const MARK_EVERY: usize = 100;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// One message text of `event_bytes`; `mark` puts the send time in it.
fn text(settings: &Settings, stream: usize, n: usize, mark: bool) -> String {
    let mark = if mark { format!(" mark={}", now_us()) } else { String::new() };
    let head = format!("host=web-{} stream={stream} n={n}{mark} msg=", n % 7);
    let pad = settings.event_bytes.saturating_sub(head.len());
    format!("{head}{}", &"GET /index.html 200 ".repeat(pad / 20 + 1)[..pad])
}

// ---- what arrived in Kafka ------------------------------------------------------------

/// How the records of a topic hold events.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// Weir's records: an `EventBatch` in JSON each (from syslog: with time marks).
    Weir,
    /// The same, from OTLP requests (no marks to look for).
    WeirOtlp,
    /// The Collector's Kafka exporter, `otlp_proto`: an OTLP logs request each.
    Otlp,
    /// omkafka with the raw message as template: one message each.
    Line,
}

/// The events of one record, and the marks in them. The consumer shares the two CPUs
/// with the systems measured, so it counts without building what it counts: a Weir
/// record's events are read for their `raw` only (borrowed, other fields skipped), an
/// OTLP request's log records are counted on the protobuf wire format.
fn count_and_marks(format: Format, payload: &[u8], marks: &mut Vec<u64>) -> usize {
    let mut scan = |text: &str| {
        if let Some(rest) = text.split_once(" mark=").map(|(_, rest)| rest) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(sent) = digits.parse() {
                marks.push(sent);
            }
        }
    };
    match format {
        Format::Weir | Format::WeirOtlp => {
            #[derive(serde::Deserialize)]
            struct Raws<'a> {
                #[serde(borrow)]
                events: Vec<Raw<'a>>,
            }
            #[derive(serde::Deserialize)]
            struct Raw<'a> {
                #[serde(borrow)]
                raw: std::borrow::Cow<'a, str>,
            }
            let batch: Raws = serde_json::from_slice(payload).expect("a Weir record is an EventBatch");
            if matches!(format, Format::Weir) {
                batch.events.iter().for_each(|e| scan(&e.raw));
            }
            batch.events.len()
        }
        Format::Otlp => weir_http_ingest::otlp::log_records(payload).expect("a Collector record is OTLP logs"),
        Format::Line => {
            scan(&String::from_utf8_lossy(payload));
            1
        }
    }
}

/// An independent consumer reading `topic` from the beginning on its own thread while
/// the load runs: events seen, when the last expected one arrived, marker latencies.
struct Arrivals {
    seen: Arc<AtomicUsize>,
    all_in_at: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Histogram<u64>>,
}

impl Arrivals {
    fn start(bootstrap: &str, topic: &str, format: Format, expected: usize, start: Instant) -> Arrivals {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", weir_tests::unique("weir-peers-reader"))
            .set("enable.auto.commit", "false")
            // Fetch answers at once rather than after the default 500 ms wait, so the
            // time an event is seen in Kafka is close to when it got there.
            .set("fetch.wait.max.ms", "5")
            // librdkafka stops fetching a partition for fetch.queue.backoff.ms (default
            // 1 s) whenever its local queue passes queued.max.messages.kbytes (64 MiB) or
            // queued.min.messages (100,000): with this thread counting a burst, that timed
            // the runs by the consumer's pauses (runs ending in 1 s steps, p99 in seconds).
            .set("fetch.queue.backoff.ms", "1")
            .set("queued.max.messages.kbytes", "1048576")
            .set("queued.min.messages", "10000000")
            .create()
            .expect("create consumer");
        let mut assignment = rdkafka::TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).expect("partition offset");
        }
        consumer.assign(&assignment).expect("assign");
        let seen = Arc::new(AtomicUsize::new(0));
        let all_in_at = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, all_in2, stop2) = (seen.clone(), all_in_at.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
            let mut marks = Vec::new();
            while !stop2.load(Ordering::Acquire) {
                let Some(message) = consumer.poll(Duration::from_millis(20)) else { continue };
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        eprintln!("peers consumer: {error}");
                        continue;
                    }
                };
                let arrived = now_us();
                let payload = message.payload().unwrap_or_default();
                let n = count_and_marks(format, payload, &mut marks);
                if message.offset() == 0 {
                    // The cheap count agrees with a full decode (checked once per partition).
                    let full = match format {
                        Format::Weir | Format::WeirOtlp => {
                            serde_json::from_slice::<EventBatch>(payload).expect("an EventBatch").events.len()
                        }
                        Format::Otlp => ExportLogsServiceRequest::decode(payload)
                            .expect("OTLP logs")
                            .resource_logs
                            .iter()
                            .flat_map(|r| &r.scope_logs)
                            .map(|s| s.log_records.len())
                            .sum(),
                        Format::Line => 1,
                    };
                    assert_eq!(n, full, "the consumer's cheap count of a {format:?} record");
                }
                for sent in marks.drain(..) {
                    let _ = latency.record(arrived.saturating_sub(sent).max(1));
                }
                let total = seen2.fetch_add(n, Ordering::AcqRel) + n;
                if total >= expected && all_in2.load(Ordering::Acquire) == 0 {
                    all_in2.store(start.elapsed().as_micros() as u64, Ordering::Release);
                }
            }
            latency
        });
        Arrivals { seen, all_in_at, stop, thread }
    }

    /// Waits until `expected` events were seen (or `timeout`): (events seen, seconds from
    /// the start until the last arrived, write → Kafka latencies of the markers).
    fn finish(self, timeout: Duration) -> (usize, f64, Histogram<u64>) {
        let deadline = Instant::now() + timeout;
        while self.all_in_at.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A short grace to see duplicates, if any were written.
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::Release);
        let latency = self.thread.join().expect("consumer thread");
        let at = self.all_in_at.load(Ordering::Acquire);
        (self.seen.load(Ordering::Acquire), if at == 0 { f64::NAN } else { at as f64 / 1e6 }, latency)
    }
}

const PARTITIONS: i32 = 2;

// ---- the processes under test ---------------------------------------------------------

/// User plus system CPU seconds of a process so far (`/proc/<pid>/stat`, 100 ticks/s).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A peer process (the Collector, rsyslogd), killed on drop.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn spawn(program: &Path, args: &[&str], log: PathBuf) -> Peer {
        let file = std::fs::File::create(&log).expect("peer log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Peer { child, log }
    }

    /// Waits until something accepts TCP connections on `port`.
    async fn wait_listening(&mut self, port: u16) {
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("peer exited with {status} at start:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("peer does not listen on {port}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Outcome {
    /// The rest of the machine over the run (not part of the comparison): where the CPU
    /// that the measured system did not use went.
    others: String,
    events_per_s: f64,
    cpu_us_per_event: f64,
    p99_ms: f64,
    sent: usize,
    seen: usize,
}

impl Outcome {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<40} {:>9.0} events/s   cpu {:>6.2} us/event   p99 {:>8.2} ms   in Kafka {}/{}\n{:<40} {}",
            self.events_per_s, self.cpu_us_per_event, self.p99_ms, self.seen, self.sent, "", self.others
        )
    }
}

/// CPU of the broker (`WEIR_PEERS_BROKER_PID`, set by peers.sh for a broker of its own),
/// of this process (load generator and consumer), and of the whole machine, at one moment.
struct Others {
    broker: f64,
    bench: f64,
    /// (busy, total) ticks of all CPUs, from /proc/stat.
    machine: (f64, f64),
}

impl Others {
    fn now() -> Others {
        let broker = std::env::var("WEIR_PEERS_BROKER_PID").ok().and_then(|p| p.parse().ok()).map_or(f64::NAN, cpu_seconds);
        let bench = cpu_seconds(std::process::id());
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<f64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let total: f64 = ticks.iter().sum();
        // idle and iowait are the 4th and 5th.
        let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
        Others { broker, bench, machine: (total - idle, total) }
    }

    fn since(&self, before: &Others, events: usize) -> String {
        let per_event = |seconds: f64| seconds * 1e6 / events as f64;
        let (busy, total) = (self.machine.0 - before.machine.0, self.machine.1 - before.machine.1);
        format!(
            "(broker {:.2} us/event, load+consumer {:.2} us/event, machine {:.0}% busy)",
            per_event(self.broker - before.broker),
            per_event(self.bench - before.bench),
            if total > 0.0 { busy * 100.0 / total } else { f64::NAN }
        )
    }
}

// ---- OTLP load ------------------------------------------------------------------------

fn otlp_body(settings: &Settings, request: usize) -> Vec<u8> {
    let text_value = |s: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(s.to_owned())) });
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let records = (0..settings.batch)
        .map(|i| LogRecord {
            time_unix_nano: now,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: text_value(&text(settings, request, i, false)),
            attributes: vec![KeyValue { key: "http.status".into(), value: text_value("200"), ..Default::default() }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue { key: "service.name".into(), value: text_value("bench"), ..Default::default() }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope { name: "peers".into(), ..Default::default() }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `concurrency` workers POSTing the requests; request latencies (µs). Any answer but
/// 200 fails the run: both sides have room, so a refusal would be a setup error.
/// The OTLP request bodies of a run, made once before any clock starts: the client's
/// encoding is not measured, and every system gets the same bytes.
fn otlp_bodies(settings: &Settings) -> Arc<Vec<Vec<u8>>> {
    Arc::new((0..settings.events / settings.batch).map(|r| otlp_body(settings, r)).collect())
}

async fn otlp_load(settings: Settings, bodies: Arc<Vec<Vec<u8>>>, url: String) -> Histogram<u64> {
    let next = Arc::new(AtomicUsize::new(0));
    let client = weir_tests::http();
    let mut workers = Vec::new();
    for _ in 0..settings.concurrency {
        let (bodies, next, client, url) = (bodies.clone(), next.clone(), client.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let request = next.fetch_add(1, Ordering::AcqRel);
                let Some(body) = bodies.get(request) else { return latency };
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("POST {url}: {e}"));
                let status = response.status();
                let answer = response.bytes().await.unwrap_or_default();
                assert!(status.is_success(), "POST {url}: {status} {}", String::from_utf8_lossy(&answer));
                latency.record(started.elapsed().as_micros() as u64).expect("record latency");
            }
        }));
    }
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    for worker in workers {
        latency.add(worker.await.expect("worker")).expect("merge histograms");
    }
    latency
}

// ---- syslog load ----------------------------------------------------------------------

/// `connections` TCP senders writing newline-framed RFC 5424 messages as fast as the
/// receiver reads them.
async fn syslog_load(settings: Settings, port: u16) {
    let per = settings.events / settings.connections;
    let mut senders = Vec::new();
    for stream in 0..settings.connections {
        senders.push(tokio::spawn(async move {
            let socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect syslog");
            socket.set_nodelay(true).expect("nodelay");
            let mut out = tokio::io::BufWriter::with_capacity(64 << 10, socket);
            for n in 0..per {
                let line = format!(
                    "<134>1 2024-05-01T10:00:00.000Z web-{stream} app 1234 - - {}\n",
                    text(&settings, stream, n, n % MARK_EVERY == 0)
                );
                out.write_all(line.as_bytes()).await.expect("write syslog");
                if n % MARK_EVERY == 0 {
                    // Markers go out now, so their time is their send time.
                    out.flush().await.expect("flush syslog");
                }
            }
            out.flush().await.expect("flush syslog");
            out.shutdown().await.expect("close syslog connection");
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
}

// ---- the four runs --------------------------------------------------------------------

struct Run<'a> {
    bootstrap: &'a str,
    dir: &'a Path,
    /// The dev CA and certificates (`core-1`, `edge-1`), made once for all runs.
    certs: PathBuf,
    settings: Settings,
}

impl Run<'_> {
    async fn topic(&self, name: &str) -> String {
        let topic = weir_tests::unique(&format!("peers-{name}"));
        weir_tests::kafka::create_topic(self.bootstrap, &topic, PARTITIONS, 1, &[]).await;
        topic
    }

    /// Drives `load` while an independent consumer counts; CPU of `pids` over the run.
    async fn measure<F: std::future::Future<Output = Option<Histogram<u64>>>>(
        &self,
        topic: &str,
        format: Format,
        pids: &[u32],
        load: F,
    ) -> Outcome {
        let expected = self.expected();
        let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
        let start = Instant::now();
        // A load with answers (OTLP: each 200 follows Kafka's ack) is timed by its last
        // answer, and its events are counted in Kafka after it, so the counting does not
        // take CPU from the system measured. Syslog has no answers: its events are timed
        // by when the consumer, reading while the load runs, saw the last one.
        let acked = matches!(format, Format::Otlp | Format::WeirOtlp);
        let arrivals = (!acked).then(|| Arrivals::start(self.bootstrap, topic, format, expected, start));
        let cpu_before = cpu(pids);
        let others_before = Others::now();
        let request_latency = load.await;
        let answered = start.elapsed().as_secs_f64();
        let cpu_answered = cpu(pids) - cpu_before;
        let others_answered = Others::now();
        let arrivals = arrivals.unwrap_or_else(|| Arrivals::start(self.bootstrap, topic, format, expected, start));
        let (seen, arrived, marks) = arrivals.finish(Duration::from_secs(180));
        // Without answers the system still works after the load's last write: its CPU is
        // counted until the consumer saw everything.
        let (seconds, cpu_used) = if acked { (answered, cpu_answered) } else { (arrived, cpu(pids) - cpu_before) };
        let latency = request_latency.unwrap_or(marks);
        // Over the same span as the measured system's CPU (not the counting after it).
        let others = if acked { others_answered } else { Others::now() }.since(&others_before, expected);
        Outcome {
            others,
            events_per_s: expected as f64 / seconds,
            cpu_us_per_event: cpu_used * 1e6 / expected as f64,
            p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
            sent: expected,
            seen,
        }
    }

    fn expected(&self) -> usize {
        let s = self.settings;
        (s.events / s.batch) * s.batch
    }

    fn syslog_settings(&self) -> Settings {
        // The same event count for syslog: whole connections' shares.
        let mut s = self.settings;
        s.events = self.expected() / s.connections * s.connections;
        s.batch = 1;
        s
    }

    async fn otelcol(&self, binary: &Path, bodies: &Arc<Vec<Vec<u8>>>) -> Outcome {
        let topic = self.topic("otelcol").await;
        let port = weir_tests::free_port();
        let config = self.dir.join("otelcol.yaml");
        std::fs::write(&config, otelcol_config(self.bootstrap, &topic, port)).expect("write collector config");
        let mut peer = Peer::spawn(binary, &["--config", config.to_str().unwrap()], self.dir.join("otelcol.log"));
        peer.wait_listening(port).await;
        let url = format!("http://127.0.0.1:{port}/v1/logs");
        let (settings, bodies) = (self.settings, bodies.clone());
        self.measure(&topic, Format::Otlp, &[peer.child.id()], async move { Some(otlp_load(settings, bodies, url).await) }).await
    }

    /// A weir-core writing to `topic`. A core digests the ingest topic by default (reads
    /// it back, parses, writes segments), which the peers do not do; without `digest` it
    /// is an ingest-only core (`digest.enabled = false`) and does only the ingest: the
    /// like-for-like CPU figure.
    async fn core(&self, topic: &str, digest: bool) -> (CoreSpec, Node) {
        let mut spec = CoreSpec::new("core-1", self.bootstrap, topic, &self.certs);
        spec.digest = digest;
        spec.max_body_bytes = 16 << 20;
        spec.data_dir = self.dir.join(weir_tests::unique("core-data"));
        let node = weir_tests::nodes::core_process(&spec, self.dir).await;
        (spec, node)
    }

    /// "partition claimed" lines in the cores' log so far: shows whether a core digested.
    fn digest_claims(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("core-1.log")).unwrap_or_default();
        log.lines().filter(|line| line.contains("partition claimed") && !line.contains("another core")).count()
    }

    async fn weir_otlp(&self, digest: bool, bodies: &Arc<Vec<Vec<u8>>>) -> Outcome {
        let topic = self.topic("weir-otlp").await;
        let claims = self.digest_claims();
        let (_spec, core) = self.core(&topic, digest).await;
        let url = core.url("/v1/logs");
        let (settings, bodies) = (self.settings, bodies.clone());
        let started = (Instant::now(), cpu_seconds(core.pid()));
        let outcome =
            self.measure(&topic, Format::WeirOtlp, &[core.pid()], async move { Some(otlp_load(settings, bodies, url).await) }).await;
        println!("  (weir-core claimed {} partitions to digest)", self.digest_claims() - claims);
        if digest {
            self.until_digested(&core, &[core.pid()], started).await;
        }
        print_warnings(&[&core]);
        outcome
    }

    /// A digesting core keeps working after the load's last answer (OTLP) or the last event
    /// seen in Kafka (syslog): it reads every event back, builds rows and writes segments,
    /// which the run's line counts only in part. Waits until the core has digested every
    /// event (`weir_digest_events_total`) and prints the whole job's rate and CPU per event
    /// just before that line.
    async fn until_digested(&self, core: &Node, pids: &[u32], (start, cpu_before): (Instant, f64)) {
        let expected = self.expected() as f64;
        let deadline = Instant::now() + Duration::from_secs(180);
        let digested = loop {
            let metrics = weir_tests::scrape(&core.url("")).await;
            let digested = weir_tests::metric_sum(&metrics, "weir_digest_events_total");
            if digested >= expected || Instant::now() > deadline {
                break digested;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let seconds = start.elapsed().as_secs_f64();
        let cpu: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - cpu_before;
        if digested < expected {
            println!("  (digest: only {digested} of {expected} events digested after {seconds:.1} s)");
        } else {
            println!(
                "  (digest: every event digested {seconds:.1} s after the start: {:.0} events/s ingest + digest, cpu {:.2} us/event with the digest)",
                expected / seconds,
                cpu * 1e6 / expected
            );
        }
    }

    async fn rsyslog(&self, binary: &Path) -> Outcome {
        let topic = self.topic("rsyslog").await;
        let port = weir_tests::free_port();
        let work = self.dir.join("rsyslog");
        std::fs::create_dir_all(&work).expect("rsyslog work dir");
        let config = self.dir.join("rsyslog.conf");
        std::fs::write(&config, rsyslog_config(self.bootstrap, &topic, port, &work)).expect("write rsyslog config");
        let pidfile = self.dir.join("rsyslogd.pid");
        let mut peer = Peer::spawn(
            binary,
            &["-n", "-f", config.to_str().unwrap(), "-i", pidfile.to_str().unwrap()],
            self.dir.join("rsyslog.log"),
        );
        peer.wait_listening(port).await;
        let settings = self.syslog_settings();
        self.measure(&topic, Format::Line, &[peer.child.id()], async move {
            syslog_load(settings, port).await;
            None
        })
        .await
    }

    async fn weir_syslog(&self, digest: bool) -> Outcome {
        let topic = self.topic("weir-syslog").await;
        let claims = self.digest_claims();
        let (spec, core) = self.core(&topic, digest).await;
        // A fresh spool per run, like the core's data directory.
        let edge_dir = self.dir.join(weir_tests::unique("edge"));
        std::fs::create_dir_all(&edge_dir).expect("edge dir");
        let mut edge_spec = EdgeSpec::new(&edge_dir, vec![spec.quic_addr()], &self.certs);
        let (udp, tcp) = (weir_tests::free_port(), weir_tests::free_port());
        edge_spec.syslog_ports = Some((udp, tcp));
        edge_spec.spool_max_bytes = 2 << 30;
        edge_spec.max_in_flight = std::env::var("WEIR_PEERS_IN_FLIGHT").ok().and_then(|n| n.parse().ok());
        edge_spec.syslog_batch_max_events = std::env::var("WEIR_PEERS_SYSLOG_BATCH").ok().and_then(|n| n.parse().ok());
        let edge = weir_tests::nodes::edge_process(&edge_spec, &edge_dir).await;
        let settings = self.syslog_settings();
        let started = (Instant::now(), cpu_seconds(edge.pid()) + cpu_seconds(core.pid()));
        let outcome = self
            .measure(&topic, Format::Weir, &[edge.pid(), core.pid()], async move {
                syslog_load(settings, tcp).await;
                None
            })
            .await;
        println!("  (weir-core claimed {} partitions to digest)", self.digest_claims() - claims);
        if digest {
            self.until_digested(&core, &[edge.pid(), core.pid()], started).await;
        }
        print_warnings(&[&edge, &core]);
        outcome
    }
}

/// A run's warnings and retries tell why it was slow (a batch retried after a backoff,
/// a stalled link): printed just before its line.
fn print_warnings(nodes: &[&Node]) {
    for node in nodes {
        let tail = node.log_tail();
        let warnings: Vec<&str> = tail.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("retrying")).collect();
        if let Some(last) = warnings.last() {
            println!("  ({} warnings in {}'s last 40 log lines; the last: {last})", warnings.len(), node.name);
        }
    }
}

fn otelcol_config(bootstrap: &str, topic: &str, port: u16) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  kafka:
    brokers: ["{bootstrap}"]
    logs:
      topic: {topic}
      encoding: otlp_proto
    producer:
      required_acks: -1
      compression: lz4
    # Off, so the receiver answers 200 only once Kafka acknowledged (as Weir does).
    sending_queue:
      enabled: false
    retry_on_failure:
      enabled: true
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [kafka]
"#
    )
}

fn rsyslog_config(bootstrap: &str, topic: &str, port: u16, work: &Path) -> String {
    let work = work.display();
    format!(
        r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
module(load="omkafka")
template(name="raw" type="string" string="%rawmsg%")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="tokafka")
ruleset(name="tokafka") {{
  action(type="omkafka" broker=["{bootstrap}"] topic="{topic}" template="raw"
         confParam=["acks=all", "enable.idempotence=true", "compression.codec=lz4"]
         action.resumeRetryCount="-1"
         queue.type="LinkedList" queue.filename="omkafka-q" queue.saveOnShutdown="on"
         queue.size="1000000" queue.highWatermark="800000" queue.dequeueBatchSize="1024")
}}
"#
    )
}

fn ratio(name: &str, weir: &Outcome, peer: &Outcome) {
    println!(
        "{name:<56} events/s x{:.2}   cpu/event x{:.2}   p99 x{:.2}",
        weir.events_per_s / peer.events_per_s,
        weir.cpu_us_per_event / peer.cpu_us_per_event,
        weir.p99_ms / peer.p99_ms
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bootstrap = weir_tests::kafka::bench_bootstrap();
    let settings = Settings {
        events: env("WEIR_PEERS_EVENTS", 2_000_000),
        batch: env("WEIR_PEERS_BATCH", 500).max(1),
        concurrency: env("WEIR_PEERS_CONCURRENCY", 16).max(1),
        connections: env("WEIR_PEERS_CONNECTIONS", 8).max(1),
        event_bytes: env("WEIR_PEERS_EVENT_BYTES", 200),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Run { bootstrap: &bootstrap, dir: dir.path(), certs: weir_tests::certs(dir.path()), settings };
    let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    println!(
        "peers: {} events per run, OTLP {} records/request x {} in flight, syslog {} TCP connections, {} B events, broker {bootstrap}",
        run.expected(),
        settings.batch,
        settings.concurrency,
        settings.connections,
        settings.event_bytes
    );

    warm_up(&run).await;
    let only = std::env::var("WEIR_PEERS_ONLY").unwrap_or_default();
    if only != "syslog" {
        otlp(&run, path("WEIR_PEERS_OTELCOL")).await;
    }
    if only != "otlp" {
        syslog(&run, path("WEIR_PEERS_RSYSLOGD")).await;
    }
}

/// Warms the broker before anything is measured: a fresh broker's JVM compiles its
/// produce and fetch paths during the first seconds of load (its compiler threads took
/// 15% of the machine in a profiled run), which would burden whichever system runs first.
/// A plain librdkafka producer (acks=all, idempotent, lz4) writes `WEIR_PEERS_WARM_UP_S`
/// seconds (default 15; at most 4,000,000) of 200-byte records, and a consumer reads them back.
async fn warm_up(run: &Run<'_>) {
    let seconds = env("WEIR_PEERS_WARM_UP_S", 15);
    if seconds == 0 {
        return;
    }
    let topic = run.topic("warm-up").await;
    let (bootstrap, topic_name) = (run.bootstrap.to_owned(), topic.clone());
    let produced = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .create()
            .expect("warm-up producer");
        let line = "w".repeat(200);
        let until = Instant::now() + Duration::from_secs(seconds as u64);
        let mut n = 0usize;
        // Bounded by records too: a fast machine would write gigabytes in the time.
        while Instant::now() < until && n < 4_000_000 {
            match producer.send(BaseRecord::<(), str>::to(&topic_name).payload(&line)) {
                Ok(()) => n += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        producer.flush(Duration::from_secs(60)).expect("warm-up flush");
        n
    })
    .await
    .expect("warm-up task");
    let arrivals = Arrivals::start(run.bootstrap, &topic, Format::Line, produced, Instant::now());
    let (seen, _, _) = arrivals.finish(Duration::from_secs(120));
    println!("  (broker warmed up: {produced} records written, {seen} read back)");
}

/// The Weir runs with a digesting core are left out with `WEIR_PEERS_SKIP=digest`.
fn with_digest() -> bool {
    !std::env::var("WEIR_PEERS_SKIP").unwrap_or_default().contains("digest")
}

async fn otlp(run: &Run<'_>, otelcol: Option<PathBuf>) {
    let bodies = otlp_bodies(&run.settings);
    let weir = match with_digest() {
        true => Some(run.weir_otlp(true, &bodies).await),
        false => None,
    };
    if let Some(weir) = &weir {
        println!("{}", weir.line("OTLP/HTTP -> weir-core"));
    }
    let bodies = &bodies;
    let (ingest_only, peers) = like_for_like(
        ("OTLP/HTTP -> weir-core, ingest-only", move || run.weir_otlp(false, bodies)),
        ("OTLP/HTTP -> otelcol", otelcol.as_deref().map(|binary| move || run.otelcol(binary, bodies))),
    )
    .await;
    if otelcol.is_none() {
        println!("OTLP/HTTP -> otelcol: skipped (WEIR_PEERS_OTELCOL unset)");
        return;
    }
    if let Some(weir) = &weir {
        ratio("ratio weir-core / otelcol (first run)", weir, &peers[0]);
    }
    ratios("weir-core, ingest-only / otelcol", &ingest_only, &peers);
}

async fn syslog(run: &Run<'_>, rsyslogd: Option<PathBuf>) {
    let weir = match with_digest() {
        true => Some(run.weir_syslog(true).await),
        false => None,
    };
    if let Some(weir) = &weir {
        println!("{}", weir.line("syslog TCP -> weir-edge -> weir-core"));
    }
    let (ingest_only, peers) = like_for_like(
        ("syslog TCP -> weir edge + ingest-only core", move || run.weir_syslog(false)),
        ("syslog TCP -> rsyslog", rsyslogd.as_deref().map(|binary| move || run.rsyslog(binary))),
    )
    .await;
    if rsyslogd.is_none() {
        println!("syslog TCP -> rsyslog: skipped (WEIR_PEERS_RSYSLOGD unset)");
        return;
    }
    if let Some(weir) = &weir {
        ratio("ratio weir edge+core / rsyslog (first run)", weir, &peers[0]);
    }
    ratios("weir, ingest-only / rsyslog", &ingest_only, &peers);
}

/// Runs Weir and the peer (if installed) for `WEIR_PEERS_ROUNDS` rounds (default 2),
/// alternately first, so that the runs go Weir, peer, peer, Weir (ABBA) and a machine or
/// broker that drifts during the bench favours neither; prints each run, returns both sets.
async fn like_for_like<W, P, WF, PF>(weir: (&str, W), peer: (&str, Option<P>)) -> (Vec<Outcome>, Vec<Outcome>)
where
    W: Fn() -> WF,
    P: Fn() -> PF,
    WF: std::future::Future<Output = Outcome>,
    PF: std::future::Future<Output = Outcome>,
{
    let (mut weirs, mut peers) = (Vec::new(), Vec::new());
    for round in 0..env("WEIR_PEERS_ROUNDS", 2).max(1) {
        let weir_first = round % 2 == 0;
        for is_weir in [weir_first, !weir_first] {
            if is_weir {
                let outcome = (weir.1)().await;
                println!("{}", outcome.line(weir.0));
                weirs.push(outcome);
            } else if let Some(run_peer) = &peer.1 {
                let outcome = run_peer().await;
                println!("{}", outcome.line(peer.0));
                peers.push(outcome);
            }
        }
    }
    (weirs, peers)
}

/// Each round's ratio, and the ratio of the means over the rounds.
fn ratios(name: &str, weir: &[Outcome], peer: &[Outcome]) {
    for (round, (w, p)) in weir.iter().zip(peer).enumerate() {
        ratio(&format!("ratio {name}, round {}", round + 1), w, p);
    }
    let mean = |runs: &[Outcome], f: fn(&Outcome) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
    let of = |runs: &[Outcome]| Outcome {
        others: String::new(),
        events_per_s: mean(runs, |o| o.events_per_s),
        cpu_us_per_event: mean(runs, |o| o.cpu_us_per_event),
        p99_ms: mean(runs, |o| o.p99_ms),
        sent: 0,
        seen: 0,
    };
    ratio(&format!("ratio {name}, means of {} rounds", weir.len()), &of(weir), &of(peer));
}

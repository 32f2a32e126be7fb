//! The core keeps its promise (a 200 means in Kafka) through broker failures. Three KRaft
//! brokers, an ingest topic with replication factor 3 and `min.insync.replicas=2` created
//! before the core starts, a real `weir-core` process pointed at all three brokers, and
//! concurrent HTTP clients that send numbered events without pause while brokers are
//! killed with SIGKILL:
//!
//! - one broker dead: ingest goes on once partition leadership moved, and every event
//!   answered 200 (before, during and after the kill) is in Kafka exactly once and exactly
//!   as sent;
//! - two brokers dead: no request started afterwards is answered 200, each gets 503
//!   within the core's `kafka.ack_timeout_ms` plus a margin;
//! - both restarted: 200s come back without touching the core, within a bound, the core
//!   is still ready, and the events acknowledged then are in Kafka too.
//!
//! Run twice, because "two brokers dead" means two different things. With three nodes that
//! are each broker and controller, the second kill also loses the controller quorum: the
//! ISRs cannot shrink, so writes time out (and the restarts must rebuild the quorum). With
//! a dedicated controller, the ISRs shrink to the one survivor and `min.insync.replicas=2`
//! is what refuses writes (NOT_ENOUGH_REPLICAS): with 1 that test fails.
//!
//! Duplicates: none allowed. The test never re-sends an event (a 503 is not retried; the
//! next request carries new numbers), so a duplicate could only come from the producer
//! re-sending a record after a broker failure, which the idempotent producer (acks=all)
//! deduplicates. An event answered 503 may be in Kafka (written, but not acknowledged in
//! time) or not, and likewise at most once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::block_in_place;
use weir_tests::kafka::{self, Cluster, Metadata, PartitionLayout, Quorum};
use weir_tests::nodes::{CoreSpec, Node, REPOSITORY, TOKEN};
use weir_tests::{certs, eventually, gate, http, init_tracing, unique};

/// Concurrent HTTP clients.
const CLIENTS: u64 = 4;
const PARTITIONS: i32 = 2;
/// The core's `kafka.ack_timeout_ms`: how long a request waits for Kafka before its 503.
const ACK_TIMEOUT_MS: u64 = 3_000;
/// What a 503 may take beyond the ack timeout (the core's own 500 ms margin, scheduling on
/// a busy 2-core machine).
const ANSWER_MARGIN: Duration = Duration::from_millis(2_000);

/// Phase of the test when a request started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    AllUp = 0,
    OneDown = 1,
    TwoDown = 2,
    /// Two down and the survivor alone in sync (seen with a dedicated controller only).
    OneInSync = 3,
    /// The two dead brokers are being started again.
    Restarting = 4,
    Restarted = 5,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        [Phase::AllUp, Phase::OneDown, Phase::TwoDown, Phase::OneInSync, Phase::Restarting, Phase::Restarted]
            [usize::from(value)]
    }
}

/// One request a client sent, and its answer.
#[derive(Debug, Clone)]
struct Sent {
    client: u64,
    n: u64,
    phase: Phase,
    started: Instant,
    took: Duration,
    /// 0: no HTTP answer (transport error).
    status: u16,
    /// The body of a non-200 answer, or the transport error.
    detail: String,
}

impl Sent {
    fn done(&self) -> Instant {
        self.started + self.took
    }
}

struct Load {
    phase: AtomicU8,
    next: AtomicU64,
    stop: AtomicBool,
    sent: Mutex<Vec<Sent>>,
}

impl Load {
    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    fn snapshot(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Requests that started in `phase` and were answered `status`.
    fn count(&self, phase: Phase, status: u16) -> usize {
        self.sent.lock().unwrap().iter().filter(|s| s.phase == phase && s.status == status).count()
    }
}

/// One event as the test sent it; what the consumer must find.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    raw: String,
    host: String,
    timestamp_ms: i64,
    attributes: serde_json::Map<String, Value>,
}

const BASE_TS_MS: i64 = 1_714_557_600_000;

/// The events of request `n` of `client`: two sources (tags `host=load-<client>-a|b`, so
/// two Kafka records with different keys, usually on different partitions), two events each.
fn events(run: &str, client: u64, n: u64) -> Vec<Expected> {
    let mut events = Vec::new();
    for part in ["a", "b"] {
        for i in 0..2u64 {
            let attributes = json!({"client": client, "n": n, "part": part, "i": i});
            events.push(Expected {
                raw: format!("{run} c{client} n{n:06} {part}{i}"),
                host: format!("load-{client}-{part}"),
                timestamp_ms: BASE_TS_MS + i64::try_from(n).unwrap(),
                attributes: attributes.as_object().unwrap().clone(),
            });
        }
    }
    events
}

fn body(events: &[Expected]) -> Value {
    let mut groups: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for event in events {
        groups.entry(&event.host).or_default().push(json!({
            "timestamp": event.timestamp_ms,
            "attributes": event.attributes,
            "rawstring": event.raw,
        }));
    }
    Value::Array(groups.into_iter().map(|(host, events)| json!({"tags": {"host": host}, "events": events})).collect())
}

async fn client_loop(client: u64, url: String, run: String, load: Arc<Load>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
    while !load.stop.load(Ordering::SeqCst) {
        let n = load.next.fetch_add(1, Ordering::SeqCst);
        let phase = Phase::from_u8(load.phase.load(Ordering::SeqCst));
        let body = body(&events(&run, client, n));
        let started = Instant::now();
        let result = http.post(&url).header("authorization", format!("Bearer {TOKEN}")).json(&body).send().await;
        let (status, detail) = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_else(|e| format!("(body unreadable: {e})"));
                (status, if status == 200 { String::new() } else { text })
            }
            Err(error) => (0, error.to_string()),
        };
        let took = started.elapsed();
        load.sent.lock().unwrap().push(Sent { client, n, phase, started, took, status, detail });
        if status != 200 {
            // A 503 already waited for Kafka; anything else must not become a busy loop.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` and `context()`.
async fn wait_for<T>(what: &str, timeout: Duration, context: impl Fn() -> String, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}{}", context());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn layout(metadata: &Metadata, topic: &str) -> Option<Vec<PartitionLayout>> {
    metadata.topic_layout(topic, Duration::from_secs(2)).ok()
}

/// Three nodes that are each broker and controller: the second kill also takes the
/// controller quorum, so the survivor keeps the partitions' ISRs at two (no controller
/// to shrink them) and every write times out; the restarts must rebuild the quorum.
#[tokio::test(flavor = "multi_thread")]
async fn combined_nodes_acked_events_survive_kills_and_losing_the_quorum_means_503() {
    // One cluster at a time, and nothing else beside it: the 503 bound is a timing on a
    // 2-core machine.
    let _gate = gate::alone();
    scenario(Quorum::Combined).await;
}

/// Three brokers and a controller that stays up: after the second kill the controller
/// fences the dead broker and shrinks every ISR to the survivor, and then only
/// `min.insync.replicas=2` stands between a write and a 200 (with 1, this test fails).
#[tokio::test(flavor = "multi_thread")]
async fn dedicated_controller_acked_events_survive_kills_and_one_in_sync_replica_means_503() {
    let _gate = gate::alone();
    scenario(Quorum::Dedicated).await;
}

/// The steps, each named for what it does; the module doc says what they prove.
async fn scenario(quorum: Quorum) {
    init_tracing();
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The script calls block (seconds); the clients' tasks run on the other workers.
    let cluster = block_in_place(|| Cluster::start(&dir.path().join("kafka"), 3, quorum));
    let cluster_up = test_started.elapsed();
    let (topic, metadata, initial) = create_a_topic_with_three_replicas_in_sync(&cluster).await;
    let (core, core_ready) = start_a_core_requiring_that_durability(dir.path(), &cluster.bootstrap(), &topic).await;
    let run = unique("brk");
    let load = Arc::new(Load {
        phase: AtomicU8::new(Phase::AllUp as u8),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        sent: Mutex::new(Vec::new()),
    });
    let stage = Stage { quorum, cluster, topic, metadata, core, run, load };
    let clients = stage.start_the_clients();

    stage.warm_up().await;
    let first_kill = stage.kill_the_leader_of_partition_0(&initial).await;
    let second_kill = stage.kill_the_new_leader(&first_kill.after).await;
    let restart = stage.restart_both(first_kill.broker, second_kill.broker).await;
    stage.stop_the_clients_and_check_the_core_is_still_ready(clients).await;

    let sent = stage.load.snapshot();
    let two_down = stage.check_the_answers_with_two_brokers_dead(&sent, &second_kill, restart.began);
    let read_back = stage.read_back_every_event(&sent).await;
    stage.print_summary(&sent, &read_back, Summary { test_started, cluster_up, core_ready, first_kill, second_kill, restart, two_down });
    // Dropping the cluster kills it: a clean stop costs 5-20 s of KRaft shutdown.
}

/// Creates the test's topic (two partitions, three replicas, `min.insync.replicas=2`) and
/// waits until every partition is led with all three replicas in sync, before the core
/// starts; returns the topic, a metadata client and that first layout.
async fn create_a_topic_with_three_replicas_in_sync(cluster: &Cluster) -> (String, Metadata, Vec<PartitionLayout>) {
    let bootstrap = cluster.bootstrap();
    let topic = unique("weir-test-brokers");
    kafka::create_topic(&bootstrap, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]).await;
    let metadata = Metadata::new(&bootstrap);
    // Every partition led, with all three replicas in sync, before the core starts.
    let initial = wait_for(
        "the new topic to have leaders and three in-sync replicas",
        Duration::from_secs(30),
        || format!("\n{:?}", layout(&metadata, &topic)),
        || layout(&metadata, &topic).filter(|l| l.len() == PARTITIONS as usize && l.iter().all(|p| p.leader > 0 && p.isr.len() == 3)),
    )
    .await;
    (topic, metadata, initial)
}

/// Starts a `weir-core` process that requires three replicas and two in sync of the
/// topic, and waits until it is ready; returns it and how long getting ready took.
async fn start_a_core_requiring_that_durability(dir: &std::path::Path, bootstrap: &str, topic: &str) -> (Node, Duration) {
    let certs = certs(dir);
    let mut spec = CoreSpec::new("core-1", bootstrap, topic, &certs);
    spec.ack_timeout_ms = ACK_TIMEOUT_MS;
    // The topic exists; the core must find it, not create it (its partitions = 2 line
    // would only matter for a missing topic), and check it is as durable as required.
    spec.replication_factor = 3;
    spec.min_insync_replicas = 2;
    let core = Node::spawn("weir-core", &spec.node_id, &spec.toml(), spec.http_port, dir).await;
    let client = http();
    let ready_url = core.url("/ready");
    // The core checks the topic in the background; it exists, so this is quick.
    let core_ready = Instant::now();
    eventually("core ready (ingest topic found)", Duration::from_secs(30), || {
        let request = client.get(&ready_url);
        async move { request.send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    (core, core_ready.elapsed())
}

/// One run of the scenario: the cluster, the core in front of it and the clients' load.
struct Stage {
    quorum: Quorum,
    cluster: Cluster,
    topic: String,
    metadata: Metadata,
    core: Node,
    /// Prefix of every event of this run.
    run: String,
    load: Arc<Load>,
}

/// What killing the first broker showed.
struct FirstKill {
    broker: u16,
    /// The topic's layout once leaders and ISRs moved off it.
    after: Vec<PartitionLayout>,
    /// Kill to leaders moved.
    failover: Duration,
    /// Kill to the first 200 of a request started after it.
    first_ok: Duration,
}

/// What killing the second broker showed.
struct SecondKill {
    broker: u16,
    at: Instant,
    /// Kill to the survivor alone in sync (dedicated controller only).
    isr_of_one: Option<Duration>,
    /// The phase whose answers count as "two brokers dead".
    last: Phase,
}

/// What restarting both showed.
struct Restart {
    began: Instant,
    /// Both restart commands, until both brokers serve.
    took: Duration,
    /// Both serving to the first 200 of a request started then.
    first_ok: Duration,
}

/// The answers with two brokers dead.
struct TwoDown {
    bound: Duration,
    first_503_after_kill: Duration,
    slowest_503: Duration,
    reasons: BTreeSet<String>,
}

/// The topic read back: every event found, with its content and partition, by raw text.
struct ReadBack {
    found: BTreeMap<String, Vec<(Expected, i32)>>,
    acked_events: usize,
}

/// Timings of the whole run, for the summary line.
struct Summary {
    test_started: Instant,
    cluster_up: Duration,
    core_ready: Duration,
    first_kill: FirstKill,
    second_kill: SecondKill,
    restart: Restart,
    two_down: TwoDown,
}

impl Stage {
    /// What a failure message needs: counts by phase and status, the topic's layout, the
    /// core's log and the surviving brokers' logs.
    fn context(&self) -> String {
        let mut out = String::new();
        let mut counts: BTreeMap<(Phase, u16), usize> = BTreeMap::new();
        for sent in self.load.snapshot() {
            *counts.entry((sent.phase, sent.status)).or_default() += 1;
        }
        let _ = writeln!(out, "\nrequests by (phase at start, status): {counts:?}");
        let topic = &self.topic;
        let layout = self.metadata.topic_layout(topic, Duration::from_secs(5));
        let _ = writeln!(out, "topic {topic} layout: {layout:?}");
        let _ = writeln!(out, "--- core log (last 40 lines) ---\n{}", self.core.log_tail());
        for node in 1..=self.cluster.nodes() {
            let _ = writeln!(out, "--- broker {node} log (last 15 lines) ---\n{}", self.cluster.log_tail(node, 15));
        }
        out
    }

    /// [`wait_for`] with [`Stage::context`] in its failure message.
    async fn wait_for<T>(&self, what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
        wait_for(what, timeout, || self.context(), check).await
    }

    fn layout(&self) -> Option<Vec<PartitionLayout>> {
        layout(&self.metadata, &self.topic)
    }

    /// Starts the clients, which send numbered events without pause until stopped.
    fn start_the_clients(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let url = self.core.url("/api/v1/ingest/humio-structured");
        (0..CLIENTS).map(|c| tokio::spawn(client_loop(c, url.clone(), self.run.clone(), self.load.clone()))).collect()
    }

    /// Warm-up: ingest works with every broker up.
    async fn warm_up(&self) {
        self.wait_for("200s with all brokers up", Duration::from_secs(30), || (self.load.count(Phase::AllUp, 200) >= 20).then_some(())).await;
    }

    /// Step 1: kills the leader of partition 0; waits until the controller fenced it (new
    /// leaders, ISRs without it) and requests are answered 200 again.
    async fn kill_the_leader_of_partition_0(&self, initial: &[PartitionLayout]) -> FirstKill {
        let first = u16::try_from(initial[0].leader).unwrap();
        let kill1 = Instant::now();
        block_in_place(|| self.cluster.kill(first));
        self.load.set_phase(Phase::OneDown);
        // The controller fences it: new leaders, ISRs without it.
        let after_first = self
            .wait_for(&format!("leaders and in-sync replicas without broker {first}"), Duration::from_secs(30), || {
                self.layout().filter(|l| {
                    l.iter().all(|p| p.leader > 0 && p.leader != initial[0].leader && !p.isr.contains(&initial[0].leader) && p.isr.len() == 2)
                })
            })
            .await;
        let failover = kill1.elapsed();
        self.wait_for(&format!("200s with broker {first} dead"), Duration::from_secs(30), || {
            (self.load.count(Phase::OneDown, 200) >= 5 * CLIENTS as usize).then_some(())
        })
        .await;
        let first_ok_after_kill1 = self
            .load
            .snapshot()
            .iter()
            .filter(|s| s.phase == Phase::OneDown && s.status == 200)
            .map(|s| s.done() - kill1)
            .min()
            .unwrap();
        FirstKill { broker: first, after: after_first, failover, first_ok: first_ok_after_kill1 }
    }

    /// Step 2: kills the new leader of partition 0: one broker left. With a dedicated
    /// controller, waits until the survivor leads every partition alone in sync; then for
    /// two rounds of answers from every client.
    async fn kill_the_new_leader(&self, after_first: &[PartitionLayout]) -> SecondKill {
        let second = u16::try_from(after_first[0].leader).unwrap();
        block_in_place(|| self.cluster.kill(second));
        let kill2 = Instant::now();
        self.load.set_phase(Phase::TwoDown);
        let survivor = after_first[0].isr.iter().copied().find(|&n| n != after_first[0].leader).unwrap();
        let mut isr_of_one = None;
        if self.quorum == Quorum::Dedicated {
            // The controller fences the dead broker: the survivor leads every partition with
            // itself as the only in-sync replica. From here only min.insync.replicas refuses.
            self.wait_for(&format!("broker {survivor} to lead every partition alone in sync"), Duration::from_secs(30), || {
                self.layout().filter(|l| l.iter().all(|p| p.leader == survivor && p.isr == [survivor]))
            })
            .await;
            isr_of_one = Some(kill2.elapsed());
            self.load.set_phase(Phase::OneInSync);
        }
        let last = if self.quorum == Quorum::Dedicated { Phase::OneInSync } else { Phase::TwoDown };
        // Two rounds of answers from every client.
        self.wait_for(&format!("answers to requests sent in phase {last:?}"), Duration::from_secs(40), || {
            let done = self.load.snapshot().iter().filter(|s| s.phase == last && s.status != 0).count();
            (done >= 2 * CLIENTS as usize).then_some(())
        })
        .await;
        SecondKill { broker: second, at: kill2, isr_of_one, last }
    }

    /// Step 3: starts both dead brokers again, at the same time (combined: the first one up
    /// makes a quorum with the survivor); waits until requests are answered 200 again,
    /// without touching the core.
    async fn restart_both(&self, first: u16, second: u16) -> Restart {
        self.load.set_phase(Phase::Restarting);
        let restart_began = Instant::now();
        block_in_place(|| {
            std::thread::scope(|scope| {
                scope.spawn(|| self.cluster.restart(first));
                self.cluster.restart(second);
            })
        });
        let restarted = Instant::now();
        let restart_took = restarted - restart_began;
        self.load.set_phase(Phase::Restarted);
        self.wait_for("200s after both brokers were restarted", Duration::from_secs(60), || {
            (self.load.count(Phase::Restarted, 200) >= 5 * CLIENTS as usize).then_some(())
        })
        .await;
        let first_ok_after_restart = self
            .load
            .snapshot()
            .iter()
            .filter(|s| s.phase == Phase::Restarted && s.status == 200)
            .map(|s| s.done() - restarted)
            .min()
            .unwrap();
        Restart { began: restart_began, took: restart_took, first_ok: first_ok_after_restart }
    }

    /// Stops the clients; the core is still ready although nobody restarted it.
    async fn stop_the_clients_and_check_the_core_is_still_ready(&self, clients: Vec<tokio::task::JoinHandle<()>>) {
        self.load.stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        let ready = http().get(self.core.url("/ready")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "core not ready after the brokers came back (nobody restarted it){}", self.context());
    }

    /// Every answer is a 200 or a 503. Two brokers dead: no request that started
    /// afterwards (and finished before the restarts began) was acknowledged, and each got
    /// its 503, naming Kafka, within the bound.
    fn check_the_answers_with_two_brokers_dead(&self, sent: &[Sent], second_kill: &SecondKill, restart_began: Instant) -> TwoDown {
        let ctx = || self.context();
        let last = second_kill.last;
        // Every answer is a 200 or a 503.
        let odd: Vec<&Sent> = sent.iter().filter(|s| s.status != 200 && s.status != 503).collect();
        assert!(odd.is_empty(), "{} answers were neither 200 nor 503, first: {:?}{}", odd.len(), &odd[..odd.len().min(5)], ctx());

        // Two brokers dead: no request that started afterwards (and finished before the
        // restarts began) was acknowledged, and each got its 503 within the bound.
        let two_down: Vec<&Sent> = sent
            .iter()
            .filter(|s| matches!(s.phase, Phase::TwoDown | Phase::OneInSync) && s.done() < restart_began)
            .collect();
        assert!(two_down.len() >= 2 * CLIENTS as usize, "only {} answers with two brokers dead{}", two_down.len(), ctx());
        let in_last = two_down.iter().filter(|s| s.phase == last).count();
        assert!(in_last >= 2 * CLIENTS as usize, "only {in_last} answers in phase {last:?}{}", ctx());
        let acked: Vec<&&Sent> = two_down.iter().filter(|s| s.status == 200).collect();
        assert!(acked.is_empty(), "with one broker of three alive, {} requests got 200: {:?}{}", acked.len(), acked, ctx());
        let bound = Duration::from_millis(ACK_TIMEOUT_MS) + ANSWER_MARGIN;
        let slow: Vec<&&Sent> = two_down.iter().filter(|s| s.took > bound).collect();
        assert!(slow.is_empty(), "503s must come within {bound:?} (ack timeout {ACK_TIMEOUT_MS} ms), slow: {slow:?}{}", ctx());
        for sent in &two_down {
            let body: Value = serde_json::from_str(&sent.detail).unwrap_or_else(|e| panic!("503 body is not JSON ({e}): {sent:?}"));
            assert!(body["error"].as_str().is_some_and(|e| e.contains("kafka")), "503 names kafka: {body}");
        }
        // Any request's 503 after the kill (those in flight at the kill come first), and the
        // slowest of those started with two brokers dead.
        let kill2 = second_kill.at;
        let first_503_after_kill2 = sent.iter().filter(|s| s.status == 503 && s.done() > kill2).map(|s| s.done() - kill2).min().unwrap();
        let max_503 = two_down.iter().map(|s| s.took).max().unwrap();
        let reasons: BTreeSet<String> = two_down
            .iter()
            .map(|s| serde_json::from_str::<Value>(&s.detail).ok().and_then(|b| b["error"].as_str().map(str::to_owned)).unwrap_or_default())
            .collect();
        TwoDown { bound, first_503_after_kill: first_503_after_kill2, slowest_503: max_503, reasons }
    }

    /// Reads everything back with an independent consumer, all brokers up: every
    /// acknowledged event is in Kafka, each event at most once and exactly as sent, none
    /// that no client sent, and acknowledged events on every partition.
    async fn read_back_every_event(&self, sent: &[Sent]) -> ReadBack {
        let records = tokio::task::spawn_blocking({
            let (bootstrap, topic) = (self.cluster.bootstrap(), self.topic.clone());
            move || kafka::consume_all(&bootstrap, &topic, Duration::from_secs(60))
        })
        .await
        .unwrap();
        let mut found: BTreeMap<String, Vec<(Expected, i32)>> = BTreeMap::new();
        for record in &records {
            assert_eq!(record.batch.repository, REPOSITORY, "record at {}:{}", record.partition, record.offset);
            let host = record.batch.tags.get("host").cloned().unwrap_or_default();
            for event in &record.batch.events {
                let got = Expected {
                    raw: event.raw.clone(),
                    host: host.clone(),
                    timestamp_ms: event.timestamp_ms.unwrap_or(-1),
                    attributes: event.attributes.to_map(),
                };
                found.entry(event.raw.clone()).or_default().push((got, record.partition));
            }
        }

        let mut problems = Vec::new();
        let mut acked_events = 0usize;
        let mut acked_partitions = BTreeSet::new();
        let mut sent_raws = BTreeSet::new();
        for s in sent {
            for expected in events(&self.run, s.client, s.n) {
                sent_raws.insert(expected.raw.clone());
                let copies = found.get(&expected.raw).map_or(&[][..], Vec::as_slice);
                if s.status == 200 {
                    acked_events += 1;
                    if copies.is_empty() {
                        problems.push(format!("acknowledged but missing: {} (request {s:?})", expected.raw));
                    }
                }
                if copies.len() > 1 {
                    problems.push(format!("{} copies of {} (status {}, phase {:?})", copies.len(), expected.raw, s.status, s.phase));
                }
                for (got, partition) in copies {
                    if s.status == 200 {
                        acked_partitions.insert(*partition);
                    }
                    if *got != expected {
                        problems.push(format!("content differs: sent {expected:?}, in Kafka {got:?}"));
                    }
                }
            }
        }
        let strangers: Vec<&String> = found.keys().filter(|raw| !sent_raws.contains(*raw)).collect();
        if !strangers.is_empty() {
            problems.push(format!("{} events in the topic that no client sent, first: {:?}", strangers.len(), &strangers[..strangers.len().min(5)]));
        }
        assert!(
            problems.is_empty(),
            "{} problems reading back {} acknowledged events from {} records, first 20:\n{}{}",
            problems.len(),
            acked_events,
            records.len(),
            problems[..problems.len().min(20)].join("\n"),
            self.context()
        );
        assert_eq!(
            acked_partitions.len(),
            PARTITIONS as usize,
            "acknowledged events should span every partition (leader failover on each): {acked_partitions:?}"
        );
        ReadBack { found, acked_events }
    }

    /// One line with what happened when: counts by phase and status, events answered 503
    /// but written anyway, and the timings of every step.
    fn print_summary(&self, sent: &[Sent], read_back: &ReadBack, summary: Summary) {
        let Summary { test_started, cluster_up, core_ready, first_kill, second_kill, restart, two_down } = summary;
        let mut counts: BTreeMap<(Phase, u16), usize> = BTreeMap::new();
        for s in sent {
            *counts.entry((s.phase, s.status)).or_default() += 1;
        }
        // Events answered 503 that were written anyway (not acknowledged in time), by phase.
        let mut written_503: BTreeMap<Phase, usize> = BTreeMap::new();
        for s in sent.iter().filter(|s| s.status == 503) {
            let written = events(&self.run, s.client, s.n).iter().filter(|e| read_back.found.contains_key(&e.raw)).count();
            if written > 0 {
                *written_503.entry(s.phase).or_default() += written;
            }
        }
        // Ingest back: the first 200 of a request started after the restarts began.
        let first_ok_after_restart_began = sent
            .iter()
            .filter(|s| s.phase >= Phase::Restarting && s.status == 200)
            .map(|s| s.done() - restart.began)
            .min()
            .unwrap();
        let (quorum, first, second, acked_events) = (self.quorum, first_kill.broker, second_kill.broker, read_back.acked_events);
        let (first_ok_after_kill1, failover, isr_of_one) = (first_kill.first_ok, first_kill.failover, second_kill.isr_of_one);
        let (first_503_after_kill2, max_503, bound, reasons) = (two_down.first_503_after_kill, two_down.slowest_503, two_down.bound, two_down.reasons);
        let (restart_took, first_ok_after_restart) = (restart.took, restart.first_ok);
        eprintln!(
            "brokers ({quorum:?}): killed {first} then {second}; {} requests, {acked_events} events acknowledged, each in Kafka once as sent; \
             events answered 503 but written anyway, by phase: {written_503:?}\n\
             requests by (phase at start, status): {counts:?}\n\
             cluster start {cluster_up:?}, core ready {core_ready:?}; \
             kill 1 -> first 200 {first_ok_after_kill1:?}, leaders moved {failover:?}; \
             kill 2 -> first 503 {first_503_after_kill2:?}, ISR of one {isr_of_one:?}, slowest 503 {max_503:?} (bound {bound:?}), why: {reasons:?}; \
             restart of both began -> first 200 {first_ok_after_restart_began:?}, both serving {restart_took:?}, \
             then first 200 {first_ok_after_restart:?}; whole test {:?}",
            sent.len(),
            test_started.elapsed()
        );
    }
}

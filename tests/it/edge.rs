//! Edge → QUIC (mutual TLS) → core → Kafka, with real processes killed by SIGKILL:
//! store-and-forward (I2), failover between cores, the spool's bound, and authentication
//! of edges (I8).

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use serde_json::json;
use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, EdgeSpec, Node, TOKEN, core_process, edge_process};
use weir_tests::{certs, cli, eventually, gate, http, init_tracing, metric, scrape, unique};

/// Sends `raws` as one HEC raw request; returns the status.
async fn send_lines(client: &reqwest::Client, node: &Node, raws: &[String], ack: Option<&str>) -> (u16, String) {
    let mut request = client
        .post(node.url("/services/collector/raw"))
        .header("authorization", format!("Splunk {TOKEN}"))
        .body(raws.join("\n"));
    if let Some(ack) = ack {
        request = request.header("x-weir-ack", ack);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(error) => (0, error.to_string()),
    }
}

fn lines(prefix: &str, request: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{request}-{i}")).collect()
}

async fn expect_in_kafka(bootstrap: &str, topic: &str, expected: Vec<String>) -> Vec<kafka::Record> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        kafka::expect_events(&bootstrap, &topic, &expected, Duration::from_secs(60));
        kafka::consume_until(&bootstrap, &topic, Duration::from_secs(2), |_| false)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_sent_to_the_edge_reach_kafka_through_a_core() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-edge"), &certs);
    let core = core_process(&core_spec, dir.path()).await;
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("fwd");

    let mut expected = Vec::new();
    for request in 0..40 {
        let raws = lines(&run, request, 25);
        // Every fourth request waits for the core's Kafka-backed ack.
        let ack = (request % 4 == 0).then_some("core");
        let (status, body) = send_lines(&client, &edge, &raws, ack).await;
        assert_eq!(status, 200, "request {request}: {body}");
        expected.extend(raws);
    }
    // Structured ingest through the edge keeps tags and attributes.
    let structured = format!("{run}-structured");
    let response = client
        .post(edge.url("/api/v1/ingest/humio-structured"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-weir-ack", "core")
        .json(&json!([{"tags": {"site": "remote-7"}, "events": [{"rawstring": structured, "attributes": {"k": "v"}}]}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    expected.push(structured.clone());

    let records = expect_in_kafka(&bootstrap, &core_spec.topic, expected.clone()).await;
    let counts = kafka::raw_counts(&records);
    assert_eq!(counts.len(), expected.len(), "no event other than the sent ones");
    let record = records.iter().find(|r| r.batch.events.iter().any(|e| e.raw == structured)).unwrap();
    assert_eq!(record.batch.tags.get("site").map(String::as_str), Some("remote-7"));
    assert_eq!(record.batch.events[0].attributes["k"], "v");
    assert!(
        records.iter().all(|r| r.batch_id.as_deref().is_some_and(|id| id.starts_with("edge-1:"))),
        "records forwarded by the edge carry its batch id"
    );
    // The id is edge:incarnation:seq, with the spool's random incarnation in the middle.
    let incarnation = records[0].batch_id.as_deref().unwrap().split(':').nth(1).unwrap().to_owned();
    assert_eq!(incarnation.len(), 32, "a 128-bit incarnation: {:?}", records[0].batch_id);
    assert!(records.iter().all(|r| r.part == Some((0, 1))), "a batch within the record limit is one record, part 0 of 1");

    // What an operator scrapes: 41 requests, 1001 events, 41 batches forwarded and acked.
    let edge_base = edge.url("");
    let edge_metrics = eventually("the edge to count every ack", Duration::from_secs(10), || {
        let edge_base = edge_base.clone();
        async move {
            let text = scrape(&edge_base).await;
            (metric(&text, "weir_forward_batches_acked_total", &[]) == Some(41.0)).then_some(text)
        }
    })
    .await;
    assert_eq!(metric(&edge_metrics, "weir_http_requests_total", &[("endpoint", "hec-raw"), ("status", "200")]), Some(40.0), "{edge_metrics}");
    assert_eq!(metric(&edge_metrics, "weir_http_events_total", &[("endpoint", "hec-raw")]), Some(1000.0));
    assert_eq!(metric(&edge_metrics, "weir_http_events_total", &[("endpoint", "humio-structured")]), Some(1.0));
    assert_eq!(metric(&edge_metrics, "weir_spool_pending_batches", &[]), Some(0.0));
    assert_eq!(metric(&edge_metrics, "weir_forward_connected", &[("core", &core_spec.quic_addr())]), Some(1.0), "{edge_metrics}");
    // Log files are plain text: colour codes only on a terminal.
    for node in [&edge, &core] {
        assert!(!node.log_tail().contains('\u{1b}'), "ANSI escape codes in a log file:\n{}", node.log_tail());
    }
    let core_metrics = scrape(&core.url("")).await;
    assert_eq!(metric(&core_metrics, "weir_edge_batches_total", &[("result", "acked")]), Some(41.0), "{core_metrics}");
    assert_eq!(metric(&core_metrics, "weir_kafka_records_total", &[("result", "acked")]), Some(41.0));
    assert_eq!(metric(&core_metrics, "weir_kafka_topic_ready", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_fails_over_when_its_core_is_killed_mid_stream() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let topic = unique("weir-test-failover");
    let spec_1 = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    let spec_2 = CoreSpec::new("core-2", &bootstrap, &topic, &certs);
    let mut core_1 = core_process(&spec_1, dir.path()).await;
    let core_2 = core_process(&spec_2, dir.path()).await;
    let edge_spec = EdgeSpec::new(dir.path(), vec![spec_1.quic_addr(), spec_2.quic_addr()], &certs);
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("failover");

    let mut acknowledged = Vec::new();
    for request in 0..60 {
        if request == 20 {
            // The edge starts with the first core in its list: kill it while batches flow.
            core_1.kill9();
        }
        let raws = lines(&run, request, 20);
        // Half of the requests wait for a core's ack, so the stream really crosses the kill.
        let ack = (request % 2 == 0).then_some("core");
        let (status, body) = send_lines(&client, &edge, &raws, ack).await;
        assert_eq!(status, 200, "request {request}: {body}\nedge log:\n{}", edge.log_tail());
        acknowledged.extend(raws);
    }
    expect_in_kafka(&bootstrap, &topic, acknowledged).await;
    assert!(
        core_2.log_tail().contains("edge connected"),
        "the edge must have failed over to core-2:\n{}",
        core_2.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spooled_events_survive_kill9_of_the_edge_while_no_core_is_reachable() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    // The core's ports are reserved but nothing listens yet.
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-spool"), &certs);
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let mut edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("spooled");

    let mut acknowledged = Vec::new();
    for request in 0..30 {
        let raws = lines(&run, request, 30);
        let (status, body) = send_lines(&client, &edge, &raws, None).await;
        assert_eq!(status, 200, "request {request}: {body}");
        acknowledged.extend(raws);
    }
    edge.kill9();

    let _core = core_process(&core_spec, dir.path()).await;
    let _edge = edge_process(&edge_spec, dir.path()).await;
    expect_in_kafka(&bootstrap, &core_spec.topic, acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sources_batches_reach_kafka_in_spool_order() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-order"), &certs);
    // No core yet: the batches pile up in the spool, so the forwarder sends them with
    // many in flight at once. Large and small batches alternate: a small frame that
    // arrives complete before the large one opened before it must still wait its turn.
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("order");
    let n_requests = 48;
    let mut acknowledged = Vec::new();
    for request in 0..n_requests {
        let n = if request % 3 == 0 { 400 } else { 1 };
        let raws: Vec<String> = (0..n).map(|i| format!("{run}-{request}-{i}-{}", noise((request * 1000 + i) as u64, 300))).collect();
        let (status, body) = send_lines(&client, &edge, &raws, None).await;
        assert_eq!(status, 200, "request {request}: {body}");
        acknowledged.extend(raws);
    }
    let _core = core_process(&core_spec, dir.path()).await;
    let records = expect_in_kafka(&bootstrap, &core_spec.topic, acknowledged).await;
    assert_first_copies_in_spool_order(records, &run);
}

/// Every event's (request, index) in log order per partition, keeping only the first copy
/// of each (a resent batch may repeat, always into the partition of its first copy): in
/// each partition it must be the spool order. The source is spread over both partitions
/// (`kafka.source_shards`), each holding a subsequence of the spool. Events are
/// `{run}-{request}-{index}-…`.
fn assert_first_copies_in_spool_order(mut records: Vec<kafka::Record>, run: &str) {
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut seen = std::collections::HashMap::new();
    let mut orders: std::collections::BTreeMap<i32, Vec<(usize, usize)>> = Default::default();
    for record in &records {
        for event in &record.batch.events {
            let Some(rest) = event.raw.strip_prefix(&format!("{run}-")) else { continue };
            let mut parts = rest.split('-');
            let request: usize = parts.next().unwrap().parse().unwrap();
            let index: usize = parts.next().unwrap().parse().unwrap();
            match seen.insert((request, index), record.partition) {
                None => orders.entry(record.partition).or_default().push((request, index)),
                Some(first) => assert_eq!(first, record.partition, "a copy of event {request}-{index} went to another partition than the first"),
            }
        }
    }
    assert!(orders.len() > 1, "one source's batches should spread over the partitions: {:?}", orders.keys());
    for (partition, order) in orders {
        let first_out_of_order = order.windows(2).find(|w| w[0] > w[1]);
        assert!(first_out_of_order.is_none(), "events out of spool order in partition {partition}: {first_out_of_order:?}");
    }
}

/// The order holds across failures too: the core taking the window is killed while large
/// and small frames interleave, the edge fails over to a second core, and Kafka refuses
/// one batch for good on the way (dead-lettered; the batches behind it still flow). The
/// first copy of each batch in Kafka is in spool order.
#[tokio::test(flavor = "multi_thread")]
async fn spool_order_holds_across_a_core_killed_mid_window_and_a_refused_batch() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let topic = unique("weir-test-order-failover");
    let spec_1 = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    let spec_2 = CoreSpec::new("core-2", &bootstrap, &topic, &certs);
    let mut edge_spec = EdgeSpec::new(dir.path(), vec![spec_1.quic_addr(), spec_2.quic_addr()], &certs);
    // Lets in one event Kafka refuses (over the core's 900 kB record limit).
    edge_spec.max_event_bytes = 4 << 20;
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("order-failover");
    let n_requests = 96;
    let refused_request = 40;
    let mut acknowledged = Vec::new();
    let mut refused = String::new();
    for request in 0..n_requests {
        let raws: Vec<String> = if request == refused_request {
            refused = format!("{run}-{request}-0-{}", noise(7, 1_200_000));
            vec![refused.clone()]
        } else {
            let n = if request % 3 == 0 { 400 } else { 1 };
            (0..n).map(|i| format!("{run}-{request}-{i}-{}", noise((request * 1000 + i) as u64, 300))).collect()
        };
        let (status, body) = send_lines(&client, &edge, &raws, None).await;
        assert_eq!(status, 200, "request {request}: {body}");
        if request != refused_request {
            acknowledged.extend(raws);
        }
    }
    // Only core-1 is up: it takes the window; it is killed as soon as the first events
    // are in Kafka, with most batches still pending on the edge.
    let mut core_1 = core_process(&spec_1, dir.path()).await;
    let (bootstrap_2, topic_2, prefix) = (bootstrap.clone(), topic.clone(), format!("{run}-"));
    tokio::task::spawn_blocking(move || {
        let records = kafka::consume_until(&bootstrap_2, &topic_2, Duration::from_secs(60), |records| {
            records.iter().flat_map(|r| &r.batch.events).any(|e| e.raw.starts_with(&prefix))
        });
        assert!(!records.is_empty(), "core-1 published nothing within 60 s");
    })
    .await
    .unwrap();
    core_1.kill9();
    let pending = metric(&scrape(&edge.url("")).await, "weir_spool_pending_batches", &[]).unwrap_or(0.0);
    assert!(pending > 0.0, "the kill must land mid-window: nothing was pending any more");
    let _core_2 = core_process(&spec_2, dir.path()).await;

    let records = expect_in_kafka(&bootstrap, &topic, acknowledged).await;
    assert!(!kafka::raw_counts(&records).contains_key(&refused), "the refused event is not in kafka");
    assert_first_copies_in_spool_order(records, &run);
    let edge_metrics = scrape(&edge.url("")).await;
    assert_eq!(metric(&edge_metrics, "weir_dead_letters_total", &[]), Some(1.0), "the refused batch, and only it, is dead-lettered: {edge_metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_no_core_accepts_is_dead_lettered_then_requeued() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    // This core takes batches of at most 64 KiB; the edge accepts requests up to 1 MiB.
    let mut core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-dead"), &certs);
    core_spec.max_batch_bytes = 64 * 1024;
    let mut core = core_process(&core_spec, dir.path()).await;
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let mut edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("dead");

    let before = vec![format!("{run}-before")];
    let (status, body) = send_lines(&client, &edge, &before, None).await;
    assert_eq!(status, 200, "{body}");
    let big: Vec<String> = (0..300).map(|i| format!("{run}-big-{i}-{}", noise(i, 300))).collect();
    let (status, body) = send_lines(&client, &edge, &big, Some("core")).await;
    assert_eq!(status, 413, "a client waiting for the core hears of the refusal: {body}");
    assert!(body.contains("dead-letter") && body.contains("requeue"), "{body}");
    let after = vec![format!("{run}-after")];
    let (status, body) = send_lines(&client, &edge, &after, Some("core")).await;
    assert_eq!(status, 200, "the refused batch does not block the ones after it: {body}");

    let records = expect_in_kafka(&bootstrap, &core_spec.topic, [before.clone(), after.clone()].concat()).await;
    let counts = kafka::raw_counts(&records);
    assert!(big.iter().all(|raw| !counts.contains_key(raw)), "the refused batch is not in Kafka");
    assert!(edge.log_tail().contains("moved it to the dead-letter directory"), "{}", edge.log_tail());
    let edge_metrics = scrape(&edge.url("")).await;
    assert_eq!(metric(&edge_metrics, "weir_dead_letters_total", &[]), Some(1.0), "{edge_metrics}");
    let core_metrics = scrape(&core.url("")).await;
    assert_eq!(metric(&core_metrics, "weir_edge_batches_total", &[("result", "refused")]), Some(1.0), "{core_metrics}");

    let edge_config = dir.path().join("edge-1.toml");
    let list = cli::weir_edge(&["dead-letter", "list", "--config"], &edge_config);
    assert!(list.contains("edge-1:") && list.contains("TooLarge") && list.contains("1 dead letters"), "{list}");
    let letters = edge_spec.spool_dir.join("dead-letter");
    let json = std::fs::read_dir(&letters).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "json")).unwrap();
    let shown = std::fs::read_to_string(&json).unwrap();
    assert!(shown.contains(&big[299]), "the letter shows its events: {}", json.display());

    // The operator raises the core's limit, requeues with the edge stopped, restarts it.
    let (requeued_while_running, _, stderr) = cli::run("weir-edge", &["dead-letter", "requeue", "--config"], &edge_config);
    assert!(!requeued_while_running && stderr.contains("in use by another process"), "{stderr}");
    edge.kill9();
    core.kill9();
    core_spec.max_batch_bytes = 64 << 20;
    let _core = core_process(&core_spec, dir.path()).await;
    let requeued = cli::weir_edge(&["dead-letter", "requeue", "--config"], &edge_config);
    assert!(requeued.contains("requeued 1 dead letters"), "{requeued}");
    let _edge = edge_process(&edge_spec, dir.path()).await;
    expect_in_kafka(&bootstrap, &core_spec.topic, [before, big, after].concat()).await;
    let left = std::fs::read_dir(&letters).unwrap().count();
    assert_eq!(left, 0, "a requeued letter leaves the dead-letter directory");
}

/// The issue a new user hit: one event Kafka refuses as too large used to be resent
/// forever, and every batch behind it waited. Now the core answers `TooLarge`, the edge
/// dead-letters that batch and goes on.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_kafka_refuses_is_dead_lettered_and_the_batches_behind_it_flow() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-poison"), &certs);
    let core = core_process(&core_spec, dir.path()).await;
    // The edge lets a 1.2 MB event in (its limit is raised past the core's Kafka record
    // limit of 900 kB, as a misconfigured edge would have it).
    let mut edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    edge_spec.max_event_bytes = 4 << 20;
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("poison");

    let huge = vec![format!("{run}-huge-{}", noise(1, 1_200_000))];
    let (status, body) = send_lines(&client, &edge, &huge, None).await;
    assert_eq!(status, 200, "spooled: {body}");
    let small = vec![format!("{run}-small")];
    let started = std::time::Instant::now();
    let (status, body) = send_lines(&client, &edge, &small, Some("core")).await;
    assert_eq!(status, 200, "the batch behind the refused one is acknowledged: {body}");
    assert!(started.elapsed() < Duration::from_secs(15), "and promptly: {:?}", started.elapsed());

    let records = expect_in_kafka(&bootstrap, &core_spec.topic, small.clone()).await;
    assert!(!kafka::raw_counts(&records).contains_key(&huge[0]), "kafka never took the huge event");
    let edge_metrics = scrape(&edge.url("")).await;
    assert_eq!(metric(&edge_metrics, "weir_dead_letters_total", &[]), Some(1.0), "{edge_metrics}");
    let failures = metric(&edge_metrics, "weir_forward_session_failures_total", &[]).unwrap_or(0.0);
    assert_eq!(failures, 0.0, "no session was torn down over it: {edge_metrics}");
    let core_metrics = scrape(&core.url("")).await;
    assert_eq!(metric(&core_metrics, "weir_kafka_records_total", &[("result", "refused")]), Some(1.0), "{core_metrics}");
    let list = cli::weir_edge(&["dead-letter", "list", "--config"], &dir.path().join("edge-1.toml"));
    assert!(list.contains("TooLarge") && list.contains("kafka refused"), "{list}");
}

/// Kafka gone for a few seconds: the core answers `Unavailable`, and the edge retries
/// those batches on the same link after a jittered backoff instead of tearing the session
/// down; once Kafka is back every event arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_transient_refusal_is_retried_on_the_same_link() {
    let _gate = gate::shared();
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let broker = tokio::task::block_in_place(|| kafka::Broker::start(&dir.path().join("kafka")));
    let bootstrap = broker.bootstrap();
    let certs = certs(dir.path());
    let mut core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-retry"), &certs);
    core_spec.ack_timeout_ms = 1_500;
    let core = core_process(&core_spec, dir.path()).await;
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    // Enough retries on the link to outlast a broker restart (the toml ends in [forward]).
    let toml = edge_spec.toml() + "retries_per_link = 30\n";
    let edge = Node::spawn("weir-edge", &edge_spec.edge_id, &toml, edge_spec.http_port, dir.path()).await;
    let client = http();
    let run = unique("retry");
    let first = lines(&run, 0, 10);
    assert_eq!(send_lines(&client, &edge, &first, Some("core")).await.0, 200);

    tokio::task::block_in_place(|| broker.kill());
    let during = lines(&run, 1, 10);
    let (status, body) = send_lines(&client, &edge, &during, None).await;
    assert_eq!(status, 200, "spooled while Kafka is down: {body}");
    // The core refuses it at least once (its ack timeout is 1.5 s), then Kafka returns.
    eventually("the core to answer Unavailable", Duration::from_secs(20), || {
        let url = core.url("");
        async move {
            let text = scrape(&url).await;
            (metric(&text, "weir_edge_batches_total", &[("result", "unavailable")]).unwrap_or(0.0) >= 1.0).then_some(())
        }
    })
    .await;
    tokio::task::block_in_place(|| broker.restart());
    expect_in_kafka(&bootstrap, &core_spec.topic, [first, during].concat()).await;
    let edge_metrics = scrape(&edge.url("")).await;
    assert!(metric(&edge_metrics, "weir_forward_retries_total", &[]).unwrap_or(0.0) >= 1.0, "retried on the link: {edge_metrics}");
    assert_eq!(
        metric(&edge_metrics, "weir_forward_session_failures_total", &[]).unwrap_or(0.0),
        0.0,
        "the session was never torn down: {}",
        edge.log_tail()
    );
}

/// A core asked to stop answers the batches it already has before it closes the edge's
/// connection: the edge sees acks, not a cut link, and fails over for the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_core_stopping_drains_the_batches_in_flight() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let topic = unique("weir-test-drain");
    let spec_1 = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    let spec_2 = CoreSpec::new("core-2", &bootstrap, &topic, &certs);
    let edge_spec = EdgeSpec::new(dir.path(), vec![spec_1.quic_addr(), spec_2.quic_addr()], &certs);
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("drain");
    let mut acknowledged = Vec::new();
    for request in 0..96 {
        let raws: Vec<String> = (0..300).map(|i| format!("{run}-{request}-{i}-{}", noise((request * 1000 + i) as u64, 1000))).collect();
        let (status, body) = send_lines(&client, &edge, &raws, None).await;
        assert_eq!(status, 200, "request {request}: {body}");
        acknowledged.extend(raws);
    }
    // SIGTERM while the edge's window of ~300 kB batches is in flight on core-1.
    let mut core_1 = core_process(&spec_1, dir.path()).await;
    // Wait for core-1's first acknowledgement, not for its "edge connected": on a loaded
    // machine a handshake that began before core-1 was up can complete after the edge gave
    // up on it, and the edge then spends its connect timeout on core-2 (not started yet),
    // so core-1 would be stopped with no edge connected at all. The edge's window (8
    // batches) is still in flight when the first answer is seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let edge_metrics = scrape(&edge.url("")).await;
        if metric(&edge_metrics, "weir_forward_batches_acked_total", &[]).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "core-1 acknowledged no batch in 30 s:\n{}\n{}", core_1.log_tail(), edge.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::block_in_place(|| core_1.terminate(Duration::from_secs(30)));
    assert!(status.success(), "core-1 exits cleanly on SIGTERM: {status}\n{}", core_1.log_tail());
    assert!(core_1.log_tail().contains("edge connection drained"), "core-1 drained its edge:\n{}", core_1.log_tail());
    let _core_2 = core_process(&spec_2, dir.path()).await;
    let records = expect_in_kafka(&bootstrap, &topic, acknowledged).await;
    // A batch core-1 published but could not answer would be resent to core-2 and be in
    // Kafka twice: a drain answers every batch it took.
    let twice: Vec<_> = kafka::raw_counts(&records).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "{} events are in Kafka twice, e.g. {:?}", twice.len(), twice.first());
    // A cut stream shows on the edge as a lost link (or a batch without an answer); a
    // drain as the core closing the link after its answers.
    // A core that is not ready yet turns the edge away before it takes any batch (close
    // code 5, "this core is not ready"): no batch is in flight then, so that is no cut.
    let log = edge.log_tail();
    let cut = log.lines().any(|l| (l.contains("link to core lost") && !l.contains("this core is not ready")) || l.contains("no answer for batch"));
    assert!(!cut, "no batch in flight was cut off:\n{log}");
    assert!(log.contains("core closed the link"), "core-1 closed the link gracefully:\n{log}");
}

/// A batch over the core's record limit travels as several Kafka records, each naming
/// the batch and its place in it: what the digest needs to store a re-sent batch once.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_split_into_records_carries_its_part_headers() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-parts"), &certs);
    let _core = core_process(&core_spec, dir.path()).await;
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let edge = edge_process(&edge_spec, dir.path()).await;
    let run = unique("parts");
    // About 2.4 MB in one request, one source: one batch, over the 900 kB record limit.
    let raws: Vec<String> = (0..2000).map(|i| format!("{run}-{i:05}-{}", noise(i, 1200))).collect();
    let (status, body) = send_lines(&http(), &edge, &raws, Some("core")).await;
    assert_eq!(status, 200, "{body}");
    let records = expect_in_kafka(&bootstrap, &core_spec.topic, raws.clone()).await;
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| r.batch_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one batch id for every part: {ids:?}");
    let mut parts: Vec<(u32, u32)> = records.iter().map(|r| r.part.expect("part headers")).collect();
    parts.sort();
    let count = parts[0].1;
    assert!(count >= 3, "2.4 MB split into at least three records: {parts:?}");
    assert_eq!(parts, (0..count).map(|i| (i, count)).collect::<Vec<_>>(), "parts 0..n of n, each once");
    // Parts keep the batch's event order: concatenated in part order, they are the request.
    let mut by_part = records.clone();
    by_part.sort_by_key(|r| r.part);
    let joined: Vec<String> = by_part.iter().flat_map(|r| r.batch.events.iter().map(|e| e.raw.clone())).collect();
    assert_eq!(joined, raws);
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_over_udp_and_tcp_reaches_kafka() {
    let _gate = gate::shared();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-syslog"), &certs);
    let _core = core_process(&core_spec, dir.path()).await;
    let mut edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let (udp_port, tcp_port) = (weir_tests::free_port(), weir_tests::free_port());
    edge_spec.syslog_ports = Some((udp_port, tcp_port));
    let edge = edge_process(&edge_spec, dir.path()).await;
    let run = unique("syslog");
    let message = |transport: &str, i: usize| format!("<13>1 2024-05-01T10:00:00Z host app - - - {run}-{transport}-{i}");
    let mut expected = Vec::new();

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..30 {
        udp.send_to(format!("{}\n", message("udp", i)).as_bytes(), ("127.0.0.1", udp_port)).unwrap();
        expected.push(message("udp", i));
    }
    // Newline framing on one connection, octet counting (RFC 6587) on another.
    let mut lines = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    let mut counted = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    for i in 0..30 {
        lines.write_all(format!("{}\n", message("tcp", i)).as_bytes()).await.unwrap();
        let text = message("octet", i);
        counted.write_all(format!("{} {text}", text.len()).as_bytes()).await.unwrap();
        expected.extend([message("tcp", i), text]);
    }
    lines.shutdown().await.unwrap();
    counted.shutdown().await.unwrap();
    // A frame over max_message_bytes: the edge closes that connection, and only that one.
    let mut bad = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    bad.write_all(b"99999999 <13>too long").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), bad.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the edge closes a connection with a bad frame: {closed:?}");

    let records = expect_in_kafka(&bootstrap, &core_spec.topic, expected).await;
    let record = records.iter().find(|r| r.batch.events.iter().any(|e| e.raw.contains(&format!("{run}-octet-0")))).unwrap();
    assert_eq!(record.batch.tags.get("syslog.peer").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(record.batch.parser.as_deref(), Some("syslog"));
    let metrics = scrape(&edge.url("")).await;
    assert_eq!(metric(&metrics, "weir_syslog_messages_total", &[]), Some(90.0), "{metrics}");
    assert_eq!(metric(&metrics, "weir_syslog_bad_frames_total", &[]), Some(1.0), "{metrics}");
    assert!(edge.log_tail().contains("exceeds max_message_bytes"), "{}", edge.log_tail());
}

/// Incompressible-ish text so that spool sizes are predictable.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_spool_pushes_back_loses_nothing_and_recovers() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-full"), &certs);
    let mut edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    edge_spec.spool_max_bytes = 256 * 1024;
    edge_spec.spool_segment_bytes = 64 * 1024;
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("full");

    let mut acknowledged = Vec::new();
    let mut refused = None;
    for request in 0..200 {
        let raws: Vec<String> = (0..4).map(|i| format!("{run}-{request}-{i}-{}", noise(request as u64 * 8 + i, 2_000))).collect();
        let (status, body) = send_lines(&client, &edge, &raws, None).await;
        match status {
            200 => acknowledged.extend(raws),
            429 | 503 => {
                refused = Some((status, body));
                break;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let (status, body) = refused.expect("a 256 KiB spool must fill up");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("spool is full") && body.contains("hint"), "{body}");
    assert!(!acknowledged.is_empty());

    // A core comes up: the spool drains and the edge accepts again.
    let _core = core_process(&core_spec, dir.path()).await;
    let later = format!("{run}-after-recovery");
    eventually("the edge to accept again", Duration::from_secs(60), || {
        let (client, edge, later) = (&client, &edge, later.clone());
        async move {
            let (status, _) = send_lines(client, edge, std::slice::from_ref(&later), None).await;
            (status == 200).then_some(())
        }
    })
    .await;
    acknowledged.push(later);
    expect_in_kafka(&bootstrap, &core_spec.topic, acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_without_a_certificate_from_the_ca_cannot_forward() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let rogue = dir.path().join("rogue");
    weir_core::certs::generate(
        &rogue,
        &[("edge-1".into(), weir_core::certs::Role::Edge), ("core-1".into(), weir_core::certs::Role::Core)],
    )
    .unwrap();
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-auth"), &certs);
    let _core = core_process(&core_spec, dir.path()).await;
    let core_addr = core_spec.quic_addr().parse().unwrap();
    let run = unique("rogue");
    let files = |dir: &std::path::Path| weir_node::tls::TlsFiles {
        cert: dir.join("edge-1.pem"),
        key: dir.join("edge-1.key"),
        // Trusts the real CA, so only the client side is wrong.
        ca: certs.join("ca.pem"),
    };

    // First the control: the good certificate and its own name forward fine, so the
    // refusals below are the certificate's doing, not the harness's.
    let good = weir_node::tls::client_config(&files(&certs), Duration::from_secs(3)).unwrap();
    let good_marker = format!("{run}-good");
    assert_eq!(try_forward(good.clone(), core_addr, "edge-1", &good_marker).await, Ok(()));

    // A good certificate naming itself as another edge: its batch ids could shadow that
    // edge's, so the core refuses the batch.
    let forged = try_forward(good, core_addr, "edge-2", &format!("{run}-forged")).await;
    assert!(
        matches!(&forged, Err(Outcome::Refused(weir_proto::wire::ErrorCode::Forbidden, message)) if message.contains("certificate")),
        "a batch id naming another edge than the certificate: {forged:?}"
    );

    // A client certificate from another CA, and no client certificate at all: both fail
    // in the TLS handshake, before any stream.
    let wrong_ca = weir_node::tls::client_config(&files(&rogue), Duration::from_secs(3)).unwrap();
    let no_cert = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![weir_proto::wire::ALPN.to_vec()];
        quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()))
    };
    for (name, config) in [("wrong CA", wrong_ca), ("no certificate", no_cert)] {
        let outcome = try_forward(config, core_addr, "edge-1", &format!("{run}-{name}")).await;
        assert!(matches!(outcome, Err(Outcome::Tls(_))), "{name}: the core must refuse in the handshake, got {outcome:?}");
    }

    // And the other way round: an edge refuses a core whose certificate comes from
    // another CA, even one carrying the right name.
    let foreign_core = CoreSpec::new("core-1", &bootstrap, &core_spec.topic, &rogue);
    let _foreign = core_process(&foreign_core, &dir.path().join("rogue")).await;
    let edge_config = weir_node::tls::client_config(&files(&certs), Duration::from_secs(3)).unwrap();
    let outcome = try_forward(edge_config, foreign_core.quic_addr().parse().unwrap(), "edge-1", &format!("{run}-to-foreign")).await;
    assert!(matches!(outcome, Err(Outcome::Tls(_))), "an edge must not talk to a core from another CA: {outcome:?}");

    // A legitimate edge's batch arrives; the rogue ones never did.
    let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    let edge = edge_process(&edge_spec, dir.path()).await;
    let marker = format!("{run}-legit");
    let (status, body) = send_lines(&http(), &edge, std::slice::from_ref(&marker), Some("core")).await;
    assert_eq!(status, 200, "{body}");
    let records = expect_in_kafka(&bootstrap, &core_spec.topic, vec![good_marker, marker]).await;
    assert_eq!(kafka::raw_counts(&records).len(), 2, "nothing from unauthenticated or forged peers: {:?}", kafka::raw_counts(&records));
}

/// How a hand-made forward attempt ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The connection never came up (handshake refused on either side).
    Tls(String),
    Refused(weir_proto::wire::ErrorCode, String),
    Other(String),
}

/// Speaks the wire protocol directly as edge `edge_id`; `Ok` only if the core
/// acknowledged the batch.
async fn try_forward(config: quinn::ClientConfig, addr: std::net::SocketAddr, edge_id: &str, raw: &str) -> Result<(), Outcome> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| Outcome::Other(e.to_string()))?;
    endpoint.set_default_client_config(config);
    let exchange = async {
        let connecting = endpoint.connect(addr, "localhost").map_err(|e| Outcome::Other(e.to_string()))?;
        let connection = connecting.await.map_err(|e| Outcome::Tls(e.to_string()))?;
        let batch = weir_proto::EventBatch {
            repository: weir_tests::nodes::REPOSITORY.into(),
            tags: Default::default(),
            parser: None,
            ingest_ts_ms: 0,
            attributes: Default::default(),
            events: vec![weir_proto::Event::raw(raw)],
        };
        let payload = weir_proto::wire::encode_payload(&[batch]).unwrap();
        let header = weir_proto::wire::RequestHeader {
            version: weir_proto::wire::PROTOCOL_VERSION,
            batch_id: weir_proto::wire::BatchId { edge_id: edge_id.into(), incarnation: "test".into(), seq: 1 },
            n_events: 1,
            payload_bytes: payload.len() as u64,
        };
        // In TLS 1.3 the server checks a client certificate after the handshake completed on
        // the client's side: the connection is then closed with the TLS alert, which the
        // first stream sees. The close reason tells it from any other failure.
        let tls_or_other = |e: String| {
            let reason = connection.close_reason().map(|r| r.to_string()).unwrap_or_default();
            if reason.contains("cryptographic handshake failed") { Outcome::Tls(format!("{e}: {reason}")) } else { Outcome::Other(format!("{e}: {reason}")) }
        };
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| tls_or_other(e.to_string()))?;
        send.write_all(&weir_proto::wire::encode_request(&header, &payload)).await.map_err(|e| tls_or_other(e.to_string()))?;
        send.finish().map_err(|e| tls_or_other(e.to_string()))?;
        let answer = recv.read_to_end(64 * 1024).await.map_err(|e| tls_or_other(e.to_string()))?;
        match serde_json::from_slice::<weir_proto::wire::Response>(&answer) {
            Ok(weir_proto::wire::Response::Ack { .. }) => Ok(()),
            Ok(weir_proto::wire::Response::Error { code, message }) => Err(Outcome::Refused(code, message)),
            Err(e) => Err(Outcome::Other(e.to_string())),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.unwrap_or(Err(Outcome::Other("timed out".into())))
}

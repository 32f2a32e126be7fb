//! The core's HTTP ingest against a real Kafka broker: acknowledged means in Kafka (I1),
//! bad input gets a clear error and publishes nothing, a dead broker means 503.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weir_tests::kafka::{self, Broker};
use weir_tests::nodes::{CoreSpec, TOKEN};
use weir_tests::{certs, eventually, gate, http, init_tracing, unique};

struct InProcessCore {
    base: String,
    shutdown: CancellationToken,
}

impl Drop for InProcessCore {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_core(spec: &CoreSpec, dir: &std::path::Path) -> InProcessCore {
    let shutdown = CancellationToken::new();
    let running = weir_core::start(spec.config(dir), shutdown.clone()).await.expect("start core");
    let base = format!("http://{}", running.http_addr);
    let client = http();
    eventually("core ready", Duration::from_secs(30), || {
        let request = client.get(format!("{base}/ready"));
        async move { request.send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    InProcessCore { base, shutdown }
}

/// Kafka refusing a record for good is a 4xx the client can act on, never a 503 that
/// asks it to retry forever; a request that holds an event over `max_event_bytes` is
/// refused whole before anything is published.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_kafka_refuses_gets_413_not_a_retry() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(&bootstrap, dir.path());
    spec.max_body_bytes = 8 << 20;
    spec.max_event_bytes = 4 << 20;
    // Every request in one partition, so the last one read proves the earlier ones absent.
    spec.source_shards = 1;
    let core = start_core(&spec, dir.path()).await;
    let client = http();
    let tag = unique("too-large");
    let post = |body: Vec<u8>| {
        client.post(format!("{}/api/v1/ingest/humio-structured", core.base)).header("authorization", format!("Bearer {TOKEN}")).body(body).send()
    };
    let huge = format!("{tag}-huge-{}", "x".repeat(1_200_000));
    let body = serde_json::to_vec(&json!([{"events": [{"rawstring": huge}]}])).unwrap();
    let response = post(body).await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("kafka refused")), "{answer}");
    assert!(!answer["hint"].as_str().unwrap_or("").contains("Retry-After"), "no retry is suggested: {answer}");

    // The next request goes through: the producer is not stuck on the refused record.
    let ok = format!("{tag}-ok");
    let response = post(serde_json::to_vec(&json!([{"events": [{"rawstring": ok}]}])).unwrap()).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Over this node's per-event limit: refused at ingest, naming the event, all or nothing.
    drop(core);
    spec.max_event_bytes = 1024;
    spec.http_port = weir_tests::free_port();
    let core = start_core(&spec, dir.path()).await;
    let good = format!("{tag}-good-neighbour");
    let body = serde_json::to_vec(&json!([{"events": [{"rawstring": good}, {"rawstring": "y".repeat(2048)}]}])).unwrap();
    let response = client
        .post(format!("{}/api/v1/ingest/humio-structured", core.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("event 1")), "{answer}");
    // A last good event, after every refused one on the same key (one partition): once it
    // is read, anything of the refused requests would have been read before it.
    let last = format!("{tag}-last");
    let response = client
        .post(format!("{}/api/v1/ingest/humio-structured", core.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(serde_json::to_vec(&json!([{"events": [{"rawstring": last}]}])).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (bootstrap, topic, wanted) = (bootstrap.clone(), spec.topic.clone(), last.clone());
    let records = tokio::task::spawn_blocking(move || {
        kafka::consume_until(&bootstrap, &topic, Duration::from_secs(60), |records| kafka::raw_counts(records).contains_key(&wanted))
    })
    .await
    .unwrap();
    let counts = kafka::raw_counts(&records);
    assert_eq!(counts.get(&last), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&ok), Some(&1), "{counts:?}");
    assert!(!counts.contains_key(&huge) && !counts.contains_key(&good), "nothing of the refused requests is in kafka: {counts:?}");
}

/// Request headers are size-capped by the HTTP server (hyper's default buffer of about
/// 400 KiB): a client cannot make the node buffer an unbounded header block.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_headers_are_refused() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(&bootstrap, dir.path());
    let core = start_core(&spec, dir.path()).await;
    let response = http()
        .post(format!("{}/api/v1/ingest/raw", core.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-padding", "p".repeat(1 << 20))
        .body("one event")
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status().as_u16(), 431, "a 1 MiB header"),
        // hyper may also close the connection before the client finished writing.
        Err(error) => assert!(error.is_request() || error.is_body() || error.to_string().contains("connection"), "{error}"),
    }
    // The node is unharmed.
    let response = http().post(format!("{}/api/v1/ingest/raw", core.base)).header("authorization", format!("Bearer {TOKEN}")).body("ok").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

fn spec(bootstrap: &str, dir: &std::path::Path) -> CoreSpec {
    let certs = certs(dir);
    CoreSpec::new("core-1", bootstrap, &unique("weir-test-core"), &certs)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_publishes_to_kafka_before_answering() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(&bootstrap, dir.path());
    let core = start_core(&spec, dir.path()).await;
    let client = http();
    let tag = unique("e");
    let ev = |name: &str| format!("{tag}-{name}");

    let requests: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "/api/v1/ingest/humio-structured",
            "Bearer",
            serde_json::to_vec(&json!([{"tags": {"host": "web-1"}, "events": [
                {"timestamp": "2024-05-01T10:00:00Z", "attributes": {"status": 200}, "rawstring": ev("structured-1")},
                {"timestamp": 1714557600000i64, "rawstring": ev("structured-2")}
            ]}]))
            .unwrap(),
        ),
        (
            "/api/v1/ingest/humio-unstructured",
            "Bearer",
            serde_json::to_vec(&json!([{"fields": {"host": "web-2"}, "type": "kv", "messages": [ev("unstructured-1"), ev("unstructured-2")]}]))
                .unwrap(),
        ),
        ("/api/v1/ingest/raw", "Bearer", ev("raw").into_bytes()),
        (
            "/services/collector/event",
            "Splunk",
            format!(r#"{{"event":"{}","time":1714557600.5,"host":"h"}}{{"event":{{"msg":"{}"}},"sourcetype":"json"}}"#, ev("hec-1"), ev("hec-2"))
                .into_bytes(),
        ),
        ("/services/collector/raw?sourcetype=syslog", "Splunk", format!("{}\n{}\n", ev("hecraw-1"), ev("hecraw-2")).into_bytes()),
    ];
    for (path, scheme, body) in requests {
        let response = client
            .post(format!("{}{path}", core.base))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {text}");
    }
    // HEC shippers often gzip their bodies.
    let gzipped = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(format!("{}\n", ev("hecgzip")).as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let response = client
        .post(format!("{}/services/collector/raw", core.base))
        .header("authorization", format!("Splunk {TOKEN}"))
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "gzip: {}", response.text().await.unwrap());

    let expected: Vec<String> =
        ["structured-1", "structured-2", "unstructured-1", "unstructured-2", "raw", "hec-1", "hecraw-1", "hecraw-2", "hecgzip"]
            .iter()
            .map(|n| ev(n))
            .collect();
    let topic = spec.topic.clone();
    let records = tokio::task::spawn_blocking(move || {
        kafka::consume_until(&bootstrap, &topic, Duration::from_secs(30), |records| {
            kafka::raw_counts(records).len() >= 10
        })
    })
    .await
    .unwrap();
    let counts = kafka::raw_counts(&records);
    for raw in &expected {
        assert_eq!(counts.get(raw), Some(&1), "{raw} should be in Kafka exactly once: {counts:?}");
    }
    // The HEC object event keeps its JSON text as raw.
    assert!(counts.keys().any(|raw| raw.contains(&ev("hec-2")) && raw.starts_with('{')), "{counts:?}");
    // Content survives: timestamps, tags, fields, parser hints.
    let structured = records.iter().find(|r| r.batch.events.iter().any(|e| e.raw == ev("structured-1"))).unwrap();
    assert_eq!(structured.batch.repository, weir_tests::nodes::REPOSITORY);
    assert_eq!(structured.batch.tags.get("host").map(String::as_str), Some("web-1"));
    assert_eq!(structured.batch.events[0].timestamp_ms, Some(1_714_557_600_000));
    assert_eq!(structured.batch.events[0].attributes["status"], 200);
    let unstructured = records.iter().find(|r| r.batch.events.iter().any(|e| e.raw == ev("unstructured-1"))).unwrap();
    assert_eq!(unstructured.batch.parser.as_deref(), Some("kv"));
    assert_eq!(unstructured.batch.events.len(), 2, "one source, one record, in order");
    assert_eq!(unstructured.batch.events[1].raw, ev("unstructured-2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_publishes_nothing() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(&bootstrap, dir.path());
    let core = start_core(&spec, dir.path()).await;
    let client = http();
    let bad = unique("bad");
    let structured = "/api/v1/ingest/humio-structured";
    let good_body = |raw: &str| serde_json::to_vec(&json!([{"events": [{"rawstring": raw}]}])).unwrap();
    let oversized = serde_json::to_vec(&json!([{"events": [{"rawstring": format!("{bad}-{}", "x".repeat(2 << 20))}]}])).unwrap();

    // (path, authorization, extra header, body, status, text the error must contain)
    let cases: Vec<(&str, Option<String>, Option<(&str, &str)>, Vec<u8>, u16, &str)> = vec![
        (structured, None, None, good_body(&format!("{bad}-1")), 401, "Token is required"),
        (structured, Some("Bearer wrong".into()), None, good_body(&format!("{bad}-2")), 403, "Invalid token"),
        (structured, Some("Basic abc".into()), None, good_body(&format!("{bad}-3")), 401, "Bearer"),
        (structured, Some(format!("Bearer {TOKEN}")), None, format!(r#"[{{"events":[{{"rawstring":"{bad}-4"}}, ]}}]"#).into_bytes(), 400, "line 1 column"),
        (structured, Some(format!("Bearer {TOKEN}")), None, format!(r#"[{{"events":[{{"rawstring":"{bad}-5"}},{{"timestamp":"noon","rawstring":"x"}}]}}]"#).into_bytes(), 400, "item 0 event 1"),
        (structured, Some(format!("Bearer {TOKEN}")), None, oversized, 413, "exceeds the limit"),
        (structured, Some(format!("Bearer {TOKEN}")), Some(("x-weir-ack", "maybe")), good_body(&format!("{bad}-6")), 400, "x-weir-ack"),
        ("/services/collector/event", Some(format!("Splunk {TOKEN}")), None, format!(r#"{{"event":"{bad}-7"}}{{"time":1}}"#).into_bytes(), 400, "Event field is required"),
        ("/services/collector/event", Some(format!("Splunk {TOKEN}")), None, Vec::new(), 400, "No data"),
        ("/api/v1/ingest/raw", Some(format!("Bearer {TOKEN}")), None, vec![0xff, 0xfe, 0x00], 400, "UTF-8"),
    ];
    for (path, auth, extra, body, status, needle) in cases {
        let mut request = client.post(format!("{}{path}", core.base)).body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // A body over the limit is refused from its Content-Length, before it is read;
            // the server may close the connection while the client still writes it, so
            // the client sees a broken pipe instead of the 413 (HTTP/1.1 allows both).
            Err(error) if status == 413 && error.is_request() => {
                assert!(format!("{error:?}").contains("BrokenPipe") || format!("{error:?}").contains("reset"), "{error:?}");
                continue;
            }
            Err(error) => panic!("{path}: {error:?}"),
        };
        let got = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{path} expected {status}: {body}");
        let text = body.to_string();
        assert!(text.contains(needle), "{path} ({status}) should mention {needle:?}: {text}");
        assert!(body.get("hint").is_some_and(|h| h.as_str().is_some_and(|h| !h.is_empty())), "every error says what to do: {text}");
    }
    // HEC errors carry HEC's codes.
    let response = client
        .post(format!("{}/services/collector/event", core.base))
        .header("authorization", format!("Splunk {TOKEN}"))
        .body(format!(r#"{{"event":"{bad}-8"}} {{"event": oops}}"#))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["code"].as_u64(), body["invalid-event-number"].as_u64()), (Some(6), Some(1)), "{body}");

    // A good request afterwards: once it is in Kafka, nothing of the bad ones is.
    let marker = format!("{bad}-good");
    let response = client
        .post(format!("{}{structured}", core.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(good_body(&marker))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let topic = spec.topic.clone();
    let counts = tokio::task::spawn_blocking(move || kafka::expect_events(&bootstrap, &topic, &[marker], Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(counts.len(), 1, "only the good event may be in Kafka: {:?}", counts.keys().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_broker_means_503_within_the_bound_then_recovery() {
    let _gate = gate::shared();
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("kafka"));
    let mut spec = spec(&broker.bootstrap(), dir.path());
    spec.ack_timeout_ms = 3_000;
    let bootstrap = broker.bootstrap();
    let topic = spec.topic.clone();
    let core = start_core(&spec, dir.path()).await;
    let client = http();
    let run = unique("outage");
    let send = |raw: String| {
        client
            .post(format!("{}/api/v1/ingest/raw", core.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(raw)
            .send()
    };

    let mut acknowledged = Vec::new();
    let first = format!("{run}-before");
    assert_eq!(send(first.clone()).await.unwrap().status(), 200);
    acknowledged.push(first);

    broker.kill();
    let started = Instant::now();
    let response = send(format!("{run}-during")).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "503 carries Retry-After");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("kafka"), "{body}");
    assert!(body["hint"].as_str().unwrap().contains("retry"), "{body}");
    assert!(
        elapsed < Duration::from_millis(spec.ack_timeout_ms + 2_000),
        "503 must come within the configured bound ({} ms), took {elapsed:?}",
        spec.ack_timeout_ms
    );

    broker.restart();
    // Ingest works again once the broker is back; every 200 is recorded.
    let after = format!("{run}-after");
    eventually("ingest to work after the broker restart", Duration::from_secs(60), || {
        let request = send(after.clone());
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    acknowledged.push(after);
    tokio::task::spawn_blocking(move || kafka::expect_events(&bootstrap, &topic, &acknowledged, Duration::from_secs(30)))
        .await
        .unwrap();
}

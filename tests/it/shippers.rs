//! What shippers speak, with the real clients (installed by `tests/clients/setup.sh`): the
//! OpenTelemetry Python SDK's OTLP/HTTP exporter to `/v1/logs`, the official
//! `elasticsearch` Python client's bulk helper to `/_bulk`, and util-linux `logger` sending
//! syslog to the edge. Real core and edge processes, real Kafka; every test reads the
//! events back with an independent consumer and compares contents and counts. Bad input
//! gets its documented answer and publishes nothing.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, EdgeSpec, REPOSITORY, TOKEN, core_process, edge_process};
use weir_tests::{certs, gate, http, init_tracing, unique};

/// The python of the clients' venv, created by `tests/clients/setup.sh` if missing.
fn clients_python() -> String {
    let script = weir_tests::workspace_root().join("tests/clients/setup.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}; install bash and python3 (3.9+, with venv)", script.display()));
    assert!(
        output.status.success(),
        "setting up the clients' venv failed ({}); install python3 with the venv module and PyPI access, then run \
         `bash tests/clients/setup.sh`\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("the setup script prints a path");
    stdout.lines().last().expect("the setup script prints the venv's python").trim().to_owned()
}

/// Runs `tests/clients/<script> args…` with the clients' python; its last stdout line as
/// JSON. Panics with the command's output when it fails.
async fn run_client(script: &'static str, args: Vec<String>) -> Value {
    let python = clients_python();
    let path = weir_tests::workspace_root().join("tests/clients").join(script);
    let mut command = Command::new(&python);
    command.arg(&path).args(&args);
    // The clients bound their own requests (timeouts of 10 and 30 s, few retries).
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} printed no JSON line ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

/// Reads `topic` until every text in `expected` was seen; returns each event found (with
/// its batch's attributes) by raw text, and how often each raw text occurs.
async fn read_back(bootstrap: &str, topic: &str, expected: Vec<String>) -> (BTreeMap<String, (Value, Value)>, BTreeMap<String, usize>) {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        kafka::expect_events(&bootstrap, &topic, &expected, Duration::from_secs(60));
        let records = kafka::consume_all(&bootstrap, &topic, Duration::from_secs(30));
        let mut events = BTreeMap::new();
        for record in &records {
            assert_eq!(record.batch.repository, REPOSITORY);
            for event in &record.batch.events {
                let event_json = json!({"ts": event.timestamp_ms, "attrs": event.attributes});
                events.insert(event.raw.clone(), (event_json, Value::Object(record.batch.attributes.clone())));
            }
        }
        (events, kafka::raw_counts(&records))
    })
    .await
    .unwrap()
}

struct Stack {
    core: weir_tests::nodes::Node,
    edge: weir_tests::nodes::Node,
    topic: String,
    bootstrap: String,
    /// The edge's syslog (UDP, TCP) ports, when it has that input.
    syslog_ports: Option<(u16, u16)>,
    _dir: tempfile::TempDir,
}

/// A core process and an edge process forwarding to it, on a topic of their own.
async fn stack(name: &str, syslog: bool) -> Stack {
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique(&format!("weir-test-{name}")), &certs);
    let core = core_process(&core_spec, dir.path()).await;
    let mut edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    if syslog {
        edge_spec.syslog_ports = Some((weir_tests::free_port(), weir_tests::free_port()));
    }
    let edge = edge_process(&edge_spec, dir.path()).await;
    Stack { core, edge, topic: core_spec.topic.clone(), bootstrap, syslog_ports: edge_spec.syslog_ports, _dir: dir }
}

fn texts(run: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{run}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_otel_sdk_exports_logs_to_core_and_edge_with_and_without_gzip() {
    let _gate = gate::shared();
    let stack = stack("otlp", false).await;
    let n = 45;
    let mut expected = Vec::new();
    let mut trace_ids = BTreeMap::new();
    for (node, target) in [(&stack.core, "core"), (&stack.edge, "edge")] {
        for compression in ["none", "gzip"] {
            let run = unique(&format!("otlp-{target}-{compression}"));
            let url = node.url("/v1/logs");
            let answer = run_client("otlp_logs.py", vec![url, TOKEN.into(), run.clone(), n.to_string(), compression.into()]).await;
            assert!(answer["results"].as_array().is_some_and(|r| r.len() >= 3), "batches of 20: several exports: {answer}");
            trace_ids.insert(run.clone(), answer["trace_id"].as_str().expect("a trace id").to_owned());
            expected.extend(texts(&run, n));
        }
    }
    let (events, counts) = read_back(&stack.bootstrap, &stack.topic, expected.clone()).await;
    for text in &expected {
        assert_eq!(counts[text], 1, "{text} exactly once");
    }
    assert_eq!(counts.values().sum::<usize>(), expected.len(), "nothing else in the topic: {counts:?}");
    for (run, trace_id) in &trace_ids {
        let (event, batch) = &events[&format!("{run}-1")];
        assert_eq!(batch["resource.service.name"], "shipper-test", "{batch}");
        assert_eq!(&batch["resource.run"], run, "{batch}");
        assert_eq!(batch["scope.name"], "weir.shipper.test", "{batch}");
        let attrs = &event["attrs"];
        assert_eq!(attrs["severity_text"], "WARN", "{event}");
        assert_eq!(attrs["severity_number"], 13, "{event}");
        assert_eq!(attrs["attributes.seq"], 1, "{event}");
        assert_eq!(attrs["trace_id"].as_str().map(str::len), Some(32), "{event}");
        assert_eq!(attrs["span_id"].as_str().map(str::len), Some(16), "{event}");
        assert!(event["ts"].as_i64().is_some_and(|ts| ts > 1_700_000_000_000), "the record's time: {event}");
        let (even, _) = &events[&format!("{run}-0")];
        assert!(even["attrs"].get("trace_id").is_none(), "no span, no trace id: {even}");
        let (last, _) = &events[&format!("{run}-{}", n - 2)];
        assert_eq!(last["attrs"]["attributes.seq"], n - 2, "{last}");
        // The last odd record ran in the last span the client reported.
        assert!(
            events.iter().any(|(raw, (e, _))| raw.starts_with(run.as_str()) && e["attrs"]["trace_id"] == *trace_id),
            "the client's trace id {trace_id} is kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_elasticsearch_bulk_helper_sends_to_core_and_edge() {
    let _gate = gate::shared();
    let stack = stack("bulk", false).await;
    let n = 60;
    let mut expected = Vec::new();
    let mut runs = Vec::new();
    for (node, target, auth) in [(&stack.core, "core", "basic"), (&stack.edge, "edge", "apikey")] {
        let run = unique(&format!("bulk-{target}"));
        let answer = run_client("es_bulk.py", vec![node.url(""), TOKEN.into(), run.clone(), n.to_string(), auth.into()]).await;
        assert_eq!(answer["success"], n, "{answer}");
        assert_eq!(answer["errors"], json!([]), "{answer}");
        assert!(answer["version"].as_str().is_some_and(|v| v.starts_with("8.")), "{answer}");
        expected.extend((0..n).map(|i| json!({"@timestamp": format!("2024-05-01T10:00:{:02}.000Z", i % 60), "message": format!("{run}-{i}"), "seq": i}).to_string()));
        runs.push(run);
    }
    let (events, counts) = read_back(&stack.bootstrap, &stack.topic, expected.clone()).await;
    for text in &expected {
        assert_eq!(counts[text], 1, "{text} exactly once");
    }
    assert_eq!(counts.values().sum::<usize>(), expected.len(), "nothing else in the topic");
    for run in &runs {
        let doc = |i: usize| &events[&expected.iter().find(|t| t.contains(&format!("\"{run}-{i}\""))).unwrap().clone()];
        let (event, batch) = doc(2);
        assert_eq!(batch["_index"], format!("web-{run}"), "{batch}");
        assert_eq!(event["attrs"]["_id"], format!("{run}-id-2"), "{event}");
        assert_eq!(event["ts"], 1_714_557_602_000_i64, "@timestamp: {event}");
        let (event, batch) = doc(3);
        assert_eq!(batch["_index"], format!("app-{run}"), "{batch}");
        assert!(event["attrs"].get("_id").is_none(), "{event}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_sends_syslog_to_the_edge_over_tcp_and_udp() {
    let _gate = gate::shared();
    let stack = stack("logger", true).await;
    let (udp, tcp) = stack.syslog_ports.map(|(udp, tcp)| (udp.to_string(), tcp.to_string())).unwrap();
    // The setup script installs logger when it is missing.
    clients_python();
    let run = unique("logger");
    let mut expected = Vec::new();
    for (transport, port) in [("--tcp", &tcp), ("--udp", &udp)] {
        for format in ["--rfc5424", "--rfc3164"] {
            for i in 0..5 {
                let text = format!("{run}{transport}{format}-{i}");
                let status = Command::new("logger")
                    .args([transport, "--server", "127.0.0.1", "--port", port.as_str(), format, "--tag", "weirtest", "--priority", "user.warning"])
                    .arg(&text)
                    .status()
                    .expect("run logger");
                assert!(status.success(), "logger {transport} {format} failed: {status}");
                expected.push(text);
            }
        }
    }
    let (bootstrap, topic, wanted) = (stack.bootstrap.clone(), stack.topic.clone(), expected.clone());
    let records = tokio::task::spawn_blocking(move || {
        let records = kafka::consume_until(&bootstrap, &topic, Duration::from_secs(60), |records| {
            wanted.iter().all(|text| records.iter().flat_map(|r| &r.batch.events).any(|e| e.raw.ends_with(text.as_str())))
        });
        records
    })
    .await
    .unwrap();
    let raws: Vec<&str> = records.iter().flat_map(|r| &r.batch.events).map(|e| e.raw.as_str()).collect();
    for text in &expected {
        let found: Vec<&&str> = raws.iter().filter(|raw| raw.ends_with(text.as_str())).collect();
        assert_eq!(found.len(), 1, "{text} exactly once in {raws:#?}");
        // user.warning = facility 1, severity 4: PRI 12; the tag is kept.
        assert!(found[0].starts_with("<12>") && found[0].contains("weirtest"), "{}", found[0]);
    }
    assert_eq!(raws.len(), expected.len(), "nothing else: {raws:#?}");
    assert!(records.iter().all(|r| r.batch.parser.as_deref() == Some("syslog")));
}

/// Bad input to the core and to the edge: each gets its documented answer; only the
/// accepted events reach Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn bad_shipper_input_gets_its_documented_answer_and_publishes_nothing() {
    let _gate = gate::shared();
    let stack = stack("bad-shippers", false).await;
    let mut expected = Vec::new();
    for node in [&stack.core, &stack.edge] {
        expected.extend(send_bad_input(node).await);
    }
    let (_, counts) = read_back(&stack.bootstrap, &stack.topic, expected.clone()).await;
    let published: std::collections::BTreeSet<&String> = counts.keys().collect();
    assert_eq!(published, expected.iter().collect(), "only the accepted events");
    assert_eq!(counts.values().sum::<usize>(), expected.len(), "each once");
}

/// Sends the bad requests to `node` and checks each answer; returns the raw texts of the
/// events it accepted (the good bulk items and a final marker).
async fn send_bad_input(node: &weir_tests::nodes::Node) -> Vec<String> {
    let client = http();
    let run = unique("rejected");
    let otlp = node.url("/v1/logs");
    let bulk = node.url("/_bulk");
    let send = |url: &str, content_type: &str, auth: String, body: Vec<u8>| {
        client.post(url).header("authorization", auth).header("content-type", content_type).body(body).send()
    };
    let bearer = format!("Bearer {TOKEN}");

    // Malformed protobuf: 400 with a protobuf google.rpc.Status (code 3, INVALID_ARGUMENT).
    let response = send(&otlp, "application/x-protobuf", bearer.clone(), [b"\x0a\xff\xff\xff".as_slice(), run.as_bytes()].concat()).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let status = response.bytes().await.unwrap();
    assert_eq!(&status[..2], b"\x08\x03", "Status.code = 3 first: {status:?}");
    assert!(String::from_utf8_lossy(&status).contains("invalid OTLP protobuf"), "{status:?}");

    // OTLP-JSON with a wrong type: 400 with a JSON Status naming the place.
    let wrong_type = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": format!("{run}-good")}},
        {"body": {"stringValue": format!("{run}-bad")}, "severityNumber": "loud"}]}]}]});
    let response = send(&otlp, "application/json", bearer.clone(), wrong_type.to_string().into_bytes()).await.unwrap();
    assert_eq!(response.status(), 400);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["code"], 3, "{status}");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("invalid type") && m.contains("column")), "{status}");

    // A structured body nested past the depth limit (32): 400, the whole request refused.
    // (35 levels: far deeper JSON meets serde_json's recursion limit first, also a 400.)
    let mut deep = json!({"stringValue": format!("{run}-deep")});
    for _ in 0..35 {
        deep = json!({"arrayValue": {"values": [deep]}});
    }
    let nested = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": format!("{run}-sibling")}}, {"body": deep}]}]}]});
    let response = send(&otlp, "application/json", bearer.clone(), nested.to_string().into_bytes()).await.unwrap();
    assert_eq!(response.status(), 400);
    let status: Value = response.json().await.unwrap();
    assert!(status["message"].as_str().is_some_and(|m| m.contains("logRecords[1]: body: nested deeper than 32")), "{status}");

    // Another content type: 415.
    let response = send(&otlp, "text/plain", bearer.clone(), format!("{run}-text").into_bytes()).await.unwrap();
    assert_eq!(response.status(), 415);
    let status: Value = response.json().await.unwrap();
    assert!(status["message"].as_str().is_some_and(|m| m.contains("application/x-protobuf")), "{status}");

    // A wrong token: 403 (PERMISSION_DENIED) for OTLP, 403 with X-Elastic-Product for bulk;
    // no Authorization at all: 401.
    let good_otlp = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": format!("{run}-token")}}]}]}]});
    let response = send(&otlp, "application/json", "Bearer nope".into(), good_otlp.to_string().into_bytes()).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 7);
    let good_bulk = format!("{{\"index\":{{\"_index\":\"i\"}}}}\n{{\"message\":\"{run}-token\"}}\n");
    let response = send(&bulk, "application/x-ndjson", basic("elastic", "nope"), good_bulk.clone().into_bytes()).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "security_exception");
    let response = client.post(&bulk).body(good_bulk).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");

    // A bulk body with a broken line in the middle and an unknown action: answered per
    // item in order, the good items published, the bad ones not.
    let body = [
        format!("{{\"index\":{{\"_index\":\"web\"}}}}\n{{\"message\":\"{run}-ok-1\"}}\n"),
        format!("{{\"index\":{{\"_index\":\"web\"}}\n{{\"message\":\"{run}-after-broken-action\"}}\n"),
        format!("{{\"index\":{{\"_index\":\"web\"}}}}\n{{\"message\":\"{run}-broken-doc\"\n"),
        format!("{{\"explode\":{{\"_index\":\"web\"}}}}\n{{\"message\":\"{run}-unknown-action\"}}\n"),
        "{\"delete\":{\"_index\":\"web\",\"_id\":\"1\"}}\n".to_owned(),
        format!("{{\"create\":{{\"_index\":\"web\"}}}}\n{{\"message\":\"{run}-ok-2\"}}\n"),
    ]
    .concat();
    let response = send(&node.url("/web/_bulk"), "application/x-ndjson", bearer.clone(), body.into_bytes()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errors"], true, "{answer}");
    let items: Vec<(String, i64)> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (action, body) = item.as_object().unwrap().iter().next().unwrap();
            (action.clone(), body["status"].as_i64().unwrap())
        })
        .collect();
    let expected_items = [("index", 201), ("index", 400), ("index", 400), ("index", 400), ("delete", 400), ("create", 201)];
    assert_eq!(items, expected_items.map(|(a, s)| (a.to_owned(), s)), "{answer}");
    assert!(answer["items"][3]["index"]["error"]["reason"].as_str().is_some_and(|r| r.contains("found [explode]")), "{answer}");

    // GET / is the version document the clients check.
    let response = client.get(node.url("/")).send().await.unwrap();
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
    assert!(response.json::<Value>().await.unwrap()["version"]["number"].as_str().is_some_and(|v| v.starts_with("8.")));

    // A final marker.
    let marker = format!("{run}-marker");
    let marker_body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": marker}}]}]}]});
    let response = send(&otlp, "application/json", bearer, marker_body.to_string().into_bytes()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{}", "an empty ExportLogsServiceResponse");
    vec![format!("{{\"message\":\"{run}-ok-1\"}}"), format!("{{\"message\":\"{run}-ok-2\"}}"), marker]
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Text that zstd cannot shrink much, so that a few requests fill a small spool.
fn incompressible(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len / 16)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            format!("{:016x}", state ^ (state >> 29))
        })
        .collect()
}

/// A full spool answers both new protocols with 429 and Retry-After in their own shapes;
/// the OTel SDK retries on its own, and once a core drains the spool its records and
/// every acknowledged one are in Kafka, the refused ones not.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_edge_spool_pushes_back_and_the_otel_sdk_retries_into_kafka() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let core_spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-shippers-full"), &certs);
    let mut edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
    edge_spec.spool_max_bytes = 256 * 1024;
    edge_spec.spool_segment_bytes = 64 * 1024;
    let edge = edge_process(&edge_spec, dir.path()).await;
    let client = http();
    let run = unique("full");
    let post_otlp = |text: String| {
        let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": text}}]}]}]});
        client.post(edge.url("/v1/logs")).header("authorization", format!("Bearer {TOKEN}")).header("content-type", "application/json").body(body.to_string()).send()
    };

    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let text = format!("{run}-fill-{i}-{}", incompressible(i, 8_000));
        let response = post_otlp(text.clone()).await.unwrap();
        match response.status().as_u16() {
            200 => acknowledged.push(text),
            429 => {
                refused = Some((text, response));
                break;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    let (refused_text, response) = refused.expect("a 256 KiB spool fills up");
    let retry_after = response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["code"], 8, "RESOURCE_EXHAUSTED: {status}");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("spool is full")), "{status}");
    // As large as the refused record: the spool refuses what does not fit.
    let bulk = format!("{{\"index\":{{\"_index\":\"i\"}}}}\n{{\"message\":\"{run}-bulk-refused-{}\"}}\n", incompressible(999, 8_000));
    let response = client.post(edge.url("/_bulk")).header("authorization", format!("ApiKey {TOKEN}")).body(bulk).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "es_rejected_execution_exception");

    // Topped up with small records until even those are refused, so the SDK's small
    // batch is refused too.
    for i in 0..10_000 {
        let text = format!("{run}-top-{i}-{}", incompressible(10_000 + i, 160));
        let response = post_otlp(text.clone()).await.unwrap();
        match response.status().as_u16() {
            200 => acknowledged.push(text),
            429 => break,
            other => panic!("unexpected {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    let refused_before = otlp_429s(&edge).await;

    // The SDK exports into the full spool and keeps retrying (429 is retryable for it);
    // a core comes up meanwhile and the spool drains.
    let sdk_run = unique("full-sdk");
    let exporter = tokio::spawn(run_client(
        "otlp_logs.py",
        vec![edge.url("/v1/logs"), TOKEN.into(), sdk_run.clone(), "10".into(), "gzip".into(), "60".into()],
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _core = core_process(&core_spec, dir.path()).await;
    let answer = exporter.await.unwrap();
    assert!(answer["results"].as_array().is_some_and(|r| !r.is_empty()), "{answer}");
    assert!(otlp_429s(&edge).await > refused_before, "the SDK was pushed back at least once before it got through");

    let mut expected = acknowledged.clone();
    expected.extend(texts(&sdk_run, 10));
    let (_, counts) = read_back(&bootstrap, &core_spec.topic, expected.clone()).await;
    for text in &expected {
        assert_eq!(counts[text], 1, "{} exactly once", &text[..text.len().min(60)]);
    }
    assert!(!counts.contains_key(&refused_text), "the refused record is not in Kafka");
    assert!(counts.keys().all(|raw| !raw.contains("bulk-refused")), "the refused bulk item is not in Kafka");
    assert_eq!(counts.values().sum::<usize>(), expected.len());
}

/// How many `/v1/logs` requests the node answered 429.
async fn otlp_429s(node: &weir_tests::nodes::Node) -> f64 {
    let metrics = weir_tests::scrape(&node.url("")).await;
    weir_tests::metric(&metrics, "weir_http_requests_total", &[("endpoint", "otlp-logs"), ("status", "429")]).unwrap_or(0.0)
}

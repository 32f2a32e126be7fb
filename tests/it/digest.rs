//! The digest against real Kafka and real core processes: every acknowledged event lands
//! once in a segment registered in Global, parsed; the segments of each partition tile its
//! offsets (checked against Kafka's own high watermarks); a core killed with SIGKILL
//! loses its partitions to the live one; a core paused with SIGSTOP past its reassignment
//! registers nothing afterwards; a batch Kafka holds twice is stored once; a foreign record
//! is kept raw; a hostile plugin on one repository leaves the others parsed; a damaged
//! segment is named by `segments verify`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use weir_core::config::CoreConfig;
use weir_proto::{Event, EventBatch};
use weir_segment::SegmentRow;
use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, EdgeSpec, Node, READ_TOKEN, REPOSITORY, TOKEN, core_process};
use weir_tests::stored::{global_state, stored};
use weir_tests::{certs, cli, eventually, gate, http, init_tracing, metric_sum, unique, workspace_root};

const WAIT: Duration = Duration::from_secs(60);

fn wasm(name: &str) -> PathBuf {
    let path = workspace_root().join(format!("plugins/target/wasm/{name}.wasm"));
    assert!(path.is_file(), "{} is not built: run `bash plugins/build.sh`", path.display());
    path
}

/// `[parsers]`: json for the test repository (and `good`), chaos for `bad`.
fn parsers_toml(data_dir: &Path) -> String {
    format!(
        r#"
[parsers]
cache_dir = "{cache}"
batch_deadline_ms = 300
[parsers.by_repository]
"{REPOSITORY}" = "json"
good = "json"
bad = "chaos"
[parsers.plugins.json]
path = "{json}"
[parsers.plugins.chaos]
path = "{chaos}"
"#,
        cache = data_dir.join("plugin-cache").display(),
        json = wasm("json").display(),
        chaos = wasm("chaos").display(),
    )
}

/// `[parsers]` with the json plugin configured but no route for the test repository.
fn unrouted_parsers_toml(data_dir: &Path) -> String {
    parsers_toml(data_dir).replace(&format!("\"{REPOSITORY}\" = \"json\"\n"), "")
}

/// Every event of the test repository through the read API (NDJSON), as LogScale renders them.
async fn query(client: &reqwest::Client, node: &Node, query_string: &str) -> Result<Vec<serde_json::Value>, (u16, String)> {
    let response = client
        .post(node.url(&format!("/api/v1/repositories/{REPOSITORY}/query")))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .header("accept", "application/x-ndjson")
        .body(json!({"queryString": query_string, "start": 0, "end": "now", "isLive": false}).to_string())
        .send()
        .await
        .expect("query request");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != 200 {
        return Err((status, body));
    }
    Ok(body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect())
}

async fn post(client: &reqwest::Client, node: &Node, path: &str, auth: &str, body: String) -> u16 {
    let response = client.post(node.url(path)).header("authorization", auth).body(body).send().await.expect("request");
    response.status().as_u16()
}

fn json_line(run: &str, i: usize) -> String {
    json!({"msg": format!("{run}-{i}"), "n": i}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_lands_once_parsed_and_a_damaged_segment_is_named() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-digest"), &certs);
    spec.extra_toml = parsers_toml(&spec.data_dir);
    let core = core_process(&spec, dir.path()).await;
    let edge_spec = EdgeSpec::new(dir.path(), vec![spec.quic_addr()], &certs);
    let edge = Node::spawn("weir-edge", &edge_spec.edge_id, &edge_spec.toml(), edge_spec.http_port, dir.path()).await;
    let client = http();
    let run = unique("digest");
    let bearer = format!("Bearer {TOKEN}");
    let splunk = format!("Splunk {TOKEN}");
    let mut expected = Vec::new();

    // humio-structured: the client's timestamp and attributes, JSON raw text to parse.
    let structured: Vec<_> = (0..5)
        .map(|i| {
            expected.push(json_line(&run, i));
            json!({"timestamp": 1_700_000_000_000i64 + i as i64, "attributes": {"source": "structured"}, "rawstring": json_line(&run, i)})
        })
        .collect();
    let body = json!([{"tags": {"host": "h1"}, "events": structured}]).to_string();
    assert_eq!(post(&client, &core, "/api/v1/ingest/humio-structured", &bearer, body).await, 200);
    // humio-unstructured, with one line the JSON parser cannot parse.
    let broken = format!("{run} this is not json");
    let messages: Vec<String> = (5..10).map(|i| json_line(&run, i)).chain([broken.clone()]).collect();
    expected.extend(messages.iter().cloned());
    let body = json!([{"messages": messages}]).to_string();
    assert_eq!(post(&client, &core, "/api/v1/ingest/humio-unstructured", &bearer, body).await, 200);
    // raw, and HEC event.
    expected.push(json_line(&run, 10));
    assert_eq!(post(&client, &core, "/api/v1/ingest/raw", &bearer, json_line(&run, 10)).await, 200);
    expected.push(json_line(&run, 11));
    let body = json!({"event": json_line(&run, 11)}).to_string();
    assert_eq!(post(&client, &core, "/services/collector/event", &splunk, body).await, 200);
    // Through the edge, answered after the core's Kafka-backed ack.
    let through_edge: Vec<String> = (12..20).map(|i| json_line(&run, i)).collect();
    expected.extend(through_edge.iter().cloned());
    let response = client
        .post(edge.url("/services/collector/raw"))
        .header("authorization", &splunk)
        .header("x-weir-ack", "core")
        .body(through_edge.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{}", response.text().await.unwrap_or_default());

    let config = spec.config(dir.path());
    let stored = stored(&config, std::slice::from_ref(&spec.data_dir)).await;
    let counts = stored.raws();
    for raw in &expected {
        assert_eq!(counts.get(raw), Some(&1), "{raw} must be stored exactly once");
    }
    assert_eq!(stored.rows.len(), expected.len(), "nothing else was stored");
    let first = stored.row(&json_line(&run, 0));
    assert_eq!(first.timestamp_ms, 1_700_000_000_000, "the client's timestamp");
    assert_eq!(first.fields["n"], 0, "parsed by the json plugin: {first:?}");
    assert_eq!(first.fields["source"], "structured");
    assert_eq!(first.tags["host"], "h1");
    assert_eq!(first.parser.as_deref(), Some("json"));
    assert!(first.error.is_none());
    assert_eq!(stored.row(&json_line(&run, 15)).fields["msg"], format!("{run}-15"), "edge events parsed too");
    let failed = stored.row(&broken);
    assert!(failed.error.is_some(), "a failed parse keeps the raw text with @error: {failed:?}");
    assert_eq!(failed.repository, REPOSITORY);

    // The read API gives back every acknowledged event once, parsed, with @error kept.
    let events = query(&client, &core, "").await.expect("query");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        *seen.entry(event["@rawstring"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    for raw in &expected {
        assert_eq!(seen.get(raw), Some(&1), "{raw} is answered exactly once by the read API");
    }
    let one = events.iter().find(|e| e["@rawstring"] == json_line(&run, 3)).unwrap();
    assert_eq!((one["n"].as_str(), one["#host"].as_str(), one["#repo"].as_str()), (Some("3"), Some("h1"), Some(REPOSITORY)), "{one}");
    let failed = events.iter().find(|e| e["@rawstring"] == broken).unwrap();
    assert_eq!(failed["@error"], "true", "{failed}");
    let counted = query(&client, &core, &format!("msg=\"{run}-1*\" | count()")).await.expect("count query");
    assert_eq!(counted[0]["_count"], "11", "msg {run}-1 and {run}-10..=19 but not the failed line: {counted:?}");

    // The operator tools: ls, cat, verify; then a damaged file is named.
    let config_path = dir.path().join("core-1.toml");
    let ls = cli::weir_core(&["segments", "ls", "--config"], &config_path).await;
    assert!(ls.0, "{}", ls.2);
    let first_segment = &stored.rows.iter().find(|(_, r)| r.raw == json_line(&run, 0)).unwrap().0;
    assert!(ls.1.contains(first_segment.as_str()), "ls lists {first_segment}:\n{}", ls.1);
    let cat = cli::weir_core(&["segments", "cat", first_segment, "--config"], &config_path).await;
    assert!(cat.0, "{}", cat.2);
    let line = cat.1.lines().find(|l| l.contains(&format!("{run}-0\""))).unwrap_or_else(|| panic!("cat prints the event:\n{}", cat.1));
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["#repo"], REPOSITORY);
    assert_eq!(event["#host"], "h1");
    assert_eq!(event["n"], 0);
    let verify = cli::weir_core(&["segments", "verify", "--config"], &config_path).await;
    assert!(verify.0 && verify.1.contains(&format!("ok   {first_segment}")), "{}\n{}", verify.1, verify.2);
    let path = spec.data_dir.join("segments").join(weir_segment::segment_file_name(first_segment));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // A query that needs the damaged segment answers an error naming it, never a short answer.
    let (status, body) = query(&client, &core, "").await.expect_err("a damaged segment fails the query");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains(first_segment.as_str()), "the error names the segment: {body}");
    drop(edge);
    drop(core);
    let verify = cli::weir_core(&["segments", "verify", "--config"], &config_path).await;
    assert!(!verify.0, "verify fails on a damaged file:\n{}", verify.1);
    assert!(verify.1.contains(&format!("BAD  {first_segment}")), "verify names the damaged segment:\n{}", verify.1);
}

/// OTLP and Elasticsearch `_bulk` events go through the same digest: each stored once,
/// with the documented fields (README "Shippers"); the read API finds them by field, and
/// DuckDB reads them from the digest's own segment files.
#[tokio::test(flavor = "multi_thread")]
async fn otlp_and_bulk_events_are_stored_with_their_mapped_fields() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-digest-shippers"), &certs);
    let core = core_process(&spec, dir.path()).await;
    let client = http();
    let run = unique("shippers");
    let otlp = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "scopeLogs": [{"scope": {"name": "app.log"}, "logRecords": (0..3).map(|i| json!({
            "timeUnixNano": format!("{}", 1_700_000_000_000_000_000u64 + i * 1_000_000),
            "severityText": "WARN",
            "body": {"stringValue": format!("{run}-otlp-{i}")},
            "attributes": [{"key": "user.id", "value": {"intValue": i.to_string()}}],
            "traceId": "5b8efff798038103d269b633813fc60c"
        })).collect::<Vec<_>>()}]
    }]});
    let response = client
        .post(core.url("/v1/logs"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(otlp.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let bulk: String = (0..2).map(|i| format!("{{\"index\":{{\"_index\":\"web\",\"_id\":\"d{i}\"}}}}\n{{\"message\":\"{run}-bulk-{i}\",\"code\":{i}}}\n")).collect();
    let response = client.post(core.url("/_bulk")).basic_auth("elastic", Some(TOKEN)).header("content-type", "application/x-ndjson").body(bulk).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["errors"], false, "{answer}");

    let stored = stored(&spec.config(dir.path()), std::slice::from_ref(&spec.data_dir)).await;
    let raws = stored.raws();
    for i in 0..3 {
        let raw = format!("{run}-otlp-{i}");
        assert_eq!(raws.get(&raw), Some(&1), "{raw} stored once");
        let row = stored.row(&raw);
        assert_eq!(row.timestamp_ms, 1_700_000_000_000 + i as i64, "time_unix_nano");
        assert_eq!(row.fields["resource.service.name"], "checkout");
        assert_eq!(row.fields["scope.name"], "app.log");
        assert_eq!(row.fields["severity_text"], "WARN");
        assert_eq!(row.fields["attributes.user.id"], i);
        assert_eq!(row.fields["trace_id"], "5b8efff798038103d269b633813fc60c");
    }
    let bulk_rows: Vec<&SegmentRow> = stored.rows.iter().map(|(_, r)| r).filter(|r| r.raw.contains(&format!("{run}-bulk-"))).collect();
    assert_eq!(bulk_rows.len(), 2, "each bulk document once");
    for row in bulk_rows {
        assert_eq!(row.fields["_index"], "web", "{:?}", row.fields);
        assert!(row.fields["_id"].as_str().is_some_and(|id| id.starts_with('d')), "{:?}", row.fields);
    }
    // The read API filters on a mapped field.
    let events = query(&client, &core, "severity_text=WARN resource.service.name=checkout").await.expect("query");
    let found: BTreeSet<String> = events.iter().map(|e| e["@rawstring"].as_str().unwrap().to_owned()).collect();
    assert_eq!(found, (0..3).map(|i| format!("{run}-otlp-{i}")).collect::<BTreeSet<_>>());

    // DuckDB (no Weir code) reads the digest's own files: the same events, the same fields.
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/segment/tests/duckdb-setup.sh");
    let output = std::process::Command::new("bash").arg(&setup).output().expect("run duckdb-setup.sh");
    assert!(output.status.success(), "DuckDB venv: {}", String::from_utf8_lossy(&output.stderr));
    let python = String::from_utf8(output.stdout).unwrap().lines().last().unwrap().trim().to_owned();
    let sql = format!(
        "select \"@rawstring\", json_extract_string(fields, '$.\"resource.service.name\"') from read_parquet('{}/segments/*.parquet') \
         where \"@rawstring\" like '{run}-otlp-%' order by 1",
        spec.data_dir.display()
    );
    let script = format!("import duckdb, json\nprint(json.dumps(duckdb.sql({sql:?}).fetchall()))");
    let output = std::process::Command::new(&python).arg("-c").arg(&script).output().expect("run DuckDB");
    assert!(output.status.success(), "DuckDB: {}", String::from_utf8_lossy(&output.stderr));
    let read: Vec<(String, String)> = serde_json::from_slice(&output.stdout).expect("DuckDB's rows as JSON");
    let expected: Vec<(String, String)> = (0..3).map(|i| (format!("{run}-otlp-{i}"), "checkout".to_owned())).collect();
    assert_eq!(read, expected);
}

/// `[parsers.by_token]` names the parser of a core's ingest token that has none of its
/// own: the events it sends are parsed by it although no repository route does.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_routed_by_parsers_by_token_gets_its_parser() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-by-token"), &certs);
    spec.extra_toml = unrouted_parsers_toml(&spec.data_dir)
        + &format!("[parsers.by_token]\n\"{TOKEN}\" = \"json\"\n");
    let core = core_process(&spec, dir.path()).await;
    let client = http();
    let run = unique("by-token");
    let lines: Vec<String> = (0..5).map(|i| json_line(&run, i)).collect();
    let body = json!([{"messages": lines}]).to_string();
    assert_eq!(post(&client, &core, "/api/v1/ingest/humio-unstructured", &format!("Bearer {TOKEN}"), body).await, 200);
    let stored = stored(&spec.config(dir.path()), std::slice::from_ref(&spec.data_dir)).await;
    for line in &lines {
        let row = stored.row(line);
        assert_eq!(row.parser.as_deref(), Some("json"), "{row:?}");
        assert!(row.fields.contains_key("n"), "parsed: {row:?}");
    }
}

/// A core stopped with SIGTERM registers the segment it was building: its events are
/// stored although the flush interval (2 minutes here) never came, and the next owner
/// resumes after them.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_registers_the_segment_being_built() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-digest-stop"), &certs);
    spec.digest_flush_ms = 120_000;
    let mut core = core_process(&spec, dir.path()).await;
    let client = http();
    let run = unique("stop");
    let url = format!("http://{}", core.http);
    let acknowledged = load(&client, &run, 5, 20, |_| url.clone()).await;
    assert_eq!(acknowledged.len(), 100);
    // The digest has read every event (its counter), but no flush is due for minutes.
    eventually("the digest read every event", WAIT, || {
        let client = client.clone();
        let url = core.url("/metrics");
        async move {
            let text = client.get(url).send().await.ok()?.text().await.ok()?;
            (metric_sum(&text, "weir_digest_events_total") >= 100.0).then_some(())
        }
    })
    .await;
    let config = spec.config(dir.path());
    let before = global_state(&config).await.expect("Global");
    assert!((0..2).all(|p| before.segments(p).is_empty()), "no segment before the stop");
    let status = tokio::task::block_in_place(|| core.terminate(Duration::from_secs(30)));
    assert!(status.success(), "{status}");
    assert!(core.log_tail().contains("digest stopped after registering its last segment"), "{}", core.log_tail());
    let stored = stored(&config, std::slice::from_ref(&spec.data_dir)).await;
    let raws = stored.raws();
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} stored once");
    }
}

/// Two cores sharing one Global topic and one ingest topic.
fn two_specs(bootstrap: &str, dir: &Path) -> (CoreSpec, CoreSpec) {
    let certs = certs(dir);
    let topic = unique("weir-test-digest-ha");
    let mut one = CoreSpec::new("core-1", bootstrap, &topic, &certs);
    let mut two = CoreSpec::new("core-2", bootstrap, &topic, &certs);
    two.global_topic = one.global_topic.clone();
    one.digest_flush_ms = 1_000;
    two.digest_flush_ms = 1_000;
    (one, two)
}

/// Waits until the two cores of a spec pair own one partition each.
async fn both_cores_own_a_partition(config: &CoreConfig) {
    eventually("the partitions spread over both cores", WAIT, || {
        let config = config.clone();
        async move {
            let state = global_state(&config).await.ok()?;
            let owners: BTreeSet<_> = (0..2).filter_map(|p| state.partition(p).owner).collect();
            (owners.len() == 2).then_some(())
        }
    })
    .await;
}

/// Sends `requests` humio-structured requests of `per_request` events to `target(i)`, with a
/// tag that varies per request so the records spread over the partitions; returns the
/// events answered 200.
async fn load(client: &reqwest::Client, run: &str, requests: usize, per_request: usize, mut target: impl FnMut(usize) -> String) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for i in 0..requests {
        let lines: Vec<String> = (0..per_request).map(|j| format!("{run}-{i}-{j}")).collect();
        let events: Vec<_> = lines.iter().map(|l| json!({"rawstring": l})).collect();
        let sent = client
            .post(format!("{}/api/v1/ingest/humio-structured", target(i)))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(json!([{"tags": {"source": format!("{run}-{i}")}, "events": events}]).to_string())
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            acknowledged.extend(lines);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_killed_while_digesting_loses_its_partitions_and_every_event_is_stored_once() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = two_specs(&bootstrap, dir.path());
    let mut core_1 = core_process(&one, dir.path()).await;
    let core_2 = core_process(&two, dir.path()).await;
    let config = two.config(dir.path());
    // Both own a partition before the kill.
    both_cores_own_a_partition(&config).await;
    let client = http();
    let run = unique("kill");
    let urls = [format!("http://{}", core_1.http), format!("http://{}", core_2.http)];
    let mut acknowledged = load(&client, &format!("{run}-before"), 20, 50, |i| urls[i % 2].clone()).await;
    core_1.kill9();
    acknowledged.extend(load(&client, &format!("{run}-after"), 10, 50, |_| urls[1].clone()).await);
    eventually("core-2 took core-1's partition", WAIT, || {
        let config = config.clone();
        async move {
            let state = global_state(&config).await.ok()?;
            (0..2).all(|p| state.partition(p).owner.as_deref() == Some("core-2")).then_some(())
        }
    })
    .await;
    acknowledged.extend(load(&client, &format!("{run}-moved"), 10, 50, |_| urls[1].clone()).await);

    let stored = stored(&config, &[one.data_dir.clone(), two.data_dir.clone()]).await;
    let counts = stored.raws();
    let unique_acked: BTreeSet<&String> = acknowledged.iter().collect();
    for raw in &unique_acked {
        assert!(counts.get(*raw).is_some_and(|n| *n >= 1), "acknowledged {raw} is not stored");
    }
    // Every record in Kafka, read by an independent consumer, is stored exactly as often
    // as Kafka holds it (HTTP requests to a core carry no batch id: no dedup applies).
    let (b, t) = (bootstrap.clone(), one.topic.clone());
    let records = tokio::task::spawn_blocking(move || kafka::consume_all(&b, &t, WAIT)).await.unwrap();
    let mut in_kafka: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        for event in &record.batch.events {
            *in_kafka.entry(event.raw.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(in_kafka, counts, "the segments hold exactly the events of the Kafka records");
    for p in 0..2 {
        assert_eq!(stored.state.partition(p).owner.as_deref(), Some("core-2"), "partition {p} moved to the live core");
    }
    drop(core_2);
}

/// One busy source (one token, no tags) is spread over the partitions (`kafka.source_shards`),
/// so every core digests a share of it, each event stored once.
#[tokio::test(flavor = "multi_thread")]
async fn one_busy_source_is_digested_by_every_core() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = two_specs(&bootstrap, dir.path());
    let core_1 = core_process(&one, dir.path()).await;
    let core_2 = core_process(&two, dir.path()).await;
    let config = two.config(dir.path());
    both_cores_own_a_partition(&config).await;
    let client = http();
    let run = unique("hot");
    let mut acknowledged = BTreeSet::new();
    for i in 0..16 {
        let lines: Vec<String> = (0..50).map(|j| format!("{run}-{i}-{j}")).collect();
        let events: Vec<_> = lines.iter().map(|l| json!({"rawstring": l})).collect();
        let status = post(&client, &core_1, "/api/v1/ingest/humio-structured", &format!("Bearer {TOKEN}"), json!([{"events": events}]).to_string()).await;
        assert_eq!(status, 200, "request {i}");
        acknowledged.extend(lines);
    }
    let stored = stored(&config, &[one.data_dir.clone(), two.data_dir.clone()]).await;
    let partition_of: BTreeMap<String, u32> =
        stored.state.partitions().into_iter().flat_map(|p| stored.state.segments(p).into_iter().map(move |s| (s.info.segment_id.clone(), p))).collect();
    let mut per_partition: BTreeMap<u32, usize> = BTreeMap::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (segment_id, row) in stored.rows.iter().filter(|(_, r)| r.raw.starts_with(&format!("{run}-"))) {
        *per_partition.entry(partition_of[segment_id]).or_default() += 1;
        *counts.entry(&row.raw).or_default() += 1;
    }
    assert_eq!(counts.len(), acknowledged.len(), "every acknowledged event is stored");
    assert!(counts.values().all(|n| *n == 1), "each event stored once");
    assert_eq!(per_partition.len(), 2, "the source spreads over both partitions: {per_partition:?}");
    let owners: BTreeSet<_> = (0..2).filter_map(|p| stored.state.partition(p).owner.clone()).collect();
    assert_eq!(owners.len(), 2, "and so over both cores");
    drop((core_1, core_2));
}

/// An ingest-only core (`digest.enabled = false`) takes events and answers queries; the
/// digesting core owns every partition, and the ingest-only core reads its segments over
/// QUIC. Turned back on, it takes its share.
#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_only_core_claims_no_partition_and_reads_what_the_digesting_core_stored() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (one, mut two) = two_specs(&bootstrap, dir.path());
    two.digest = false;
    let _core_1 = core_process(&one, dir.path()).await;
    let mut core_2 = core_process(&two, dir.path()).await;
    let config = two.config(dir.path());
    let client = http();
    let run = unique("ingest-only");
    let url = format!("http://{}", core_2.http);
    let acknowledged = load(&client, &run, 10, 20, |_| url.clone()).await;
    assert_eq!(acknowledged.len(), 200, "the ingest-only core acknowledges ingest");
    let stored = stored(&config, &[one.data_dir.clone(), two.data_dir.clone()]).await;
    for p in 0..2 {
        assert_eq!(stored.state.partition(p).owner.as_deref(), Some("core-1"), "partition {p} went to the digesting core");
        assert_eq!(stored.state.partition(p).epoch, 1, "partition {p} was claimed once");
    }
    let nodes = stored.state.nodes();
    assert!(nodes["core-1"].digest && !nodes["core-2"].digest, "heartbeats announce the role: {nodes:?}");
    assert_eq!(std::fs::read_dir(two.data_dir.join("segments")).unwrap().count(), 0, "the ingest-only core wrote no segment");
    assert_eq!(stored.raws().len(), 200);
    let log = std::fs::read_to_string(dir.path().join("core-2.log")).unwrap_or_default();
    assert!(!log.contains("partition claimed"), "the ingest-only core claimed a partition:\n{log}");

    // Queries on the ingest-only core see every event, fetched from core-1.
    let node_2 = &core_2;
    let rows = eventually("the ingest-only core answers with every event", WAIT, || {
        let client = client.clone();
        async move {
            let rows = query(&client, node_2, "").await.ok()?;
            (rows.len() == 200).then_some(rows)
        }
    })
    .await;
    let returned: BTreeSet<String> = rows.iter().map(|r| r["@rawstring"].as_str().unwrap().to_owned()).collect();
    assert_eq!(returned, acknowledged.iter().cloned().collect::<BTreeSet<_>>());

    // Restarted with the digest on, it takes a partition.
    drop(core_2);
    two.digest = true;
    core_2 = core_process(&two, dir.path()).await;
    eventually("core-2 digests after the restart", WAIT, || {
        let config = config.clone();
        async move {
            let state = global_state(&config).await.ok()?;
            (0..2).any(|p| state.partition(p).owner.as_deref() == Some("core-2")).then_some(())
        }
    })
    .await;
    drop(core_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_former_owner_registers_nothing_after_its_partitions_moved() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut one, mut two) = two_specs(&bootstrap, dir.path());
    // Segments stay open a while, so core-1 is mid-segment when it is paused.
    one.digest_flush_ms = 3_000;
    two.digest_flush_ms = 3_000;
    let core_1 = core_process(&one, dir.path()).await;
    let core_2 = core_process(&two, dir.path()).await;
    let config = two.config(dir.path());
    let client = http();
    let run = unique("pause");
    let urls = [format!("http://{}", core_1.http), format!("http://{}", core_2.http)];
    // Enough that both partitions get records while core-1 owns one of them.
    let mut acknowledged = load(&client, &run, 30, 20, |i| urls[i % 2].clone()).await;
    let owned_by_1: Vec<u32> = {
        let config = config.clone();
        let state = global_state(&config).await.expect("Global readable");
        (0..2).filter(|p| state.partition(*p).owner.as_deref() == Some("core-1")).collect()
    };
    assert!(!owned_by_1.is_empty(), "core-1 owns a partition before the pause");
    signal(core_1.pid(), "STOP");
    // Past node_timeout_ms, core-2 claims core-1's partitions; load goes on meanwhile.
    let deadline = std::time::Instant::now() + WAIT;
    let claimed = loop {
        acknowledged.extend(load(&client, &format!("{run}-paused-{}", acknowledged.len()), 5, 20, |_| urls[1].clone()).await);
        let config = config.clone();
        let state = global_state(&config).await.expect("Global readable");
        let claimed: Vec<_> = owned_by_1.iter().map(|p| (*p, state.partition(*p))).collect();
        if claimed.iter().all(|(_, s)| s.owner.as_deref() == Some("core-2")) {
            break claimed;
        }
        assert!(std::time::Instant::now() < deadline, "core-2 did not claim core-1's partitions: {claimed:?}");
    };
    signal(core_1.pid(), "CONT");
    // Alive again, core-1 is given a partition back under a new epoch.
    eventually("core-1 owns a partition again", WAIT, || {
        let config = config.clone();
        async move {
            let state = global_state(&config).await.ok()?;
            (0..2).any(|p| state.partition(p).owner.as_deref() == Some("core-1")).then_some(())
        }
    })
    .await;
    acknowledged.extend(load(&client, &format!("{run}-resumed"), 20, 20, |i| urls[i % 2].clone()).await);

    let stored = stored(&config, &[one.data_dir.clone(), two.data_dir.clone()]).await;
    let counts = stored.raws();
    for raw in &acknowledged {
        assert_eq!(counts.get(raw), Some(&1), "{raw} stored exactly once");
    }
    // After the claim, no segment under an older epoch: the resumed core-1 was refused.
    for (p, claim) in &claimed {
        let epochs: Vec<(u64, u64)> = stored
            .state
            .segments(*p)
            .iter()
            .map(|s| (s.info.offset_start, epoch_of(&s.info.segment_id)))
            .collect();
        let first_new = epochs.iter().find(|(_, e)| *e >= claim.epoch).map(|(o, _)| *o).unwrap_or(u64::MAX);
        for (offset, epoch) in &epochs {
            assert!(*epoch >= claim.epoch || *offset < first_new, "partition {p}: a segment of epoch {epoch} at {offset} after the claim of epoch {}", claim.epoch);
        }
    }
    // Any core answers for the whole cluster: core-2 fetches what only core-1 has.
    let events = query(&client, &core_2, "").await.expect("query core-2");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        *seen.entry(event["@rawstring"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    for raw in &acknowledged {
        assert_eq!(seen.get(raw), Some(&1), "{raw} answered once by core-2");
    }
    let core_1_files: BTreeSet<String> = stored.rows.iter().map(|(id, _)| id.clone()).filter(|id| one.data_dir.join("segments").join(weir_segment::segment_file_name(id)).is_file()).collect();
    assert!(!core_1_files.is_empty(), "core-1 wrote segments after it was given a partition back");
    for id in &core_1_files {
        assert!(two.data_dir.join("segments-fetched").join(weir_segment::segment_file_name(id)).is_file(), "core-2 fetched {id} from core-1");
    }
    // core-1 noticed, and left no unregistered file behind.
    let log = core_1.log_tail();
    assert!(log.contains("superseded") || log.contains("claimed by another core"), "core-1 learned it lost its partitions:\n{log}");
    eventually("core-1's refused segment files are deleted", Duration::from_secs(15), || {
        let leftover: Vec<String> = std::fs::read_dir(one.data_dir.join("segments"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().trim_end_matches(".parquet").to_owned())
            .filter(|id| stored.state.segment(id).is_none())
            .collect();
        async move { leftover.is_empty().then_some(()) }
    })
    .await;
    drop(core_2);
}

fn epoch_of(segment_id: &str) -> u64 {
    segment_id.split('-').find_map(|part| part.strip_prefix('e').and_then(|e| e.parse().ok())).expect("segment ids carry their epoch")
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

async fn produce(bootstrap: &str, topic: &str, records: Vec<(Vec<u8>, Option<(String, u32, u32)>)>) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("acks", "all").create().unwrap();
    for (payload, batch) in records {
        let mut record = FutureRecord::<str, [u8]>::to(topic).partition(0).payload(&payload);
        if let Some((id, part, parts)) = &batch {
            let (part, parts) = (part.to_string(), parts.to_string());
            record = record.headers(
                OwnedHeaders::new()
                    .insert(Header { key: "weir-batch-id", value: Some(id.as_str()) })
                    .insert(Header { key: "weir-batch-part", value: Some(part.as_str()) })
                    .insert(Header { key: "weir-batch-parts", value: Some(parts.as_str()) }),
            );
        }
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
    }
}

fn batch(repository: &str, raws: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&EventBatch {
        repository: repository.into(),
        tags: BTreeMap::new(),
        parser: None,
        ingest_ts_ms: 1_000,
        attributes: serde_json::Map::new(),
        events: raws.iter().map(|r| Event::raw(*r)).collect(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_foreign_records_and_a_hostile_plugin_are_handled_without_loss() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-digest-dup"), &certs);
    spec.extra_toml = parsers_toml(&spec.data_dir);
    let core = core_process(&spec, dir.path()).await;
    let run = unique("dup");
    let id = |seq: u64| format!("edge-x:{run}:{seq}");
    let good = |i: u64| json!({"run": run, "i": i}).to_string();
    let mut records = Vec::new();
    // Batches 0..5 resent (each twice, as after a core died between Kafka's ack and its
    // answer), and a batch of two records resent part by part.
    for seq in 0..5 {
        records.push((batch("good", &[&good(seq)]), Some((id(seq), 0, 1))));
    }
    for seq in 0..5 {
        records.push((batch("good", &[&good(seq)]), Some((id(seq), 0, 1))));
    }
    for part in 0..2 {
        records.push((batch("good", &[&good(100 + part)]), Some((id(9), part as u32, 2))));
    }
    records.push((batch("good", &[&good(100)]), Some((id(9), 0, 2))));
    // Something that is no Weir batch.
    records.push((format!("{run} plain text from another producer").into_bytes(), None));
    // A hostile plugin on one repository: its events keep @error, the others parse.
    records.push((batch("bad", &[&format!("{run}-fine"), "trap", "loop"]), None));
    records.push((batch("good", &[&good(200)]), None));
    produce(&bootstrap, &spec.topic, records).await;

    let stored = stored(&spec.config(dir.path()), std::slice::from_ref(&spec.data_dir)).await;
    let counts = stored.raws();
    for i in [0, 1, 2, 3, 4, 100, 101, 200] {
        assert_eq!(counts.get(&good(i)), Some(&1), "{} stored exactly once", good(i));
        assert_eq!(stored.row(&good(i)).fields["i"], i, "parsed");
    }
    let foreign = stored.rows.iter().map(|(_, r)| r).find(|r| r.raw.contains("plain text from another producer")).expect("the foreign record is kept");
    assert_eq!(foreign.repository, "weir-foreign");
    assert!(foreign.error.as_deref().is_some_and(|e| e.contains("not a Weir event batch")), "{foreign:?}");
    for raw in ["trap", "loop"] {
        let row = stored.row(raw);
        assert_eq!(row.repository, "bad");
        assert!(row.error.is_some(), "the hostile plugin's failure is kept as @error: {row:?}");
    }
    assert_eq!(counts.get(&format!("{run}-fine")), Some(&1));
    drop(core);
}

#[tokio::test(flavor = "multi_thread")]
async fn reparse_swaps_in_parsed_segments_in_one_command_and_readers_see_each_event_once() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-reparse"), &certs);
    // The json plugin is configured, but nothing routes the test repository to it yet.
    spec.extra_toml = unrouted_parsers_toml(&spec.data_dir);
    let core = core_process(&spec, dir.path()).await;
    let client = http();
    let run = unique("reparse");
    let lines: Vec<String> = (0..40).map(|i| json_line(&run, i)).collect();
    for chunk in lines.chunks(10) {
        let body = json!([{"tags": {"source": chunk[0].clone()}, "events": chunk.iter().map(|l| json!({"rawstring": l})).collect::<Vec<_>>()}]).to_string();
        assert_eq!(post(&client, &core, "/api/v1/ingest/humio-structured", &format!("Bearer {TOKEN}"), body).await, 200);
    }
    let config = spec.config(dir.path());
    let before = stored(&config, std::slice::from_ref(&spec.data_dir)).await;
    assert_eq!(before.rows.len(), 40);
    assert!(before.rows.iter().all(|(_, r)| r.parser.is_none() && !r.fields.contains_key("n")), "stored unparsed first");
    let old_ids: BTreeSet<String> = before.rows.iter().map(|(id, _)| id.clone()).collect();

    // Readers that take the segment list from one Global state count 40 events before,
    // during and after the swap.
    let config_path = dir.path().join("core-1.toml");
    let reparse = {
        let config_path = config_path.clone();
        tokio::spawn(async move {
            cli::weir_core(&["reparse", "--repository", REPOSITORY, "--from", "0", "--to", "now", "--parser", "json", "--grace-s", "2", "--config"], &config_path).await
        })
    };
    let mut views = 0;
    while !reparse.is_finished() {
        let config = config.clone();
        let state = global_state(&config).await.expect("Global readable");
        let events: u64 = state.partitions().flat_map(|p| state.segments(p)).filter(|s| s.info.repositories.iter().any(|r| r == REPOSITORY)).map(|s| s.info.n_events).sum();
        assert_eq!(events, 40, "a reader sees every event once during the swap");
        views += 1;
    }
    let (ok, stdout, stderr) = reparse.await.unwrap();
    assert!(ok, "reparse failed:\n{stdout}\n{stderr}");
    assert!(views > 0);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(summary["reparsed_events"], 40, "{summary}");

    let after = stored(&config, std::slice::from_ref(&spec.data_dir)).await;
    assert_eq!(after.rows.len(), 40);
    for line in &lines {
        let row = after.row(line);
        assert_eq!(row.parser.as_deref(), Some("json"));
        assert!(row.fields.contains_key("n"), "re-parsed: {row:?}");
        assert_eq!(row.id, before.row(line).id, "an event keeps its id");
    }
    let new_ids: BTreeSet<String> = after.rows.iter().map(|(id, _)| id.clone()).collect();
    assert!(old_ids.is_disjoint(&new_ids), "the old segments left Global");
    for id in &old_ids {
        assert!(!spec.data_dir.join("segments").join(weir_segment::segment_file_name(id)).exists(), "old file {id} deleted after the grace period");
    }
    // A parser that does not exist is refused with its name, and nothing changes.
    let (ok, _, stderr) = cli::weir_core(&["reparse", "--repository", REPOSITORY, "--from", "0", "--parser", "nope", "--config"], &config_path).await;
    assert!(!ok && stderr.contains("\"nope\""), "{stderr}");
    drop(core);
}

/// Re-parse on one core of two: the segments the other core digested are fetched from it
/// over the peer channel, and every new segment is written, registered and held by the
/// core that ran it.
#[tokio::test(flavor = "multi_thread")]
async fn reparse_on_one_core_fetches_the_segments_another_core_holds() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut one, mut two) = two_specs(&bootstrap, dir.path());
    one.extra_toml = unrouted_parsers_toml(&one.data_dir);
    two.extra_toml = unrouted_parsers_toml(&two.data_dir);
    let core_1 = core_process(&one, dir.path()).await;
    let core_2 = core_process(&two, dir.path()).await;
    let config = two.config(dir.path());
    both_cores_own_a_partition(&config).await;
    let client = http();
    let run = unique("reparse-2");
    let url = format!("http://{}", core_1.http);
    let acknowledged = load(&client, &run, 10, 4, |_| url.clone()).await;
    assert_eq!(acknowledged.len(), 40);
    let data_dirs = [one.data_dir.clone(), two.data_dir.clone()];
    let before = stored(&config, &data_dirs).await;
    let on_core_1 = before
        .state
        .partitions()
        .flat_map(|p| before.state.segments(p))
        .filter(|s| one.data_dir.join("segments").join(weir_segment::segment_file_name(&s.info.segment_id)).is_file())
        .count();
    assert!(on_core_1 > 0, "core-1 digested some of the events");

    let (ok, stdout, stderr) = cli::weir_core(
        &["reparse", "--repository", REPOSITORY, "--from", "0", "--to", "now", "--parser", "kv", "--grace-s", "0", "--config"],
        &dir.path().join("core-2.toml"),
    )
    .await;
    // kv is not configured: refused by name before anything is fetched.
    assert!(!ok && stderr.contains("\"kv\""), "{stderr}");
    let (ok, stdout2, stderr2) = cli::weir_core(
        &["reparse", "--repository", REPOSITORY, "--from", "0", "--to", "now", "--parser", "json", "--grace-s", "0", "--config"],
        &dir.path().join("core-2.toml"),
    )
    .await;
    assert!(ok, "reparse failed:\n{stdout}{stdout2}\n{stderr}{stderr2}");
    assert!(stderr2.contains("fetched segment") || stdout2.contains("fetched segment"), "{stdout2}\n{stderr2}");
    let after = stored(&config, &data_dirs).await;
    let raws = after.raws();
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} once after the swap");
        assert_eq!(after.row(raw).parser.as_deref(), Some("json"), "{raw} re-parsed");
    }
    let disk = std::fs::read_to_string(two.data_dir.join("disk-id")).expect("core-2's data directory has an id");
    for segment in after.state.partitions().flat_map(|p| after.state.segments(p)) {
        let name = weir_segment::segment_file_name(&segment.info.segment_id);
        assert!(two.data_dir.join("segments").join(&name).is_file(), "{name} is core-2's");
        assert!(segment.copies.contains(&weir_global::Location::node("core-2", disk.trim())), "{name}: {:?}", segment.copies);
        assert!(!segment.staged, "{name} swapped in");
    }
    assert!(!two.data_dir.join("staging").read_dir().is_ok_and(|mut d| d.next().is_some()), "the reparse's staging directory is gone");
    drop((core_1, core_2));
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_an_edge_resent_after_its_core_was_killed_are_stored_once() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = two_specs(&bootstrap, dir.path());
    let mut core_1 = core_process(&one, dir.path()).await;
    let core_2 = core_process(&two, dir.path()).await;
    let certs = certs(dir.path());
    let edge_spec = EdgeSpec::new(dir.path(), vec![one.quic_addr(), two.quic_addr()], &certs);
    let edge = Node::spawn("weir-edge", &edge_spec.edge_id, &edge_spec.toml(), edge_spec.http_port, dir.path()).await;
    let client = http();
    let run = unique("resend");
    let mut acknowledged = Vec::new();
    for request in 0..60 {
        if request == 20 {
            // Batches in flight at the kill were in Kafka or not; the edge resends them all
            // to core-2, so Kafka may hold some twice.
            core_1.kill9();
        }
        let lines: Vec<String> = (0..20).map(|i| format!("{run}-{request}-{i}")).collect();
        let response = client
            .post(edge.url("/services/collector/raw"))
            .header("authorization", format!("Splunk {TOKEN}"))
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        acknowledged.extend(lines);
    }
    // Every spooled batch reached Kafka (the edge's spool is empty) before the check.
    let (b, t, expected) = (bootstrap.clone(), one.topic.clone(), acknowledged.clone());
    let records = tokio::task::spawn_blocking(move || {
        kafka::expect_events(&b, &t, &expected, WAIT);
        kafka::consume_all(&b, &t, WAIT)
    })
    .await
    .unwrap();
    let copies: usize = records.iter().map(|r| r.batch.events.len()).sum();
    let stored = stored(&two.config(dir.path()), &[one.data_dir.clone(), two.data_dir.clone()]).await;
    let counts = stored.raws();
    for line in &acknowledged {
        assert_eq!(counts.get(line), Some(&1), "{line} stored exactly once (Kafka holds {copies} event copies for {} events)", acknowledged.len());
    }
    assert_eq!(stored.rows.len(), acknowledged.len());
    drop(edge);
    drop(core_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_that_started_before_weir_is_recorded_and_records_lost_later_wait_for_an_operator() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let spec = CoreSpec::new(
        "core-1",
        &bootstrap,
        &unique("weir-test-digest-gone"),
        &certs,
    );
    let config = spec.config(dir.path());
    kafka::create_topic(&bootstrap, &spec.topic, 2, 1, &[]).await;
    let records = (0..5).map(|i| (batch("gone", &[&format!("gone-{i}")]), None)).collect();
    produce(&bootstrap, &spec.topic, records).await;
    // Records 0..3 of partition 0 are deleted before Weir ever ran on the topic.
    kafka::delete_records(&bootstrap, &spec.topic, 0, 3).await;

    // 1. Binding Global to the topic records the log start (audited); the rest is stored.
    let mut core = core_process(&spec, dir.path()).await;
    let state = eventually("partition 0 digested from its log start", WAIT, || {
        let config = config.clone();
        async move {
            global_state(&config)
                .await
                .ok()
                .filter(|s| s.resume_point(0) == 5)
        }
    })
    .await;
    assert_eq!(state.partition(0).log_start, 3);
    let reason = state
        .log_start_reason(0)
        .expect("the log start says who and why");
    assert!(
        reason.contains("core-1") && reason.contains("started at 3"),
        "{reason}"
    );
    assert!(
        state
            .topics()
            .is_some_and(|t| t.ingest_topic == spec.topic && !t.ingest_topic_id.is_empty()),
        "{:?}",
        state.topics()
    );
    assert_eq!(
        state.segments(0).first().map(|s| s.info.offset_start),
        Some(3)
    );
    let status = tokio::task::block_in_place(|| core.terminate(Duration::from_secs(30)));
    assert!(status.success(), "{status}");

    // 2. Records deleted after that, before the digest read them: never skipped silently.
    let records = (5..10)
        .map(|i| (batch("gone", &[&format!("gone-{i}")]), None))
        .collect();
    produce(&bootstrap, &spec.topic, records).await;
    kafka::delete_records(&bootstrap, &spec.topic, 0, 8).await;
    let core = core_process(&spec, dir.path()).await;
    let url = format!("http://{}", core.http);
    eventually("the lost offsets are reported as a metric", WAIT, || {
        let url = url.clone();
        async move {
            let text = weir_tests::scrape(&url).await;
            weir_tests::metric(&text, "weir_digest_offset_gone_total", &[("partition", "0")]).filter(|n| *n >= 1.0)
        }
    })
    .await;
    eventually("the digest says which offsets are gone", WAIT, || {
        let found = core
            .log_tail()
            .contains("offset 5 is no longer in Kafka (the log starts at 8)");
        async move { found.then_some(()) }
    })
    .await;
    let state = global_state(&config).await.expect("Global readable");
    assert_eq!(
        state.resume_point(0),
        5,
        "nothing was skipped: the partition waits at offset 5"
    );
    assert_eq!(state.partition(0).log_start, 3);

    // 3. An operator accepts the loss: the digest resumes at 8, and the record says why.
    let toml = dir.path().join("core-1.toml");
    std::fs::write(&toml, spec.toml()).unwrap();
    let args = [
        "global",
        "set-log-start",
        "--partition",
        "0",
        "--offset",
        "8",
        "--reason",
        "retention ran during an outage",
        "--config",
    ];
    let (ok, stdout, stderr) = cli::weir_core(&args, &toml).await;
    assert!(
        ok && stdout.contains("log start set to 8"),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = cli::weir_core(&args, &toml).await;
    assert!(
        !ok && stderr.contains("not above the current 8"),
        "a log start only moves forward: {stderr}"
    );
    let state = eventually(
        "partition 0 resumed at the new log start",
        Duration::from_secs(90),
        || {
            let config = config.clone();
            async move {
                global_state(&config)
                    .await
                    .ok()
                    .filter(|s| s.resume_point(0) == 10)
            }
        },
    )
    .await;
    assert!(state.log_start_reason(0).is_some_and(
        |r| r.contains("core-1-operator") && r.contains("retention ran during an outage")
    ));
    let stored = stored(&config, std::slice::from_ref(&spec.data_dir)).await;
    let raws = stored.raws();
    for i in [3, 4, 8, 9] {
        assert_eq!(
            raws.get(&format!("gone-{i}")),
            Some(&1),
            "gone-{i} stored once"
        );
    }
    for i in [0, 1, 2, 5, 6, 7] {
        assert!(
            !raws.contains_key(&format!("gone-{i}")),
            "gone-{i} was deleted before anyone read it"
        );
    }
    drop(core);
}

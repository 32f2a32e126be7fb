//! The local stack's parsing (deploy/local-stack.sh): a core started with the exact
//! `[parsers]` block the script writes (deploy/local-parsers.toml, its placeholders filled
//! in the same way) parses the events the script's printed curl lines send, and the read
//! API answers the script's queries by a parsed field. With the script's bucket
//! (deploy/local-bucket.toml, on a real S3 server), `weir-core status` shows the segments
//! uploaded and Kafka's log start moved past them.

use std::time::Duration;

use serde_json::json;
use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, Node, READ_TOKEN, TOKEN};
use weir_tests::{certs, eventually, gate, http, init_tracing, unique, workspace_root};

const WAIT: Duration = Duration::from_secs(60);
/// The test core's second token, standing for the script's `dev-json-token`.
const JSON_TOKEN: &str = "test-json-token";

/// deploy/local-parsers.toml as `parsers_block` in deploy/local-stack.sh fills it in.
fn local_parsers_block(weir_home: &std::path::Path) -> String {
    let root = workspace_root();
    let template = std::fs::read_to_string(root.join("deploy/local-parsers.toml")).expect("read deploy/local-parsers.toml");
    let wasm = root.join("plugins/target/wasm");
    for name in ["kv", "json", "syslog", "access"] {
        let path = wasm.join(format!("{name}.wasm"));
        assert!(path.is_file(), "{} is not built: run `bash plugins/build.sh`", path.display());
    }
    template.replace("@WASM@", &wasm.display().to_string()).replace("@WEIR_HOME@", &weir_home.display().to_string())
}

/// deploy/local-bucket.toml as deploy/local-stack.sh fills it in, on the shared test S3
/// server, in a bucket of this test's own (the script's is `weir` on a server of its own).
async fn local_bucket_block() -> String {
    let template = std::fs::read_to_string(workspace_root().join("deploy/local-bucket.toml")).expect("read deploy/local-bucket.toml");
    assert!(template.contains("bucket = \"weir\""), "the bucket line moved: {template}");
    let bucket = weir_tests::s3::unique_bucket("local-stack").await;
    template.replace("@S3@", &weir_tests::s3::shared_endpoint()).replace("bucket = \"weir\"", &format!("bucket = \"{bucket}\""))
}

/// The events of `repository` matching `query_string`, once at least one matches.
async fn query_until_found(node: &Node, repository: &str, query_string: &str) -> Vec<serde_json::Value> {
    let client = http();
    eventually(&format!("{query_string:?} answered from {repository}"), WAIT, || {
        let request = client
            .post(node.url(&format!("/api/v1/repositories/{repository}/query")))
            .header("authorization", format!("Bearer {READ_TOKEN}"))
            .header("accept", "application/x-ndjson")
            .body(json!({"queryString": query_string, "start": "1h"}).to_string());
        async move {
            let response = request.send().await.ok()?;
            let body = response.text().await.ok()?;
            let events: Vec<serde_json::Value> = body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            (!events.is_empty()).then_some(events)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_stacks_parsers_parse_its_demo_events_and_a_parsed_field_is_queried() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-local-stack"), &certs);
    // The script's storage: bucket mode, truncation on.
    spec.storage_mode = "bucket";
    spec.truncation = true;
    // The script's tokens: one for repository main (kv), one for json.
    let tokens = format!("tokens = [{{ token = \"{TOKEN}\", repository = \"test-repo\" }}]");
    let local_tokens = format!("tokens = [{{ token = \"{TOKEN}\", repository = \"main\" }}, {{ token = \"{JSON_TOKEN}\", repository = \"json\" }}]");
    let base = spec.toml();
    assert!(base.contains(&tokens), "the test core's tokens line moved: {base}");
    let toml = base.replace(&tokens, &local_tokens) + "\n" + &local_parsers_block(dir.path()) + "\n" + &local_bucket_block().await;
    let core = Node::spawn("weir-core", &spec.node_id, &toml, spec.http_port, dir.path()).await;
    let client = http();
    let ready = core.url("/ready");
    eventually("core ready", WAIT, || {
        let request = client.get(&ready);
        async move { request.send().await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    let run = unique("local");

    // The script's first curl line (sent to the core here; the edge forwards the same body).
    let kv_line = format!("level=info user={run} msg=\"hello weir\" took_ms=42");
    let body = json!([{"tags": {"host": "laptop"}, "events": [{"rawstring": kv_line}]}]).to_string();
    let ingest = |token: &str, body: String| {
        client.post(core.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {token}")).body(body).send()
    };
    let response = ingest(TOKEN, body).await.expect("ingest");
    assert_eq!(response.status().as_u16(), 200, "{}", response.text().await.unwrap_or_default());
    let events = query_until_found(&core, "main", &format!("user={run} took_ms>40")).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["@rawstring"], kv_line.as_str());
    assert_eq!(
        (event["level"].as_str(), event["msg"].as_str(), event["took_ms"].as_str()),
        (Some("info"), Some("hello weir"), Some("42")),
        "parsed by kv: {event}"
    );

    // The script's JSON example, on the json repository.
    let json_line = json!({"level": "warn", "run": run, "http": {"status": 503}}).to_string();
    let body = json!([{"events": [{"rawstring": json_line}]}]).to_string();
    let response = ingest(JSON_TOKEN, body).await.expect("ingest");
    assert_eq!(response.status().as_u16(), 200, "{}", response.text().await.unwrap_or_default());
    let events = query_until_found(&core, "json", &format!("http.status=503 run={run}")).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["level"], "warn", "parsed by json: {}", events[0]);

    // The script's status line: segments in the bucket, Kafka's log start past them.
    let toml_path = dir.path().join("local-stack.toml");
    std::fs::write(&toml_path, &toml).unwrap();
    let stdout = eventually("the status shows a segment in the bucket and Kafka truncated", WAIT, || {
        let toml_path = toml_path.clone();
        async move {
            let (ok, stdout, _) = weir_tests::cli::weir_core(&["status", "--config"], &toml_path).await;
            let in_bucket = stdout.split("segments: ").nth(1)?.split(", ").find_map(|part| part.strip_suffix(" in the bucket")?.parse::<u64>().ok())?;
            let truncated = stdout.lines().filter_map(|l| l.split("kafka log ").nth(1)?.split("..").next()?.parse::<u64>().ok()).any(|low| low > 0);
            (ok && in_bucket >= 1 && truncated).then_some(stdout)
        }
    })
    .await;
    assert!(stdout.contains("storage rule: bucket"), "{stdout}");
}

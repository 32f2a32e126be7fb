//! Grafana's LogScale data source against real core processes with real Kafka, as its Go
//! backend talks to LogScale: the requests and the response types below are those of
//! github.com/grafana/falconlogscale-datasource at commit
//! e3b17b7f0c7b2275495e828bf4ee144476bac0a2 (release 1.10.1): `pkg/humio/client.go`
//! (`ListRepos`: GraphQL `{searchDomains{name}}`; `CreateJob`: `queryString`, `start` and
//! `end` as epoch-ms strings, `isLive: false`; `PollJob`; `DeleteJob`; `Stream`: a live
//! `…/query` with only `queryString` and `isLive: true`, decoded one JSON object after
//! another), `pkg/humio/models.go` (`QueryResult`, `QueryResultMetadata`),
//! `pkg/humio/runner.go` (poll at once, then after each `metaData.pollAfter` ms until
//! `done`, then delete the job) and `pkg/plugin/query.go` (rows with `_bucket` become a
//! time series: `_bucket` parsed as epoch ms, the other numeric strings as numbers, the
//! fields kept and ordered by `metaData.fieldOrder`, long-to-wide by time).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use weir_tests::nodes::{CoreSpec, REPOSITORY, TOKEN, core_process};
use weir_tests::{certs, eventually, gate, http, init_tracing, kafka, unique};

/// A read token of only the test repository, as a Grafana data source would be given.
const GRAFANA_TOKEN: &str = "grafana-read-token";

/// `pkg/humio/models.go` `QueryResult`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct QueryResult {
    cancelled: bool,
    done: bool,
    events: Vec<Map<String, Value>>,
    #[serde(rename = "metaData")]
    metadata: QueryResultMetadata,
}

/// `pkg/humio/models.go` `QueryResultMetadata`: Go's `uint64` fields must be whole,
/// non-negative numbers, `pollAfter` an `int`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct QueryResultMetadata {
    event_count: u64,
    extra_data: Map<String, Value>,
    field_order: Option<Vec<String>>,
    is_aggregate: bool,
    poll_after: i32,
    processed_bytes: u64,
    processed_events: u64,
    query_start: u64,
    query_end: u64,
    result_buffer_size: u64,
    time_millis: u64,
    total_work: u64,
    work_done: u64,
}

/// `CreateJob`'s body.
fn create_job_body(query: &str, start_ms: i64, end_ms: i64) -> Value {
    json!({"queryString": query, "start": start_ms.to_string(), "end": end_ms.to_string(), "isLive": false})
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_connects_lists_repositories_charts_a_time_series_and_tails_live() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-grafana"), &certs);
    spec.extra_toml = format!("\n[[read_tokens]]\ntoken = \"{GRAFANA_TOKEN}\"\nrepositories = [\"{REPOSITORY}\"]\nname = \"grafana\"\n");
    let core = core_process(&spec, dir.path()).await;
    let client = http();
    let auth = format!("Bearer {GRAFANA_TOKEN}");

    // Connect: the health check lists the repositories through GraphQL.
    let response = client
        .post(core.url("/graphql"))
        .header("authorization", &auth)
        .json(&json!({"query": "{searchDomains{name}}", "variables": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"data": {"searchDomains": [{"name": REPOSITORY}]}}));
    let response = client.post(core.url("/graphql")).header("authorization", &auth).json(&json!({"query": "{viewer{username}}"})).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("{searchDomains{name}}"), "{body}");

    // Events a minute apart over the last few minutes: host h1 has i + 1 events in
    // minute i, h2 one in each.
    let minute = 60_000;
    let base = now_ms() / minute * minute - 5 * minute;
    let run = unique("grafana");
    let mut expected: BTreeMap<(i64, &str), u64> = BTreeMap::new();
    let mut h1 = Vec::new();
    let mut h2 = Vec::new();
    for i in 0..5i64 {
        let bucket = base + i * minute;
        for j in 0..=i {
            h1.push(json!({"timestamp": bucket + 1_000 + j, "rawstring": format!("{run} h1 {i} {j}")}));
        }
        h2.push(json!({"timestamp": bucket + 2_000, "rawstring": format!("{run} h2 {i}")}));
        expected.insert((bucket, "h1"), i as u64 + 1);
        expected.insert((bucket, "h2"), 1);
    }
    let total = (h1.len() + h2.len()) as u64;
    let body = json!([{"tags": {"host": "h1"}, "events": h1}, {"tags": {"host": "h2"}, "events": h2}]);
    let response =
        client.post(core.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {TOKEN}")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    eventually("the events are digested", Duration::from_secs(60), || async {
        let result = run_as_grafana(&client, &core, &auth, &format!("\"{run}\" | count()"), base - minute, now_ms()).await;
        (result.events.first().and_then(|e| e["_count"].as_str()) == Some(&total.to_string())).then_some(())
    })
    .await;

    // A time chart as a Grafana panel asks for it.
    let (start_ms, end_ms) = (base - minute + 1, now_ms());
    let result = run_as_grafana(&client, &core, &auth, &format!("\"{run}\" | timechart(#host, span=1m)"), start_ms, end_ms).await;
    assert!(result.done && !result.cancelled);
    let meta = &result.metadata;
    assert!(meta.is_aggregate);
    assert_eq!(meta.event_count as usize, result.events.len());
    assert_eq!((meta.query_start as i64, meta.query_end as i64), (start_ms, end_ms));
    assert_eq!(meta.extra_data["timechart"], "true");
    assert_eq!(meta.extra_data["bucket_span_millis"], "60000");
    assert_eq!(meta.extra_data["series"], "#host");
    // Grafana keeps only the fields fieldOrder names, the time first.
    let order = meta.field_order.clone().unwrap();
    assert_eq!(order[0], "_bucket");
    assert!(order.contains(&"#host".to_owned()) && order.contains(&"_count".to_owned()), "{order:?}");
    // The grid: the start rounded down to the minute, to the end's minute; both hosts in
    // every bucket, in time order (Grafana's long-to-wide needs it).
    let first = (base - minute) as u64;
    let buckets = (end_ms / minute * minute - (base - minute)) / minute + 1;
    assert_eq!(result.events.len() as i64, buckets * 2);
    let mut previous = 0;
    let mut sum = 0;
    for event in &result.events {
        let bucket: i64 = event["_bucket"].as_str().expect("_bucket is epoch ms as text").parse().unwrap();
        assert!(bucket as u64 >= first && bucket % minute == 0, "{event:?}");
        assert!(bucket >= previous, "rows in time order");
        previous = bucket;
        let host = event["#host"].as_str().unwrap();
        let count: u64 = event["_count"].as_str().unwrap().parse().expect("a number as text");
        assert_eq!(count, expected.get(&(bucket, host)).copied().unwrap_or(0), "{event:?}");
        sum += count;
    }
    assert_eq!(sum, total);

    // A template variable's query: not an aggregate, no fieldOrder to filter its fields.
    let result = run_as_grafana(&client, &core, &auth, &format!("\"{run}\" h2"), start_ms, end_ms).await;
    assert!(!result.metadata.is_aggregate);
    assert_eq!(result.events.len(), 5);
    assert!(result.metadata.field_order.unwrap_or_default().is_empty());

    // Live tail, as `Stream` asks: the query string and isLive only, results one JSON
    // object after another. An event sent after it started shows within the flush
    // interval and a second of being accepted.
    let mut stream = client
        .post(core.url(&format!("/api/v1/repositories/{REPOSITORY}/query")))
        .header("authorization", &auth)
        .json(&json!({"queryString": format!("\"{run}\" live"), "isLive": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = json!([{"tags": {"host": "h3"}, "events": [{"timestamp": now_ms(), "rawstring": format!("{run} live one")}]}]);
    let response =
        client.post(core.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {TOKEN}")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let accepted = Instant::now();
    let bound = Duration::from_millis(spec.digest_flush_ms) + Duration::from_secs(1);
    let mut buffer = Vec::new();
    let event: Map<String, Value> = loop {
        let left = (accepted + bound * 4).saturating_duration_since(Instant::now());
        let chunk =
            tokio::time::timeout(left, stream.chunk()).await.expect("the live event within four times the bound").unwrap().expect("the stream stays open");
        buffer.extend_from_slice(&chunk);
        if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            break serde_json::from_slice(&buffer[..end]).unwrap();
        }
    };
    let took = accepted.elapsed();
    assert_eq!(event["@rawstring"], format!("{run} live one"));
    assert_eq!(event["#host"], "h3");
    assert!(took <= bound, "the live event took {took:?}, more than the flush interval and a second ({bound:?})");
    drop(stream);
}

/// `QueryRunner.Run`: create the job, poll at once and then after each `pollAfter` until
/// done, delete the job (and the job is gone afterwards).
async fn run_as_grafana(client: &reqwest::Client, core: &weir_tests::nodes::Node, auth: &str, query: &str, start_ms: i64, end_ms: i64) -> QueryResult {
    let jobs = core.url(&format!("/api/v1/repositories/{REPOSITORY}/queryjobs"));
    let response = client
        .post(&jobs)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .json(&create_job_body(query, start_ms, end_ms))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}: {}", response.text().await.unwrap());
    #[derive(Deserialize)]
    struct Created {
        id: String,
    }
    let id = response.json::<Created>().await.unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next_poll = Instant::now();
    let result = loop {
        tokio::time::sleep(next_poll.saturating_duration_since(Instant::now())).await;
        let response = client.get(format!("{jobs}/{id}")).header("authorization", auth).send().await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        let result: QueryResult = response.json().await.expect("the poll decodes as the data source's QueryResult");
        if result.done {
            break result;
        }
        assert!(Instant::now() < deadline, "{query}: not done in 30 s");
        next_poll = Instant::now() + Duration::from_millis(result.metadata.poll_after as u64);
    };
    let response = client.delete(format!("{jobs}/{id}")).header("authorization", auth).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let response = client.get(format!("{jobs}/{id}")).header("authorization", auth).send().await.unwrap();
    assert_eq!(response.status(), 404, "a deleted job is gone");
    result
}

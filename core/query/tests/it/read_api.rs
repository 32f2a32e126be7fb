//! The read API over real segment files, served on a real local port and queried with
//! reqwest: both result formats, each step, tokens, bad queries, query jobs, and a
//! damaged segment answering an error that names it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{DirSource, INGEST, READ_ALL, READ_WEB, ndjson, post_query, rows, serve};
use serde_json::{Value, json};
use weir_query::QueryConfig;

/// Two partitions of "web" events (0..60 and 60..100) and a "db" segment.
async fn setup(config: QueryConfig) -> (tempfile::TempDir, std::sync::Arc<DirSource>, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let source = DirSource::new(dir.path());
    let mut first = rows("web", 0, 100, 0, 60);
    first.extend(rows("db", 0, 160, 1000, 10));
    source.add("p0-100", 0, 100, first);
    source.add("p1-0", 1, 0, rows("web", 1, 0, 60, 40));
    let addr = serve(source.clone(), config).await;
    (dir, source, addr)
}

fn numbers(events: &[serde_json::Map<String, Value>]) -> Vec<u64> {
    events.iter().map(|e| e["@rawstring"].as_str().unwrap().split(' ').nth(1).unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn ndjson_and_json_array_give_every_event_once_with_its_fields() {
    let (_dir, _source, addr) = setup(QueryConfig::default()).await;
    let events = ndjson(addr, "web", "").await;
    let got: BTreeSet<u64> = numbers(&events).into_iter().collect();
    assert_eq!(events.len(), 100, "each event once");
    assert_eq!(got, (0..100).collect::<BTreeSet<u64>>());
    // Order: segments by (partition, offset), rows as written.
    assert_eq!(numbers(&events)[..3], [0, 1, 2]);
    assert_eq!(numbers(&events)[60], 60);

    let e = &events[1];
    assert_eq!(e["#repo"], "web");
    assert_eq!(e["#host"], "h1");
    assert_eq!(e["#type"], "kv");
    assert_eq!(e["@id"], "0-101-0");
    assert_eq!(e["status"], "200");
    assert_eq!(e["user.name"], "u1");
    assert_eq!(e["@timezone"], "Z");
    assert!(e["@timestamp"].is_i64());
    assert!(e.get("@error").is_none());
    let failed = &events[4];
    assert_eq!(failed["@error"], "true");
    assert_eq!(failed["@error_msg"], "no key=value in event 4");
    assert_eq!(failed["@rawstring"], "event 4 status=200 ok");

    let (status, body) = post_query(addr, "web", Some(READ_ALL), "application/json", json!({"queryString": "", "start": "7d"})).await;
    assert_eq!(status, 200, "{body}");
    let array: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&body).unwrap();
    assert_eq!(array, events, "the JSON array holds the same events");

    let (status, body) = post_query(addr, "web", Some(READ_ALL), "*/*", json!({"queryString": "nothing-matches-this"})).await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    // The dataspaces alias, and another repository's rows are not read.
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/dataspaces/db/query"))
        .bearer_auth(READ_ALL)
        .header("Accept", "application/x-ndjson")
        .json(&json!({"queryString": "", "start": "7d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.text().await.unwrap().lines().count(), 10);
}

#[tokio::test]
async fn filters_and_steps_over_http() {
    let (_dir, _source, addr) = setup(QueryConfig::default()).await;
    let count = |events: &[serde_json::Map<String, Value>]| events[0]["_count"].as_str().unwrap().parse::<u64>().unwrap();

    assert_eq!(numbers(&ndjson(addr, "web", "head(3)").await), [0, 1, 2]);
    assert_eq!(numbers(&ndjson(addr, "web", "tail(2)").await), [98, 99]);
    assert_eq!(count(&ndjson(addr, "web", "count()").await), 100);
    // 500s are the multiples of 3 (and have ERROR in the text); free text ignores case.
    assert_eq!(count(&ndjson(addr, "web", "error | count()").await), 34);
    assert_eq!(count(&ndjson(addr, "web", "status=500 | count()").await), 34 - 7, "failed parses have no status field");
    assert_eq!(count(&ndjson(addr, "web", "status!=500 | count()").await), 100 - 27);
    assert_eq!(count(&ndjson(addr, "web", "#host=h0 and (status=500 or @error=true) | count()").await), (17 - 3) + 10);
    assert_eq!(numbers(&ndjson(addr, "web", "@rawstring=/^event 9\\d /").await), (90..100).collect::<Vec<_>>());
    assert_eq!(numbers(&ndjson(addr, "web", "n>=97").await), [97, 98], "99 failed its parse: no n");

    let groups = ndjson(addr, "web", "groupBy(#host)").await;
    assert_eq!(Value::Array(groups.into_iter().map(Value::Object).collect()), json!([{"#host": "h0", "_count": "50"}, {"#host": "h1", "_count": "50"}]));
    let groups = ndjson(addr, "web", "groupBy([user.name], function=count()) | sort(user.name, order=asc, limit=2)").await;
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["user.name"], "u0");
    assert_eq!(numbers(&ndjson(addr, "web", "sort(n, limit=3)").await), [98, 97, 96]);
    assert_eq!(numbers(&ndjson(addr, "web", "sort(@timestamp, order=asc, limit=2)").await), [0, 1]);

    // A time range (absolute, both ends inclusive): only the events in it.
    let all = ndjson(addr, "web", "").await;
    let (start, end) = (all[10]["@timestamp"].as_i64().unwrap(), all[14]["@timestamp"].as_i64().unwrap());
    let (status, body) = post_query(addr, "web", Some(READ_ALL), "application/x-ndjson", json!({"queryString": "", "start": start, "end": end})).await;
    assert_eq!(status, 200);
    let events: Vec<serde_json::Map<String, Value>> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(numbers(&events), [10, 11, 12, 13, 14]);
    let (_, body) = post_query(addr, "web", Some(READ_ALL), "application/x-ndjson", json!({"queryString": "", "start": "30m"})).await;
    assert_eq!(body, "", "nothing in the last 30 minutes");
}

#[tokio::test]
async fn tokens_and_bad_requests_get_an_answer_a_person_can_act_on() {
    let (_dir, _source, addr) = setup(QueryConfig::default()).await;
    let body = json!({"queryString": "head(1)", "start": "7d"});
    let cases = [
        ("web", None, 401, "missing Authorization header"),
        ("web", Some("nope"), 403, "unknown read token"),
        ("web", Some(INGEST), 403, "ingest token, which cannot read"),
        ("db", Some(READ_WEB), 403, "may not read repository \"db\""),
    ];
    for (repo, token, status, text) in cases {
        let (got, message) = post_query(addr, repo, token, "application/json", body.clone()).await;
        assert_eq!(got, status, "{repo} {token:?}: {message}");
        assert!(message.contains(text), "{message:?} should contain {text:?}");
    }
    let (status, _) = post_query(addr, "web", Some(READ_WEB), "application/json", body.clone()).await;
    assert_eq!(status, 200);

    let cases = [
        (json!({"queryString": "parseTimestamp(x)"}), "function parseTimestamp() is not supported"),
        (json!({"queryString": "a b := 1"}), "must be a pipeline step of its own"),
        (json!({"queryString": "regex(\"(\")"}), "bad regex"),
        (json!({"queryString": "status=?code"}), "query parameter ?code has no value"),
        (json!({"queryString": "x", "isLive": true, "start": 1000}), "a live query's start is relative to now"),
        (json!({"queryString": "x", "isLive": true, "end": "1h"}), "a live query ends now"),
        (json!({"queryString": "timeChart(span=1s)", "start": "1d"}), "makes 86401 buckets; at most 1500"),
        (json!({"queryString": "timeChart(x, span=1m, limit=500)", "start": "1d"}), "(query.max_groups)"),
        (json!({"queryString": "timeChart(span=1h)", "timeZoneOffsetMinutes": "+2"}), "timeZoneOffsetMinutes is \"+2\""),
        (json!({"queryString": "x", "start": "5 fortnights"}), "unknown time unit"),
        (json!({"queryString": "x", "start": 2000, "end": 1000}), "after end"),
        (json!({"queryString": 5}), "not a query request"),
        (json!({"queryString": "groupBy(n, limit=10)", "start": "7d"}), "more than 10 groups"),
    ];
    for (request, text) in cases {
        let (status, message) = post_query(addr, "web", Some(READ_ALL), "application/x-ndjson", request.clone()).await;
        assert_eq!(status, 400, "{request}: {message}");
        assert!(message.contains(text), "{request}: {message:?} should contain {text:?}");
    }
}

#[tokio::test]
async fn a_damaged_segment_is_an_error_naming_it_never_a_partial_answer() {
    let (_dir, source, addr) = setup(QueryConfig::default()).await;
    // Flip one byte inside the first row group of the second segment.
    let path = source.path_of("p1-0");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let (status, message) = post_query(addr, "web", Some(READ_ALL), "application/x-ndjson", json!({"queryString": "", "start": "7d"})).await;
    assert_eq!(status, 500, "{message}");
    assert!(message.contains("segment p1-0 is damaged"), "{message}");
    assert!(message.contains("p1-0.parquet"), "{message}");
    // Even a query whose answer the first segment alone could give is refused.
    let (status, _) = post_query(addr, "web", Some(READ_ALL), "application/json", json!({"queryString": "head(1)", "start": "7d"})).await;
    assert_eq!(status, 500);
    // The other repository, which does not need that segment, still answers.
    let (status, _) = post_query(addr, "db", Some(READ_ALL), "application/json", json!({"queryString": "", "start": "7d"})).await;
    assert_eq!(status, 200);

    // A query job reports the same error when polled.
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("http://{addr}/api/v1/repositories/web/queryjobs"))
        .bearer_auth(READ_ALL)
        .json(&json!({"queryString": "count()", "start": "7d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("http://{addr}/api/v1/repositories/web/queryjobs/{}", created["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.get(&url).bearer_auth(READ_ALL).send().await.unwrap();
        if response.status() == 500 {
            let text = response.text().await.unwrap();
            assert!(text.contains("segment p1-0 is damaged"), "{text}");
            break;
        }
        let poll: Value = response.json().await.unwrap();
        assert_eq!(poll["done"], false, "a damaged segment must not give a result: {poll}");
        assert!(std::time::Instant::now() < deadline, "the job never reported the damage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A segment Global lists that the node cannot get is an error too (503), named.
    std::fs::remove_file(&path).unwrap();
    let (status, message) = post_query(addr, "web", Some(READ_ALL), "application/json", json!({"queryString": "", "start": "7d"})).await;
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("segment p1-0 is unavailable"), "{message}");
}

/// Polls a job until done; the final poll's body.
async fn poll_done(client: &reqwest::Client, url: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.get(url).bearer_auth(READ_ALL).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let poll: Value = response.json().await.unwrap();
        if poll["done"] == true {
            return poll;
        }
        assert!(std::time::Instant::now() < deadline, "job not done in time: {poll}");
        tokio::time::sleep(Duration::from_millis(poll["metaData"]["pollAfter"].as_u64().unwrap())).await;
    }
}

#[tokio::test]
async fn query_jobs_as_logscale_has_them() {
    let config = QueryConfig { max_jobs: 2, job_idle_timeout_ms: 500, job_max_events: 30, ..QueryConfig::default() };
    let (_dir, _source, addr) = setup(config).await;
    let client = reqwest::Client::new();
    let create = |query: &str| {
        client
            .post(format!("http://{addr}/api/v1/dataspaces/web/queryjobs"))
            .bearer_auth(READ_ALL)
            .json(&json!({"queryString": query, "start": "7d", "isLive": false}))
            .send()
    };

    let id = create("status=500 | count()").await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let url = format!("http://{addr}/api/v1/repositories/web/queryjobs/{id}");
    let poll = poll_done(&client, &url).await;
    assert_eq!(poll["events"], json!([{"_count": "27"}]));
    assert_eq!(poll["cancelled"], false);
    let meta = &poll["metaData"];
    assert_eq!(meta["isAggregate"], true);
    assert_eq!(meta["extraData"]["hasMoreEvents"], "false");
    assert_eq!(meta["eventCount"], 1);
    assert_eq!(meta["processedEvents"], 100);
    assert_eq!(meta["totalWork"], 2);
    assert_eq!(meta["workDone"], 2);
    assert_eq!(meta["filterQuery"]["queryString"], "status=500 | count()");
    assert!(meta["queryStart"].as_i64().unwrap() < meta["queryEnd"].as_i64().unwrap());

    // Another repository's token cannot poll it; the job is not found under another repository.
    let response = client.get(&url).bearer_auth(INGEST).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client.get(format!("http://{addr}/api/v1/repositories/db/queryjobs/{id}")).bearer_auth(READ_ALL).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // A filter job keeps job_max_events and says so.
    let id2 = create("*").await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let poll = poll_done(&client, &format!("http://{addr}/api/v1/repositories/web/queryjobs/{id2}")).await;
    assert_eq!(poll["events"].as_array().unwrap().len(), 30);
    assert_eq!(poll["metaData"]["isAggregate"], false);
    let warning = poll["metaData"]["warnings"][0]["message"].as_str().unwrap();
    assert!(warning.contains("query.job_max_events"), "{warning}");

    // At most max_jobs at once.
    let response = create("x").await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.text().await.unwrap().contains("query.max_jobs"));

    // DELETE ends a job; it is gone afterwards.
    let response = client.delete(&url).bearer_auth(READ_ALL).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let response = client.get(&url).bearer_auth(READ_ALL).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("create it again"));

    // A job not polled within the idle timeout expires.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let response = client.get(format!("http://{addr}/api/v1/repositories/web/queryjobs/{id2}")).bearer_auth(READ_ALL).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // A bad query is refused when the job is created.
    let response = create("join(x)").await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("join"));
}

#[tokio::test]
async fn an_error_after_the_response_started_aborts_it_rather_than_end_it_short() {
    let dir = tempfile::tempdir().unwrap();
    let source = DirSource::new(dir.path());
    source.add("p0-0", 0, 0, rows("web", 0, 0, 0, 1_000));
    source.add("p1-0", 1, 0, rows("web", 1, 0, 1_000, 100));
    // Damage a row group of the second segment and register the damaged file's hash, as
    // if it had been damaged before it was registered: the whole-file check passes, the
    // row group's own hash fails only once the reader gets there, after the first
    // segment's events went out.
    let path = source.path_of("p1-0");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    {
        let mut segments = source.segments.lock().unwrap();
        let registered = segments.iter_mut().find(|s| s.segment_id == "p1-0").unwrap();
        registered.blake3 = weir_segment::blake3_of_file(&path).unwrap();
    }
    let addr = serve(source, QueryConfig::default()).await;

    for accept in ["application/x-ndjson", "application/json"] {
        // hyper may not have flushed the head and first events before the error: then the
        // request itself fails; otherwise the status is 200 and the body breaks. Either
        // way the client cannot take the events it got for the whole answer.
        let result = async {
            let response = reqwest::Client::new()
                .post(format!("http://{addr}/api/v1/repositories/web/query"))
                .bearer_auth(READ_ALL)
                .header("Accept", accept)
                .json(&json!({"queryString": "", "start": "7d"}))
                .send()
                .await?;
            assert_eq!(response.status(), 200, "{accept}: an error status is given only before the first events");
            response.text().await
        }
        .await;
        assert!(result.is_err(), "{accept}: the transfer must break, not end as if complete: got {} bytes", result.map(|b| b.len()).unwrap_or(0));
    }
    // Had the damage been met before the first result, the answer is an error status.
    let (status, message) = post_query(addr, "web", Some(READ_ALL), "application/json", json!({"queryString": "n>=1000", "start": "7d"})).await;
    assert_eq!(status, 500, "{message}");
    assert!(message.contains("segment p1-0 is damaged") && message.contains("row group 0"), "{message}");
}

#[tokio::test]
async fn a_filter_job_answers_its_last_events_and_arguments_fill_parameters() {
    // max_rows lowers LogScale's implicit tail(200) to tail(20).
    let config = QueryConfig { max_rows: 20, ..QueryConfig::default() };
    let (_dir, _source, addr) = setup(config).await;
    let client = reqwest::Client::new();
    let run = |body: Value| {
        let client = client.clone();
        async move {
            let created: Value =
                client.post(format!("http://{addr}/api/v1/repositories/web/queryjobs")).bearer_auth(READ_ALL).json(&body).send().await.unwrap().json().await.unwrap();
            poll_done(&client, &format!("http://{addr}/api/v1/repositories/web/queryjobs/{}", created["id"].as_str().unwrap())).await
        }
    };
    let poll = run(json!({"queryString": "*", "start": "7d"})).await;
    let events: Vec<serde_json::Map<String, Value>> = serde_json::from_value(poll["events"].clone()).unwrap();
    assert_eq!(numbers(&events), (80..100).collect::<Vec<u64>>(), "the last 20 events, in read order");
    assert_eq!(poll["metaData"]["isAggregate"], false);
    assert_eq!(poll["metaData"]["warnings"], json!([]));
    // An explicit head is an aggregate in LogScale's sense: no implicit tail after it.
    let poll = run(json!({"queryString": "head(5)", "start": "7d"})).await;
    assert_eq!(poll["events"].as_array().unwrap().len(), 5);

    let poll = run(json!({"queryString": "status=?code | count()", "start": "7d", "arguments": {"code": "500"}})).await;
    assert_eq!(poll["events"], json!([{"_count": "27"}]));
    let (status, message) = post_query(addr, "web", Some(READ_ALL), "application/json", json!({"queryString": "status=?code", "start": "7d"})).await;
    assert_eq!(status, 400);
    assert!(message.contains("query parameter ?code has no value"), "{message}");
}

#[tokio::test]
async fn graphql_lists_the_repositories_a_token_may_read_and_refuses_other_queries() {
    let (_dir, _source, addr) = setup(QueryConfig::default()).await;
    let client = reqwest::Client::new();
    let graphql = |token: &'static str, query: &'static str| {
        client.post(format!("http://{addr}/graphql")).bearer_auth(token).json(&json!({"query": query, "variables": null})).send()
    };
    let names = |body: Value| -> Vec<String> { body["data"]["searchDomains"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect() };

    let response = graphql(READ_ALL, "{searchDomains{name}}").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(names(response.json().await.unwrap()), ["db", "web"], "every repository the source knows");
    let response = graphql(READ_WEB, "query {\n  searchDomains {\n    name\n  }\n}").await.unwrap();
    assert_eq!(names(response.json().await.unwrap()), ["web"], "only those the token names");

    let response = graphql(READ_ALL, "{viewer{username}}").await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("Weir answers one GraphQL query, {searchDomains{name}}") && message.contains("viewer"), "{message}");
    let response = graphql(INGEST, "{searchDomains{name}}").await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client.post(format!("http://{addr}/graphql")).json(&json!({"query": "{searchDomains{name}}"})).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

//! Live queries over real segment files: a live search (`isLive` on `…/query`) streams the
//! events of segments registered after it started and stops when its client goes away;
//! a live query job answers its moving window and stops when deleted or not polled.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_query::QueryConfig;
use weir_segment::SegmentRow;

use crate::common::{DirSource, READ_ALL, now_ms, rows, serve_service};

/// `count` events of "web" stamped now (numbers from `first`).
fn fresh(partition: i32, offset_start: i64, first: u64, count: u64) -> Vec<SegmentRow> {
    let mut rows = rows("web", partition, offset_start, first, count);
    for row in &mut rows {
        row.timestamp_ms = now_ms();
    }
    rows
}

/// Reads NDJSON lines from a live response until `want` events came or the deadline.
async fn read_events(response: &mut reqwest::Response, want: usize, deadline: Instant) -> Vec<serde_json::Map<String, Value>> {
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    while events.len() < want && Instant::now() < deadline {
        let chunk = match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            _ => break,
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_live_search_streams_new_events_and_stops_when_the_client_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let source = DirSource::new(dir.path());
    source.add("old", 0, 0, fresh(0, 0, 0, 5));
    let (addr, service) = serve_service(source.clone(), QueryConfig::default()).await;

    let client = reqwest::Client::new();
    let mut response = client
        .post(format!("http://{addr}/api/v1/repositories/web/query"))
        .bearer_auth(READ_ALL)
        // As Grafana's data source asks: no start, no end, no Accept.
        .json(&json!({"queryString": "status=500", "isLive": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(service.live_queries(), 1);

    // Registered after the search started: its status=500 events (0, 3, 6, 9 of 10..20
    // are 12, 15, 18) show within a poll and a second.
    let added = Instant::now();
    source.add("new", 1, 0, fresh(1, 0, 10, 10));
    let events = read_events(&mut response, 3, added + exec_poll() + Duration::from_secs(1)).await;
    let numbers: Vec<&str> = events.iter().map(|e| e["n"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["12", "15", "18"], "the new segment's matches, not the old one's (0, 3)");

    // The client goes away: the search stops, and asks the source nothing more.
    drop(response);
    eventually("the live search stops", Duration::from_secs(3), || service.live_queries() == 0).await;
    let listed = source.listings.load(Ordering::Relaxed);
    tokio::time::sleep(exec_poll() * 4).await;
    assert_eq!(source.listings.load(Ordering::Relaxed), listed, "no work after the client left");

    // Many clients that come and go leave nothing running.
    for _ in 0..20 {
        let response = client
            .post(format!("http://{addr}/api/v1/repositories/web/query"))
            .bearer_auth(READ_ALL)
            .json(&json!({"queryString": "", "isLive": true, "start": "5m"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    eventually("every live search stops", Duration::from_secs(3), || service.live_queries() == 0).await;

    // An aggregate has no place in a stream of events.
    let response = client
        .post(format!("http://{addr}/api/v1/repositories/web/query"))
        .bearer_auth(READ_ALL)
        .json(&json!({"queryString": "count()", "isLive": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("create a live query job"));
}

fn exec_poll() -> Duration {
    weir_query::exec::LIVE_POLL
}

#[tokio::test]
async fn a_live_query_job_follows_its_window_and_stops_when_deleted_or_left() {
    let dir = tempfile::tempdir().unwrap();
    let source = DirSource::new(dir.path());
    source.add("a", 0, 0, fresh(0, 0, 0, 4));
    // An hour old: outside a 5 minute window.
    source.add("old", 1, 0, rows("web", 1, 0, 100, 7));
    let config = QueryConfig { job_idle_timeout_ms: 1_500, ..QueryConfig::default() };
    let (addr, service) = serve_service(source.clone(), config).await;
    let client = reqwest::Client::new();
    let jobs = format!("http://{addr}/api/v1/repositories/web/queryjobs");
    let create = |query: &str| client.post(&jobs).bearer_auth(READ_ALL).json(&json!({"queryString": query, "isLive": true, "start": "5m"})).send();
    let poll = |id: String| {
        let client = client.clone();
        async move {
            let response = client.get(format!("http://{addr}/api/v1/repositories/web/queryjobs/{id}")).bearer_auth(READ_ALL).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };

    let id = create("count()").await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let count = |body: &Value| body["events"][0]["_count"].as_str().map(str::to_owned);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut body = poll(id.clone()).await;
    while count(&body).as_deref() != Some("4") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        body = poll(id.clone()).await;
    }
    assert_eq!(count(&body).as_deref(), Some("4"), "{body}");
    assert_eq!(body["metaData"]["filterQuery"]["isLive"], true);
    assert_eq!(body["metaData"]["pollAfter"], 1000);
    assert_eq!(service.live_queries(), 1);

    // A segment registered later is in the next result.
    source.add("b", 2, 0, fresh(2, 0, 50, 3));
    let deadline = Instant::now() + Duration::from_secs(3);
    while count(&body).as_deref() != Some("7") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        body = poll(id.clone()).await;
    }
    assert_eq!(count(&body).as_deref(), Some("7"), "{body}");

    // DELETE stops it.
    let response = client.delete(format!("{jobs}/{id}")).bearer_auth(READ_ALL).send().await.unwrap();
    assert_eq!(response.status(), 204);
    eventually("the deleted live job stops", Duration::from_secs(3), || service.live_queries() == 0).await;

    // A live time chart: its buckets end now.
    let id = create("timeChart(span=1m)").await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut body = poll(id.clone()).await;
    while body["done"] != true && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        body = poll(id.clone()).await;
    }
    let rows = body["events"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "5 minutes of 1 minute buckets, the start and end rounded down: {body}");
    let total: u64 = rows.iter().map(|r| r["_count"].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 7);
    assert_eq!(body["metaData"]["extraData"]["bucket_span_millis"], "60000");

    // Not polled for the idle timeout: it stops by itself, with no request to notice.
    eventually("the unpolled live job stops", Duration::from_secs(5), || service.live_queries() == 0).await;
}

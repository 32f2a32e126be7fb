//! A result far larger than the process may grow by streams through in bounded memory.
//! Its own test binary, so no other test's allocations move this process's peak RSS.

mod common;

use common::{DirSource, READ_ALL, serve};
use serde_json::json;
use weir_query::QueryConfig;
use weir_segment::{SegmentOptions, SegmentRow};

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn current_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_larger_than_memory_limits_streams() {
    const EVENTS: u64 = 240_000;
    const RAW_BYTES: usize = 1_000;
    const MAX_GROWTH: u64 = 96 << 20;
    let dir = tempfile::tempdir().unwrap();
    let source = DirSource::new(dir.path());
    // Small writer buffers: writing must not set the peak either.
    let options = SegmentOptions { max_buffered_bytes: 4 << 20, max_rows_per_row_group: 20_000, ..SegmentOptions::default() };
    let filler = "x".repeat(RAW_BYTES);
    for segment in 0..4u64 {
        let per = EVENTS / 4;
        let rows = (0..per).map(|i| {
            let n = segment * per + i;
            let mut row = common::row("web", 0, n as i64, n);
            row.raw = format!("event {n} {filler}");
            row
        });
        source.add_with(&format!("big-{segment}"), 0, (segment * per) as i64, rows.collect::<Vec<SegmentRow>>(), options.clone());
    }
    let addr = serve(source, QueryConfig::default()).await;

    // Reset the peak to now (Linux: "5" to clear_refs), so only the query counts.
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS needs Linux's /proc/self/clear_refs");
    let baseline = current_rss();

    let mut response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/repositories/web/query"))
        .bearer_auth(READ_ALL)
        .header("Accept", "application/x-ndjson")
        .json(&json!({"queryString": "*", "start": "7d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let growth = peak_rss().saturating_sub(baseline);
    assert_eq!(lines, EVENTS, "every event streamed");
    assert!(bytes > EVENTS * RAW_BYTES as u64, "the result is {bytes} bytes");
    assert!(
        growth < MAX_GROWTH,
        "streaming {} MB grew the process by {} MB (limit {} MB)",
        bytes >> 20,
        growth >> 20,
        MAX_GROWTH >> 20
    );
    eprintln!("streamed {} MB of results; peak RSS grew by {} MB", bytes >> 20, growth >> 20);
}

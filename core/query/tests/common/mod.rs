//! Shared by the read API's integration tests: real segment files written with
//! `weir_segment::SegmentWriter` into a temporary directory, a [`SegmentSource`] over
//! them, and the router served on a real local port.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use weir_global::SegmentInfo;
use weir_query::{QueryConfig, QueryService, ReadTokenConfig, SegmentSource, SourceError};
use weir_segment::{SegmentMeta, SegmentOptions, SegmentRow, SegmentWriter};

pub const READ_ALL: &str = "read-all-token";
pub const READ_WEB: &str = "read-web-token";
pub const INGEST: &str = "ingest-token";

/// Segments registered as Global would hold them, files in one directory.
pub struct DirSource {
    pub dir: PathBuf,
    pub segments: Mutex<Vec<SegmentInfo>>,
    /// Calls of `segments()`: a live query that stopped asks no more.
    pub listings: std::sync::atomic::AtomicUsize,
}

impl DirSource {
    pub fn new(dir: &Path) -> Arc<DirSource> {
        Arc::new(DirSource { dir: dir.to_owned(), segments: Mutex::new(Vec::new()), listings: Default::default() })
    }

    /// Writes a segment of `rows` (offsets from `offset_start`) and registers it.
    pub fn add(&self, segment_id: &str, partition: i32, offset_start: i64, rows: Vec<SegmentRow>) -> SegmentInfo {
        self.add_with(segment_id, partition, offset_start, rows, SegmentOptions::default())
    }

    pub fn add_with(&self, segment_id: &str, partition: i32, offset_start: i64, rows: Vec<SegmentRow>, options: SegmentOptions) -> SegmentInfo {
        let meta = SegmentMeta { segment_id: segment_id.to_owned(), partition, offset_start };
        let mut writer = SegmentWriter::create_with(&self.dir, meta, options).unwrap();
        let offset_end = rows.iter().map(|r| r.offset + 1).max().unwrap_or(offset_start);
        for row in rows {
            writer.push(row).unwrap();
        }
        let written = writer.finish(offset_end).unwrap();
        let info = SegmentInfo {
            segment_id: written.segment_id,
            partition: written.partition as u32,
            offset_start: written.offset_start as u64,
            offset_end: written.offset_end as u64,
            n_events: written.n_events,
            repositories: written.repositories,
            min_ts_ms: written.min_timestamp_ms.unwrap_or(0),
            max_ts_ms: written.max_timestamp_ms.unwrap_or(0),
            bytes: written.bytes,
            blake3: written.blake3_hex,
        };
        self.segments.lock().unwrap().push(info.clone());
        info
    }

    pub fn path_of(&self, segment_id: &str) -> PathBuf {
        self.dir.join(weir_segment::segment_file_name(segment_id))
    }
}

impl SegmentSource for DirSource {
    fn segments(&self, repo: &str, start_ms: i64, end_ms: i64) -> Vec<SegmentInfo> {
        self.listings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let segments = self.segments.lock().unwrap();
        segments
            .iter()
            .filter(|s| s.repositories.iter().any(|r| r == repo) && s.max_ts_ms >= start_ms && s.min_ts_ms <= end_ms)
            .cloned()
            .collect()
    }

    fn repositories(&self) -> Vec<String> {
        let segments = self.segments.lock().unwrap();
        let names: std::collections::BTreeSet<String> = segments.iter().flat_map(|s| s.repositories.iter().cloned()).collect();
        names.into_iter().collect()
    }

    fn local_path(&self, segment: &SegmentInfo) -> BoxFuture<'static, Result<PathBuf, SourceError>> {
        let path = self.path_of(&segment.segment_id);
        Box::pin(async move {
            if path.exists() { Ok(path) } else { Err(SourceError::Unavailable(format!("{} is not on this node", path.display()))) }
        })
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Event `n` of `repo`: an hour ago plus n ms; every third a 500 with an error word;
/// even ones from host h0, odd from h1; every fifth failed its parse.
pub fn row(repo: &str, partition: i32, offset: i64, n: u64) -> SegmentRow {
    let status = if n.is_multiple_of(3) { 500 } else { 200 };
    let failed = n % 5 == 4;
    let fields = if failed {
        serde_json::Map::new()
    } else {
        json!({"status": status, "n": n, "user": {"name": format!("u{}", n % 4)}}).as_object().unwrap().clone()
    };
    SegmentRow {
        repository: repo.to_owned(),
        timestamp_ms: now_ms() - 3_600_000 + n as i64,
        ingest_timestamp_ms: now_ms() - 3_000_000,
        raw: format!("event {n} status={status}{}", if status == 500 { " ERROR timeout" } else { " ok" }),
        id: SegmentRow::event_id(partition, offset, 0),
        offset,
        tags: BTreeMap::from([("host".to_owned(), format!("h{}", n % 2))]),
        fields: fields.into(),
        parser: Some("kv".to_owned()),
        error: failed.then(|| format!("no key=value in event {n}")),
    }
}

/// `count` events of `repo` starting at number `first`, one per offset.
pub fn rows(repo: &str, partition: i32, offset_start: i64, first: u64, count: u64) -> Vec<SegmentRow> {
    (0..count).map(|i| row(repo, partition, offset_start + i as i64, first + i)).collect()
}

pub fn tokens() -> Vec<ReadTokenConfig> {
    vec![
        ReadTokenConfig { token: READ_ALL.into(), repositories: vec!["*".into()], name: Some("all".into()) },
        ReadTokenConfig { token: READ_WEB.into(), repositories: vec!["web".into()], name: Some("web-only".into()) },
    ]
}

/// Serves the router on 127.0.0.1 (a free port); the server lives until the runtime ends.
pub async fn serve(source: Arc<DirSource>, config: QueryConfig) -> SocketAddr {
    serve_service(source, config).await.0
}

/// [`serve`], and the service (to see its live queries).
pub async fn serve_service(source: Arc<DirSource>, config: QueryConfig) -> (SocketAddr, Arc<QueryService>) {
    let service = Arc::new(QueryService::new(config, &tokens(), source).unwrap().with_ingest_tokens([INGEST]));
    let app = weir_query::router(service.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, service)
}

/// POSTs a query; returns the status and body text.
pub async fn post_query(addr: SocketAddr, repo: &str, token: Option<&str>, accept: &str, body: Value) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/repositories/{repo}/query"))
        .header("Accept", accept)
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// NDJSON query with the all-repositories token: the events, or panics with the body.
pub async fn ndjson(addr: SocketAddr, repo: &str, query: &str) -> Vec<serde_json::Map<String, Value>> {
    let (status, body) = post_query(addr, repo, Some(READ_ALL), "application/x-ndjson", json!({"queryString": query, "start": "7d"})).await;
    assert_eq!(status, 200, "{query}: {body}");
    body.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))).collect()
}

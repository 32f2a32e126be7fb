//! Running a query over the segments a [`SegmentSource`] gives, in bounded memory.
//!
//! Two phases. **Check** (before any result is sent): ask the source for the segments of
//! the repository and time range, get each one's local path, check the whole file's
//! blake3 against the hash registered in Global and open its footer. A segment that is
//! missing, damaged or not the registered one fails the query here, naming it, so a
//! client gets an error status instead of a partial answer. **Read** (a blocking thread):
//! segment after segment in (partition, offset) order, the repository's rows in the order
//! they were written (each row group checked against its own blake3 by `weir-segment`),
//! rows outside the time range skipped, each rendered and pushed through the
//! [`Pipeline`]; results go out in small batches over a bounded channel, so a slow client
//! slows the reader instead of growing a buffer. An error while reading (a file changed
//! after the check) ends the stream with that error; the HTTP layer then aborts the
//! response rather than end it cleanly.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use weir_global::SegmentInfo;
use weir_segment::{SegmentReader, blake3_of_file};

use crate::lang::Query;
use crate::pipeline::Pipeline;
use crate::render::{Event, render};
use crate::time::TimeRange;

/// Where a query finds segments: the core backs it with Global's state and its local
/// segment directory (fetching from other nodes); tests back it with a directory.
pub trait SegmentSource: Send + Sync + 'static {
    /// A consistent set (one Global state) of the segments that may hold events of
    /// `repo` in `[start_ms, end_ms]`.
    fn segments(&self, repo: &str, start_ms: i64, end_ms: i64) -> Vec<SegmentInfo>;
    /// A local path to the segment's file, fetching it from the node that has it if needed.
    fn local_path(&self, segment: &SegmentInfo) -> BoxFuture<'static, Result<PathBuf, SourceError>>;
    /// The repositories that have events, for `POST /graphql`'s `searchDomains` of a token
    /// that may read every repository. The default knows none: such a token then lists
    /// only the repositories other read tokens name.
    fn repositories(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why a source could not give a segment's file (says which node or path, and why). The
/// two answers differ: an unavailable copy may come back (503), a damaged one will not
/// (500, naming where it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No copy could be reached now (no holder alive, a transfer failed).
    #[error("{0}")]
    Unavailable(String),
    /// Every copy found was not the registered one (its bytes hash to something else), or
    /// could not be stored here; `location` names the node or path.
    #[error("{location}: {reason}")]
    Damaged { location: String, reason: String },
}

/// Why a query failed after it parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The source could not give a segment's file.
    #[error("segment {segment_id} is unavailable: {reason}")]
    Unavailable { segment_id: String, reason: String },
    /// A segment's file is not what Global registered, or cannot be read.
    #[error("segment {segment_id} is damaged ({path}): {reason}; the query was not answered rather than answered without it. Check it with `weir-core segments verify`")]
    Damaged { segment_id: String, path: String, reason: String },
    /// A step could not finish (e.g. too many groups).
    #[error("{0}")]
    Step(String),
    /// A worker thread failed: a bug, logged.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Results per channel message, and messages in flight: the memory between the reader and
/// a slow client is at most `BATCH_EVENTS * (CHANNEL_BATCHES + 2)` events.
const BATCH_EVENTS: usize = 256;
const CHANNEL_BATCHES: usize = 4;

/// Counters a query job reports in its `metaData`.
#[derive(Debug, Default)]
pub struct Progress {
    pub segments_total: AtomicU64,
    pub segments_done: AtomicU64,
    /// Rows read from segments (before filters).
    pub events_processed: AtomicU64,
    /// Bytes of the segment files read.
    pub bytes_processed: AtomicU64,
    /// What the steps said at the end (a time chart's series left out).
    pub warnings: std::sync::Mutex<Vec<String>>,
}

/// A query whose check phase passed: results arrive on `results`.
pub struct Running {
    pub results: mpsc::Receiver<Result<Vec<Event>, QueryError>>,
    pub is_aggregate: bool,
    pub progress: Arc<Progress>,
}

/// How often a live query asks its source for segments registered since it last asked.
pub const LIVE_POLL: Duration = Duration::from_millis(250);

/// Counts a live query while it runs (the service's gauge of live queries).
pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    pub(crate) fn new(running: Arc<AtomicUsize>) -> LiveGuard {
        running.fetch_add(1, Ordering::Relaxed);
        LiveGuard(running)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A live search: the events of segments registered after it started, whose timestamps
/// are at most `window_ms` old when read, through the query's streaming steps, until the
/// receiver is dropped (the client went away), which stops it within [`LIVE_POLL`]. Every
/// [`LIVE_POLL`] it asks the source for the segments overlapping the window and reads
/// those it has not read (checked against Global's blake3 first, as any query); the ids it
/// keeps are those of the last listing, so its memory does not grow with its age. `running`
/// counts it while it runs.
pub fn live(source: Arc<dyn SegmentSource>, repo: &str, query: &Query, window_ms: i64, running: Arc<AtomicUsize>) -> mpsc::Receiver<Result<Vec<Event>, QueryError>> {
    let (tx, results) = mpsc::channel(CHANNEL_BATCHES);
    let guard = LiveGuard::new(running);
    let (repo, query) = (repo.to_owned(), query.clone());
    let list_repo = repo.clone();
    let list = move |source: &Arc<dyn SegmentSource>, now_ms: i64| -> Vec<SegmentInfo> {
        let start_ms = now_ms.saturating_sub(window_ms);
        source.segments(&list_repo, start_ms, i64::MAX).into_iter().filter(|s| s.may_hold(&list_repo, start_ms, i64::MAX)).collect()
    };
    // What is registered now was digested before the query: not its to show.
    let mut seen: HashSet<String> = list(&source, crate::time::now_ms()).into_iter().map(|s| s.segment_id).collect();
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                _ = tokio::time::sleep(LIVE_POLL) => {}
            }
            let now_ms = crate::time::now_ms();
            let listed = list(&source, now_ms);
            let mut new: Vec<SegmentInfo> = listed.iter().filter(|s| !seen.contains(&s.segment_id)).cloned().collect();
            seen = listed.into_iter().map(|s| s.segment_id).collect();
            if new.is_empty() {
                continue;
            }
            new.sort_by_key(|s| (s.partition, s.offset_start));
            let range = TimeRange { start_ms: now_ms.saturating_sub(window_ms), end_ms: i64::MAX };
            if let Err(error) = read_live(&source, &repo, &query, range, new, &tx).await {
                let _ = tx.send(Err(error)).await;
                break;
            }
        }
    });
    results
}

/// Checks and reads `segments` of a live query into `tx`.
async fn read_live(
    source: &Arc<dyn SegmentSource>,
    repo: &str,
    query: &Query,
    range: TimeRange,
    segments: Vec<SegmentInfo>,
    tx: &mpsc::Sender<Result<Vec<Event>, QueryError>>,
) -> Result<(), QueryError> {
    let files = local_files(source, segments).await?;
    let files = tokio::task::spawn_blocking(move || check(files)).await.map_err(|e| QueryError::Internal(format!("segment check task failed: {e}")))??;
    let (pipeline, repo, tx) = (Pipeline::new(query), repo.to_owned(), tx.clone());
    tokio::task::spawn_blocking(move || read(files, &repo, range, pipeline, &tx, &Progress::default()))
        .await
        .map_err(|e| QueryError::Internal(format!("segment read task failed: {e}")))?
}

/// Each segment's local path, in order; the first that cannot be had fails the query.
async fn local_files(source: &Arc<dyn SegmentSource>, segments: Vec<SegmentInfo>) -> Result<Vec<(SegmentInfo, PathBuf)>, QueryError> {
    let mut files = Vec::with_capacity(segments.len());
    for segment in segments {
        let path = source.local_path(&segment).await.map_err(|e| match e {
            SourceError::Unavailable(reason) => QueryError::Unavailable { segment_id: segment.segment_id.clone(), reason },
            SourceError::Damaged { location, reason } => QueryError::Damaged { segment_id: segment.segment_id.clone(), path: location, reason },
        })?;
        files.push((segment, path));
    }
    Ok(files)
}

/// Checks the segments of `repo` in `range` and starts reading them (see the module doc).
pub async fn start(source: Arc<dyn SegmentSource>, repo: &str, query: &Query, range: TimeRange) -> Result<Running, QueryError> {
    let mut segments: Vec<SegmentInfo> = source
        .segments(repo, range.start_ms, range.end_ms)
        .into_iter()
        // The source is asked for this already; a segment it adds by mistake costs a read
        // of its footer at most, never a wrong row (rows are read by repository and time).
        .filter(|s| s.may_hold(repo, range.start_ms, range.end_ms))
        .collect();
    segments.sort_by(|a, b| (a.partition, a.offset_start, &a.segment_id).cmp(&(b.partition, b.offset_start, &b.segment_id)));
    segments.dedup_by(|a, b| a.segment_id == b.segment_id);

    let progress = Arc::new(Progress::default());
    progress.segments_total.store(segments.len() as u64, Ordering::Relaxed);
    let files = local_files(&source, segments).await?;
    let files = tokio::task::spawn_blocking(move || check(files))
        .await
        .map_err(|e| QueryError::Internal(format!("segment check task failed: {e}")))??;

    let pipeline = Pipeline::new(query);
    let is_aggregate = pipeline.is_aggregate();
    let (tx, results) = mpsc::channel(CHANNEL_BATCHES);
    let repo = repo.to_owned();
    let reader_progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(error) = read(files, &repo, range, pipeline, &tx, &reader_progress) {
            tracing::warn!(repository = %repo, error = %error, "query failed while reading segments");
            let _ = tx.blocking_send(Err(error));
        }
    });
    Ok(Running { results, is_aggregate, progress })
}

/// Verifies each file against its registered blake3 and footer.
fn check(files: Vec<(SegmentInfo, PathBuf)>) -> Result<Vec<(SegmentInfo, PathBuf)>, QueryError> {
    for (segment, path) in &files {
        let damaged = |reason: String| QueryError::Damaged { segment_id: segment.segment_id.clone(), path: path.display().to_string(), reason };
        let actual = blake3_of_file(path).map_err(|e| damaged(e.to_string()))?;
        if !actual.eq_ignore_ascii_case(&segment.blake3) {
            return Err(damaged(format!("its blake3 is {actual}, Global registered {}", segment.blake3)));
        }
        let reader = SegmentReader::open(path).map_err(|e| damaged(e.to_string()))?;
        if reader.meta().segment_id != segment.segment_id {
            return Err(damaged(format!("the file holds segment {}", reader.meta().segment_id)));
        }
    }
    Ok(files)
}

/// The read phase, on a blocking thread. `Ok` also when the client went away.
fn read(
    files: Vec<(SegmentInfo, PathBuf)>,
    repo: &str,
    range: TimeRange,
    mut pipeline: Pipeline,
    tx: &mpsc::Sender<Result<Vec<Event>, QueryError>>,
    progress: &Progress,
) -> Result<(), QueryError> {
    let mut out = Vec::with_capacity(BATCH_EVENTS);
    'segments: for (segment, path) in files {
        let damaged = |reason: String| QueryError::Damaged { segment_id: segment.segment_id.clone(), path: path.display().to_string(), reason };
        let reader = SegmentReader::open(&path).map_err(|e| damaged(e.to_string()))?;
        for row in reader.rows(repo).map_err(|e| damaged(e.to_string()))? {
            let row = row.map_err(|e| damaged(e.to_string()))?;
            progress.events_processed.fetch_add(1, Ordering::Relaxed);
            if !range.contains(row.timestamp_ms) {
                continue;
            }
            pipeline.push(render(&row), &mut out).map_err(|e| QueryError::Step(e.0))?;
            if out.len() >= BATCH_EVENTS && tx.blocking_send(Ok(std::mem::take(&mut out))).is_err() {
                return Ok(());
            }
            if !pipeline.wants_more() {
                break 'segments;
            }
        }
        progress.bytes_processed.fetch_add(segment.bytes, Ordering::Relaxed);
        progress.segments_done.fetch_add(1, Ordering::Relaxed);
    }
    let warnings = pipeline.finish(&mut out).map_err(|e| QueryError::Step(e.0))?;
    progress.warnings.lock().expect("warnings lock").extend(warnings);
    while !out.is_empty() {
        let rest = out.split_off(out.len().min(BATCH_EVENTS));
        if tx.blocking_send(Ok(std::mem::replace(&mut out, rest))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

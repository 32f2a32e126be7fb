//! Query jobs, as LogScale has them: `POST …/queryjobs` starts a query in the background
//! and answers `{"id"}`; `GET …/queryjobs/{id}` answers `{"done", "cancelled", "events",
//! "metaData"}` (the events once done; LogScale's metaData fields, with
//! `extraData.hasMoreEvents` = `"false"` since one poll gives the whole result); `DELETE`
//! ends it. A query without an aggregate answers its last 200 events (LogScale's implicit
//! `tail(200)`; `metaData.isAggregate` stays false). A job keeps at most `query.job_max_events` results (a warning says when it
//! stopped there), is deleted when not polled for `query.job_idle_timeout_ms` (checked
//! on every query-job request), and at most `query.max_jobs` exist at once (429 past it).
//! A job is of one repository: polling it under another answers 404, as an unknown id.
//!
//! A live job (`"isLive": true`, its start relative to now) runs its whole query over its
//! window as of now once a second ([`run_live`]), each complete result replacing the last
//! (`done` from the first; `pollAfter` one second), and stops by itself when nobody polled
//! it for `query.job_idle_timeout_ms`. A time chart's job says its grid in
//! `metaData.extraData` (LogScale's `bucket_*` keys) and every job of an aggregate its
//! fields in `metaData.fieldOrder`, `_bucket` first, which Grafana's data source uses.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::QueryConfig;
use crate::exec::{self, Progress, QueryError, SegmentSource};
use crate::service::{QueryService, query_error, text};
use crate::lang::{DEFAULT_ROW_LIMIT, Query, Step};
use crate::render::Event;
use crate::time::TimeRange;

/// LogScale's clients wait this long between polls of a running job.
const POLL_AFTER_MS: u64 = 250;

/// The query-job endpoints' state: the service they share with the streaming endpoint,
/// and the jobs.
pub(crate) struct JobsApi {
    service: Arc<QueryService>,
    jobs: Mutex<Jobs>,
}

impl JobsApi {
    pub(crate) fn new(service: Arc<QueryService>) -> JobsApi {
        let jobs = Mutex::new(Jobs::new(&service.config));
        JobsApi { service, jobs }
    }
}

/// The query-job routes (`…/queryjobs`, `…/queryjobs/{id}`).
pub(crate) fn router(api: Arc<JobsApi>) -> Router {
    Router::new()
        .route("/api/v1/repositories/{repo}/queryjobs", axum::routing::post(create))
        .route("/api/v1/dataspaces/{repo}/queryjobs", axum::routing::post(create))
        .route("/api/v1/repositories/{repo}/queryjobs/{id}", get(poll).delete(delete))
        .route("/api/v1/dataspaces/{repo}/queryjobs/{id}", get(poll).delete(delete))
        .with_state(api)
}

struct Jobs {
    jobs: HashMap<String, Job>,
    max_jobs: usize,
    max_events: usize,
    idle_timeout: Duration,
    id_keys: std::collections::hash_map::RandomState,
    created: u64,
}

struct Job {
    repo: String,
    query_string: String,
    is_live: bool,
    /// What `metaData.extraData` says of a `timeChart`/`bucket` (LogScale's keys).
    chart: Option<serde_json::Map<String, Value>>,
    range: TimeRange,
    started: Instant,
    last_poll: Instant,
    state: Arc<Mutex<JobState>>,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct JobState {
    /// Polled last (a live job stops when nobody polls it).
    last_poll: Option<Instant>,
    /// A live job's window as of its latest result (a static job's is `Job::range`).
    live_range: Option<TimeRange>,
    /// A live job's time chart grid as of its latest result.
    live_chart: Option<serde_json::Map<String, Value>>,
    done: bool,
    events: Vec<Event>,
    truncated: bool,
    error: Option<QueryError>,
    is_aggregate: bool,
    progress: Option<Arc<Progress>>,
    took: Option<Duration>,
}

impl Jobs {
    fn new(config: &QueryConfig) -> Jobs {
        Jobs {
            jobs: HashMap::new(),
            max_jobs: config.max_jobs,
            max_events: config.job_max_events,
            idle_timeout: Duration::from_millis(config.job_idle_timeout_ms),
            id_keys: Default::default(),
            created: 0,
        }
    }

    /// Deletes the jobs nobody polled within the idle timeout.
    fn expire(&mut self) {
        let idle_timeout = self.idle_timeout;
        self.jobs.retain(|id, job| {
            let keep = job.last_poll.elapsed() < idle_timeout;
            if !keep {
                job.task.abort();
                tracing::debug!(job = %id, repository = %job.repo, "query job expired");
            }
            keep
        });
    }

    /// 128 bits from the process's random hash keys: not guessable, and the token check
    /// guards every job anyway.
    fn new_id(&mut self) -> String {
        self.created += 1;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let a = self.id_keys.hash_one((self.created, nanos));
        let b = std::collections::hash_map::RandomState::new().hash_one((nanos, self.created));
        format!("{a:016x}{b:016x}")
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        for job in self.jobs.values() {
            job.task.abort();
        }
    }
}

async fn create(State(api): State<Arc<JobsApi>>, Path(repo): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = api.service.authorize(&headers, &repo) {
        return refusal.into_response();
    }
    let prepared = match api.service.prepare(&body) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let mut jobs = api.jobs.lock().expect("jobs lock");
    jobs.expire();
    if jobs.jobs.len() >= jobs.max_jobs {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{} query jobs exist (query.max_jobs); DELETE the ones you are done with, or wait for idle ones to expire after {} ms",
                jobs.jobs.len(),
                jobs.idle_timeout.as_millis()
            ),
        );
    }
    let id = jobs.new_id();
    let state = Arc::new(Mutex::new(JobState { last_poll: Some(Instant::now()), ..JobState::default() }));
    // As LogScale's query jobs: a query without an aggregate (head and tail count as
    // one) answers its last 200 events, an implicit tail(200); it stays a filter result.
    let mut query = prepared.query.clone();
    let implicit_tail = !query.has_aggregate();
    let tail = Step::Tail(DEFAULT_ROW_LIMIT.min(api.service.config.max_rows));
    if implicit_tail {
        query.steps.push(tail.clone());
    }
    let chart = query.time_buckets().map(chart_data);
    let source = api.service.source.clone();
    let task = if prepared.is_live {
        let live = LiveJob { prepared: prepared.clone(), implicit_tail: implicit_tail.then_some(tail), idle_timeout: jobs.idle_timeout };
        let guard = exec::LiveGuard::new(api.service.live_running.clone());
        let max_groups = api.service.config.max_groups;
        tokio::spawn(run_live(source, repo.clone(), live, state.clone(), jobs.max_events, max_groups, guard))
    } else {
        tokio::spawn(run(source, repo.clone(), query, implicit_tail, prepared.range, state.clone(), jobs.max_events))
    };
    let now = Instant::now();
    jobs.jobs.insert(
        id.clone(),
        Job {
            repo: repo.clone(),
            query_string: prepared.query_string.clone(),
            is_live: prepared.is_live,
            chart,
            range: prepared.range,
            started: now,
            last_poll: now,
            state,
            task: task.abort_handle(),
        },
    );
    tracing::debug!(job = %id, repository = %repo, live = prepared.is_live, "query job created");
    Json(json!({"id": id, "queryOnView": repo})).into_response()
}

async fn run(source: Arc<dyn SegmentSource>, repo: String, query: Query, implicit_tail: bool, range: TimeRange, state: Arc<Mutex<JobState>>, max_events: usize) {
    let started = Instant::now();
    match exec::start(source, &repo, &query, range).await {
        Err(error) => {
            let mut state = state.lock().expect("job lock");
            state.error = Some(error);
        }
        Ok(mut running) => {
            {
                let mut state = state.lock().expect("job lock");
                state.is_aggregate = running.is_aggregate && !implicit_tail;
                state.progress = Some(running.progress.clone());
            }
            while let Some(item) = running.results.recv().await {
                let mut state = state.lock().expect("job lock");
                match item {
                    Ok(mut events) => {
                        let room = max_events - state.events.len();
                        if events.len() > room {
                            events.truncate(room);
                            state.events.extend(events);
                            // Dropping the receiver stops the reader.
                            state.truncated = true;
                            break;
                        }
                        state.events.extend(events);
                    }
                    Err(error) => {
                        state.error = Some(error);
                        break;
                    }
                }
            }
        }
    }
    let mut state = state.lock().expect("job lock");
    state.done = true;
    state.took = Some(started.elapsed());
}

/// What a live job runs again as its window moves.
struct LiveJob {
    prepared: crate::service::Prepared,
    /// A query without an aggregate gets LogScale's implicit `tail(200)`.
    implicit_tail: Option<Step>,
    idle_timeout: Duration,
}

/// Between two runs of a live job.
const LIVE_RERUN: Duration = Duration::from_secs(1);

/// A live job: the whole query over its window as of now, again and again (at most once a
/// [`LIVE_RERUN`]), each complete result replacing the one before; it stops when nobody
/// polled it for the idle timeout (or when DELETE or expiry aborts it).
async fn run_live(
    source: Arc<dyn SegmentSource>,
    repo: String,
    live: LiveJob,
    state: Arc<Mutex<JobState>>,
    max_events: usize,
    max_groups: usize,
    guard: exec::LiveGuard,
) {
    let _guard = guard;
    loop {
        let started = Instant::now();
        let idle = state.lock().expect("job lock").last_poll.is_some_and(|at| at.elapsed() >= live.idle_timeout);
        if idle {
            let mut state = state.lock().expect("job lock");
            state.events = Vec::new();
            state.error = Some(QueryError::Step(format!("this live query job was not polled for {} ms and stopped; create it again", live.idle_timeout.as_millis())));
            tracing::debug!(repository = %repo, "live query job stopped: not polled");
            return;
        }
        let (mut query, range) = match live.prepared.at(crate::time::now_ms(), max_groups) {
            Ok(at) => at,
            Err(refusal) => {
                state.lock().expect("job lock").error = Some(QueryError::Step(refusal.message));
                return;
            }
        };
        let chart = query.time_buckets().map(chart_data);
        query.steps.extend(live.implicit_tail.clone());
        let round = Arc::new(Mutex::new(JobState::default()));
        run(source.clone(), repo.clone(), query, live.implicit_tail.is_some(), range, round.clone(), max_events).await;
        {
            let mut round = round.lock().expect("job lock");
            let mut state = state.lock().expect("job lock");
            state.events = std::mem::take(&mut round.events);
            state.truncated = round.truncated;
            state.error = round.error.take();
            state.is_aggregate = round.is_aggregate;
            state.progress = round.progress.take();
            state.took = round.took;
            state.live_range = Some(range);
            state.live_chart = chart;
            state.done = true;
        }
        tokio::time::sleep(LIVE_RERUN.saturating_sub(started.elapsed())).await;
    }
}

fn not_found(repo: &str, id: &str, idle_timeout: Duration) -> Response {
    text(
        StatusCode::NOT_FOUND,
        &format!(
            "no query job {id} in repository {repo}: it was deleted, expired (not polled for {} ms) or never existed; create it again",
            idle_timeout.as_millis()
        ),
    )
}

async fn poll(State(api): State<Arc<JobsApi>>, Path((repo, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if let Err(refusal) = api.service.authorize(&headers, &repo) {
        return refusal.into_response();
    }
    let (state, query_string, chart, range, started, is_live) = {
        let mut jobs = api.jobs.lock().expect("jobs lock");
        jobs.expire();
        let idle_timeout = jobs.idle_timeout;
        match jobs.jobs.get_mut(&id).filter(|job| job.repo == repo) {
            Some(job) => {
                job.last_poll = Instant::now();
                (job.state.clone(), job.query_string.clone(), job.chart.clone(), job.range, job.started, job.is_live)
            }
            None => return not_found(&repo, &id, idle_timeout),
        }
    };
    let mut state = state.lock().expect("job lock");
    state.last_poll = Some(Instant::now());
    let range = state.live_range.unwrap_or(range);
    let chart = state.live_chart.clone().or(chart);
    if let Some(error) = &state.error {
        return query_error(error);
    }
    let progress = state.progress.as_deref();
    let load = |f: fn(&Progress) -> &std::sync::atomic::AtomicU64| progress.map_or(0, |p| f(p).load(std::sync::atomic::Ordering::Relaxed));
    let total_work = load(|p| &p.segments_total);
    let mut warnings = Vec::new();
    if state.truncated {
        warnings.push(json!({
            "message": format!(
                "the result was cut at {} events (query.job_max_events); use head()/tail()/an aggregate, or the streaming /query endpoint for all events",
                state.events.len()
            )
        }));
    }
    if let Some(progress) = progress {
        for warning in progress.warnings.lock().expect("warnings lock").iter() {
            warnings.push(json!({"message": warning}));
        }
    }
    let empty = Vec::new();
    let events = if state.done { &state.events } else { &empty };
    let mut extra_data = serde_json::Map::new();
    extra_data.insert("hasMoreEvents".into(), "false".into());
    extra_data.extend(chart.unwrap_or_default());
    let time_millis = state.took.unwrap_or_else(|| started.elapsed()).as_millis() as u64;
    let body = json!({
        "done": state.done,
        "cancelled": false,
        "events": events,
        "metaData": {
            "eventCount": events.len(),
            "extraData": extra_data,
            "fieldOrder": field_order(events, state.is_aggregate),
            "filterQuery": {
                "queryString": query_string,
                "start": range.start_ms,
                "end": range.end_ms,
                "isLive": is_live,
                "noResultUntilDone": false,
            },
            "isAggregate": state.is_aggregate,
            "pollAfter": if is_live { LIVE_RERUN.as_millis() as u64 } else if state.done { 0 } else { POLL_AFTER_MS },
            "processedBytes": load(|p| &p.bytes_processed),
            "processedEvents": load(|p| &p.events_processed),
            "queryStart": range.start_ms,
            "queryEnd": range.end_ms,
            "resultBufferSize": events.len(),
            "timeMillis": time_millis,
            "totalWork": total_work,
            "workDone": if state.done { total_work } else { load(|p| &p.segments_done) },
            "warnings": Value::Array(warnings),
        },
    });
    Json(body).into_response()
}

/// LogScale's `extraData` of a time chart: its series, the grid and a widget hint.
fn chart_data(buckets: &crate::lang::TimeBuckets) -> serde_json::Map<String, Value> {
    let mut data = serde_json::Map::new();
    if let Some(grid) = buckets.grid {
        data.insert("bucket_first_bucket".into(), grid.first_ms.to_string().into());
        data.insert("bucket_last_bucket".into(), grid.last_ms().to_string().into());
        data.insert("bucket_span_millis".into(), grid.span_ms.to_string().into());
        data.insert("bucket_span_humanized".into(), crate::lang::humanize(grid.span_ms).into());
    }
    if !buckets.aggregate.group_by.is_empty() {
        data.insert("groupby_fields".into(), buckets.aggregate.group_by.join(",").into());
    }
    if buckets.chart {
        data.insert("timechart".into(), "true".into());
        data.insert("ui:suggested-widget".into(), "time-chart".into());
        if let Some(series) = buckets.aggregate.group_by.first() {
            data.insert("series".into(), series.clone().into());
        }
    }
    data
}

/// `metaData.fieldOrder` of an aggregate result: its fields in the order first seen,
/// `_bucket` first (Grafana keeps only these fields, in this order, and needs the time
/// first). A result of events has fields that vary: none, so clients keep them all.
fn field_order(events: &[Event], is_aggregate: bool) -> Vec<String> {
    if !is_aggregate {
        return Vec::new();
    }
    let mut order: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for event in events {
        for field in event.keys() {
            if seen.insert(field.as_str()) {
                order.push(field.clone());
            }
        }
    }
    if let Some(at) = order.iter().position(|f| f == "_bucket") {
        let bucket = order.remove(at);
        order.insert(0, bucket);
    }
    order
}

async fn delete(State(api): State<Arc<JobsApi>>, Path((repo, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if let Err(refusal) = api.service.authorize(&headers, &repo) {
        return refusal.into_response();
    }
    let mut jobs = api.jobs.lock().expect("jobs lock");
    jobs.expire();
    let idle_timeout = jobs.idle_timeout;
    if jobs.jobs.get(&id).is_none_or(|job| job.repo != repo) {
        return not_found(&repo, &id, idle_timeout);
    }
    if let Some(job) = jobs.jobs.remove(&id) {
        job.task.abort();
    }
    StatusCode::NO_CONTENT.into_response()
}

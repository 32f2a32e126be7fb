//! The read API's HTTP endpoints, in LogScale's shape (README "Reading events back").
//!
//! `POST /api/v1/repositories/{repo}/query` (and `/api/v1/dataspaces/{repo}/query`)
//! streams the result: NDJSON with `Accept: application/x-ndjson`, otherwise one JSON
//! array, written as it is read. Query jobs (`…/queryjobs`, [`crate::jobs`]) run the same
//! query in the background for clients that poll. Every request needs a read token
//! (`Authorization: Bearer …`); errors are `text/plain` a person can act on.
//!
//! With `"isLive": true` the endpoint is a live search: NDJSON of the matching events as
//! they are digested, until the client disconnects ([`exec::live`]).
//!
//! A failure found before the first result (parse, time range, a damaged or unavailable
//! segment) gets an error status. One found while streaming (a file changed after its
//! check) aborts the response, so the client sees a broken transfer, never a short
//! result that looks complete.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::exec::{self, QueryError};
use crate::service::{QueryService, query_error};

/// The read API's routes; the core merges them into its HTTP server.
pub fn router(service: Arc<QueryService>) -> Router {
    let jobs = Arc::new(crate::jobs::JobsApi::new(service.clone()));
    Router::new()
        .route("/api/v1/repositories/{repo}/query", post(query))
        .route("/api/v1/dataspaces/{repo}/query", post(query))
        .route("/graphql", post(crate::graphql::graphql))
        .with_state(service)
        .merge(crate::jobs::router(jobs))
}

async fn query(State(service): State<Arc<QueryService>>, Path(repo): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = service.authorize(&headers, &repo) {
        return refusal.into_response();
    }
    let prepared = match service.prepare(&body) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    if prepared.is_live {
        return live(&service, &repo, &prepared);
    }
    let ndjson = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/x-ndjson"));
    let mut running = match exec::start(service.source.clone(), &repo, &prepared.query, prepared.range).await {
        Ok(r) => r,
        Err(error) => return query_error(&error),
    };
    tracing::debug!(repository = %repo, query = %prepared.query_string, "query started");
    // The status waits for the first results (for an aggregate, the whole answer), so an
    // error met before them (too many groups, a row group that fails its hash) is still
    // an error status rather than a broken stream.
    let first = match running.results.recv().await {
        Some(Ok(events)) => Some(events),
        Some(Err(error)) => return query_error(&error),
        None => None,
    };
    let state = StreamState { results: running.results, first, ndjson, started: false, finished: false };
    let stream = futures::stream::unfold(state, next_chunk);
    let content_type = if ndjson { "application/x-ndjson" } else { "application/json" };
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A live search: NDJSON (whatever `Accept` says: the stream has no end for a JSON
/// array to close) of the events digested from now on that pass the query's streaming
/// steps, until the client goes away; an aggregate needs a live query job.
fn live(service: &Arc<QueryService>, repo: &str, prepared: &crate::service::Prepared) -> Response {
    if prepared.query.has_aggregate() {
        return crate::service::Refusal::bad_request(
            "a live search streams events as they are digested, so it takes filters and field steps only; for an aggregate (count, groupBy, timeChart, head, sort, ...) create a live query job: POST …/queryjobs with \"isLive\": true, and poll it",
        )
        .into_response();
    }
    let window_ms = prepared.range.end_ms - prepared.range.start_ms;
    let results = exec::live(service.source.clone(), repo, &prepared.query, window_ms, service.live_running.clone());
    tracing::debug!(repository = %repo, query = %prepared.query_string, window_ms, "live search started");
    let state = StreamState { results, first: None, ndjson: true, started: false, finished: false };
    let mut response = Response::new(Body::from_stream(futures::stream::unfold(state, next_chunk)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

struct StreamState {
    results: tokio::sync::mpsc::Receiver<Result<Vec<crate::render::Event>, QueryError>>,
    /// Results received before the response started, sent first.
    first: Option<Vec<crate::render::Event>>,
    ndjson: bool,
    /// The JSON array's `[` and first element are written.
    started: bool,
    finished: bool,
}

async fn next_chunk(mut state: StreamState) -> Option<(Result<Bytes, QueryError>, StreamState)> {
    if state.finished {
        return None;
    }
    let next = match state.first.take() {
        Some(events) => Some(Ok(events)),
        None => state.results.recv().await,
    };
    match next {
        Some(Ok(events)) => {
            let mut chunk = Vec::with_capacity(events.len() * 256);
            for event in events {
                if state.ndjson {
                    serde_json::to_writer(&mut chunk, &event).expect("a JSON map serializes");
                    chunk.push(b'\n');
                } else {
                    chunk.push(if state.started { b',' } else { b'[' });
                    state.started = true;
                    serde_json::to_writer(&mut chunk, &event).expect("a JSON map serializes");
                }
            }
            Some((Ok(Bytes::from(chunk)), state))
        }
        Some(Err(error)) => {
            // Ends the body with an error: hyper aborts the response, so the client sees a
            // broken transfer rather than a complete-looking partial answer.
            state.finished = true;
            Some((Err(error), state))
        }
        None => {
            state.finished = true;
            if state.ndjson {
                return None;
            }
            let end: &'static [u8] = if state.started { b"]" } else { b"[]" };
            Some((Ok(Bytes::from_static(end)), state))
        }
    }
}

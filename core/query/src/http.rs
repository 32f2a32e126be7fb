//! The read API's HTTP endpoints, in LogScale's shape (README "Reading events back").
//!
//! `POST /api/v1/repositories/{repo}/query` (and `/api/v1/dataspaces/{repo}/query`)
//! streams the result: NDJSON with `Accept: application/x-ndjson`, otherwise one JSON
//! array, written as it is read. Query jobs (`…/queryjobs`, [`crate::jobs`]) run the same
//! query in the background for clients that poll. Every request needs a read token
//! (`Authorization: Bearer …`); errors are `text/plain` a person can act on.
//!
//! A failure found before the first result (parse, time range, a damaged or unavailable
//! segment) gets an error status. One found while streaming (a file changed after its
//! check) aborts the response, so the client sees a broken transfer, never a short
//! result that looks complete.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, QueryConfig, ReadTokenConfig};
use crate::exec::{self, QueryError, SegmentSource};
use crate::jobs::Jobs;
use crate::lang::{self, Query};
use crate::time::{self, TimeRange};

/// The read API: where segments come from, who may read what, and the limits.
pub struct QueryService {
    pub(crate) source: Arc<dyn SegmentSource>,
    pub(crate) config: QueryConfig,
    /// blake3 of each read token: a lookup by hash does not compare secrets byte by
    /// byte, and the map holds no token in clear.
    read_tokens: HashMap<[u8; 32], TokenScope>,
    ingest_tokens: HashSet<[u8; 32]>,
    pub(crate) jobs: Mutex<Jobs>,
}

struct TokenScope {
    name: String,
    /// `None`: every repository.
    repositories: Option<HashSet<String>>,
}

fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

impl QueryService {
    pub fn new(config: QueryConfig, read_tokens: &[ReadTokenConfig], source: Arc<dyn SegmentSource>) -> Result<QueryService, ConfigError> {
        config.validate()?;
        let mut tokens = HashMap::new();
        for (index, token) in read_tokens.iter().enumerate() {
            let name = token.name.clone().unwrap_or_else(|| format!("read_tokens[{index}]"));
            if token.token.trim().is_empty() {
                return Err(ConfigError(format!("{name}: token is empty")));
            }
            if token.repositories.is_empty() {
                return Err(ConfigError(format!("{name}: repositories is empty; list the repositories it may read, or [\"*\"] for all")));
            }
            let repositories = if token.repositories.iter().any(|r| r == "*") {
                None
            } else {
                Some(token.repositories.iter().cloned().collect())
            };
            if tokens.insert(token_hash(&token.token), TokenScope { name: name.clone(), repositories }).is_some() {
                return Err(ConfigError(format!("{name}: the same token appears twice in [[read_tokens]]")));
            }
        }
        let jobs = Mutex::new(Jobs::new(&config));
        Ok(QueryService { source, config, read_tokens: tokens, ingest_tokens: HashSet::new(), jobs })
    }

    /// The node's ingest tokens, only to tell a client that used one for reading what is
    /// wrong (they are never accepted for reading). A token both read and ingest stays a
    /// read token.
    pub fn with_ingest_tokens<'a>(mut self, tokens: impl IntoIterator<Item = &'a str>) -> QueryService {
        self.ingest_tokens = tokens.into_iter().map(token_hash).collect();
        self
    }

    /// Whether the request's bearer token may read `repo`; the error response if not.
    pub(crate) fn authorize(&self, headers: &HeaderMap, repo: &str) -> Result<(), Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, "missing Authorization header; send `Authorization: Bearer <read token>` with a token from [[read_tokens]]"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, "the Authorization header is not `Bearer <read token>`"));
        };
        let hash = token_hash(token);
        let Some(scope) = self.read_tokens.get(&hash) else {
            if self.ingest_tokens.contains(&hash) {
                return Err(Refusal::new(StatusCode::FORBIDDEN, "this is an ingest token, which cannot read; use a read token ([[read_tokens]] in the core's config)"));
            }
            return Err(Refusal::new(StatusCode::FORBIDDEN, "unknown read token; use a token from [[read_tokens]] in the core's config"));
        };
        if let Some(repositories) = &scope.repositories
            && !repositories.contains(repo)
        {
            return Err(Refusal::new(StatusCode::FORBIDDEN, format!("read token {:?} may not read repository {repo:?}; add it to that token's repositories", scope.name)));
        }
        Ok(())
    }

    /// Parses a request body into a query and its time range (400 with the reason).
    pub(crate) fn prepare(&self, body: &Bytes) -> Result<Prepared, Refusal> {
        let request: QueryRequest = serde_json::from_slice(body).map_err(|e| {
            Refusal::bad_request(format!("the body is not a query request ({e}); send JSON like {{\"queryString\": \"error | head(10)\", \"start\": \"1h\"}}"))
        })?;
        if request.is_live == Some(true) {
            return Err(Refusal::bad_request("live queries are not supported; send \"isLive\": false (or leave it out) with a start and end"));
        }
        let query_string = request.query_string.unwrap_or_default();
        if query_string.len() > self.config.max_query_bytes {
            return Err(Refusal::bad_request(format!(
                "queryString is {} bytes; at most {} (query.max_query_bytes)",
                query_string.len(),
                self.config.max_query_bytes
            )));
        }
        let query = lang::parse(&query_string, &self.config.limits()).map_err(|e| Refusal::bad_request(format!("query not supported: {e}")))?;
        let range = time::resolve(request.start.as_ref(), request.end.as_ref(), time::now_ms()).map_err(|e| Refusal::bad_request(e.0))?;
        Ok(Prepared { query_string, query, range })
    }
}

/// What LogScale's clients send; fields Weir does not use (`timeZoneOffsetMinutes`,
/// `arguments`, `allowEventSkipping`, ...) are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest {
    query_string: Option<String>,
    start: Option<Value>,
    end: Option<Value>,
    is_live: Option<bool>,
}

pub(crate) struct Prepared {
    pub query_string: String,
    pub query: Query,
    pub range: TimeRange,
}

/// The read API's routes; the core merges them into its HTTP server.
pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/repositories/{repo}/query", post(query))
        .route("/api/v1/dataspaces/{repo}/query", post(query))
        .route("/api/v1/repositories/{repo}/queryjobs", post(crate::jobs::create))
        .route("/api/v1/dataspaces/{repo}/queryjobs", post(crate::jobs::create))
        .route("/api/v1/repositories/{repo}/queryjobs/{id}", get(crate::jobs::poll).delete(crate::jobs::delete))
        .route("/api/v1/dataspaces/{repo}/queryjobs/{id}", get(crate::jobs::poll).delete(crate::jobs::delete))
        .with_state(service)
}

async fn query(State(service): State<Arc<QueryService>>, Path(repo): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = service.authorize(&headers, &repo) {
        return refusal.into_response();
    }
    let prepared = match service.prepare(&body) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
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

pub(crate) fn text(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A request refused before any work: its status and a message a person can act on.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = text(self.status, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) fn query_error(error: &QueryError) -> Response {
    let status = match error {
        QueryError::Step(_) => StatusCode::BAD_REQUEST,
        QueryError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Damaged { .. } | QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %error, "query failed");
    }
    text(status, &error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSegments;

    impl SegmentSource for NoSegments {
        fn segments(&self, _: &str, _: i64, _: i64) -> Vec<weir_global::SegmentInfo> {
            Vec::new()
        }
        fn local_path(&self, _: &weir_global::SegmentInfo) -> futures::future::BoxFuture<'static, Result<std::path::PathBuf, crate::SourceError>> {
            Box::pin(async { Err(crate::SourceError("no segments here".into())) })
        }
    }

    fn token(token: &str, repositories: &[&str]) -> ReadTokenConfig {
        ReadTokenConfig { token: token.into(), repositories: repositories.iter().map(|r| r.to_string()).collect(), name: None }
    }

    #[test]
    fn bad_token_and_limit_settings_are_refused_by_name() {
        let new = |config: QueryConfig, tokens: &[ReadTokenConfig]| QueryService::new(config, tokens, Arc::new(NoSegments)).err().map(|e| e.0);
        assert_eq!(new(QueryConfig::default(), &[token("a", &["web"]), token("b", &["*"])]), None);
        let error = new(QueryConfig::default(), &[token("a", &[])]).unwrap();
        assert!(error.contains("read_tokens[0]: repositories is empty"), "{error}");
        let error = new(QueryConfig::default(), &[token(" ", &["web"])]).unwrap();
        assert!(error.contains("token is empty"), "{error}");
        let error = new(QueryConfig::default(), &[token("a", &["web"]), token("a", &["db"])]).unwrap();
        assert!(error.contains("read_tokens[1]: the same token appears twice"), "{error}");
        let error = new(QueryConfig { max_jobs: 0, ..QueryConfig::default() }, &[]).unwrap();
        assert!(error.contains("query.max_jobs must be at least 1"), "{error}");
    }
}

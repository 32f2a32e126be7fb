//! The read API as a service, apart from its transport: who may read what (read tokens,
//! by hash), turning a request body into a query and its time range, and how a refusal or
//! a failed query is answered. `http` (the streaming endpoint) and `jobs` (query jobs)
//! both use it; it uses neither (query jobs keep their own store beside it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, QueryConfig, ReadTokenConfig};
use crate::exec::{QueryError, SegmentSource};
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
    /// Live searches and live query jobs running now.
    pub(crate) live_running: Arc<std::sync::atomic::AtomicUsize>,
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
        Ok(QueryService { source, config, read_tokens: tokens, ingest_tokens: HashSet::new(), live_running: Default::default() })
    }

    /// The node's ingest tokens, only to tell a client that used one for reading what is
    /// wrong (they are never accepted for reading). A token both read and ingest stays a
    /// read token.
    pub fn with_ingest_tokens<'a>(mut self, tokens: impl IntoIterator<Item = &'a str>) -> QueryService {
        self.ingest_tokens = tokens.into_iter().map(token_hash).collect();
        self
    }

    /// Whether the request carries a read token, whatever repositories it may read (for
    /// what is about the cluster, not a repository: `/api/v1/cluster`); the answer to send
    /// if not.
    pub fn authorize_reader(&self, headers: &HeaderMap) -> Result<(), Response> {
        self.scope(headers).map(|_| ()).map_err(IntoResponse::into_response)
    }

    /// Live searches (`isLive` on `…/query`) and live query jobs running now: each stops
    /// when its client goes away (a job: when it is deleted or not polled for
    /// `query.job_idle_timeout_ms`).
    pub fn live_queries(&self) -> usize {
        self.live_running.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the request's bearer token may read `repo`; the error response if not.
    pub(crate) fn authorize(&self, headers: &HeaderMap, repo: &str) -> Result<(), Refusal> {
        let scope = self.scope(headers)?;
        if let Some(repositories) = &scope.repositories
            && !repositories.contains(repo)
        {
            return Err(Refusal::new(StatusCode::FORBIDDEN, format!("read token {:?} may not read repository {repo:?}; add it to that token's repositories", scope.name)));
        }
        Ok(())
    }

    /// The repositories the request's bearer token may read, sorted: those it names, or
    /// for `["*"]` those the source knows and every read token names.
    pub(crate) fn readable(&self, headers: &HeaderMap) -> Result<Vec<String>, Refusal> {
        let scope = self.scope(headers)?;
        let mut names: Vec<String> = match &scope.repositories {
            Some(repositories) => repositories.iter().cloned().collect(),
            None => {
                let mut all: HashSet<String> = self.source.repositories().into_iter().collect();
                for scope in self.read_tokens.values() {
                    all.extend(scope.repositories.iter().flatten().cloned());
                }
                all.into_iter().collect()
            }
        };
        names.sort();
        Ok(names)
    }

    /// The scope of the request's bearer token, if it is a read token.
    fn scope(&self, headers: &HeaderMap) -> Result<&TokenScope, Refusal> {
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
        Ok(scope)
    }

    /// Parses a request body into a query and its time range (400 with the reason).
    pub(crate) fn prepare(&self, body: &Bytes) -> Result<Prepared, Refusal> {
        let request: QueryRequest = serde_json::from_slice(body).map_err(|e| {
            Refusal::bad_request(format!("the body is not a query request ({e}); send JSON like {{\"queryString\": \"error | head(10)\", \"start\": \"1h\"}}"))
        })?;
        let query_string = request.query_string.unwrap_or_default();
        if query_string.len() > self.config.max_query_bytes {
            return Err(Refusal::bad_request(format!(
                "queryString is {} bytes; at most {} (query.max_query_bytes)",
                query_string.len(),
                self.config.max_query_bytes
            )));
        }
        let is_live = request.is_live == Some(true);
        if is_live {
            live_range_check(request.start.as_ref(), request.end.as_ref())?;
        }
        let offset_minutes = match request.time_zone_offset_minutes {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) if n.as_i64().is_some_and(|m| m.abs() <= 24 * 60) => n.as_i64().expect("checked"),
            Some(other) => {
                return Err(Refusal::bad_request(format!("timeZoneOffsetMinutes is {other}; give whole minutes east of UTC, from -1440 to 1440 (120 for UTC+02:00)")));
            }
        };
        let arguments = arguments(request.arguments)?;
        let parsed =
            lang::parse_with_arguments(&query_string, &self.config.limits(), &arguments).map_err(|e| Refusal::bad_request(format!("query not supported: {e}")))?;
        let mut prepared = Prepared {
            query_string,
            query: parsed.clone(),
            range: TimeRange { start_ms: 0, end_ms: 0 },
            parsed,
            start: request.start,
            end: request.end,
            offset_minutes,
            is_live,
        };
        (prepared.query, prepared.range) = prepared.at(time::now_ms(), self.config.max_groups)?;
        Ok(prepared)
    }
}

/// A live query's window moves with now: its start is relative (or left out), its end now.
fn live_range_check(start: Option<&Value>, end: Option<&Value>) -> Result<(), Refusal> {
    let absolute = |v: &Value| match v {
        Value::Number(_) => true,
        Value::String(text) => !text.trim().is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    if start.is_some_and(absolute) {
        return Err(Refusal::bad_request("a live query's start is relative to now (\"5m\", \"1h\"), not a point in time; leave isLive out for a fixed range"));
    }
    if let Some(end) = end.filter(|v| !v.is_null())
        && !matches!(end, Value::String(text) if text.trim().eq_ignore_ascii_case("now"))
    {
        return Err(Refusal::bad_request("a live query ends now: leave end out (or \"now\"); leave isLive out for a fixed range"));
    }
    Ok(())
}

/// What LogScale's clients send; fields Weir does not use (`allowEventSkipping`, ...)
/// are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest {
    query_string: Option<String>,
    start: Option<Value>,
    end: Option<Value>,
    is_live: Option<bool>,
    /// Minutes east of UTC: where a time chart's day buckets start.
    time_zone_offset_minutes: Option<Value>,
    /// Values of the query's `?name` parameters (LogScale's `QueryInput.arguments`).
    arguments: Option<serde_json::Map<String, Value>>,
}

/// `arguments` as text: LogScale's are strings; a number or boolean is taken as its text.
fn arguments(arguments: Option<serde_json::Map<String, Value>>) -> Result<std::collections::BTreeMap<String, String>, Refusal> {
    let mut out = std::collections::BTreeMap::new();
    for (name, value) in arguments.unwrap_or_default() {
        let text = match value {
            Value::String(text) => text,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(Refusal::bad_request(format!("arguments.{name} is {other}; each argument is a string, as in {{\"arguments\": {{\"{name}\": \"500\"}}}}")));
            }
        };
        out.insert(name, text);
    }
    Ok(out)
}

#[derive(Clone)]
pub(crate) struct Prepared {
    pub query_string: String,
    /// The query for `range` (its time buckets fixed).
    pub query: Query,
    pub range: TimeRange,
    /// As parsed, before any time bucket was fixed: a live query fixes them again as its
    /// window moves.
    parsed: Query,
    start: Option<Value>,
    end: Option<Value>,
    pub offset_minutes: i64,
    pub is_live: bool,
}

impl Prepared {
    /// The query and its range at `now_ms` (a live query's window, a time chart's grid).
    pub(crate) fn at(&self, now_ms: i64, max_groups: usize) -> Result<(Query, TimeRange), Refusal> {
        let range = time::resolve(self.start.as_ref(), self.end.as_ref(), now_ms).map_err(|e| Refusal::bad_request(e.0))?;
        let mut query = self.parsed.clone();
        query.resolve_buckets(range.start_ms, range.end_ms, self.offset_minutes, max_groups).map_err(|e| Refusal::bad_request(format!("query not supported: {e}")))?;
        Ok((query, range))
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
    pub(crate) message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Refusal {
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
            Box::pin(async { Err(crate::SourceError::Unavailable("no segments here".into())) })
        }
    }

    fn token(token: &str, repositories: &[&str]) -> ReadTokenConfig {
        ReadTokenConfig { token: token.into(), repositories: repositories.iter().map(|r| r.to_string()).collect(), name: None }
    }

    #[test]
    fn arguments_fill_the_query_parameters() {
        let service = QueryService::new(QueryConfig::default(), &[], Arc::new(NoSegments)).unwrap();
        let prepare = |body: serde_json::Value| service.prepare(&Bytes::from(body.to_string())).map(|p| format!("{:?}", p.query.steps)).map_err(|r| r.message);
        let steps = prepare(serde_json::json!({"queryString": "status=?code | x := ?{n=1}", "arguments": {"code": "500"}})).unwrap();
        assert!(steps.contains("Exact(\"500\")") && steps.contains("Str(\"1\")"), "{steps}");
        let steps = prepare(serde_json::json!({"queryString": "x := ?{n=1}", "arguments": {"n": 7}})).unwrap();
        assert!(steps.contains("Str(\"7\")"), "{steps}");
        let error = prepare(serde_json::json!({"queryString": "status=?code"})).unwrap_err();
        assert!(error.contains("query parameter ?code has no value") && error.contains("\"arguments\""), "{error}");
        let error = prepare(serde_json::json!({"queryString": "status=?code", "arguments": {"code": [1]}})).unwrap_err();
        assert!(error.contains("arguments.code is [1]; each argument is a string"), "{error}");
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

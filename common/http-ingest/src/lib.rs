//! The HTTP ingest API shared by edge and core: LogScale-compatible
//! (`/api/v1/ingest/humio-structured`, `humio-unstructured`, `raw`) and Splunk
//! HEC-compatible (`/services/collector/event`, `/services/collector/raw`), OTLP/HTTP logs
//! (`/v1/logs`, [`otlp`]) and the Elasticsearch bulk API (`/_bulk`, `/{index}/_bulk`,
//! [`bulk`]), with ingest tokens, body limits, `/health` and `/ready`.
//!
//! This crate authenticates and decodes; what "accepted" means belongs to the
//! [`IngestSink`] behind it (the core publishes to Kafka, the edge spools to disk). It
//! answers success only when the sink returned `Ok`, and every error body says what to do.
//!
//! Architecture invariant: it never publishes or stores anything itself, and a request
//! that fails to decode reaches the sink not at all.

pub mod budget;
pub mod bulk;
pub mod formats;
pub mod otlp;
pub mod prometheus;
mod response;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::{Json, Router};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::middleware::map_response;
use futures::future::BoxFuture;
use serde::Deserialize;
use weir_proto::EventBatch;

pub use budget::{BudgetShare, MemoryBudget};
pub use formats::FormatError;
use formats::{HecRawParams, Target};
use response::{ELASTIC_PRODUCT, Flavor, success};

/// Header with which a client asks an edge to answer only after a core's Kafka-backed ack.
pub const ACK_HEADER: &str = "x-weir-ack";

/// When the sink may answer: after local durability (edge spool) or after Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// The edge answers once the batch is fsync'd in its spool.
    Spool,
    /// The answer waits for a core's ack, which follows Kafka's.
    Core,
}

/// A decoded, authenticated request.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub batches: Vec<EventBatch>,
    pub n_events: usize,
    /// The client's `x-weir-ack` choice, if it made one.
    pub ack_mode: Option<AckMode>,
}

/// Why a sink did not accept a request: `weir_proto`'s one refusal vocabulary, which
/// decides the HTTP status, HEC code and Retry-After of the answer.
pub use weir_proto::{Refusal, RefusalKind};

pub trait IngestSink: Send + Sync + 'static {
    /// Makes the request's events durable, or says why not. Must not answer `Ok` before
    /// they are.
    fn ingest(&self, request: IngestRequest) -> BoxFuture<'static, Result<(), Refusal>>;
    /// `ingest` for a caller that keeps the request to try it again (the edge's syslog
    /// input, while the spool pushes back). A sink that only reads the request overrides
    /// it to spare that caller a copy of every event.
    fn ingest_shared(&self, request: Arc<IngestRequest>) -> BoxFuture<'static, Result<(), Refusal>> {
        self.ingest(IngestRequest::clone(&request))
    }
    /// `Err(reason)` when the node should not receive traffic.
    fn ready(&self) -> Result<(), String>;
    /// Sets the gauges that describe the sink's state, just before `/metrics` renders.
    fn observe(&self) {}
}

/// One ingest token from the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub repository: String,
    /// Parser for this token's events when the request names none.
    #[serde(default)]
    pub parser: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestConfig {
    /// Largest accepted request body; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Ingest requests handled at once; more get 429 with Retry-After. Each holds up to
    /// `max_body_bytes` (after gzip inflation) in memory, so this bounds the node's memory
    /// under a burst instead of letting it swap or be killed.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Largest single event (raw text plus attributes); a request holding a larger one
    /// gets 413 naming the event, and none of its events is accepted. Kept below the
    /// core's `kafka.max_record_bytes` so that Kafka never refuses a record an edge
    /// already acknowledged.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// A request body not received completely within this time gets 408: a slow or
    /// stalled client cannot hold a request slot (and its memory) forever.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}

fn default_max_event_bytes() -> usize {
    512 * 1024
}

fn default_body_timeout_ms() -> u64 {
    30_000
}

fn default_max_concurrent_requests() -> usize {
    128
}

impl Default for HttpIngestConfig {
    fn default() -> Self {
        HttpIngestConfig {
            max_body_bytes: default_max_body_bytes(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_event_bytes: default_max_event_bytes(),
            body_timeout_ms: default_body_timeout_ms(),
            tokens: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct ApiState {
    sink: Arc<dyn IngestSink>,
    tokens: Arc<HashMap<String, TokenConfig>>,
    max_body_bytes: usize,
    max_event_bytes: usize,
    body_timeout: Duration,
    in_progress: Arc<tokio::sync::Semaphore>,
    budget: MemoryBudget,
}

/// The ingest API over `sink`. Request bodies take their bytes from `budget`, which
/// the node may share with its other inputs.
pub fn router(config: &HttpIngestConfig, sink: Arc<dyn IngestSink>, budget: MemoryBudget) -> Router {
    let tokens = config.tokens.iter().map(|t| (t.token.clone(), t.clone())).collect();
    // Installs the recorder before anything is counted (counts before it are lost).
    prometheus::handle();
    let state = ApiState {
        sink,
        tokens: Arc::new(tokens),
        max_body_bytes: config.max_body_bytes,
        max_event_bytes: config.max_event_bytes,
        body_timeout: Duration::from_millis(config.body_timeout_ms),
        in_progress: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests.max(1))),
        budget,
    };
    // Elasticsearch clients refuse any answer without the product header, including a
    // 404 or 405 the router gives itself.
    let elastic = Router::new()
        .route("/", get(elastic_root))
        .route("/_bulk", post(elastic_bulk).put(elastic_bulk))
        .route("/{index}/_bulk", post(elastic_bulk_index).put(elastic_bulk_index))
        .layer(map_response(|mut response: Response| async move {
            response.headers_mut().insert(ELASTIC_PRODUCT.0, header::HeaderValue::from_static(ELASTIC_PRODUCT.1));
            response
        }));
    Router::new()
        .route("/v1/logs", post(otlp_logs))
        .route("/api/v1/ingest/humio-structured", post(humio_structured))
        .route("/api/v1/ingest/humio-unstructured", post(humio_unstructured))
        .route("/api/v1/ingest/raw", post(raw))
        .route("/services/collector", post(hec_event))
        .route("/services/collector/event", post(hec_event))
        .route("/services/collector/event/1.0", post(hec_event))
        .route("/services/collector/raw", post(hec_raw))
        .route("/services/collector/raw/1.0", post(hec_raw))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .merge(elastic)
        .with_state(state)
}

async fn health() -> Response {
    success(Flavor::LogScale)
}

async fn render_metrics(State(state): State<ApiState>) -> Response {
    state.sink.observe();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus::handle().render()).into_response()
}

async fn ready(State(state): State<ApiState>) -> Response {
    match state.sink.ready() {
        Ok(()) => success(Flavor::LogScale),
        Err(reason) => response::refusal(
            Flavor::LogScale,
            &Refusal::unavailable(format!("not ready: {reason}"), Duration::from_secs(1)).with_hint("wait and retry; check this node's log for the cause"),
        ),
    }
}

async fn humio_structured(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "humio-structured", Flavor::LogScale, headers, body, |body, target| formats::humio_structured(body, target)).await
}

async fn humio_unstructured(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "humio-unstructured", Flavor::LogScale, headers, body, |body, target| formats::humio_unstructured(body, target)).await
}

async fn raw(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "raw", Flavor::LogScale, headers, body, |body, target| formats::raw_body(body, target)).await
}

async fn hec_event(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, "hec-event", Flavor::Hec, headers, body, |body, target| formats::hec_events(body, target)).await
}

async fn hec_raw(
    State(state): State<ApiState>,
    Query(params): Query<HecRawParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, "hec-raw", Flavor::Hec, headers, body, move |body, target| formats::hec_raw(body, &params, target)).await
}

/// `POST /v1/logs`: OTLP/HTTP logs, protobuf or JSON as `Content-Type` says.
async fn otlp_logs(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    let encoding = match otlp::Encoding::of(&headers) {
        Ok(encoding) => encoding,
        Err(content_type) => {
            let refusal = Refusal::new(RefusalKind::UnsupportedMedia, format!("Content-Type {content_type:?} is not an OTLP encoding"))
                .with_hint("send application/x-protobuf or application/json");
            let response = response::refusal(Flavor::Otlp(otlp::Encoding::Json), &refusal);
            count("otlp-logs", &response);
            return response;
        }
    };
    handle(state, "otlp-logs", Flavor::Otlp(encoding), headers, body, move |body, target| otlp::decode(body, encoding, target)).await
}

/// `GET /` and `HEAD /`: what Elasticsearch answers there. Its clients and shippers read
/// the version before they send anything (and refuse a server without one).
async fn elastic_root() -> Response {
    Json(serde_json::json!({
        "name": "weir",
        "cluster_name": "weir",
        "cluster_uuid": "weir",
        "version": {
            "number": ELASTIC_VERSION,
            "build_flavor": "default",
            "build_type": "weir",
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    }))
    .into_response()
}

/// The Elasticsearch version Weir's bulk API answers as: the 8.x clients accept it.
const ELASTIC_VERSION: &str = "8.17.0";

async fn elastic_bulk(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    bulk_request(state, None, headers, body).await
}

async fn elastic_bulk_index(State(state): State<ApiState>, Path(index): Path<String>, headers: HeaderMap, body: Body) -> Response {
    bulk_request(state, Some(index), headers, body).await
}

/// A bulk request: the items are answered one by one; the good ones go to the sink
/// together, and only the sink's refusal refuses the whole request.
async fn bulk_request(state: ApiState, index: Option<String>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let response = handle_request(
        state,
        "elastic-bulk",
        Flavor::Elastic,
        headers,
        body,
        move |body, target| bulk::decode(body, index.as_deref(), target).map(|bulk| (bulk.batches, bulk.items)),
        move |items| Json(bulk::answer(&items, started.elapsed().as_millis() as u64)).into_response(),
    )
    .await;
    count("elastic-bulk", &response);
    response
}

fn count(endpoint: &'static str, response: &Response) {
    metrics::counter!("weir_http_requests_total", "endpoint" => endpoint, "status" => response.status().as_str().to_owned())
        .increment(1);
}

/// [`handle_request`] for the endpoints whose success answer says no more than "ok",
/// counted per endpoint and status.
async fn handle(
    state: ApiState,
    endpoint: &'static str,
    flavor: Flavor,
    headers: HeaderMap,
    body: Body,
    decode: impl FnOnce(&[u8], &Target) -> Result<Vec<EventBatch>, FormatError>,
) -> Response {
    let decode = |body: &[u8], target: &Target| decode(body, target).map(|batches| (batches, ()));
    let response = handle_request(state, endpoint, flavor, headers, body, decode, |()| success(flavor)).await;
    count(endpoint, &response);
    response
}

/// Authenticates, reads the bounded body, decodes it completely, then hands it to the
/// sink; `answer` makes the success response from what `decode` returned beside the
/// batches, and any refusal on the way is answered in the endpoint's flavor.
async fn handle_request<T>(
    state: ApiState,
    endpoint: &'static str,
    flavor: Flavor,
    headers: HeaderMap,
    body: Body,
    decode: impl FnOnce(&[u8], &Target) -> Result<(Vec<EventBatch>, T), FormatError>,
    answer: impl FnOnce(T) -> Response,
) -> Response {
    match ingest(&state, endpoint, flavor, &headers, body, decode).await {
        Ok(answer_data) => answer(answer_data),
        Err(refusal) => response::refusal(flavor, &refusal),
    }
}

/// The pipeline: admit → read → decode → `sink.ingest()`. What it holds (the request's
/// place and its memory budget) is held until the sink answered.
async fn ingest<T>(
    state: &ApiState,
    endpoint: &'static str,
    flavor: Flavor,
    headers: &HeaderMap,
    body: Body,
    decode: impl FnOnce(&[u8], &Target) -> Result<(Vec<EventBatch>, T), FormatError>,
) -> Result<T, Refusal> {
    let token = authenticate(state, headers)?;
    let mut admitted = admit(state, headers)?;
    let body = read_body(state, headers, body, &mut admitted.share).await?;
    reserve_decoding(state, flavor, &body, &mut admitted.share)?;
    let target = Target {
        repository: &token.repository,
        parser: token.parser.as_deref(),
        ingest_ts_ms: weir_proto::event::now_ms(),
    };
    let (batches, answer_data) = decode(&body, &target)?;
    if let Some((index, size)) = oversized_event(&batches, state.max_event_bytes) {
        return Err(Refusal::too_large(format!("event {index} of the request is {size} bytes, over the limit of {} bytes per event", state.max_event_bytes))
            .with_hint("nothing of this request was ingested: shorten or split that event and resend the request")
            .with_invalid_event(index));
    }
    let n_events = batches.iter().map(|b| b.events.len()).sum();
    if n_events > 0 {
        state.sink.ingest(IngestRequest { batches, n_events, ack_mode: admitted.ack_mode }).await?;
        metrics::counter!("weir_http_events_total", "endpoint" => endpoint).increment(n_events as u64);
    }
    Ok(answer_data)
}

/// A request let in: its place among the requests in progress and its share of the
/// memory budget, both held until it is answered.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    share: BudgetShare,
    ack_mode: Option<AckMode>,
}

/// Lets a request in, or refuses it before its body is read: too many in progress, a bad
/// `x-weir-ack`, a declared length over the limit, no budget left.
fn admit(state: &ApiState, headers: &HeaderMap) -> Result<Admitted, Refusal> {
    let Ok(permit) = state.in_progress.clone().try_acquire_owned() else {
        return Err(Refusal::overloaded("too many ingest requests in progress on this node", Duration::from_secs(1))
            .with_hint("retry after Retry-After seconds, send fewer requests at once, or spread them over more nodes"));
    };
    let ack_mode = match headers.get(ACK_HEADER).map(|v| v.to_str().unwrap_or("")) {
        None => None,
        Some("spool") => Some(AckMode::Spool),
        Some("core") => Some(AckMode::Core),
        Some(other) => {
            return Err(Refusal::bad_request(format!("invalid {ACK_HEADER} header {other:?}"))
                .with_hint("use `spool` (ack once stored on the edge) or `core` (ack once in Kafka)"));
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return Err(body_too_large(state));
    }
    // Taken before the body is read: the body, and the events decoded from it.
    let Some(share) = state.budget.try_take(DECODED_FACTOR * declared.unwrap_or(state.max_body_bytes)) else {
        return Err(over_budget(state));
    };
    Ok(Admitted { _permit: permit, share, ack_mode })
}

fn body_too_large(state: &ApiState) -> Refusal {
    Refusal::too_large(format!("request body exceeds the limit of {} bytes", state.max_body_bytes)).with_hint("split the events over several smaller requests")
}

fn over_budget(state: &ApiState) -> Refusal {
    metrics::counter!("weir_memory_budget_refusals_total", "input" => "http").increment(1);
    Refusal::overloaded(format!("this node holds its limit of {} bytes of requests in progress", state.budget.total_bytes()), Duration::from_secs(1))
        .with_hint("nothing of this request was ingested: retry after Retry-After seconds, send smaller requests, or spread them over more nodes")
}

/// Reads the body within the time and size limits and inflates it if it is gzip; `share`
/// follows what it holds.
async fn read_body(state: &ApiState, headers: &HeaderMap, body: Body, share: &mut BudgetShare) -> Result<axum::body::Bytes, Refusal> {
    let read = tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, state.max_body_bytes)).await;
    let Ok(read) = read else {
        return Err(Refusal::new(RefusalKind::Timeout, format!("the request body did not arrive within {} ms", state.body_timeout.as_millis()))
            .with_hint("nothing of this request was ingested: send the body at once, or smaller requests"));
    };
    let body = read.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            body_too_large(state)
        } else {
            Refusal::bad_request(format!("could not read the request body: {inner}")).with_hint("resend the request")
        }
    })?;
    share.shrink_to(DECODED_FACTOR * body.len());
    match is_gzip(headers) {
        Ok(false) => Ok(body),
        Ok(true) => match gunzip(body, state.max_body_bytes, &state.budget).await {
            Ok((body, inflated_share)) => {
                // The compressed body's share stays too: small beside the inflated one.
                share.merge(inflated_share);
                Ok(body)
            }
            Err(Gunzip::OverBudget) => Err(over_budget(state)),
            Err(Gunzip::TooLarge) => Err(Refusal::too_large(format!("request body decompresses to more than the limit of {} bytes", state.max_body_bytes))
                .with_hint("split the events over several smaller requests")),
            Err(Gunzip::Invalid(reason)) => Err(Refusal::bad_request(format!("request body is not valid gzip: {reason}"))
                .with_hint("send the body gzip-compressed as Content-Encoding says, or drop the header")),
        },
        Err(encoding) => Err(Refusal::new(RefusalKind::UnsupportedMedia, format!("Content-Encoding {encoding:?} is not supported"))
            .with_hint("send the body uncompressed or with Content-Encoding: gzip")),
    }
}

/// Takes from the budget what decoding holds beyond the body's share, where a format can
/// decode to many times its size (OTLP protobuf: empty log records are 2 bytes each on
/// the wire).
fn reserve_decoding(state: &ApiState, flavor: Flavor, body: &[u8], share: &mut BudgetShare) -> Result<(), Refusal> {
    let overhead = match flavor {
        Flavor::Otlp(encoding) => otlp::decoded_overhead(body, encoding),
        _ => 0,
    };
    if overhead == 0 {
        return Ok(());
    }
    if overhead > state.budget.total_bytes() {
        return Err(Refusal::too_large(format!(
            "the request decodes to about {overhead} bytes of log records, more than this node's whole budget of {} bytes for requests in progress",
            state.budget.total_bytes()
        ))
        .with_hint("nothing of this request was ingested: send fewer log records per request"));
    }
    let more = state.budget.try_take(overhead).ok_or_else(|| over_budget(state))?;
    share.merge(more);
    Ok(())
}

/// The first event (0-based, counted across the request's batches) larger than
/// `max_bytes`, with its size: raw text plus encoded attributes.
fn oversized_event(batches: &[EventBatch], max_bytes: usize) -> Option<(usize, usize)> {
    batches.iter().flat_map(|b| &b.events).enumerate().find_map(|(index, event)| {
        // Most events carry no attributes; the raw text alone already decides most others.
        if event.raw.len() > max_bytes {
            return Some((index, event.raw.len()));
        }
        // The exact size (a serialisation) only when the cheap upper bound is over.
        if event.raw.len() + weir_proto::event::encoded_len_at_most(event.attributes.iter()) <= max_bytes {
            return None;
        }
        let size = event.raw.len() + weir_proto::event::encoded_len(&event.attributes);
        (size > max_bytes).then_some((index, size))
    })
}

fn authenticate<'a>(state: &'a ApiState, headers: &HeaderMap) -> Result<&'a TokenConfig, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(Refusal::new(RefusalKind::Unauthenticated, "Token is required: no Authorization header")
            .with_hint("send `Authorization: Bearer <ingest token>` (or `Splunk <token>` for HEC)"));
    };
    let Some(token) = token_of(value, |token| state.tokens.contains_key(token)) else {
        return Err(Refusal::new(
            RefusalKind::Unauthenticated,
            "Token is required: the Authorization header is not `Bearer <token>`, `Splunk <token>`, `ApiKey <token>` or Basic with the token as password",
        )
        .with_hint("send `Authorization: Bearer <ingest token>`")
        .with_hec_code(3));
    };
    state.tokens.get(&token).ok_or_else(|| {
        Refusal::forbidden("Invalid token: this ingest token is not configured on this node").with_hint("check the token against the `tokens` list in the node's config")
    })
}

/// The ingest token in an `Authorization` header: `Bearer`/`Splunk <token>` (LogScale, HEC),
/// `Basic base64(any user:token)` and `ApiKey <token>` (Elasticsearch shippers). An
/// Elasticsearch API key is `base64(id:key)`: when the value is not a known token itself
/// but decodes to that form, its key part is the token, so shippers that only take an
/// id and a key work too.
fn token_of(value: &str, known: impl Fn(&str) -> bool) -> Option<String> {
    use base64::Engine;
    let decode = |encoded: &str| {
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        text.split_once(':').map(|(_, secret)| secret.to_owned())
    };
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "splunk" => Some(rest.to_owned()),
        "basic" => decode(rest),
        "apikey" if known(rest) => Some(rest.to_owned()),
        "apikey" => decode(rest).or_else(|| Some(rest.to_owned())),
        _ => None,
    }
}

/// Whether the body is gzip (shippers such as Splunk's HEC clients, Fluent Bit and Vector
/// commonly compress); `Err(encoding)` for an encoding this node cannot read.
fn is_gzip(headers: &HeaderMap) -> Result<bool, String> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else { return Ok(false) };
    let value = value.to_str().unwrap_or("(not text)").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        _ => Err(value),
    }
}

/// Budget a request takes per body byte: the body, and the events decoded from it (which
/// copy its text).
pub(crate) const DECODED_FACTOR: usize = 2;

enum Gunzip {
    TooLarge,
    OverBudget,
    Invalid(String),
}

/// Inflates a gzip body, refusing more than `max_bytes` of output (the limit applies to
/// what the node has to hold, so a small gzip bomb cannot exhaust memory). The inflated
/// size is unknown until the end, so the worst case is taken from `budget` first and
/// the unused rest given back after. CPU work: off the runtime's I/O threads.
async fn gunzip(body: bytes::Bytes, max_bytes: usize, budget: &MemoryBudget) -> Result<(bytes::Bytes, BudgetShare), Gunzip> {
    let mut share = budget.try_take(DECODED_FACTOR * max_bytes).ok_or(Gunzip::OverBudget)?;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut out = Vec::with_capacity((body.len() * 4).min(max_bytes));
        let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(max_bytes as u64 + 1);
        decoder.read_to_end(&mut out).map_err(|e| Gunzip::Invalid(e.to_string()))?;
        if out.len() > max_bytes {
            return Err(Gunzip::TooLarge);
        }
        Ok(bytes::Bytes::from(out))
    })
    .await
    .map_err(|e| Gunzip::Invalid(format!("decompression task failed: {e}")))??;
    share.shrink_to(DECODED_FACTOR * out.len());
    Ok((out, share))
}

#[cfg(test)]
mod tests {
    //! The router's mapping of sink outcomes to HTTP, with a scripted sink (the real sinks
    //! are tested against Kafka and the spool in `tests/`).

    use std::sync::Mutex;

    use axum::body::to_bytes;
    use axum::http::Request;
    use futures::FutureExt;
    use tower::ServiceExt;

    use super::*;
    use axum::http::StatusCode;

    struct ScriptedSink {
        outcome: Mutex<Option<Refusal>>,
        received: Mutex<Vec<IngestRequest>>,
    }

    impl IngestSink for ScriptedSink {
        fn ingest(&self, request: IngestRequest) -> BoxFuture<'static, Result<(), Refusal>> {
            self.received.lock().unwrap().push(request);
            let outcome = self.outcome.lock().unwrap().take();
            async move { outcome.map_or(Ok(()), Err) }.boxed()
        }
        fn ready(&self) -> Result<(), String> {
            Err("scripted".into())
        }
    }

    async fn call(outcome: Option<Refusal>, path: &str, ack: Option<&str>) -> (StatusCode, HeaderMap, serde_json::Value, usize) {
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(outcome), received: Mutex::new(Vec::new()) });
        let config = HttpIngestConfig {
            max_body_bytes: 1024,
            max_concurrent_requests: 8,
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: Some("p".into()) }],
            ..HttpIngestConfig::default()
        };
        let app = router(&config, sink.clone(), MemoryBudget::new(1 << 30));
        let mut request = Request::post(path).header("authorization", "Bearer t");
        if let Some(ack) = ack {
            request = request.header(ACK_HEADER, ack);
        }
        let response = app.oneshot(request.body(Body::from("line one\nline two")).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let received = sink.received.lock().unwrap().iter().map(|r| r.n_events).sum();
        (status, headers, serde_json::from_slice(&body).unwrap_or_default(), received)
    }

    #[tokio::test]
    async fn sink_outcomes_map_to_statuses_with_retry_after() {
        let retry_after = Duration::from_secs(3);
        let cases = [
            (None, StatusCode::OK, None),
            (Some(Refusal::unavailable("kafka down", retry_after)), StatusCode::SERVICE_UNAVAILABLE, Some("3")),
            (Some(Refusal::overloaded("spool full", retry_after)), StatusCode::TOO_MANY_REQUESTS, Some("3")),
            (Some(Refusal::too_large("too big")), StatusCode::PAYLOAD_TOO_LARGE, None),
            (Some(Refusal::internal("bug")), StatusCode::INTERNAL_SERVER_ERROR, None),
        ];
        for (outcome, status, retry) in cases {
            let (got, headers, body, received) = call(outcome, "/services/collector/raw", None).await;
            assert_eq!(got, status, "{body}");
            assert_eq!(headers.get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), retry);
            assert_eq!(received, 2, "both lines reach the sink");
            if status != StatusCode::OK {
                assert!(body["hint"].as_str().is_some_and(|h| h.contains("acknowledged")), "{body}");
            }
        }
    }

    #[tokio::test]
    async fn ack_header_is_passed_on_and_validated() {
        let (status, _, _, received) = call(None, "/api/v1/ingest/raw", Some("core")).await;
        assert_eq!((status, received), (StatusCode::OK, 1));
        let (status, _, body, received) = call(None, "/api/v1/ingest/raw", Some("later")).await;
        assert_eq!((status, received), (StatusCode::BAD_REQUEST, 0), "{body}");
    }

    async fn call_encoded(encoding: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value, Vec<String>) {
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(None), received: Mutex::new(Vec::new()) });
        let config = HttpIngestConfig {
            max_body_bytes: 1024,
            max_concurrent_requests: 8,
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: None }],
            ..HttpIngestConfig::default()
        };
        let request = Request::post("/services/collector/raw")
            .header("authorization", "Splunk t")
            .header(header::CONTENT_ENCODING, encoding)
            .body(Body::from(body))
            .unwrap();
        let response = router(&config, sink.clone(), MemoryBudget::new(1 << 30)).oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let raws = sink.received.lock().unwrap().iter().flat_map(|r| &r.batches).flat_map(|b| &b.events).map(|e| e.raw.clone()).collect();
        (status, serde_json::from_slice(&body).unwrap_or_default(), raws)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_bodies_are_inflated_within_the_limit() {
        let (status, body, raws) = call_encoded("gzip", gzip(b"line one\nline two")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(raws, ["line one", "line two"]);

        // 1 KiB limit: 100 KiB of zeros compresses to ~100 bytes and must still be refused.
        let bomb = gzip(&vec![b'a'; 100 * 1024]);
        assert!(bomb.len() < 1024);
        let (status, body, raws) = call_encoded("gzip", bomb).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(body["text"].as_str().is_some_and(|t| t.contains("decompresses")), "{body}");
        assert!(raws.is_empty());

        let (status, body, raws) = call_encoded("gzip", b"plain text, not gzip".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["text"].as_str().is_some_and(|t| t.contains("not valid gzip")), "{body}");
        assert!(raws.is_empty());

        let (status, body, _) = call_encoded("br", b"x".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert!(body.to_string().contains("gzip"), "the hint names what works: {body}");
    }

    /// Holds every request until the gate opens; counts the requests inside.
    struct GateSink(Arc<tokio::sync::Semaphore>, Arc<std::sync::atomic::AtomicUsize>);

    impl IngestSink for GateSink {
        fn ingest(&self, _request: IngestRequest) -> BoxFuture<'static, Result<(), Refusal>> {
            let (gate, inside) = (self.0.clone(), self.1.clone());
            inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let _ = gate.acquire().await;
                Ok(())
            }
            .boxed()
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_concurrency_limit_get_429_then_pass_again() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let config = HttpIngestConfig {
            max_concurrent_requests: 2,
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: None }],
            ..HttpIngestConfig::default()
        };
        let app = router(&config, Arc::new(GateSink(gate.clone(), inside.clone())), MemoryBudget::new(1 << 30));
        let send = |app: Router| async move {
            let request = Request::post("/api/v1/ingest/raw").header("authorization", "Bearer t").body(Body::from("x")).unwrap();
            app.oneshot(request).await.unwrap()
        };
        let held: Vec<_> = (0..2).map(|_| tokio::spawn(send(app.clone()))).collect();
        tokio::time::timeout(Duration::from_secs(5), async {
            while inside.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both held requests reach the sink");
        // Without the limit the third request would wait in the sink: bounded, so it fails.
        let refused = tokio::time::timeout(Duration::from_secs(5), send(app.clone()))
            .await
            .ok()
            .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS);
        let refused = refused.expect("a third request while two are held gets 429");
        assert_eq!(refused.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let body = to_bytes(refused.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("in progress"), "{}", String::from_utf8_lossy(&body));

        gate.add_permits(100);
        for request in held {
            assert_eq!(request.await.unwrap().status(), StatusCode::OK);
        }
        assert_eq!(send(app.clone()).await.status(), StatusCode::OK, "permits come back");
    }

    /// A protobuf body of empty log records (2 bytes each on the wire) is budgeted for what
    /// it decodes to: 413 when that is more than the whole budget, 429 when the budget is
    /// busy, accepted when it fits; nothing reaches the sink unless accepted.
    #[tokio::test]
    async fn otlp_records_are_budgeted_before_they_are_decoded() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use prost::Message;
        let body = |records: usize| {
            let scope = ScopeLogs { log_records: vec![LogRecord::default(); records], ..Default::default() };
            ExportLogsServiceRequest { resource_logs: vec![ResourceLogs { scope_logs: vec![scope], ..Default::default() }] }.encode_to_vec()
        };
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(None), received: Mutex::new(Vec::new()) });
        let config = HttpIngestConfig {
            max_body_bytes: 1 << 20,
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: None }],
            ..HttpIngestConfig::default()
        };
        let post = |body: Vec<u8>| {
            Request::post("/v1/logs")
                .header("authorization", "Bearer t")
                .header("content-type", "application/x-protobuf")
                .body(Body::from(body))
                .unwrap()
        };
        // 100 000 records: about 200 KB on the wire, tens of MB decoded; the budget is 8 MiB.
        let budget = MemoryBudget::new(8 << 20);
        let response = router(&config, sink.clone(), budget.clone()).oneshot(post(body(100_000))).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let answer = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).contains("fewer log records"), "{answer:?}");
        assert!(sink.received.lock().unwrap().is_empty());
        assert_eq!(budget.available_bytes(), budget.total_bytes(), "the refused request gave its share back");

        // 1 000 records fit, unless another request holds the budget.
        let held = budget.try_take(budget.total_bytes() - (64 << 10)).unwrap();
        let response = router(&config, sink.clone(), budget.clone()).oneshot(post(body(1_000))).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(sink.received.lock().unwrap().is_empty());
        drop(held);
        let response = router(&config, sink.clone(), budget).oneshot(post(body(1_000))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(sink.received.lock().unwrap().iter().map(|r| r.n_events).sum::<usize>(), 1_000);
    }

    #[tokio::test]
    async fn an_oversized_event_refuses_the_whole_request_naming_the_event() {
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(None), received: Mutex::new(Vec::new()) });
        let config = HttpIngestConfig {
            max_event_bytes: 16,
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: None }],
            ..HttpIngestConfig::default()
        };
        let body = format!("short\n{}\nshort again", "x".repeat(17));
        let request = Request::post("/services/collector/raw").header("authorization", "Splunk t").body(Body::from(body)).unwrap();
        let response = router(&config, sink.clone(), MemoryBudget::new(1 << 30)).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: serde_json::Value = serde_json::from_slice(&to_bytes(response.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!(body["invalid-event-number"], 1, "{body}");
        assert!(body["text"].as_str().is_some_and(|t| t.contains("event 1") && t.contains("17 bytes")), "{body}");
        assert!(sink.received.lock().unwrap().is_empty(), "all or nothing: no event of the request reaches the sink");

        // Exactly at the limit passes; attributes count towards it.
        let ok = Request::post("/services/collector/raw").header("authorization", "Splunk t").body(Body::from("x".repeat(16))).unwrap();
        assert_eq!(router(&config, sink.clone(), MemoryBudget::new(1 << 30)).oneshot(ok).await.unwrap().status(), StatusCode::OK);
        let with_fields = r#"{"event":"abc","fields":{"k":"a long attribute value"}}"#;
        let request = Request::post("/services/collector/event").header("authorization", "Splunk t").body(Body::from(with_fields)).unwrap();
        assert_eq!(router(&config, sink, MemoryBudget::new(1 << 30)).oneshot(request).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_body_that_stalls_gets_408() {
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(None), received: Mutex::new(Vec::new()) });
        let config = HttpIngestConfig {
            body_timeout_ms: 200,
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: None }],
            ..HttpIngestConfig::default()
        };
        // A body stream that yields one chunk and then never ends.
        use futures::StreamExt;
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"partial"))]).chain(futures::stream::pending());
        let request = Request::post("/api/v1/ingest/raw").header("authorization", "Bearer t").body(Body::from_stream(stream)).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), router(&config, sink.clone(), MemoryBudget::new(1 << 30)).oneshot(request))
            .await
            .expect("answered within the body timeout, not hung")
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(sink.received.lock().unwrap().is_empty());
    }

    async fn send(outcome: Option<Refusal>, request: Request<Body>) -> (StatusCode, HeaderMap, bytes::Bytes, usize) {
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(outcome), received: Mutex::new(Vec::new()) });
        let config = HttpIngestConfig {
            tokens: vec![TokenConfig { token: "t".into(), repository: "r".into(), parser: None }],
            ..HttpIngestConfig::default()
        };
        let response = router(&config, sink.clone(), MemoryBudget::new(1 << 30)).oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let received = sink.received.lock().unwrap().iter().map(|r| r.n_events).sum();
        (status, headers, body, received)
    }

    const OTLP_JSON: &str = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hello"}}]}]}]}"#;

    #[tokio::test]
    async fn otlp_answers_in_the_request_encoding_with_retry_after_when_full() {
        let post = |content_type: &str, body: &'static [u8]| {
            Request::post("/v1/logs").header("authorization", "Bearer t").header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()
        };
        let (status, headers, body, received) = send(None, post("application/json", OTLP_JSON.as_bytes())).await;
        assert_eq!((status, &body[..], received), (StatusCode::OK, &b"{}"[..], 1));
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");

        let full = Refusal::overloaded("spool full", Duration::from_secs(2));
        let (status, headers, body, _) = send(Some(full), post("application/x-protobuf", b"")).await;
        // An empty protobuf request holds no record: nothing reaches the sink, so 200.
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(headers[header::CONTENT_TYPE], "application/x-protobuf");

        let full = Refusal::overloaded("spool full", Duration::from_secs(2));
        let (status, headers, body, _) = send(Some(full), post("application/json", OTLP_JSON.as_bytes())).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "2");
        let status_body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status_body["code"], 8, "RESOURCE_EXHAUSTED: {status_body}");
        let down = Refusal::unavailable("kafka down", Duration::from_secs(1));
        let (status, headers, _, _) = send(Some(down), post("application/json", OTLP_JSON.as_bytes())).await;
        assert_eq!((status, headers.get(header::RETRY_AFTER).is_some()), (StatusCode::SERVICE_UNAVAILABLE, true));

        let (status, _, body, received) = send(None, post("text/plain", b"hello")).await;
        assert_eq!((status, received), (StatusCode::UNSUPPORTED_MEDIA_TYPE, 0));
        assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));
    }

    #[tokio::test]
    async fn elastic_routes_answer_with_the_product_header_and_take_basic_and_api_key() {
        use base64::Engine;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let bulk = "{\"index\":{}}\n{\"a\":1}\n";
        let post = |path: &str, auth: String| Request::post(path).header("authorization", auth).body(Body::from(bulk)).unwrap();
        for auth in [format!("Basic {}", encode("elastic:t")), "ApiKey t".into(), format!("ApiKey {}", encode("some-id:t")), "Bearer t".into()] {
            let (status, headers, body, received) = send(None, post("/logs/_bulk", auth.clone())).await;
            assert_eq!((status, received), (StatusCode::OK, 1), "{auth}: {}", String::from_utf8_lossy(&body));
            assert_eq!(headers["x-elastic-product"], "Elasticsearch");
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["items"][0]["index"]["_index"], "logs");
        }
        let (status, headers, body, received) = send(None, post("/_bulk", format!("Basic {}", encode("elastic:wrong")))).await;
        assert_eq!((status, received), (StatusCode::FORBIDDEN, 0));
        assert_eq!(headers["x-elastic-product"], "Elasticsearch", "on errors too");
        assert!(String::from_utf8_lossy(&body).contains("security_exception"));
        let put = Request::put("/_bulk").header("authorization", "ApiKey t").body(Body::from(bulk)).unwrap();
        let (status, _, body, received) = send(None, put).await;
        assert_eq!((status, received), (StatusCode::OK, 0), "no index anywhere: an item error: {}", String::from_utf8_lossy(&body));
        let (status, headers, _, _) = send(None, Request::get("/_bulk").body(Body::empty()).unwrap()).await;
        assert_eq!((status, &headers["x-elastic-product"]), (StatusCode::METHOD_NOT_ALLOWED, &"Elasticsearch".parse::<header::HeaderValue>().unwrap()));
        let down = Refusal::unavailable("kafka down", Duration::from_secs(1));
        let (status, headers, _, _) = send(Some(down), post("/logs/_bulk", "ApiKey t".into())).await;
        assert_eq!((status, headers.contains_key(header::RETRY_AFTER)), (StatusCode::SERVICE_UNAVAILABLE, true));
        for method in ["GET", "HEAD"] {
            let (status, headers, body, _) = send(None, Request::builder().method(method).uri("/").body(Body::empty()).unwrap()).await;
            assert_eq!((status, &headers["x-elastic-product"]), (StatusCode::OK, &"Elasticsearch".parse::<header::HeaderValue>().unwrap()));
            if method == "GET" {
                let root: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(root["version"]["number"].as_str().is_some_and(|v| v.starts_with("8.")), "{root}");
            }
        }
    }

    #[tokio::test]
    async fn readiness_reports_the_sink_reason() {
        let sink = Arc::new(ScriptedSink { outcome: Mutex::new(None), received: Mutex::new(Vec::new()) });
        let app = router(&HttpIngestConfig::default(), sink, MemoryBudget::new(1 << 30));
        let response = app.oneshot(Request::get("/ready").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("scripted"));
    }
}

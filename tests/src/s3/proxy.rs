//! A fault-injecting HTTP/1.1 proxy between an S3 client and the S3 server of a test: it
//! listens on a loopback port, forwards each request unchanged (headers, `Host` included,
//! so SigV4 signatures still verify) on a new connection to the server, and answers with
//! the server's reply, unless a rule of its fault plan matches the request.
//!
//! The plan is shared and changed while requests flow: `proxy.inject(On::put(),
//! Fault::Status(503), 2)` makes the next two PUTs get a 503 without reaching the server.
//! Rules match by method and optionally a path prefix and a query parameter; the first
//! matching rule with requests left applies, once per request. Each [`Rule`] counts the
//! requests it took, and the proxy records every request it saw ([`S3Proxy::seen`]).
//!
//! What a corrupted body means for S3 (proved against versitygw by
//! `a_put_body_flipped_on_the_way_is_refused_by_the_server_however_it_is_signed` in
//! `tests/it/s3.rs`): SigV4 signs the headers and `x-amz-content-sha256`, so the proxy
//! can change a body but not its signed description. An in-memory body is sent with its
//! SHA-256 signed: a flipped byte is refused `400 XAmzContentSHA256Mismatch`. With payload
//! signing off (`UNSIGNED-PAYLOAD`) only the `x-amz-checksum-crc64nvme` header covers the
//! body: refused `400 BadDigest`. A streamed body goes aws-chunked with the checksum in a
//! trailer; over plain HTTP the SDK signs each chunk as well
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`): refused `403 SignatureDoesNotMatch`
//! (over HTTPS it would be `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, covered by the trailing
//! checksum alone). The proxy forwards what it is given: refusing is the server's job.
//!
//! Bodies are read whole before forwarding (at most [`MAX_BODY_BYTES`]): the proxy is for
//! tests with small objects, not for throughput.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The largest request or response body the proxy reads.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// What the proxy does to a request a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with an S3 error body (`InternalError` for 500,
    /// `ServiceUnavailable` for 503, `InjectedFault` otherwise) without forwarding.
    Status(u16),
    /// Read the request, then close the connection without an answer and without forwarding.
    Drop,
    /// Forward, then close the connection without passing the server's answer on: the
    /// request took effect, the client cannot know.
    DropResponse,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Forward with the middle byte of the request body flipped (a body of at least one byte).
    CorruptRequestBody,
    /// Forward, then flip the middle byte of the server's response body.
    CorruptResponseBody,
    /// Answer `200 OK` with an ETag and no body, without forwarding: a PUT answered 200 that
    /// never reached the server.
    AcceptWithoutForwarding,
}

/// Which requests a rule applies to.
#[derive(Debug, Clone)]
pub struct On {
    method: Method,
    path_prefix: Option<String>,
    query_param: Option<String>,
}

impl On {
    /// Requests with this method (`"PUT"`, `"GET"`, ...).
    pub fn method(method: &str) -> On {
        On {
            method: Method::from_bytes(method.as_bytes()).expect("an HTTP method"),
            path_prefix: None,
            query_param: None,
        }
    }

    pub fn put() -> On {
        On::method("PUT")
    }

    pub fn get() -> On {
        On::method("GET")
    }

    pub fn head() -> On {
        On::method("HEAD")
    }

    pub fn post() -> On {
        On::method("POST")
    }

    /// Only requests whose path starts with `prefix` (path-style: `/BUCKET/KEY`).
    pub fn path_prefix(mut self, prefix: &str) -> On {
        self.path_prefix = Some(prefix.to_owned());
        self
    }

    /// Only requests whose query string has parameter `name` (`partNumber`, `uploadId`).
    pub fn with_query_param(mut self, name: &str) -> On {
        self.query_param = Some(name.to_owned());
        self
    }

    fn matches(&self, method: &Method, path: &str, query: Option<&str>) -> bool {
        let has_param = |name: &str| {
            query.is_some_and(|query| {
                query
                    .split('&')
                    .any(|pair| pair.split('=').next() == Some(name))
            })
        };
        *method == self.method
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
            && self.query_param.as_deref().is_none_or(has_param)
    }
}

/// A rule of the plan: counts the requests it applied to.
#[derive(Debug, Clone)]
pub struct Rule {
    hits: Arc<AtomicU32>,
}

impl Rule {
    /// How many requests this rule applied to so far.
    pub fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

struct Planned {
    on: On,
    fault: Fault,
    left: u32,
    hits: Arc<AtomicU32>,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// The request's `x-amz-content-sha256`: a hex SHA-256 (signed payload),
    /// `UNSIGNED-PAYLOAD` or `STREAMING-...` (aws-chunked), if any.
    pub content_sha256: Option<String>,
    /// The request's `content-encoding` (`aws-chunked` for a streamed body with a trailer).
    pub content_encoding: Option<String>,
    /// The fault applied, if a rule matched.
    pub fault: Option<Fault>,
    /// The status the client got; `None` when the connection was dropped.
    pub status: Option<u16>,
}

#[derive(Default)]
struct Shared {
    plan: Mutex<Vec<Planned>>,
    seen: Mutex<Vec<Seen>>,
}

impl Shared {
    /// The fault for this request, if a rule with requests left matches (and counts it).
    fn take(&self, method: &Method, path: &str, query: Option<&str>) -> Option<Fault> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let planned = plan
            .iter_mut()
            .find(|p| p.left > 0 && p.on.matches(method, path, query))?;
        planned.left -= 1;
        planned.hits.fetch_add(1, Ordering::SeqCst);
        Some(planned.fault)
    }

    fn record(&self, seen: Seen) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
    }
}

/// The proxy: serves until dropped.
pub struct S3Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl S3Proxy {
    /// Starts a proxy on a loopback port in front of `upstream` (`http://127.0.0.1:PORT`),
    /// serving on the current tokio runtime.
    pub async fn start(upstream: &str) -> S3Proxy {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the proxy forwards to http:// only, not {upstream}"))
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream} is no IP:PORT: {e}"));
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the S3 proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, upstream, shared.clone()));
        S3Proxy {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy: give it to the client as its endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `times` requests that match `on` (after the rules
    /// injected before it have taken theirs).
    pub fn inject(&self, on: On, fault: Fault, times: u32) -> Rule {
        let hits = Arc::new(AtomicU32::new(0));
        self.shared
            .plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Planned {
                on,
                fault,
                left: times,
                hits: hits.clone(),
            });
        Rule { hits }
    }

    /// Removes every rule (their counts stay readable).
    pub fn clear(&self) {
        self.shared
            .plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every request seen so far, in the order their answers were decided.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "s3 proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(request, upstream, shared.clone())
            });
            // An error here is a dropped connection (ours, on purpose, or the client's).
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The error that makes hyper close the client's connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the s3 proxy's fault plan")
    }
}

impl std::error::Error for Dropped {}

type Answer = Result<Response<Full<Bytes>>, Dropped>;

async fn handle(request: Request<Incoming>, upstream: SocketAddr, shared: Arc<Shared>) -> Answer {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = Seen {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        content_sha256: header("x-amz-content-sha256"),
        content_encoding: header("content-encoding"),
        fault: None,
        status: None,
    };
    let fault = shared.take(&parts.method, parts.uri.path(), parts.uri.query());
    seen.fault = fault;
    let mut body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, uri = %seen.uri, "s3 proxy could not read a request body");
            shared.record(seen);
            return Err(Dropped);
        }
    };
    let answer = match fault {
        Some(Fault::Status(status)) => Ok(error_answer(status)),
        Some(Fault::Drop) => Err(Dropped),
        Some(Fault::AcceptWithoutForwarding) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header("etag", "\"00000000000000000000000000000000\"")
            .header("content-length", "0")
            .body(Full::new(Bytes::new()))
            .expect("a valid response")),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            forward(upstream, parts, body).await
        }
        Some(Fault::CorruptRequestBody) => {
            body = flip_middle_byte(body);
            forward(upstream, parts, body).await
        }
        Some(Fault::CorruptResponseBody) => match try_forward(upstream, parts, body).await {
            Ok((parts, body)) => Ok(Response::from_parts(
                parts,
                Full::new(flip_middle_byte(body)),
            )),
            Err(error) => Ok(unreachable_upstream(upstream, &error)),
        },
        Some(Fault::DropResponse) => forward(upstream, parts, body).await.and(Err(Dropped)),
        None => forward(upstream, parts, body).await,
    };
    seen.status = answer.as_ref().ok().map(|r| r.status().as_u16());
    shared.record(seen);
    answer
}

fn flip_middle_byte(body: Bytes) -> Bytes {
    if body.is_empty() {
        tracing::warn!("s3 proxy: nothing to corrupt in an empty body");
        return body;
    }
    let mut bytes = body.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    Bytes::from(bytes)
}

fn error_answer(status: u16) -> Response<Full<Bytes>> {
    let code = match status {
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "InjectedFault",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the weir test proxy</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .header("content-length", body.len().to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Sends the request to the server on a new connection and reads its whole answer; a
/// server that cannot be reached is a 502 to the client.
async fn forward(upstream: SocketAddr, parts: hyper::http::request::Parts, body: Bytes) -> Answer {
    match try_forward(upstream, parts, body).await {
        Ok((parts, body)) => Ok(Response::from_parts(parts, Full::new(body))),
        Err(error) => Ok(unreachable_upstream(upstream, &error)),
    }
}

fn unreachable_upstream(upstream: SocketAddr, error: &anyhow::Error) -> Response<Full<Bytes>> {
    tracing::warn!(error = %error, %upstream, "s3 proxy could not reach the server");
    error_answer(502)
}

async fn try_forward(
    upstream: SocketAddr,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> anyhow::Result<(hyper::http::response::Parts, Bytes)> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("read the server's answer: {e}"))?
        .to_bytes();
    drop(sender);
    connection.abort();
    Ok((parts, body))
}

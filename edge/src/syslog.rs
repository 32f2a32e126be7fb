//! Syslog input: messages over UDP (one per datagram) and TCP (RFC 6587: octet-counted
//! `LEN SP MSG` or newline-delimited, detected per message), spooled like HTTP requests.
//!
//! Syslog has no application-level acknowledgement, so "accepted" means "read": a
//! message is lost if the edge dies between reading it and the spool's fsync (at most
//! `batch_max_delay_ms` of messages). What the edge controls it keeps safe: when the spool
//! is full, TCP readers stop reading (the senders see TCP backpressure) and UDP datagrams
//! are dropped and counted (`weir_syslog_dropped_total`), since UDP has no way to push back.
//!
//! Messages are grouped per sender address into one [`EventBatch`] each (tag
//! `syslog.peer`), so one sender's messages stay in order and share a Kafka partition.
//! The raw text is the message as received, without its framing; the `syslog` parser
//! plugin on the core understands RFC 5424 and 3164.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_http_ingest::{AckMode, IngestError, IngestRequest, IngestSink};
use weir_proto::{Event, EventBatch};

/// The `[syslog]` section of the edge config; absent means no syslog input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// UDP address to receive on, e.g. `0.0.0.0:514`.
    #[serde(default)]
    pub udp_listen: Option<SocketAddr>,
    /// TCP address to accept connections on.
    #[serde(default)]
    pub tcp_listen: Option<SocketAddr>,
    /// Repository the messages are stored in.
    pub repository: String,
    /// Parser the core should use (e.g. `syslog`); default: the repository's.
    #[serde(default)]
    pub parser: Option<String>,
    /// Longest message; a longer TCP frame closes that connection, a longer datagram is cut.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Messages spooled together at most.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest a message waits for its batch to fill before it is spooled.
    #[serde(default = "default_batch_max_delay_ms")]
    pub batch_max_delay_ms: u64,
    /// TCP senders served at once; more are closed at accept (each holds a read buffer of
    /// up to `max_message_bytes`).
    #[serde(default = "default_max_tcp_connections")]
    pub max_tcp_connections: usize,
}

fn default_max_tcp_connections() -> usize {
    256
}

fn default_max_message_bytes() -> usize {
    64 * 1024
}
fn default_batch_max_events() -> usize {
    1000
}
fn default_batch_max_delay_ms() -> u64 {
    50
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("cannot listen for syslog over {transport} on {addr}: {source}")]
    Bind { transport: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// Messages in flight between readers and the batcher; beyond this TCP readers wait.
const QUEUE: usize = 10_000;

/// A running syslog input.
pub struct SyslogInput {
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    /// Ends once, after `shutdown`, the messages already read are spooled.
    pub drained: tokio::task::JoinHandle<()>,
}

/// Binds the configured sockets and serves them until `shutdown`.
pub async fn start(config: SyslogConfig, sink: Arc<dyn IngestSink>, shutdown: CancellationToken) -> Result<SyslogInput, SyslogError> {
    let (tx, rx) = mpsc::channel::<(SocketAddr, String)>(QUEUE);
    let (mut udp_addr, mut tcp_addr) = (None, None);
    if let Some(addr) = config.udp_listen {
        let socket = UdpSocket::bind(addr).await.map_err(|source| SyslogError::Bind { transport: "UDP", addr, source })?;
        udp_addr = socket.local_addr().ok();
        tokio::spawn(serve_udp(socket, config.max_message_bytes, tx.clone(), shutdown.clone()));
    }
    if let Some(addr) = config.tcp_listen {
        let listener = TcpListener::bind(addr).await.map_err(|source| SyslogError::Bind { transport: "TCP", addr, source })?;
        tcp_addr = listener.local_addr().ok();
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_tcp_connections.max(1)));
        tokio::spawn(serve_tcp(listener, config.max_message_bytes, connections, tx.clone(), shutdown.clone()));
    }
    tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, repository = %config.repository, "syslog input started");
    drop(tx);
    let drained = tokio::spawn(batch_and_spool(config, rx, sink, shutdown));
    Ok(SyslogInput { udp_addr, tcp_addr, drained })
}

async fn serve_udp(socket: UdpSocket, max: usize, tx: mpsc::Sender<(SocketAddr, String)>, shutdown: CancellationToken) {
    // One byte more than the limit tells a cut datagram from one that fits exactly.
    let mut buf = vec![0u8; max + 1];
    loop {
        let (n, peer) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::warn!(%error, "syslog UDP receive failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        if n > max {
            tracing::warn!(%peer, max, "syslog datagram longer than max_message_bytes, cut");
        }
        let Some(message) = message_text(&buf[..n.min(max)]) else { continue };
        if tx.try_send((peer, message)).is_err() {
            metrics::counter!("weir_syslog_dropped_total").increment(1);
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    max: usize,
    connections: Arc<tokio::sync::Semaphore>,
    tx: mpsc::Sender<(SocketAddr, String)>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "syslog TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "syslog TCP connection refused: the limit of max_tcp_connections is reached");
            metrics::counter!("weir_syslog_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let (tx, shutdown) = (tx.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut reader = BufReader::new(stream);
            loop {
                let frame = tokio::select! {
                    frame = read_frame(&mut reader, max) => frame,
                    _ = shutdown.cancelled() => return,
                };
                match frame {
                    Ok(Some(bytes)) => {
                        let Some(message) = message_text(&bytes) else { continue };
                        // Waits when the batcher is behind: TCP backpressure to the sender.
                        if tx.send((peer, message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(reason) => {
                        tracing::warn!(%peer, %reason, "closing syslog TCP connection");
                        metrics::counter!("weir_syslog_bad_frames_total").increment(1);
                        return;
                    }
                }
            }
        });
    }
}

/// The next RFC 6587 frame: octet-counted if it starts with a digit, else up to a
/// newline. `Ok(None)` at a clean end of stream.
async fn read_frame<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, String> {
    let first = match reader.fill_buf().await {
        Ok([]) => return Ok(None),
        Ok(buf) => buf[0],
        Err(e) => return Err(e.to_string()),
    };
    if first.is_ascii_digit() {
        let mut digits = Vec::new();
        (&mut *reader).take(12).read_until(b' ', &mut digits).await.map_err(|e| e.to_string())?;
        let text = std::str::from_utf8(digits.strip_suffix(b" ").unwrap_or(&digits)).unwrap_or("");
        let len: usize = text
            .parse()
            .map_err(|_| format!("octet count {:?} is not a number followed by a space (RFC 6587)", String::from_utf8_lossy(&digits)))?;
        if len > max {
            return Err(format!("frame of {len} bytes exceeds max_message_bytes {max}"));
        }
        let mut message = vec![0; len];
        reader.read_exact(&mut message).await.map_err(|e| format!("stream ended inside a {len}-byte frame: {e}"))?;
        Ok(Some(message))
    } else {
        let mut line = Vec::new();
        let n = (&mut *reader).take(max as u64 + 1).read_until(b'\n', &mut line).await.map_err(|e| e.to_string())?;
        if n > max && line.last() != Some(&b'\n') {
            return Err(format!("line longer than max_message_bytes {max} (is the sender octet-counting?)"));
        }
        Ok(Some(line))
    }
}

/// The message without trailing line breaks and NULs; `None` for an empty one. Invalid
/// UTF-8 is replaced rather than refused: a log line is worth keeping.
fn message_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().rposition(|b| !matches!(b, b'\n' | b'\r' | b'\0')).map_or(0, |i| i + 1);
    (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// Groups messages per sender and spools them, every `batch_max_events` messages or
/// `batch_max_delay_ms`, whichever comes first.
async fn batch_and_spool(
    config: SyslogConfig,
    mut rx: mpsc::Receiver<(SocketAddr, String)>,
    sink: Arc<dyn IngestSink>,
    shutdown: CancellationToken,
) {
    let delay = Duration::from_millis(config.batch_max_delay_ms);
    let max_events = config.batch_max_events.max(1);
    loop {
        // Shutdown first: what is queued then goes through the drain below.
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            first = rx.recv() => first,
        };
        let Some(first) = first else {
            // Readers stop at shutdown; what they already read is spooled once more, not
            // dropped (no retries: the edge is going away).
            rx.close();
            let mut rest = Vec::new();
            while let Ok(message) = rx.try_recv() {
                rest.push(message);
            }
            if !rest.is_empty() {
                let n_events = rest.len();
                match sink.ingest(request(&config, rest)).await {
                    Ok(()) => tracing::info!(n_events, "spooled the syslog messages read before shutdown"),
                    Err(error) => tracing::warn!(n_events, %error, "syslog messages read before shutdown could not be spooled"),
                }
            }
            return;
        };
        let mut pending = vec![first];
        let deadline = tokio::time::Instant::now() + delay;
        while pending.len() < max_events {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                message = tokio::time::timeout_at(deadline, rx.recv()) => match message {
                    Ok(Some(message)) => pending.push(message),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let request = request(&config, pending);
        spool(&*sink, request, &shutdown).await;
    }
}

fn request(config: &SyslogConfig, messages: Vec<(SocketAddr, String)>) -> IngestRequest {
    let n_events = messages.len();
    let ingest_ts_ms = weir_proto::event::now_ms();
    let mut by_peer: BTreeMap<std::net::IpAddr, Vec<Event>> = BTreeMap::new();
    for (peer, message) in messages {
        by_peer.entry(peer.ip()).or_default().push(Event::raw(message));
    }
    let batches = by_peer
        .into_iter()
        .map(|(peer, events)| EventBatch {
            repository: config.repository.clone(),
            tags: BTreeMap::from([("syslog.peer".to_owned(), peer.to_string())]),
            parser: config.parser.clone(),
            ingest_ts_ms,
            attributes: Default::default(),
            events,
        })
        .collect();
    IngestRequest { batches, n_events, ack_mode: Some(AckMode::Spool) }
}

/// Hands a batch to the spool, retrying while the spool pushes back (full, or a
/// transient error): meanwhile the queue fills and TCP readers stop reading.
async fn spool(sink: &dyn IngestSink, request: IngestRequest, shutdown: &CancellationToken) {
    let n_events = request.n_events as u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = IngestRequest { batches: request.batches.clone(), n_events: request.n_events, ack_mode: request.ack_mode };
        match sink.ingest(attempt).await {
            Ok(()) => {
                metrics::counter!("weir_syslog_messages_total").increment(n_events);
                return;
            }
            Err(IngestError::Overloaded { message, .. } | IngestError::Unavailable { message, .. }) => {
                tracing::warn!(%message, n_events, "syslog messages wait for the spool");
            }
            Err(error @ (IngestError::TooLarge(_) | IngestError::BadRequest(_) | IngestError::Forbidden(_) | IngestError::Internal(_))) => {
                // Cannot succeed by waiting; losing them silently would be worse than a loud log.
                tracing::error!(%error, n_events, "syslog messages could not be spooled and are dropped");
                metrics::counter!("weir_syslog_dropped_total").increment(n_events);
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => {
                tracing::warn!(n_events, "shutdown while syslog messages waited for the spool; they are lost");
                return;
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Result<Option<Vec<u8>>, String>> {
        let mut reader = BufReader::new(input);
        let mut out = Vec::new();
        loop {
            let frame = read_frame(&mut reader, max).await;
            let end = !matches!(frame, Ok(Some(_)));
            out.push(frame);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn octet_counted_and_newline_frames_mix_on_one_stream() {
        let got = frames(b"9 <13>hellox<14>plain line\n5 abcde", 100).await;
        let texts: Vec<String> = got.iter().filter_map(|f| f.as_ref().ok()?.as_ref()).map(|b| message_text(b).unwrap()).collect();
        assert_eq!(texts, ["<13>hello", "x<14>plain line", "abcde"]);
        assert_eq!(got.last(), Some(&Ok(None)));
    }

    #[tokio::test]
    async fn bad_frames_are_errors_that_name_the_problem() {
        let cases: [(&[u8], &str); 4] = [
            (b"99999 x", "exceeds max_message_bytes"),
            (b"12x <13>hello", "not a number"),
            (b"10 short", "ended inside"),
            (b"no newline and far too long for the limit", "longer than max_message_bytes"),
        ];
        for (input, expected) in cases {
            let got = frames(input, 16).await;
            let error = got.iter().find_map(|f| f.as_ref().err()).unwrap_or_else(|| panic!("{input:?} gave {got:?}"));
            assert!(error.contains(expected), "{input:?}: {error}");
        }
    }

    /// Records what reaches the spool.
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl IngestSink for Recorder {
        fn ingest(&self, request: IngestRequest) -> futures::future::BoxFuture<'static, Result<(), IngestError>> {
            let raws = request.batches.iter().flat_map(|b| &b.events).map(|e| e.raw.clone());
            self.0.lock().unwrap().extend(raws);
            Box::pin(async { Ok(()) })
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn messages_read_before_shutdown_are_spooled_not_dropped() {
        let config = SyslogConfig {
            udp_listen: None,
            tcp_listen: None,
            repository: "r".into(),
            parser: None,
            max_message_bytes: 100,
            batch_max_events: 3,
            // Far longer than the test: only shutdown can end the wait for a full batch.
            batch_max_delay_ms: 600_000,
            max_tcp_connections: 1,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for i in 0..7 {
            tx.send((peer, format!("m{i}"))).await.unwrap();
        }
        let sink = Arc::new(Recorder(Default::default()));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), batch_and_spool(config, rx, sink.clone(), shutdown)).await.unwrap();
        let mut got = sink.0.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert!(tx.send((peer, "late".into())).await.is_err(), "readers are told to stop");
    }

    #[test]
    fn message_text_strips_line_ends_and_keeps_bad_utf8() {
        assert_eq!(message_text(b"<13>msg\r\n\0").as_deref(), Some("<13>msg"));
        assert_eq!(message_text(b"\n"), None);
        assert_eq!(message_text(b"a\xffb").as_deref(), Some("a\u{fffd}b"));
    }
}

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
//! `syslog.peer`). Up to [`BATCHES_IN_FLIGHT`] batches are written to the spool at once,
//! handed to it in read order (the sink keeps its callers' order), so one sender's
//! messages stay in read order in the spool; only a batch retried after the spool
//! refused it (full) may land behind a later one. In Kafka a sender's batches spread over
//! the source's partitions (`kafka.source_shards`), each in spool order.
//! The raw text is the message as received, without its framing; the `syslog` parser
//! plugin on the core understands RFC 5424 and 3164.
//!
//! TCP streams are cut into frames by [`SyslogFrameCodec`], a `tokio_util` [`Decoder`]
//! read through [`FramedRead`]. A frame it cannot read (an octet count that is not a
//! number, a frame over `max_message_bytes`, a line that long without a newline, a stream
//! ending inside a counted frame) or a failed read ends the framing, so it closes that
//! connection only, with a logged reason and `weir_syslog_bad_frames_total`. Invalid UTF-8
//! is kept, with replacement characters. At most `max_tcp_connections` connections are
//! read at once; more are closed at accept.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;
use weir_http_ingest::{AckMode, IngestRequest, IngestSink, Refusal, RefusalKind};
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

/// Chunks of messages in flight between readers and the batcher; beyond this TCP readers
/// wait. A reader sends what it has ready at once (up to [`CHUNK`] messages), since a
/// channel send per message was a visible cost.
const QUEUE: usize = 256;
/// Messages a reader sends at once at most.
const CHUNK: usize = 64;
/// Batches being encoded and spooled at once: the next one is collected while the spool
/// fsyncs the ones before it (its group commit shares the fsync), in read order.
const BATCHES_IN_FLIGHT: usize = 4;

/// Messages with their sender, in the order read.
type Chunk = Vec<(SocketAddr, String)>;

/// A running syslog input.
pub struct SyslogInput {
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    /// Ends once, after `shutdown`, the messages already read are spooled.
    pub drained: tokio::task::JoinHandle<()>,
}

/// Binds the configured sockets and serves them until `shutdown`.
pub async fn start(config: SyslogConfig, sink: Arc<dyn IngestSink>, shutdown: CancellationToken) -> Result<SyslogInput, SyslogError> {
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUE);
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

async fn serve_udp(socket: UdpSocket, max: usize, tx: mpsc::Sender<Chunk>, shutdown: CancellationToken) {
    // One byte more than the limit tells a cut datagram from one that fits exactly.
    let mut buf = vec![0u8; max + 1];
    let keep = |chunk: &mut Chunk, n: usize, peer: SocketAddr, buf: &[u8]| {
        if n > max {
            tracing::warn!(%peer, max, "syslog datagram longer than max_message_bytes, cut");
        }
        if let Some(message) = message_text(&buf[..n.min(max)]) {
            chunk.push((peer, message));
        }
    };
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
        let mut chunk = Vec::new();
        keep(&mut chunk, n, peer, &buf);
        // And what else has arrived, without waiting.
        while chunk.len() < CHUNK {
            let Ok((n, peer)) = socket.try_recv_from(&mut buf) else { break };
            keep(&mut chunk, n, peer, &buf);
        }
        let n_messages = chunk.len() as u64;
        if n_messages > 0 && tx.try_send(chunk).is_err() {
            metrics::counter!("weir_syslog_dropped_total").increment(n_messages);
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    max: usize,
    connections: Arc<tokio::sync::Semaphore>,
    tx: mpsc::Sender<Chunk>,
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
            let mut frames = FramedRead::new(stream, SyslogFrameCodec::new(max));
            loop {
                let frame = tokio::select! {
                    frame = frames.next() => frame,
                    _ = shutdown.cancelled() => return,
                };
                let mut chunk = Vec::new();
                let mut next = Some(frame);
                // This frame and the ones already read, without waiting for more.
                let ended = loop {
                    match next {
                        Some(Some(Ok(bytes))) => {
                            if let Some(message) = message_text(&bytes) {
                                chunk.push((peer, message));
                            }
                        }
                        Some(None) => break Some(None),
                        Some(Some(Err(reason))) => break Some(Some(reason)),
                        None => break None,
                    }
                    next = if chunk.len() < CHUNK { frames.next().now_or_never() } else { None };
                };
                // Waits when the batcher is behind: TCP backpressure to the sender.
                if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                    return;
                }
                match ended {
                    None => {}
                    Some(None) => return,
                    Some(Some(reason)) => {
                        tracing::warn!(%peer, %reason, "closing syslog TCP connection");
                        metrics::counter!("weir_syslog_bad_frames_total").increment(1);
                        return;
                    }
                }
            }
        });
    }
}

/// Why a TCP connection was closed: its framing is lost, so nothing after it can be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("octet count {0:?} is not a number followed by a space (RFC 6587)")]
    BadCount(String),
    #[error("frame of {len} bytes exceeds max_message_bytes {max}")]
    TooLong { len: usize, max: usize },
    #[error("stream ended inside a {len}-byte frame ({received} bytes of it arrived)")]
    Truncated { len: usize, received: usize },
    #[error("line longer than max_message_bytes {max} (is the sender octet-counting?)")]
    LineTooLong { max: usize },
    #[error("reading failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The octet count is read from at most this many bytes, its space included; without a
/// space in them, these bytes are taken as the count (and are rarely a number).
const COUNT_BYTES: usize = 12;

/// RFC 6587 framing of a syslog TCP stream, for [`FramedRead`]: a frame is octet-counted
/// (`LEN SP MSG`, yielding `MSG`) if its first byte is a digit, else it runs up to and
/// including the next newline (or the end of the stream). Frames are the bytes as received;
/// `message_text` makes text of them. The buffer holds at most one frame of up to
/// `max_message_bytes` (plus its count or newline) and what was read after it.
#[derive(Debug, Clone)]
pub struct SyslogFrameCodec {
    max: usize,
    /// How many bytes of the line at the start of the buffer were searched for a newline
    /// already, so that a line arriving in small pieces is searched once.
    scanned: usize,
}

impl SyslogFrameCodec {
    /// Frames of up to `max` bytes (`max_message_bytes`).
    pub fn new(max: usize) -> Self {
        Self { max, scanned: 0 }
    }

    fn frame(&mut self, src: &mut BytesMut, eof: bool) -> Result<Option<BytesMut>, FrameError> {
        match src.first() {
            None => Ok(None),
            Some(first) if first.is_ascii_digit() => self.counted(src, eof),
            Some(_) => self.line(src, eof),
        }
    }

    fn counted(&mut self, src: &mut BytesMut, eof: bool) -> Result<Option<BytesMut>, FrameError> {
        let window = &src[..src.len().min(COUNT_BYTES)];
        let header = match window.iter().position(|&b| b == b' ') {
            Some(space) => space + 1,
            None if window.len() == COUNT_BYTES || eof => window.len(),
            None => return Ok(None),
        };
        let digits = &src[..header];
        let len = std::str::from_utf8(digits.strip_suffix(b" ").unwrap_or(digits))
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .ok_or_else(|| FrameError::BadCount(String::from_utf8_lossy(digits).into_owned()))?;
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        let received = src.len() - header;
        if received < len {
            if eof {
                return Err(FrameError::Truncated { len, received });
            }
            src.reserve(len - received);
            return Ok(None);
        }
        src.advance(header);
        Ok(Some(src.split_to(len)))
    }

    fn line(&mut self, src: &mut BytesMut, eof: bool) -> Result<Option<BytesMut>, FrameError> {
        // A line fits if its newline is within the first max + 1 bytes.
        let limit = self.max.saturating_add(1);
        let window = &src[..src.len().min(limit)];
        let from = self.scanned.min(window.len());
        if let Some(newline) = window[from..].iter().position(|&b| b == b'\n') {
            self.scanned = 0;
            return Ok(Some(src.split_to(from + newline + 1)));
        }
        if window.len() == limit {
            self.scanned = 0;
            return Err(FrameError::LineTooLong { max: self.max });
        }
        if eof {
            // The last line may lack its newline.
            self.scanned = 0;
            return Ok(Some(src.split()));
        }
        self.scanned = window.len();
        Ok(None)
    }
}

impl Decoder for SyslogFrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        self.frame(src, false)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        self.frame(src, true)
    }
}

/// The message without trailing line breaks and NULs; `None` for an empty one. Invalid
/// UTF-8 is replaced rather than refused: a log line is worth keeping.
fn message_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().rposition(|b| !matches!(b, b'\n' | b'\r' | b'\0')).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    // `from_utf8` first: the lossy conversion's chunked scan is several times slower on
    // the valid text nearly every message is.
    (end > 0).then(|| match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// Groups messages per sender and spools them, every `batch_max_events` messages or
/// `batch_max_delay_ms`, whichever comes first.
async fn batch_and_spool(config: SyslogConfig, mut rx: mpsc::Receiver<Chunk>, sink: Arc<dyn IngestSink>, shutdown: CancellationToken) {
    let delay = Duration::from_millis(config.batch_max_delay_ms);
    let max_events = config.batch_max_events.max(1);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut spooling = tokio::task::JoinSet::new();
    // Messages read past the last batch's size: the start of the next one.
    let mut carried: Chunk = Vec::new();
    loop {
        while spooling.try_join_next().is_some() {}
        let mut pending = std::mem::take(&mut carried);
        if pending.is_empty() {
            // Shutdown first: what is queued then goes through the drain below.
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => None,
                first = rx.recv() => first,
            };
            let Some(first) = first else { break };
            pending = first;
        }
        let deadline = tokio::time::Instant::now() + delay;
        while pending.len() < max_events {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                chunk = tokio::time::timeout_at(deadline, rx.recv()) => match chunk {
                    Ok(Some(chunk)) => pending.extend(chunk),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        if pending.len() > max_events {
            carried = pending.split_off(max_events);
        }
        // At most BATCHES_IN_FLIGHT: beyond, the queue fills and TCP readers stop reading.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let request = Arc::new(request(&config, pending));
        // Called here, in read order: the call takes the batch's place in the spool.
        let first_attempt = sink.ingest_shared(request.clone());
        let (sink, shutdown) = (sink.clone(), shutdown.clone());
        spooling.spawn(async move {
            spool(&*sink, request, first_attempt, &shutdown).await;
            drop(permit);
        });
    }
    // Readers stop at shutdown; what they already read is spooled once more, not dropped
    // (no retries: the edge is going away).
    rx.close();
    let mut rest = carried;
    while let Ok(chunk) = rx.try_recv() {
        rest.extend(chunk);
    }
    if !rest.is_empty() {
        let n_events = rest.len();
        match sink.ingest(request(&config, rest)).await {
            Ok(()) => tracing::info!(n_events, "spooled the syslog messages read before shutdown"),
            Err(error) => tracing::warn!(n_events, %error, "syslog messages read before shutdown could not be spooled"),
        }
    }
    spooling.join_all().await;
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

/// Waits for a batch's first spooling attempt and retries while the spool pushes back
/// (full, or a transient error): meanwhile the queue fills and TCP readers stop reading.
async fn spool(sink: &dyn IngestSink, request: Arc<IngestRequest>, first_attempt: BoxFuture<'static, Result<(), Refusal>>, shutdown: &CancellationToken) {
    let n_events = request.n_events as u64;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = Some(first_attempt);
    loop {
        let outcome = match attempt.take() {
            Some(first) => first.await,
            None => sink.ingest_shared(request.clone()).await,
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("weir_syslog_messages_total").increment(n_events);
                return;
            }
            // The spool pushes back: wait, as the TCP readers do.
            Err(Refusal { kind: RefusalKind::Overloaded | RefusalKind::Unavailable, message, .. }) => {
                tracing::warn!(%message, n_events, "syslog messages wait for the spool");
            }
            Err(error) => {
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

    /// A reader handing out `data` in pieces of 1 to `max_chunk` bytes, their sizes from
    /// a tiny deterministic PRNG (splitmix64) seeded with `seed`.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        state: u64,
        max_chunk: usize,
        /// Fail with this instead of ending the stream.
        error_at_end: Option<std::io::ErrorKind>,
    }

    impl Trickle {
        fn new(data: &[u8], max_chunk: usize, seed: u64) -> Self {
            Self { data: data.to_vec(), at: 0, state: seed, max_chunk: max_chunk.max(1), error_at_end: None }
        }

        fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let piece = (self.next_u64() % self.max_chunk as u64) as usize + 1;
            let n = piece.min(self.data.len() - self.at).min(buf.remaining());
            if let (0, Some(kind)) = (n, self.error_at_end) {
                return std::task::Poll::Ready(Err(kind.into()));
            }
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// What [`SyslogFrameCodec`] makes of `input` read in pieces of up to `max_chunk`
    /// bytes: the frames, then the error that ended the stream, if any.
    async fn frames(input: &[u8], max: usize, max_chunk: usize, seed: u64) -> (Vec<Vec<u8>>, Option<String>) {
        let mut stream = FramedRead::new(Trickle::new(input, max_chunk, seed), SyslogFrameCodec::new(max));
        let (mut frames, mut error) = (Vec::new(), None);
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(frame) => {
                    assert!(error.is_none(), "a frame after the error {error:?}");
                    frames.push(frame.to_vec());
                }
                Err(e) => {
                    assert!(error.replace(e.to_string()).is_none(), "a second error");
                }
            }
        }
        (frames, error)
    }

    /// `frames` for the whole input at once, one byte at a time, and in random pieces
    /// (many seeds): all must agree.
    async fn frames_however_split(input: &[u8], max: usize) -> (Vec<Vec<u8>>, Option<String>) {
        let whole = frames(input, max, usize::MAX, 0).await;
        assert_eq!(frames(input, max, 1, 0).await, whole, "one byte at a time: {input:?}");
        for seed in 0..200 {
            let max_chunk = [2, 3, 7, 16, 64][seed as usize % 5];
            assert_eq!(frames(input, max, max_chunk, seed).await, whole, "pieces of up to {max_chunk}, seed {seed}: {input:?}");
        }
        whole
    }

    fn texts(frames: &[Vec<u8>]) -> Vec<String> {
        frames.iter().filter_map(|f| message_text(f)).collect()
    }

    #[tokio::test]
    async fn octet_counted_and_newline_frames_mix_on_one_stream() {
        let (got, error) = frames_however_split(b"9 <13>hellox<14>plain line\n5 abcde", 100).await;
        assert_eq!(texts(&got), ["<13>hello", "x<14>plain line", "abcde"]);
        assert_eq!(error, None);
    }

    #[tokio::test]
    async fn frames_split_at_any_boundary_come_out_whole() {
        let mut input = Vec::new();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for i in 0..40 {
            let text = format!("<13>1 2024-05-01T10:00:00Z host app - - - message {i} {}", "x".repeat(i * 3));
            if i % 3 == 0 {
                // Counted frames may hold newlines and spaces, and begin with digits.
                let counted = format!("{i} line\nnext {text}");
                input.extend(format!("{} {counted}", counted.len()).bytes());
                expected.push(counted.into_bytes());
            } else {
                let line = format!("{text}{}", if i % 2 == 0 { "\r\n" } else { "\n" });
                input.extend(line.bytes());
                expected.push(line.into_bytes());
            }
        }
        // Exactly at the limit: a counted frame of `max` bytes, a line of `max` bytes
        // and its newline; an empty counted frame, an empty line, bad UTF-8 kept as is;
        // the last line without its newline.
        let max = 200;
        input.extend(format!("{max} {}", "c".repeat(max)).bytes());
        expected.push("c".repeat(max).into_bytes());
        input.extend(format!("{}\n", "l".repeat(max)).bytes());
        expected.push(format!("{}\n", "l".repeat(max)).into_bytes());
        input.extend(b"0 \na\xff\xfeb\n<13>last");
        expected.extend([b"".to_vec(), b"\n".to_vec(), b"a\xff\xfeb\n".to_vec(), b"<13>last".to_vec()]);

        let (got, error) = frames_however_split(&input, max).await;
        assert_eq!(error, None);
        assert_eq!(got, expected);
        assert_eq!(texts(&got)[42], "a\u{fffd}\u{fffd}b");
    }

    #[tokio::test]
    async fn bad_frames_are_errors_that_name_the_problem() {
        let cases: [(&[u8], &str); 9] = [
            (b"99999 x", "frame of 99999 bytes exceeds max_message_bytes 16"),
            (b"17 <13>hello there, too long", "exceeds max_message_bytes"),
            (b"12x <13>hello", "octet count \"12x \" is not a number"),
            (b"123456789012345 <13>hello", "exceeds max_message_bytes"),
            (b"1234567890x1234 <13>hello", "octet count \"1234567890x1\" is not a number"),
            (b"10 short", "stream ended inside a 10-byte frame (5 bytes of it arrived)"),
            (b"10", "stream ended inside a 10-byte frame (0 bytes of it arrived)"),
            (b"no newline and far too long for the limit", "line longer than max_message_bytes 16"),
            (b"seventeen bytes!!", "line longer than max_message_bytes 16"),
        ];
        for (input, expected) in cases {
            let (got, error) = frames_however_split(input, 16).await;
            assert_eq!(got, Vec::<Vec<u8>>::new(), "{input:?}");
            let error = error.unwrap_or_else(|| panic!("{input:?} gave no error"));
            assert!(error.contains(expected), "{input:?}: {error}");
        }
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_after_the_frames_before_it() {
        let (got, error) = frames_however_split(b"2 ok<13>fine\n9x <13>bad\n<13>never read\n", 100).await;
        assert_eq!(texts(&got), ["ok", "<13>fine"]);
        assert!(error.unwrap().contains("not a number"));
        // A line of max bytes with its newline fits; one byte more does not.
        let (got, error) = frames_however_split(b"abcd\nabcde\n", 4).await;
        assert_eq!(texts(&got), ["abcd"]);
        assert!(error.unwrap().contains("line longer than max_message_bytes 4"));
    }

    #[tokio::test]
    async fn a_failed_read_ends_the_stream_with_its_error() {
        let mut reader = Trickle::new(b"<13>whole\n<13>part", 3, 7);
        reader.error_at_end = Some(std::io::ErrorKind::ConnectionReset);
        let mut stream = FramedRead::new(reader, SyslogFrameCodec::new(100));
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"<13>whole\n");
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(matches!(&error, FrameError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{error}");
        assert!(stream.next().await.is_none());
    }

    /// Records what reaches the spool.
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl IngestSink for Recorder {
        fn ingest(&self, request: IngestRequest) -> futures::future::BoxFuture<'static, Result<(), Refusal>> {
            let raws = request.batches.iter().flat_map(|b| &b.events).map(|e| e.raw.clone());
            self.0.lock().unwrap().extend(raws);
            Box::pin(async { Ok(()) })
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    /// A batcher config without sockets; batches wait far longer than a test for the
    /// delay, so only size or shutdown ends them.
    fn batching(batch_max_events: usize) -> SyslogConfig {
        SyslogConfig {
            udp_listen: None,
            tcp_listen: None,
            repository: "r".into(),
            parser: None,
            max_message_bytes: 100,
            batch_max_events,
            batch_max_delay_ms: 600_000,
            max_tcp_connections: 1,
        }
    }

    #[tokio::test]
    async fn messages_read_before_shutdown_are_spooled_not_dropped() {
        let config = batching(3);
        let (tx, rx) = mpsc::channel(QUEUE);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for chunk in [0..2, 2..6, 6..7] {
            tx.send(chunk.map(|i| (peer, format!("m{i}"))).collect()).await.unwrap();
        }
        let sink = Arc::new(Recorder(Default::default()));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), batch_and_spool(config, rx, sink.clone(), shutdown)).await.unwrap();
        let mut got = sink.0.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert!(tx.send(vec![(peer, "late".into())]).await.is_err(), "readers are told to stop");
    }

    /// Chunks of any size make batches of at most `batch_max_events`, called into the spool
    /// in read order, with several in flight.
    #[tokio::test]
    async fn chunks_make_full_batches_in_read_order() {
        let config = batching(10);
        let (tx, rx) = mpsc::channel(QUEUE);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let sink = Arc::new(Batches::default());
        let shutdown = CancellationToken::new();
        let batcher = tokio::spawn(batch_and_spool(config, rx, sink.clone(), shutdown.clone()));
        let mut next = 0;
        for size in [1, 7, 25, 3, 64, 9] {
            tx.send((next..next + size).map(|i| (peer, format!("{i}"))).collect()).await.unwrap();
            next += size;
        }
        // 109 messages: ten full batches are spooled without waiting for the delay.
        for _ in 0..500 {
            if sink.calls.lock().unwrap().len() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), batcher).await.unwrap().unwrap();
        let calls = sink.calls.lock().unwrap().clone();
        assert!(calls[..10].iter().all(|b| b.len() == 10), "{calls:?}");
        assert_eq!(calls.concat(), (0..next).map(|i| i.to_string()).collect::<Vec<_>>(), "read order");
        assert!(sink.most_in_flight.load(std::sync::atomic::Ordering::SeqCst) > 1, "batches overlap in the spool");
    }

    /// A spool that refuses (full) the first calls: each batch is retried until it is
    /// taken, and every message ends up spooled exactly once.
    #[tokio::test]
    async fn a_refused_batch_is_retried_until_spooled_once() {
        let (tx, rx) = mpsc::channel(QUEUE);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let sink = Arc::new(Refusing { refusals: std::sync::atomic::AtomicUsize::new(6), taken: Default::default() });
        let shutdown = CancellationToken::new();
        let batcher = tokio::spawn(batch_and_spool(batching(5), rx, sink.clone(), shutdown.clone()));
        for chunk in [0..12, 12..30] {
            tx.send(chunk.map(|i| (peer, format!("{i}"))).collect()).await.unwrap();
        }
        for _ in 0..200 {
            if sink.taken.lock().unwrap().len() == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        batcher.await.unwrap();
        let mut taken = sink.taken.lock().unwrap().clone();
        taken.sort_by_key(|m| m.parse::<u32>().unwrap());
        assert_eq!(taken, (0..30).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(sink.refusals.load(std::sync::atomic::Ordering::SeqCst), 0, "the refusals were used up");
    }

    struct Refusing {
        refusals: std::sync::atomic::AtomicUsize,
        taken: std::sync::Mutex<Vec<String>>,
    }

    impl IngestSink for Refusing {
        fn ingest(&self, request: IngestRequest) -> futures::future::BoxFuture<'static, Result<(), Refusal>> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.refusals.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Box::pin(async { Err(Refusal::overloaded("spool full", Duration::from_secs(1))) });
            }
            self.taken.lock().unwrap().extend(request.batches.iter().flat_map(|b| &b.events).map(|e| e.raw.clone()));
            Box::pin(async { Ok(()) })
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    /// Records each call's events in call order; each call completes after a while, so
    /// that several overlap.
    #[derive(Default)]
    struct Batches {
        calls: std::sync::Mutex<Vec<Vec<String>>>,
        in_flight: Arc<std::sync::atomic::AtomicUsize>,
        most_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl IngestSink for Batches {
        fn ingest(&self, request: IngestRequest) -> futures::future::BoxFuture<'static, Result<(), Refusal>> {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.lock().unwrap().push(request.batches.iter().flat_map(|b| &b.events).map(|e| e.raw.clone()).collect());
            let (in_flight, most) = (self.in_flight.clone(), self.most_in_flight.clone());
            Box::pin(async move {
                most.fetch_max(in_flight.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                in_flight.fetch_sub(1, SeqCst);
                Ok(())
            })
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn message_text_strips_line_ends_and_keeps_bad_utf8() {
        assert_eq!(message_text(b"<13>msg\r\n\0").as_deref(), Some("<13>msg"));
        assert_eq!(message_text(b"\n"), None);
        assert_eq!(message_text(b"a\xffb").as_deref(), Some("a\u{fffd}b"));
    }
}

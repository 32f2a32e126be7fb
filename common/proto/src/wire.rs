//! The edge→core protocol over QUIC.
//!
//! One bidirectional stream per forwarded batch. The edge writes one request frame and
//! finishes its side; the core answers with one [`Response`] frame after Kafka
//! acknowledged every event of the batch, or with a typed error. Frames:
//!
//! ```text
//! request  = u32 BE header length | header (JSON RequestHeader) | payload
//! payload  = zstd(JSON [EventBatch, ...])   -- exactly what the edge spooled
//! response = JSON Response
//! ```
//!
//! The header is at most [`MAX_HEADER_BYTES`] and declares the payload's length, so a
//! core refuses a frame over its limit before it reads the payload, and the edge reads
//! the answer while it still writes (a refused batch costs one round trip, not its
//! upload).
//!
//! The payload is compressed once, when the edge spools it, and travels unchanged from
//! spool to wire, so a retry costs no re-encoding.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::EventBatch;

/// ALPN protocol id; a peer speaking anything else is refused during the handshake.
pub const ALPN: &[u8] = b"weir/1";
/// ALPN of the core↔core protocol on the same QUIC endpoint (segment fetch; replication
/// next): `core/src/peer.rs` defines its frames.
pub const PEER_ALPN: &[u8] = b"weir-peer/1";
/// 2: the header declares the payload length, the batch id carries the spool incarnation.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest response the edge reads.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest request header a core reads; a longer one is refused unread.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// Identifies a forwarded batch: retries carry the same id, so the digest can recognise a
/// batch Kafka already holds.
///
/// - `edge_id` is the name in the edge's client certificate: the core refuses a header
///   naming another edge, so one edge cannot forge another's ids.
/// - `incarnation` is random per spool directory: a wiped or replaced spool starts
///   again at sequence 0 under a new incarnation, never repeating an id.
/// - `seq` is the spool's sequence number, never reused within an incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchId {
    pub edge_id: String,
    #[serde(default)]
    pub incarnation: String,
    pub seq: u64,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.edge_id, self.incarnation, self.seq)
    }
}

impl BatchId {
    /// The id back from its [`Display`](std::fmt::Display) form `edge:incarnation:seq`
    /// (the edge id may contain `:` itself); `None` for anything else.
    pub fn parse(text: &str) -> Option<BatchId> {
        let (rest, seq) = text.rsplit_once(':')?;
        let (edge_id, incarnation) = rest.rsplit_once(':')?;
        if edge_id.is_empty() {
            return None;
        }
        Some(BatchId { edge_id: edge_id.to_owned(), incarnation: incarnation.to_owned(), seq: seq.parse().ok()? })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestHeader {
    pub version: u16,
    pub batch_id: BatchId,
    pub n_events: u64,
    /// Length of the payload after the header. Defaults to 0 only so that a header of
    /// an older version still parses far enough to be answered `UnsupportedVersion`.
    #[serde(default)]
    pub payload_bytes: u64,
}

/// Batches (streams) one edge connection may have open at a core. An edge keeps at
/// most this many in flight: past it, opening a stream waits for a core's credit.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Why the core refused a batch. The edge retries `Unavailable` and `Internal` (on this or
/// another core); `UnsupportedVersion` and `Forbidden` are about that core, so the edge
/// tries the other cores before it gives up; the other codes mean the batch itself is
/// unacceptable and it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Kafka did not acknowledge in time: retry later or elsewhere.
    Unavailable,
    /// The frame or payload could not be decoded, or Kafka refused the records as invalid.
    BadRequest,
    /// The frame, the decoded payload or a record exceeds a limit of the core or Kafka.
    TooLarge,
    /// Protocol version not supported by this core.
    UnsupportedVersion,
    /// The core may not write to Kafka (its credentials or ACLs): an operator must act.
    Forbidden,
    Internal,
    /// A code this edge does not know (sent by a newer core). Treated as a refusal of the
    /// batch, never as a reason to resend it in a loop.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Worth sending again, on this core or another.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }

    /// A refusal that depends on the core that gave it: another core may accept the batch.
    pub fn is_core_specific(self) -> bool {
        matches!(self, ErrorCode::UnsupportedVersion | ErrorCode::Forbidden)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Kafka acknowledged every event of the batch.
    Ack { batch_id: BatchId, n_events: u64 },
    Error { code: ErrorCode, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame too short: {0} bytes, the header length needs 4")]
    ShortFrame(usize),
    #[error("frame header claims {claimed} bytes but only {available} follow")]
    TruncatedHeader { claimed: usize, available: usize },
    #[error("frame header of {0} bytes exceeds the limit of {MAX_HEADER_BYTES}")]
    HeaderTooLarge(usize),
    #[error("invalid request header: {0}")]
    Header(serde_json::Error),
    #[error("payload is not valid zstd or decompresses to more than {limit} bytes: {source}")]
    Decompress { limit: usize, source: std::io::Error },
    #[error("payload is not a valid JSON batch list: {0}")]
    Payload(serde_json::Error),
    #[error("could not encode payload: {0}")]
    Encode(std::io::Error),
}

/// Compresses batches into a spoolable, forwardable payload.
pub fn encode_payload(batches: &[EventBatch]) -> Result<Bytes, WireError> {
    // Sized up front: growing a buffer of a few hundred KiB by doubling copies it ~8 times.
    let estimate: usize = batches.iter().flat_map(|b| &b.events).map(|e| e.raw.len() + 48).sum::<usize>() + 256;
    let mut json = Vec::with_capacity(estimate);
    crate::event::write_batches(&mut json, batches).map_err(|e| WireError::Encode(e.into()))?;
    thread_local! {
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    }
    // Level 1: edges are small machines; the ratio on log text is already good.
    with_context(&COMPRESSOR, || zstd::bulk::Compressor::new(1), |c| c.compress(&json))
        .map(Bytes::from)
        .map_err(WireError::Encode)
}

/// Runs `f` with this thread's zstd context, created on first use: creating one per
/// batch showed up in profiles.
fn with_context<C: 'static, T>(
    key: &'static std::thread::LocalKey<RefCell<Option<C>>>,
    new: impl FnOnce() -> std::io::Result<C>,
    f: impl FnOnce(&mut C) -> std::io::Result<T>,
) -> std::io::Result<T> {
    key.with(|cell| {
        let mut cell = cell.borrow_mut();
        let context = match cell.as_mut() {
            Some(context) => context,
            None => cell.insert(new()?),
        };
        f(context)
    })
}

/// The decompressed size a payload's zstd frame declares (edges always write it).
pub fn declared_size(payload: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(payload).ok().flatten()
}

/// Decompresses a payload, refusing one that inflates past `max_bytes` (a zstd bomb
/// would otherwise exhaust the core's memory).
///
/// Edges write the decompressed size into the frame header; the output buffer is
/// allocated at exactly that size (a buffer of `max_bytes`, 64 MiB by default, per batch
/// cost page faults), and a frame that holds more than it declares fails.
pub fn decompress_payload(payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, WireError> {
    let declared = declared_size(payload);
    let capacity = match declared {
        Some(size) if size > max_bytes as u64 => {
            let source = std::io::Error::other(format!("frame declares {size} bytes"));
            return Err(WireError::Decompress { limit: max_bytes, source });
        }
        Some(size) => size as usize,
        // No declared size (not written by a Weir edge): bounded by the limit alone.
        None => max_bytes,
    };
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }
    with_context(&DECOMPRESSOR, zstd::bulk::Decompressor::new, |d| d.decompress(payload, capacity))
        .map_err(|source| WireError::Decompress { limit: max_bytes, source })
}

/// Decompresses and decodes a payload completely.
pub fn decode_payload(payload: &[u8], max_bytes: usize) -> Result<Vec<EventBatch>, WireError> {
    serde_json::from_slice(&decompress_payload(payload, max_bytes)?).map_err(WireError::Payload)
}

/// One batch of a decompressed payload, checked against the [`EventBatch`] schema but
/// kept as its JSON text: the core publishes that text as the Kafka record unchanged,
/// instead of decoding every event and encoding it again.
#[derive(Debug)]
pub struct RawBatch<'a> {
    pub repository: String,
    pub tags: BTreeMap<String, String>,
    pub n_events: u64,
    /// The batch's JSON, exactly as the edge encoded it.
    pub json: &'a str,
}

impl RawBatch<'_> {
    pub fn source_key(&self) -> String {
        crate::event::source_key(&self.repository, &self.tags)
    }
}

/// Splits a decompressed payload into its batches, validating each one's shape (every
/// event needs its `raw` text) without building the events.
pub fn split_payload(json: &[u8]) -> Result<Vec<RawBatch<'_>>, WireError> {
    let batches: Vec<&RawValue> = serde_json::from_slice(json).map_err(WireError::Payload)?;
    batches
        .into_iter()
        .map(|raw| {
            let check: BatchCheck = serde_json::from_str(raw.get()).map_err(WireError::Payload)?;
            Ok(RawBatch { repository: check.repository, tags: check.tags, n_events: check.events.0, json: raw.get() })
        })
        .collect()
}

#[derive(Deserialize)]
struct BatchCheck {
    repository: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default, rename = "parser")]
    _parser: Option<String>,
    #[serde(rename = "ingest_ts_ms")]
    _ingest_ts_ms: i64,
    events: EventCount,
}

/// Counts the events of a batch while checking each one, borrowing text where it can.
struct EventCount(u64);

#[derive(Deserialize)]
struct EventCheck<'a> {
    #[serde(default, rename = "ts")]
    _timestamp_ms: Option<i64>,
    #[serde(borrow, rename = "raw")]
    _raw: Cow<'a, str>,
    #[serde(default, rename = "attrs")]
    _attributes: Option<IgnoredAny>,
}

impl<'de> Deserialize<'de> for EventCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> serde::de::Visitor<'de> for Counter {
            type Value = EventCount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EventCount, A::Error> {
                let mut n = 0;
                while seq.next_element::<EventCheck<'de>>()?.is_some() {
                    n += 1;
                }
                Ok(EventCount(n))
            }
        }
        deserializer.deserialize_seq(Counter)
    }
}

pub fn encode_request(header: &RequestHeader, payload: &[u8]) -> Bytes {
    let header = serde_json::to_vec(header).expect("request header serialises");
    let mut frame = BytesMut::with_capacity(4 + header.len() + payload.len());
    frame.put_u32(header.len() as u32);
    frame.put_slice(&header);
    frame.put_slice(payload);
    frame.freeze()
}

pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, &[u8]), WireError> {
    if frame.len() < 4 {
        return Err(WireError::ShortFrame(frame.len()));
    }
    let header_len = header_len(frame[..4].try_into().expect("4 bytes"))?;
    let rest = &frame[4..];
    if header_len > rest.len() {
        return Err(WireError::TruncatedHeader { claimed: header_len, available: rest.len() });
    }
    let header = decode_header(&rest[..header_len])?;
    Ok((header, &rest[header_len..]))
}

/// The header length a frame's first four bytes declare, refused past [`MAX_HEADER_BYTES`].
pub fn header_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(WireError::HeaderTooLarge(len));
    }
    Ok(len)
}

pub fn decode_header(bytes: &[u8]) -> Result<RequestHeader, WireError> {
    serde_json::from_slice(bytes).map_err(WireError::Header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_parse_back_from_their_display() {
        let id = BatchId { edge_id: "site:a".into(), incarnation: "f00d".into(), seq: 42 };
        assert_eq!(BatchId::parse(&id.to_string()), Some(id));
        assert_eq!(BatchId::parse("nope"), None);
        assert_eq!(BatchId::parse(":inc:1"), None);
        assert_eq!(BatchId::parse("e:inc:x"), None);
    }
    use crate::Event;

    fn sample() -> Vec<EventBatch> {
        vec![EventBatch {
            repository: "r".into(),
            tags: Default::default(),
            parser: None,
            ingest_ts_ms: 7,
            attributes: Default::default(),
            events: vec![Event::raw("hello"), Event::raw("world")],
        }]
    }

    #[test]
    fn request_roundtrip() {
        let payload = encode_payload(&sample()).unwrap();
        let header = RequestHeader {
            version: PROTOCOL_VERSION,
            batch_id: BatchId { edge_id: "e1".into(), incarnation: "abc".into(), seq: 42 },
            n_events: 2,
            payload_bytes: payload.len() as u64,
        };
        let frame = encode_request(&header, &payload);
        let (decoded, body) = decode_request(&frame).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(decode_payload(body, 1 << 20).unwrap(), sample());
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(decode_request(&[0, 0]), Err(WireError::ShortFrame(2))));
        assert!(matches!(
            decode_request(&[0, 0, 0, 9, b'{']),
            Err(WireError::TruncatedHeader { claimed: 9, available: 1 })
        ));
        assert!(matches!(decode_request(&[0, 0, 0, 1, b'x']), Err(WireError::Header(_))));
        assert!(matches!(decode_request(&[0, 1, 0, 0, b'{']), Err(WireError::HeaderTooLarge(65536))));
    }

    #[test]
    fn an_error_code_from_a_newer_core_is_unknown_not_an_error() {
        let answer = r#"{"status":"error","code":"quota_exceeded","message":"m"}"#;
        let response: Response = serde_json::from_str(answer).unwrap();
        assert_eq!(response, Response::Error { code: ErrorCode::Unknown, message: "m".into() });
        assert!(!ErrorCode::Unknown.is_retryable(), "never resent in a loop");
    }

    #[test]
    fn an_older_header_still_parses_far_enough_to_name_its_version() {
        let v1 = r#"{"version":1,"batch_id":{"edge_id":"e","seq":3},"n_events":1}"#;
        let header = decode_header(v1.as_bytes()).unwrap();
        assert_eq!((header.version, header.payload_bytes, header.batch_id.seq), (1, 0, 3));
        assert!(matches!(decode_payload(b"not zstd", 100), Err(WireError::Decompress { .. })));
    }

    #[test]
    fn split_payload_keeps_each_batch_text_and_counts_events() {
        let mut batches = sample();
        batches.push(EventBatch { repository: "s".into(), events: vec![Event::raw("a \"quoted\" \u{e9}")], ..sample().remove(0) });
        let json = serde_json::to_vec(&batches).unwrap();
        let raw = split_payload(&json).unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!((raw[0].n_events, raw[1].n_events), (2, 1));
        assert_eq!(raw[1].source_key(), batches[1].source_key());
        for (raw, batch) in raw.iter().zip(&batches) {
            assert_eq!(&serde_json::from_str::<EventBatch>(raw.json).unwrap(), batch, "text is the batch, unchanged");
        }
    }

    #[test]
    fn split_payload_refuses_batches_that_are_not_event_batches() {
        for bad in [r#"{}"#, r#"[{"events":[]}]"#, r#"[{"repository":"r","ingest_ts_ms":1,"events":[{"ts":1}]}]"#, r#"[{"repository":"r","ingest_ts_ms":1,"events":{}}]"#] {
            assert!(matches!(split_payload(bad.as_bytes()), Err(WireError::Payload(_))), "{bad}");
        }
    }

    #[test]
    fn decompression_bomb_is_refused() {
        let big = vec![Event::raw("a".repeat(1 << 20))];
        let batches = vec![EventBatch { events: big, ..sample().remove(0) }];
        let payload = encode_payload(&batches).unwrap();
        assert!(payload.len() < 10_000, "test needs a highly compressible payload");
        assert!(matches!(decode_payload(&payload, 64 * 1024), Err(WireError::Decompress { .. })));
        // Without a declared size (a frame not written by an edge), the limit still holds.
        let mut stream = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        stream.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut stream, &vec![b'a'; 1 << 20]).unwrap();
        let undeclared = stream.finish().unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&undeclared).unwrap(), None);
        assert!(matches!(decompress_payload(&undeclared, 64 * 1024), Err(WireError::Decompress { .. })));
        assert_eq!(decompress_payload(&undeclared, 2 << 20).unwrap().len(), 1 << 20);
    }
}

//! The event model: what a client sent, after the HTTP layer decoded it, and before any
//! parser ran.
//!
//! An [`EventBatch`] holds events of one source (one repository and one set of tags). It is
//! the unit the core publishes as one Kafka record, as LogScale does, so events of one
//! source stay in order within a partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Fields;

/// One event as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time in milliseconds since the Unix epoch, when the client gave one. The
    /// digest falls back to the ingest time when absent.
    #[serde(rename = "ts", default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    /// The raw text of the event; a parser works on it.
    pub raw: String,
    /// Fields the client sent alongside the raw text (structured ingest, HEC `fields`).
    #[serde(rename = "attrs", default, skip_serializing_if = "Fields::is_empty")]
    pub attributes: Fields,
}

impl Event {
    pub fn raw(raw: impl Into<String>) -> Self {
        Event { timestamp_ms: None, raw: raw.into(), attributes: Fields::new() }
    }
}

/// Events of one source, bound for one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub repository: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// A parser the client asked for (LogScale unstructured `type`, HEC `sourcetype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parser: Option<String>,
    /// When the first node that accepted the events (edge or core) received them.
    pub ingest_ts_ms: i64,
    /// Fields the request gave for all its events (LogScale unstructured `fields`, HEC raw
    /// `host`/`source`), kept once per batch instead of copied onto every event. An
    /// event's own attribute of the same name wins.
    #[serde(rename = "attrs", default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub events: Vec<Event>,
}

impl EventBatch {
    /// The Kafka record key: repository plus tags, so that one source always maps to one
    /// partition and its events stay in order.
    pub fn source_key(&self) -> String {
        source_key(&self.repository, &self.tags)
    }
}

/// The JSON of `batch` as whole [`EventBatch`]es of the same source, each at most
/// `max_bytes` long (an event too large for that still travels alone, and the broker
/// decides), the events in order. The same bytes `serde_json` writes for each part, but
/// every event is serialised exactly once, straight into its part: sizing the parts first
/// and serialising them after cost the OTLP path a second pass over every attribute.
pub fn encode_parts(mut batch: EventBatch, max_bytes: usize) -> serde_json::Result<Vec<Vec<u8>>> {
    let events = std::mem::take(&mut batch.events);
    let prefix = envelope(&batch)?;
    let mut parts = Vec::new();
    // One allocation for the usual single part: a guess a little over the JSON's size
    // (the raw texts, the keys and punctuation of each event, room for each attribute),
    // since growing a buffer of a few hundred KiB copies it each time.
    let guess = prefix.len() + events.iter().map(|e| e.raw.len() + 48 + 48 * e.attributes.len()).sum::<usize>();
    let mut current = Vec::with_capacity(guess.min(max_bytes.saturating_add(1024)));
    current.extend_from_slice(&prefix);
    let mut in_current = 0usize;
    for event in &events {
        let start = current.len();
        if in_current > 0 {
            current.push(b',');
        }
        write_event(&mut current, event)?;
        if in_current > 0 && current.len() + CLOSE.len() > max_bytes {
            // This event starts the next part (without the comma).
            let mut next = prefix.clone();
            next.extend_from_slice(&current[start + 1..]);
            current.truncate(start);
            current.extend_from_slice(CLOSE);
            parts.push(std::mem::replace(&mut current, next));
            in_current = 0;
        }
        in_current += 1;
    }
    if in_current > 0 {
        current.extend_from_slice(CLOSE);
        parts.push(current);
    }
    Ok(parts)
}

const CLOSE: &[u8] = b"]}";

/// The JSON of `batch` (whose `events` are empty) up to its events' opening bracket:
/// every field of the batch, `events` last (`…,"events":[`).
fn envelope(batch: &EventBatch) -> serde_json::Result<Vec<u8>> {
    let mut prefix = serde_json::to_vec(batch)?;
    if !prefix.ends_with(b"[]}") {
        // Only a change of `EventBatch` (a field after `events`) gets here.
        return Err(<serde_json::Error as serde::ser::Error>::custom("EventBatch must serialise `events` last"));
    }
    prefix.truncate(prefix.len() - 2);
    Ok(prefix)
}

/// Appends `batches` as a JSON array: the bytes `serde_json::to_writer` writes for them,
/// with the events written by the fast path of [`encode_parts`] (the edge's spool payload).
pub fn write_batches(out: &mut Vec<u8>, batches: &[EventBatch]) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // The envelope of a copy without events: its tags and attributes are few.
        let bare = EventBatch {
            repository: batch.repository.clone(),
            tags: batch.tags.clone(),
            parser: batch.parser.clone(),
            ingest_ts_ms: batch.ingest_ts_ms,
            attributes: batch.attributes.clone(),
            events: Vec::new(),
        };
        out.extend_from_slice(&envelope(&bare)?);
        for (j, event) in batch.events.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_event(out, event)?;
        }
        out.extend_from_slice(CLOSE);
    }
    out.push(b']');
    Ok(())
}

/// Appends `event` as JSON: the bytes `serde_json::to_writer` writes for it, with a fast
/// path for the raw text, which is most of an event's bytes and seldom holds a character
/// JSON escapes (serde_json's escaping scan was the largest single cost of encoding).
fn write_event(out: &mut Vec<u8>, event: &Event) -> serde_json::Result<()> {
    out.push(b'{');
    if let Some(ts) = event.timestamp_ms {
        out.extend_from_slice(b"\"ts\":");
        // serde_json's integer writer (itoa), not `fmt`, which showed in profiles.
        serde_json::to_writer(&mut *out, &ts)?;
        out.push(b',');
    }
    out.extend_from_slice(b"\"raw\":");
    write_str(out, &event.raw)?;
    if !event.attributes.is_empty() {
        out.extend_from_slice(b",\"attrs\":{");
        for (i, (key, value)) in event.attributes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, key)?;
            out.push(b':');
            match value {
                serde_json::Value::String(text) => write_str(out, text)?,
                other => serde_json::to_writer(&mut *out, other)?,
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string, as serde_json writes it.
fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    let bytes = text.as_bytes();
    if escape_free(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, text)
    }
}

/// Whether JSON writes `bytes` (valid UTF-8) unescaped: no control character, quote or
/// backslash. Branch-free within each chunk, so that it compiles to vector instructions.
fn escape_free(bytes: &[u8]) -> bool {
    bytes.chunks(64).all(|chunk| chunk.iter().fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\')))
}

/// A cheap upper bound of `attributes`' JSON size, without serialising them: every
/// string byte counted as its longest escape (`\u00XX`). When this is under a limit, the
/// exact size ([`encoded_len`]) need not be computed.
pub fn encoded_len_at_most<'a>(attributes: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>) -> usize {
    fn value(v: &serde_json::Value) -> usize {
        use serde_json::Value::*;
        match v {
            Null | Bool(_) => 5,
            // u64/i64 print in at most 20 characters, f64 in at most 24.
            Number(_) => 24,
            String(s) => 2 + 6 * s.len(),
            Array(items) => 2 + items.iter().map(|i| value(i) + 1).sum::<usize>(),
            Object(map) => 2 + map.iter().map(|(k, v)| 2 + 6 * k.len() + 2 + value(v)).sum::<usize>(),
        }
    }
    let mut attributes = attributes.into_iter().peekable();
    if attributes.peek().is_none() {
        return 0;
    }
    2 + attributes.map(|(k, v)| 2 + 6 * k.len() + 2 + value(v)).sum::<usize>()
}

/// The Kafka record key of a source: repository plus tags.
pub fn source_key(repository: &str, tags: &BTreeMap<String, String>) -> String {
    let mut key = repository.to_owned();
    for (name, value) in tags {
        key.push('\u{1f}');
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    key
}

/// Bytes of `attributes` as JSON, counted without building the text; 0 when empty.
pub fn encoded_len(attributes: &Fields) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if attributes.is_empty() {
        return 0;
    }
    let mut count = Count(0);
    // Serialising JSON values cannot fail.
    let _ = serde_json::to_writer(&mut count, attributes);
    count.0
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, size: usize) -> EventBatch {
        EventBatch {
            repository: "repo".into(),
            tags: BTreeMap::from([("host".into(), "a".into())]),
            parser: None,
            ingest_ts_ms: 1,
            attributes: Default::default(),
            events: (0..n).map(|i| Event::raw(format!("{i:0size$}"))).collect(),
        }
    }

    #[test]
    fn split_keeps_order_and_every_event() {
        let parts = encode_parts(batch(100, 100), 2_000).unwrap();
        assert!(parts.len() > 1, "expected several parts, got {}", parts.len());
        let joined: Vec<String> = parts
            .iter()
            .flat_map(|p| serde_json::from_slice::<EventBatch>(p).unwrap().events.into_iter().map(|e| e.raw))
            .collect();
        let expected: Vec<String> = batch(100, 100).events.into_iter().map(|e| e.raw).collect();
        assert_eq!(joined, expected);
        for part in &parts {
            assert!(part.len() <= 2_000);
        }
    }

    /// `encode_parts` writes exactly what serde writes for the parts `split_by_size`
    /// would make, and keeps every part under the limit when its events fit.
    #[test]
    fn encode_parts_matches_serde_and_keeps_the_limit() {
        let mut rich = batch(40, 30);
        rich.attributes.insert("host".into(), serde_json::json!("h\u{1}\"q"));
        rich.parser = Some("json".into());
        for (i, event) in rich.events.iter_mut().enumerate() {
            event.timestamp_ms = (i % 2 == 0).then_some(i as i64);
            if i % 3 == 0 {
                event.attributes.insert(format!("k{i}"), serde_json::json!({"a": [1, 2.5, null, "\n"]}));
            }
        }
        for limit in [1, 200, 700, 1_000_000] {
            let parts = encode_parts(rich.clone(), limit).unwrap();
            let decoded: Vec<EventBatch> = parts.iter().map(|p| serde_json::from_slice(p).unwrap()).collect();
            for (part, bytes) in decoded.iter().zip(&parts) {
                assert_eq!(&serde_json::to_vec(part).unwrap(), bytes, "limit {limit}: the bytes serde writes");
                assert!(bytes.len() <= limit || part.events.len() == 1, "limit {limit}: {} bytes, {} events", bytes.len(), part.events.len());
                assert_eq!((&part.repository, &part.tags, &part.parser, &part.attributes), (&rich.repository, &rich.tags, &rich.parser, &rich.attributes));
            }
            let events: Vec<Event> = decoded.into_iter().flat_map(|b| b.events).collect();
            assert_eq!(events, rich.events, "limit {limit}: every event once, in order");
        }
        assert_eq!(encode_parts(rich.clone(), 1).unwrap().len(), 40, "one event per part under a tiny limit");
        assert_eq!(encode_parts(rich.clone(), 1 << 20).unwrap().len(), 1);
        let empty = EventBatch { events: vec![], ..rich.clone() };
        assert!(encode_parts(empty, 100).unwrap().is_empty(), "no events, no record");
        for event in &rich.events {
            assert!(encoded_len(&event.attributes) <= encoded_len_at_most(event.attributes.iter()));
        }
        assert!(encoded_len_at_most(&rich.attributes) > 0);
    }

    #[test]
    fn events_are_written_as_serde_writes_them() {
        let texts = ["", "plain text", "quote \" and \\ backslash", "tab\tnew\nline\u{1}\u{1f}", "del \u{7f} é 日本 😀", &"x".repeat(200)];
        for (i, text) in texts.iter().enumerate() {
            for ts in [None, Some(-5), Some(1_700_000_000_000)] {
                let mut event = Event { timestamp_ms: ts, raw: text.to_string(), attributes: Default::default() };
                if i % 2 == 1 {
                    event.attributes.insert("k\"".into(), serde_json::json!([text, 1.5, {"n": null}]));
                    event.attributes.insert("a".into(), serde_json::json!(text));
                    event.attributes.insert(text.to_string(), serde_json::json!(7));
                }
                let mut out = Vec::new();
                write_event(&mut out, &event).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&event).unwrap());
            }
        }
    }

    #[test]
    fn batches_are_written_as_serde_writes_them() {
        let mut rich = batch(5, 3);
        rich.attributes.insert("host".into(), serde_json::json!("h\u{1}\"q"));
        rich.parser = Some("json".into());
        rich.events[1].timestamp_ms = Some(9);
        rich.events[2].attributes.insert("k".into(), serde_json::json!({"a": [1, "\n"]}));
        let empty = EventBatch { events: vec![], tags: BTreeMap::new(), ..batch(0, 0) };
        for batches in [vec![], vec![rich.clone()], vec![rich.clone(), empty, batch(2, 1)]] {
            let mut out = Vec::new();
            write_batches(&mut out, &batches).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&batches).unwrap());
        }
    }

    #[test]
    fn oversized_event_travels_alone() {
        let parts = encode_parts(batch(3, 5_000), 1_000).unwrap();
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn source_key_differs_by_tags() {
        let a = batch(1, 1);
        let mut b = batch(1, 1);
        b.tags.insert("host".into(), "b".into());
        assert_ne!(a.source_key(), b.source_key());
    }
}

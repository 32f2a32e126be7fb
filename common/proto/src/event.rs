//! The event model: what a client sent, after the HTTP layer decoded it, and before any
//! parser ran.
//!
//! An [`EventBatch`] holds events of one source (one repository and one set of tags). It is
//! the unit the core publishes as one Kafka record, as LogScale does, so events of one
//! source stay in order within a partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    #[serde(rename = "attrs", default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn raw(raw: impl Into<String>) -> Self {
        Event { timestamp_ms: None, raw: raw.into(), attributes: serde_json::Map::new() }
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

    /// Splits the batch into batches of the same source whose encoded size stays under
    /// `max_bytes` (a single event larger than that still travels alone, and the broker
    /// decides).
    pub fn split_by_size(self, max_bytes: usize) -> Vec<EventBatch> {
        let overhead = 64 + self.source_key().len();
        let mut out = Vec::new();
        let mut current = Vec::new();
        let mut current_bytes = overhead;
        let EventBatch { repository, tags, parser, ingest_ts_ms, attributes, events } = self;
        let overhead = overhead + encoded_len(&attributes);
        let make = |events: Vec<Event>| EventBatch {
            repository: repository.clone(),
            tags: tags.clone(),
            parser: parser.clone(),
            ingest_ts_ms,
            attributes: attributes.clone(),
            events,
        };
        for event in events {
            let size = approx_encoded_len(&event);
            if !current.is_empty() && current_bytes + size > max_bytes {
                out.push(make(std::mem::take(&mut current)));
                current_bytes = overhead;
            }
            current_bytes += size;
            current.push(event);
        }
        if !current.is_empty() {
            out.push(make(current));
        }
        out
    }
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

/// A cheap upper estimate of an event's JSON size, without serialising it.
fn approx_encoded_len(event: &Event) -> usize {
    // Escapes can at most double plain text; attributes are rarely large, so serialising
    // them is acceptable when present.
    32 + event.raw.len() * 2 + encoded_len(&event.attributes)
}

/// Bytes of `attributes` as JSON, counted without building the text; 0 when empty.
pub fn encoded_len(attributes: &serde_json::Map<String, serde_json::Value>) -> usize {
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
    // Serialising a map of JSON values cannot fail.
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
        let parts = batch(100, 100).split_by_size(2_000);
        assert!(parts.len() > 1, "expected several parts, got {}", parts.len());
        let joined: Vec<String> =
            parts.iter().flat_map(|b| b.events.iter().map(|e| e.raw.clone())).collect();
        let expected: Vec<String> = batch(100, 100).events.into_iter().map(|e| e.raw).collect();
        assert_eq!(joined, expected);
        for part in &parts {
            assert!(serde_json::to_vec(part).unwrap().len() <= 2_000);
        }
    }

    #[test]
    fn oversized_event_travels_alone() {
        let parts = batch(3, 5_000).split_by_size(1_000);
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

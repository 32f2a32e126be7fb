//! Decoding of the request bodies the ingest API accepts into [`EventBatch`]es.
//!
//! Pure functions, no I/O: every format is checked completely before anything is
//! published, so a malformed request publishes nothing. Errors name what is wrong and
//! where (item and event index, or line and column of bad JSON).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use weir_proto::{Event, EventBatch, Fields};

/// A body that cannot be ingested, with the Splunk HEC status code for HEC endpoints.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FormatError {
    pub message: String,
    /// HEC's numeric code (5 no data, 6 invalid data format, 12 event field required,
    /// 13 event field blank).
    pub hec_code: u16,
    /// For HEC: the 0-based index of the first invalid event.
    pub invalid_event: Option<usize>,
}

impl From<FormatError> for weir_proto::Refusal {
    fn from(error: FormatError) -> weir_proto::Refusal {
        let refusal = weir_proto::Refusal::bad_request(error.message)
            .with_hint("fix the request body; nothing of this request was ingested")
            .with_hec_code(error.hec_code);
        match error.invalid_event {
            Some(index) => refusal.with_invalid_event(index),
            None => refusal,
        }
    }
}

impl FormatError {
    pub(crate) fn new(message: impl Into<String>, hec_code: u16) -> Self {
        FormatError { message: message.into(), hec_code, invalid_event: None }
    }
}

/// What the token and request say about the events' destination.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub repository: &'a str,
    /// Parser configured for the token, used when the request names none.
    pub parser: Option<&'a str>,
    pub ingest_ts_ms: i64,
}

impl Target<'_> {
    fn batch(&self, tags: BTreeMap<String, String>, parser: Option<String>, events: Vec<Event>) -> EventBatch {
        EventBatch {
            repository: self.repository.to_owned(),
            tags,
            parser: parser.or_else(|| self.parser.map(str::to_owned)),
            ingest_ts_ms: self.ingest_ts_ms,
            attributes: Map::new(),
            events,
        }
    }
}

fn json_error(what: &str, error: &serde_json::Error) -> FormatError {
    FormatError::new(
        format!(
            "invalid JSON in {what} at line {} column {}: {error}",
            error.line(),
            error.column()
        ),
        6,
    )
}

fn tags_from(map: Map<String, Value>) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// Parses a LogScale timestamp: RFC 3339 text or epoch milliseconds.
pub(crate) fn timestamp_ms(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| format!("timestamp {n} is not a number of epoch milliseconds")),
        Value::String(s) => {
            if let Ok(ms) = s.parse::<i64>() {
                return Ok(ms);
            }
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|e| format!("timestamp {s:?} is neither RFC 3339 nor epoch milliseconds: {e}"))
        }
        other => Err(format!("timestamp {other} must be an RFC 3339 string or epoch milliseconds")),
    }
}

#[derive(Deserialize)]
struct StructuredItem {
    #[serde(default)]
    tags: Map<String, Value>,
    events: Vec<StructuredEvent>,
}

#[derive(Deserialize)]
struct StructuredEvent {
    timestamp: Option<Value>,
    #[serde(default)]
    attributes: Fields,
    rawstring: Option<String>,
}

/// `POST /api/v1/ingest/humio-structured`:
/// `[{"tags": {...}, "events": [{"timestamp": ..., "attributes": {...}, "rawstring": "..."}]}]`
pub fn humio_structured(body: &[u8], target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let items: Vec<StructuredItem> =
        serde_json::from_slice(body).map_err(|e| json_error("humio-structured body (expected [{\"tags\":{..},\"events\":[..]}])", &e))?;
    let mut batches = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut events = Vec::with_capacity(item.events.len());
        for (j, event) in item.events.into_iter().enumerate() {
            let timestamp_ms = match &event.timestamp {
                Some(ts) => Some(timestamp_ms(ts).map_err(|e| FormatError::new(format!("item {i} event {j}: {e}"), 6))?),
                None => None,
            };
            let raw = match event.rawstring {
                Some(raw) => raw,
                None if !event.attributes.is_empty() => serde_json::to_string(&event.attributes).unwrap_or_default(),
                None => {
                    return Err(FormatError::new(
                        format!("item {i} event {j}: an event needs a rawstring or attributes"),
                        12,
                    ));
                }
            };
            events.push(Event { timestamp_ms, raw, attributes: event.attributes });
        }
        if !events.is_empty() {
            batches.push(target.batch(tags_from(item.tags), None, events));
        }
    }
    Ok(batches)
}

#[derive(Deserialize)]
struct UnstructuredItem {
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    tags: Map<String, Value>,
    #[serde(rename = "type")]
    parser: Option<String>,
    messages: Vec<String>,
}

/// `POST /api/v1/ingest/humio-unstructured`:
/// `[{"fields": {...}, "tags": {...}, "type": "parser", "messages": ["line", ...]}]`
pub fn humio_unstructured(body: &[u8], target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let items: Vec<UnstructuredItem> = serde_json::from_slice(body)
        .map_err(|e| json_error("humio-unstructured body (expected [{\"fields\":{..},\"messages\":[..]}])", &e))?;
    Ok(items
        .into_iter()
        .filter(|item| !item.messages.is_empty())
        .map(|item| {
            let events = item.messages.into_iter().map(Event::raw).collect();
            EventBatch { attributes: item.fields, ..target.batch(tags_from(item.tags), item.parser, events) }
        })
        .collect())
}

/// `POST /api/v1/ingest/raw`: the whole body is one event.
pub fn raw_body(body: &[u8], target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let text = utf8(body)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(FormatError::new("empty body: send the event text as the request body", 5));
    }
    Ok(vec![target.batch(BTreeMap::new(), None, vec![Event::raw(text)])])
}

fn utf8(body: &[u8]) -> Result<&str, FormatError> {
    std::str::from_utf8(body).map_err(|e| {
        FormatError::new(format!("body is not valid UTF-8 at byte {}", e.valid_up_to()), 6)
    })
}

/// Query parameters of HEC's raw endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct HecRawParams {
    pub host: Option<String>,
    pub source: Option<String>,
    pub sourcetype: Option<String>,
    pub channel: Option<String>,
}

/// `POST /services/collector/raw`: one event per line.
pub fn hec_raw(body: &[u8], params: &HecRawParams, target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let text = utf8(body)?;
    let mut attributes = Map::new();
    for (name, value) in [("host", &params.host), ("source", &params.source), ("sourcetype", &params.sourcetype)] {
        if let Some(value) = value {
            attributes.insert(name.to_owned(), Value::String(value.clone()));
        }
    }
    let events: Vec<Event> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(Event::raw)
        .collect();
    if events.is_empty() {
        return Err(FormatError::new("No data: the body holds no non-empty line", 5));
    }
    Ok(vec![EventBatch { attributes, ..target.batch(BTreeMap::new(), params.sourcetype.clone(), events) }])
}

#[derive(Deserialize)]
struct HecEvent {
    event: Option<Value>,
    time: Option<Value>,
    host: Option<String>,
    source: Option<String>,
    sourcetype: Option<String>,
    index: Option<String>,
    #[serde(default)]
    fields: Fields,
}

fn hec_time_ms(value: &Value) -> Option<i64> {
    let seconds = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse::<f64>().ok()?,
        _ => return None,
    };
    Some((seconds * 1000.0).round() as i64)
}

/// `POST /services/collector/event`: concatenated JSON objects
/// `{"event": ..., "time": 1700000000.5, "host": ..., "source": ..., "sourcetype": ..., "fields": {...}}`.
/// Consecutive events with the same sourcetype share a batch (the sourcetype selects the
/// parser).
pub fn hec_events(body: &[u8], target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let mut batches: Vec<EventBatch> = Vec::new();
    let mut n = 0usize;
    let stream = serde_json::Deserializer::from_slice(body).into_iter::<HecEvent>();
    for (index, item) in stream.enumerate() {
        n += 1;
        let invalid = |message: String, code: u16| FormatError { message, hec_code: code, invalid_event: Some(index) };
        let hec = item.map_err(|e| {
            invalid(format!("Invalid data format: event {index} at line {} column {}: {e}", e.line(), e.column()), 6)
        })?;
        let raw = match hec.event {
            None | Some(Value::Null) => {
                return Err(invalid(format!("Event field is required: event {index} has no \"event\""), 12));
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(invalid(format!("Event field cannot be blank: event {index}"), 13));
            }
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
        };
        let timestamp_ms = match &hec.time {
            None => None,
            Some(t) => Some(hec_time_ms(t).ok_or_else(|| {
                invalid(format!("Invalid data format: event {index} has time {t}, expected epoch seconds"), 6)
            })?),
        };
        let mut attributes = hec.fields;
        for (name, value) in [("host", hec.host), ("source", hec.source), ("index", hec.index)] {
            if let Some(value) = value {
                attributes.insert(name.to_owned(), Value::String(value));
            }
        }
        if let Some(sourcetype) = &hec.sourcetype {
            attributes.insert("sourcetype".to_owned(), Value::String(sourcetype.clone()));
        }
        let event = Event { timestamp_ms, raw, attributes };
        match batches.last_mut() {
            Some(last) if last.parser.as_deref() == hec.sourcetype.as_deref().or(target.parser) => {
                last.events.push(event)
            }
            _ => batches.push(target.batch(BTreeMap::new(), hec.sourcetype, vec![event])),
        }
    }
    if n == 0 {
        return Err(FormatError::new("No data: the body holds no event", 5));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target { repository: "repo", parser: None, ingest_ts_ms: 5 };

    fn n_events(batches: &[EventBatch]) -> usize {
        batches.iter().map(|b| b.events.len()).sum()
    }

    #[test]
    fn structured_with_tags_timestamps_and_attributes() {
        let body = br#"[{"tags":{"host":"web1","n":3},"events":[
            {"timestamp":"2016-06-06T12:00:00+02:00","attributes":{"a":1},"rawstring":"hello"},
            {"timestamp":1465207200000,"attributes":{"b":"x"}}]}]"#;
        let batches = humio_structured(body, &TARGET).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].tags.get("host").map(String::as_str), Some("web1"));
        assert_eq!(batches[0].tags.get("n").map(String::as_str), Some("3"));
        assert_eq!(batches[0].events[0].timestamp_ms, Some(1_465_207_200_000));
        assert_eq!(batches[0].events[1].timestamp_ms, Some(1_465_207_200_000));
        assert_eq!(batches[0].events[1].raw, r#"{"b":"x"}"#);
    }

    #[test]
    fn structured_errors_name_the_place() {
        let err = humio_structured(br#"[{"events":[{"rawstring":"a"},{"timestamp":"yesterday","rawstring":"b"}]}]"#, &TARGET)
            .unwrap_err();
        assert!(err.message.contains("item 0 event 1"), "{}", err.message);
        let err = humio_structured(b"[{\"events\": [}", &TARGET).unwrap_err();
        assert!(err.message.contains("line 1 column"), "{}", err.message);
        let err = humio_structured(br#"{"events":[]}"#, &TARGET).unwrap_err();
        assert!(err.message.contains("invalid JSON"), "{}", err.message);
    }

    #[test]
    fn unstructured_applies_fields_and_type() {
        let body = br#"[{"fields":{"host":"h"},"type":"kv","messages":["a=1","a=2"]},{"messages":[]}]"#;
        let batches = humio_unstructured(body, &TARGET).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].parser.as_deref(), Some("kv"));
        assert_eq!(batches[0].attributes["host"], "h", "once per batch");
        assert!(batches[0].events[1].attributes.is_empty(), "not copied onto every event");
        assert_eq!(n_events(&batches), 2);
    }

    #[test]
    fn raw_is_one_event_and_refuses_empty() {
        assert_eq!(raw_body(b"a line\n", &TARGET).unwrap()[0].events[0].raw, "a line");
        assert_eq!(raw_body(b"\n", &TARGET).unwrap_err().hec_code, 5);
        assert!(raw_body(&[0xff, 0xfe], &TARGET).unwrap_err().message.contains("UTF-8"));
    }

    #[test]
    fn hec_stream_of_objects() {
        let body = br#"{"event":"one","time":1700000000.25,"host":"h1","sourcetype":"st"}
            {"event":{"k":"v"},"fields":{"f":1},"sourcetype":"st"} {"event":"three"}"#;
        let batches = hec_events(body, &TARGET).unwrap();
        assert_eq!(n_events(&batches), 3);
        assert_eq!(batches.len(), 2, "sourcetype change starts a batch");
        assert_eq!(batches[0].events[0].timestamp_ms, Some(1_700_000_000_250));
        assert_eq!(batches[0].events[1].raw, r#"{"k":"v"}"#);
        assert_eq!(batches[0].parser.as_deref(), Some("st"));
    }

    #[test]
    fn hec_errors_carry_codes_and_event_numbers() {
        let cases: &[(&[u8], u16, Option<usize>)] = &[
            (b"", 5, None),
            (br#"{"event":"a"}{"time":1}"#, 12, Some(1)),
            (br#"{"event":""}"#, 13, Some(0)),
            (br#"{"event":"a"} {"event": nope}"#, 6, Some(1)),
            (br#"{"event":"a","time":"noon"}"#, 6, Some(0)),
        ];
        for (body, code, index) in cases {
            let err = hec_events(body, &TARGET).unwrap_err();
            assert_eq!((err.hec_code, err.invalid_event), (*code, *index), "{}: {}", String::from_utf8_lossy(body), err.message);
        }
    }

    #[test]
    fn hec_raw_lines() {
        let params = HecRawParams { host: Some("h".into()), sourcetype: Some("access".into()), ..Default::default() };
        let batches = hec_raw(b"l1\r\n\nl2\n", &params, &TARGET).unwrap();
        assert_eq!(batches[0].events.iter().map(|e| e.raw.as_str()).collect::<Vec<_>>(), ["l1", "l2"]);
        assert_eq!(batches[0].parser.as_deref(), Some("access"));
        assert_eq!(batches[0].attributes["host"], "h");
        assert!(batches[0].events[0].attributes.is_empty());
        assert_eq!(hec_raw(b"\n\n", &params, &TARGET).unwrap_err().hec_code, 5);
    }
}

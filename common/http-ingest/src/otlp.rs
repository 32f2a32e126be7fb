//! OTLP/HTTP logs (`POST /v1/logs`): an `ExportLogsServiceRequest` as binary protobuf
//! (`application/x-protobuf`) or OTLP-JSON (`application/json`) into [`EventBatch`]es, and
//! the answers OTLP exporters expect (`ExportLogsServiceResponse` on success, a
//! `google.rpc.Status` on error, both in the request's encoding).
//!
//! The messages are `opentelemetry-proto`'s generated types (prost; its serde derives give
//! OTLP-JSON: camelCase keys, hex trace and span ids, 64-bit integers as strings or
//! numbers, unknown fields ignored). Pure functions, no I/O.
//!
//! Mapping (also in the README): one [`EventBatch`] per scope of a resource (one source),
//! one [`Event`] per log record.
//! - timestamp: `time_unix_nano`, else `observed_time_unix_nano`, else none (ingest time)
//! - raw text: the body if it is a string, else the JSON of the structured body (an empty
//!   text when there is no body)
//! - event attributes: `attributes.<key>` (the record's attributes), `severity_text`,
//!   `severity_number`, `trace_id` and `span_id` (lowercase hex), `flags`, `event_name`,
//!   each only when set
//! - batch attributes (once per batch): `resource.<key>` (e.g. `resource.service.name`),
//!   `scope.name`, `scope.version`, `scope.attributes.<key>`
//!
//! Values keep their type: strings, booleans, integers and doubles as JSON scalars, bytes
//! as base64, arrays and key-value lists as JSON arrays and objects. A value nested deeper
//! than [`MAX_VALUE_DEPTH`] refuses the request (400): nothing downstream has to walk an
//! unbounded tree.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use serde_json::{Map, Value};
use weir_proto::{Event, EventBatch, Fields};

use crate::formats::{FormatError, Target};

/// Deepest nesting of arrays and key-value lists accepted in a body or attribute value
/// (a scalar at the top is depth 0).
pub const MAX_VALUE_DEPTH: usize = 32;

/// How a request (and so its answer) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding `Content-Type` names; `Err(content type)` for any other (415).
    pub fn of(headers: &HeaderMap) -> Result<Encoding, String> {
        let value = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)")).unwrap_or("(none)");
        let media_type = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media_type.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(value.to_owned()),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the error body of OTLP/HTTP. Not among `opentelemetry-proto`'s
/// types; `details` (field 3) is left out: we never send any.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The gRPC code that goes with an HTTP status in a `google.rpc.Status`.
fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        408 => 4,             // DEADLINE_EXCEEDED
        429 => 8,             // RESOURCE_EXHAUSTED
        503 => 14,            // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

/// The success body: an empty `ExportLogsServiceResponse` (everything was accepted).
pub fn success_body(encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => ExportLogsServiceResponse { partial_success: None }.encode_to_vec(),
        Encoding::Json => b"{}".to_vec(),
    }
}

/// The error body: a `google.rpc.Status` whose message says what failed and what to do.
pub fn status_body(encoding: Encoding, status: StatusCode, message: &str, hint: &str) -> Vec<u8> {
    let status = Status { code: grpc_code(status), message: format!("{message}; {hint}") };
    match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({"code": status.code, "message": status.message})).unwrap_or_default(),
    }
}

/// Bytes that decoding a protobuf request holds beyond [`DECODED_FACTOR`]×its size, for
/// the node's memory budget: a log record costs 2 bytes on the wire at least but a
/// `LogRecord` and an [`Event`] in memory, so a body of empty records would decode to a
/// hundred times its size. Counted on the wire format (resource_logs = 1 → scope_logs = 2
/// → log_records = 2) before prost allocates anything; 0 for OTLP-JSON, where a record
/// takes more bytes of text than of memory, and for a body that is not protobuf (the
/// decoder then answers why).
///
/// [`DECODED_FACTOR`]: crate::DECODED_FACTOR
pub fn decoded_overhead(body: &[u8], encoding: Encoding) -> usize {
    const PER_RECORD: usize = std::mem::size_of::<LogRecord>() + std::mem::size_of::<Event>() + 64;
    match encoding {
        Encoding::Json => 0,
        Encoding::Protobuf => log_records(body).map_or(0, |n| n.saturating_mul(PER_RECORD)),
    }
}

/// Log records in a protobuf `ExportLogsServiceRequest`, from the wire format only; `None`
/// when the bytes are not well-formed protobuf.
pub fn log_records(body: &[u8]) -> Option<usize> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    /// Calls `each` with the number and bytes of every length-delimited field of a message.
    fn fields(mut buf: &[u8], each: &mut dyn FnMut(u32, &[u8]) -> Option<()>) -> Option<()> {
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            match wire_type {
                WireType::LengthDelimited => {
                    let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                    let body = buf.get(..len)?;
                    each(tag, body)?;
                    buf = &buf[len..];
                }
                WireType::Varint => {
                    decode_varint(&mut buf).ok()?;
                }
                WireType::SixtyFourBit => buf = buf.get(8..)?,
                WireType::ThirtyTwoBit => buf = buf.get(4..)?,
                WireType::StartGroup | WireType::EndGroup => return None,
            }
        }
        Some(())
    }
    let mut n = 0usize;
    fields(body, &mut |tag, resource_logs| match tag {
        1 => fields(resource_logs, &mut |tag, scope_logs| match tag {
            2 => fields(scope_logs, &mut |tag, _| {
                n += usize::from(tag == 2);
                Some(())
            }),
            _ => Some(()),
        }),
        _ => Some(()),
    })?;
    Some(n)
}

/// Decodes a whole request; any error refuses all of it.
pub fn decode(body: &[u8], encoding: Encoding, target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let request = match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body)
            .map_err(|e| FormatError::new(format!("invalid OTLP protobuf ExportLogsServiceRequest: {e}"), 6))?,
        Encoding::Json => serde_json::from_slice::<ExportLogsServiceRequest>(body).map_err(|e| {
            FormatError::new(
                format!("invalid OTLP-JSON ExportLogsServiceRequest at line {} column {}: {e}", e.line(), e.column()),
                6,
            )
        })?,
    };
    to_batches(request, target)
}

fn to_batches(request: ExportLogsServiceRequest, target: &Target) -> Result<Vec<EventBatch>, FormatError> {
    let mut batches = Vec::new();
    for (r, resource_logs) in request.resource_logs.into_iter().enumerate() {
        let mut resource_attributes = Map::new();
        if let Some(resource) = resource_logs.resource {
            let mut insert = |k, v| {
                resource_attributes.insert(k, v);
            };
            put_attributes(&mut insert, "resource.", resource.attributes)
                .map_err(|e| FormatError::new(format!("resourceLogs[{r}].resource: {e}"), 6))?;
        }
        for (s, scope_logs) in resource_logs.scope_logs.into_iter().enumerate() {
            let place = |i: Option<usize>| match i {
                Some(i) => format!("resourceLogs[{r}].scopeLogs[{s}].logRecords[{i}]"),
                None => format!("resourceLogs[{r}].scopeLogs[{s}].scope"),
            };
            let mut attributes = resource_attributes.clone();
            if let Some(scope) = scope_logs.scope {
                if !scope.name.is_empty() {
                    attributes.insert("scope.name".into(), Value::String(scope.name));
                }
                if !scope.version.is_empty() {
                    attributes.insert("scope.version".into(), Value::String(scope.version));
                }
                let mut insert = |k, v| {
                    attributes.insert(k, v);
                };
                put_attributes(&mut insert, "scope.attributes.", scope.attributes)
                    .map_err(|e| FormatError::new(format!("{}: {e}", place(None)), 6))?;
            }
            let mut events = Vec::with_capacity(scope_logs.log_records.len());
            for (i, record) in scope_logs.log_records.into_iter().enumerate() {
                events.push(to_event(record).map_err(|e| FormatError::new(format!("{}: {e}", place(Some(i))), 6))?);
            }
            if !events.is_empty() {
                batches.push(EventBatch {
                    repository: target.repository.to_owned(),
                    tags: BTreeMap::new(),
                    parser: target.parser.map(str::to_owned),
                    ingest_ts_ms: target.ingest_ts_ms,
                    attributes,
                    events,
                });
            }
        }
    }
    Ok(batches)
}

fn to_event(record: LogRecord) -> Result<Event, String> {
    let nanos = if record.time_unix_nano != 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
    let timestamp_ms = (nanos != 0).then(|| (nanos / 1_000_000) as i64);
    let raw = match record.body.and_then(|b| b.value) {
        None => String::new(),
        Some(any_value::Value::StringValue(text)) => text,
        Some(other) => to_json(other, 0).map_err(|e| format!("body: {e}"))?.to_string(),
    };
    // The record's attributes and up to six more.
    let mut attributes = Fields::with_capacity(record.attributes.len() + 6);
    let mut insert = |k, v| {
        attributes.insert(k, v);
    };
    put_attributes(&mut insert, "attributes.", record.attributes)?;
    if !record.severity_text.is_empty() {
        attributes.insert("severity_text".into(), Value::String(record.severity_text));
    }
    if record.severity_number != 0 {
        attributes.insert("severity_number".into(), Value::from(record.severity_number));
    }
    for (name, id) in [("trace_id", &record.trace_id), ("span_id", &record.span_id)] {
        if !id.is_empty() {
            attributes.insert(name.into(), Value::String(hex(id)));
        }
    }
    if record.flags != 0 {
        attributes.insert("flags".into(), Value::from(record.flags));
    }
    if !record.event_name.is_empty() {
        attributes.insert("event_name".into(), Value::String(record.event_name));
    }
    Ok(Event { timestamp_ms, raw, attributes })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Hands each attribute to `insert` as (`prefix` + key, value).
fn put_attributes(insert: &mut dyn FnMut(String, Value), prefix: &str, attributes: Vec<KeyValue>) -> Result<(), String> {
    for kv in attributes {
        let value = match kv.value.and_then(|v| v.value) {
            None => Value::Null,
            Some(value) => to_json(value, 0).map_err(|e| format!("attribute {:?}: {e}", kv.key))?,
        };
        let mut key = String::with_capacity(prefix.len() + kv.key.len());
        key.push_str(prefix);
        key.push_str(&kv.key);
        insert(key, value);
    }
    Ok(())
}

/// An OTLP value as JSON, refusing nesting deeper than [`MAX_VALUE_DEPTH`].
fn to_json(value: any_value::Value, depth: usize) -> Result<Value, String> {
    use any_value::Value as V;
    let nested = |v: AnyValue| match v.value {
        None => Ok(Value::Null),
        Some(inner) => to_json(inner, depth + 1),
    };
    if depth > MAX_VALUE_DEPTH {
        return Err(format!("nested deeper than {MAX_VALUE_DEPTH} levels"));
    }
    Ok(match value {
        V::StringValue(s) => Value::String(s),
        V::BoolValue(b) => Value::Bool(b),
        V::IntValue(i) => Value::from(i),
        // JSON has no NaN or infinity: those travel as text, as OTLP-JSON writes them.
        V::DoubleValue(d) => serde_json::Number::from_f64(d).map_or_else(|| Value::String(d.to_string()), Value::Number),
        V::BytesValue(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        V::ArrayValue(array) => Value::Array(array.values.into_iter().map(nested).collect::<Result<_, _>>()?),
        V::KvlistValue(list) => {
            let mut map = Map::new();
            for kv in list.values {
                map.insert(kv.key, kv.value.map_or(Ok(Value::Null), nested)?);
            }
            Value::Object(map)
        }
        // A profiling-only reference to a string table logs do not have: no value.
        V::StringValueStrindex(_) => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    const TARGET: Target<'static> = Target { repository: "repo", parser: Some("otel"), ingest_ts_ms: 5 };

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
    }

    fn string(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: vec![kv("service.name", string("checkout"))], ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app.log".into(),
                        version: "1.2".into(),
                        attributes: vec![kv("lib", string("py"))],
                        dropped_attributes_count: 0,
                    }),
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn nested(depth: usize) -> any_value::Value {
        (0..depth).fold(string("leaf"), |inner, _| {
            any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(inner) }] })
        })
    }

    #[test]
    fn empty_records_are_budgeted_for_what_they_decode_to() {
        let records = 100_000;
        let body = request((0..records).map(|_| LogRecord::default()).collect()).encode_to_vec();
        assert!(body.len() < 4 * records, "2 bytes per empty record on the wire: {}", body.len());
        let overhead = decoded_overhead(&body, Encoding::Protobuf);
        assert!(overhead >= records * (std::mem::size_of::<LogRecord>() + std::mem::size_of::<Event>()), "{overhead}");
        assert_eq!(log_records(&body), Some(records));
        assert_eq!(decoded_overhead(b"\xff\xff not protobuf", Encoding::Protobuf), 0, "left to the decoder's answer");
        assert_eq!(decoded_overhead(&body, Encoding::Json), 0);
    }

    #[test]
    fn protobuf_records_map_to_events_with_resource_and_scope_once_per_batch() {
        let records = vec![
            LogRecord {
                time_unix_nano: 1_700_000_000_123_456_789,
                observed_time_unix_nano: 1_800_000_000_000_000_000,
                severity_number: 9,
                severity_text: "INFO".into(),
                body: Some(AnyValue { value: Some(string("user logged in")) }),
                attributes: vec![kv("user.id", any_value::Value::IntValue(42)), kv("ok", any_value::Value::BoolValue(true))],
                trace_id: vec![0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c],
                span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                ..Default::default()
            },
            LogRecord {
                observed_time_unix_nano: 1_800_000_000_000_000_000,
                body: Some(AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv("a", any_value::Value::DoubleValue(1.5)), kv("b", nested(2))],
                    })),
                }),
                ..Default::default()
            },
            LogRecord::default(),
        ];
        let body = request(records).encode_to_vec();
        let batches = decode(&body, Encoding::Protobuf, &TARGET).unwrap();
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        assert_eq!((batch.repository.as_str(), batch.parser.as_deref()), ("repo", Some("otel")));
        assert_eq!(
            Value::Object(batch.attributes.clone()),
            serde_json::json!({"resource.service.name": "checkout", "scope.name": "app.log", "scope.version": "1.2", "scope.attributes.lib": "py"})
        );
        let [first, second, third] = &batch.events[..] else { panic!("three events: {:?}", batch.events) };
        assert_eq!(first.timestamp_ms, Some(1_700_000_000_123), "time_unix_nano wins");
        assert_eq!(first.raw, "user logged in");
        assert_eq!(
            Value::Object(first.attributes.to_map()),
            serde_json::json!({
                "attributes.user.id": 42, "attributes.ok": true, "severity_text": "INFO", "severity_number": 9,
                "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174"
            })
        );
        assert_eq!(second.timestamp_ms, Some(1_800_000_000_000), "observed time when the event time is unset");
        assert_eq!(second.raw, r#"{"a":1.5,"b":[["leaf"]]}"#, "a structured body as JSON");
        assert!(second.attributes.is_empty());
        assert_eq!((third.timestamp_ms, third.raw.as_str()), (None, ""), "no time, no body");
    }

    /// OTLP-JSON as the specification's example writes it: hex ids, int64 as strings,
    /// and fields this version does not know.
    #[test]
    fn json_with_hex_ids_string_integers_and_unknown_fields() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
            "scopeLogs":[{"scope":{"name":"my.library","version":"1.0.0"},"logRecords":[
              {"timeUnixNano":"1544712660300000000","observedTimeUnixNano":1544712660300000000,"severityNumber":10,
               "severityText":"Information","traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
               "body":{"stringValue":"Example log record"},"someFutureField":{"x":[1]},
               "attributes":[{"key":"string.attribute","value":{"stringValue":"some string"}},
                 {"key":"int.attribute","value":{"intValue":"10"}},{"key":"int.number","value":{"intValue":11}},
                 {"key":"double.attribute","value":{"doubleValue":637.704}},
                 {"key":"array.attribute","value":{"arrayValue":{"values":[{"stringValue":"many"},{"intValue":"-9223372036854775808"}]}}},
                 {"key":"map.attribute","value":{"kvlistValue":{"values":[{"key":"some.map.key","value":{"bytesValue":"aGk="}}]}}}]}]}]}]}"#;
        let batches = decode(body, Encoding::Json, &TARGET).unwrap();
        let event = &batches[0].events[0];
        assert_eq!(batches[0].attributes["resource.service.name"], "my.service");
        assert_eq!(event.timestamp_ms, Some(1_544_712_660_300));
        assert_eq!(event.raw, "Example log record");
        assert_eq!(
            Value::Object(event.attributes.to_map()),
            serde_json::json!({
                "attributes.string.attribute": "some string", "attributes.int.attribute": 10, "attributes.int.number": 11,
                "attributes.double.attribute": 637.704, "attributes.array.attribute": ["many", i64::MIN],
                "attributes.map.attribute": {"some.map.key": "aGk="},
                "severity_text": "Information", "severity_number": 10,
                "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174"
            })
        );
    }

    #[test]
    fn malformed_bodies_are_refused_naming_the_problem() {
        let cases: &[(&[u8], Encoding, &str)] = &[
            (b"\x0a\xff\xff\xff", Encoding::Protobuf, "invalid OTLP protobuf"),
            (b"not json", Encoding::Json, "line 1 column"),
            (br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":true}]}]}]}"#, Encoding::Json, "invalid type: boolean `true`, expected a u64"),
            (br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityText":7}]}]}]}"#, Encoding::Json, "invalid type"),
            (br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}"#, Encoding::Json, "invalid OTLP-JSON"),
            (br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#, Encoding::Json, "invalid digit"),
        ];
        for (body, encoding, expected) in cases {
            let err = decode(body, *encoding, &TARGET).unwrap_err();
            assert!(err.message.contains(expected), "{}: {}", String::from_utf8_lossy(body), err.message);
        }
    }

    #[test]
    fn a_body_nested_past_the_limit_is_refused_and_the_limit_itself_passes() {
        let at_limit = LogRecord { body: Some(AnyValue { value: Some(nested(MAX_VALUE_DEPTH)) }), ..Default::default() };
        assert!(decode(&request(vec![at_limit]).encode_to_vec(), Encoding::Protobuf, &TARGET).is_ok());
        let too_deep = LogRecord { body: Some(AnyValue { value: Some(nested(MAX_VALUE_DEPTH + 1)) }), ..Default::default() };
        let err = decode(&request(vec![LogRecord::default(), too_deep]).encode_to_vec(), Encoding::Protobuf, &TARGET).unwrap_err();
        assert!(err.message.contains("logRecords[1]: body: nested deeper than 32"), "{}", err.message);
        let deep_attribute = LogRecord { attributes: vec![kv("deep", nested(MAX_VALUE_DEPTH + 1))], ..Default::default() };
        let err = decode(&request(vec![deep_attribute]).encode_to_vec(), Encoding::Protobuf, &TARGET).unwrap_err();
        assert!(err.message.contains("attribute \"deep\""), "{}", err.message);
    }

    #[test]
    fn answers_decode_as_otlp_messages() {
        assert!(success_body(Encoding::Protobuf).is_empty(), "an empty ExportLogsServiceResponse");
        assert_eq!(success_body(Encoding::Json), b"{}");
        let status = Status::decode(&status_body(Encoding::Protobuf, StatusCode::SERVICE_UNAVAILABLE, "kafka down", "retry")[..]).unwrap();
        assert_eq!((status.code, status.message.as_str()), (14, "kafka down; retry"));
        let json: Value = serde_json::from_slice(&status_body(Encoding::Json, StatusCode::BAD_REQUEST, "bad", "fix it")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 3, "message": "bad; fix it"}));
    }

    #[test]
    fn content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            Encoding::of(&headers)
        };
        assert_eq!(with("application/x-protobuf"), Ok(Encoding::Protobuf));
        assert_eq!(with("application/json; charset=utf-8"), Ok(Encoding::Json));
        assert_eq!(with("text/plain"), Err("text/plain".into()));
        assert!(Encoding::of(&HeaderMap::new()).is_err());
    }
}

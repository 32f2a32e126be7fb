//! What the registry hands back: an [`Event`] per parsed event, or the raw
//! event with `@error` / `@error_msg` / `@parser` fields when parsing failed.
//! Owns those field names and the JSON shape of `plugin_test`; it must never
//! decide whether a parse failed (that is `plugin`'s job). Also owns the
//! plain types of the API: [`RawEvent`] in, [`Field`] / [`Value`] out.

/// A raw event as the core received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// The raw text, usually one log line without its line terminator.
    pub raw: String,
    /// The repository the event is stored in.
    pub repository: String,
    /// Source tags set by the edge or the ingest client (host, service, ...).
    pub tags: Vec<(String, String)>,
    /// When the core received the event, in nanoseconds since the Unix epoch (UTC).
    pub ingest_time_ns: i64,
}

impl RawEvent {
    /// A raw event with no tags.
    pub fn new(raw: impl Into<String>, repository: impl Into<String>, ingest_time_ns: i64) -> Self {
        RawEvent {
            raw: raw.into(),
            repository: repository.into(),
            tags: Vec::new(),
            ingest_time_ns,
        }
    }
}

/// A value of a parsed field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text, the default for anything not clearly typed.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// true or false.
    Boolean(bool),
    /// An explicit null (e.g. JSON `null`, access log `-`).
    Null,
}

impl Value {
    /// Approximate size in bytes, for output limits.
    pub(crate) fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            _ => 8,
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Null => serde_json::Value::Null,
        }
    }
}

/// One named field of a parsed event. Nested names use dots: `http.status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: Value,
}

/// Field holding the kind of failure ([`ErrorKind::code`]).
pub const ERROR_FIELD: &str = "@error";
/// Field holding the human-readable failure, naming the plugin and the cause.
pub const ERROR_MSG_FIELD: &str = "@error_msg";
/// Field naming the parser that failed.
pub const PARSER_FIELD: &str = "@parser";

/// Why an event could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The plugin looked at the event and said it cannot parse it.
    ParseFailed,
    /// The batch ran past its deadline; the instance was replaced.
    DeadlineExceeded,
    /// The instance hit its memory cap; the instance was replaced.
    MemoryLimit,
    /// The plugin overflowed its stack; the instance was replaced.
    StackOverflow,
    /// The plugin trapped (panic, abort, bug); the instance was replaced.
    Trap,
    /// One parsed event was larger than `max_event_output_bytes`.
    OutputTooLarge,
    /// The plugin broke the contract (e.g. wrong number of outcomes).
    ContractViolation,
    /// No instance could be started (bad component, init trap).
    PluginUnavailable,
}

impl ErrorKind {
    /// The value of the `@error` field.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::ParseFailed => "parse_failed",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::OutputTooLarge => "output_too_large",
            ErrorKind::ContractViolation => "contract_violation",
            ErrorKind::PluginUnavailable => "plugin_unavailable",
        }
    }
}

/// One event after parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The raw text: the input's, or the plugin's replacement.
    pub raw: String,
    /// Event time (ns since the Unix epoch, UTC), if the parser found one.
    pub timestamp_ns: Option<i64>,
    /// Parsed fields; on failure only the `@` error fields.
    pub fields: Vec<Field>,
}

impl Event {
    /// An unparsed event (no parser selected).
    pub fn unparsed(raw: String) -> Self {
        Event {
            raw,
            timestamp_ns: None,
            fields: Vec::new(),
        }
    }

    /// The raw event, kept, with the error fields.
    pub fn failed(raw: String, parser: &str, kind: ErrorKind, message: &str) -> Self {
        let text = |s: &str| Value::Text(s.to_string());
        Event {
            raw,
            timestamp_ns: None,
            fields: vec![
                Field {
                    name: ERROR_FIELD.into(),
                    value: text(kind.code()),
                },
                Field {
                    name: ERROR_MSG_FIELD.into(),
                    value: text(&format!("parser `{parser}`: {message}")),
                },
                Field {
                    name: PARSER_FIELD.into(),
                    value: text(parser),
                },
            ],
        }
    }

    /// The value of a field (first match).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The `@error` code, if parsing failed.
    pub fn error(&self) -> Option<&str> {
        match self.get(ERROR_FIELD) {
            Some(Value::Text(code)) => Some(code),
            _ => None,
        }
    }

    /// The `@error_msg` text, if parsing failed.
    pub fn error_msg(&self) -> Option<&str> {
        match self.get(ERROR_MSG_FIELD) {
            Some(Value::Text(msg)) => Some(msg),
            _ => None,
        }
    }

    /// `{"timestamp": "...Z"|null, "timestamp_ns": n|null, "raw": "...", "fields": {...}}`
    /// (fields in plugin order; a repeated name keeps its last value).
    pub fn to_json(&self) -> serde_json::Value {
        let mut fields = serde_json::Map::new();
        for f in &self.fields {
            fields.insert(f.name.clone(), f.value.to_json());
        }
        serde_json::json!({
            "timestamp": self.timestamp_ns.map(format_rfc3339),
            "timestamp_ns": self.timestamp_ns,
            "raw": self.raw,
            "fields": fields,
        })
    }
}

/// RFC 3339 UTC with all nine digits of nanoseconds, so that lines of `plugin test` output
/// align and sort as text.
pub(crate) fn format_rfc3339(ns: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    // Every i64 of nanoseconds (years 1677 to 2262) is in range for `time`.
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| format!("@{ns}ns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formatting_matches_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(951_825_600_000_000_001),
            "2000-02-29T12:00:00.000000001Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn failed_event_keeps_raw_and_names_parser_and_cause() {
        let e = Event::failed(
            "line".into(),
            "json",
            ErrorKind::Trap,
            "trapped: unreachable",
        );
        assert_eq!(e.raw, "line");
        assert_eq!(e.error(), Some("trap"));
        assert_eq!(e.error_msg(), Some("parser `json`: trapped: unreachable"));
        assert_eq!(e.to_json()["fields"]["@parser"], "json");
    }
}

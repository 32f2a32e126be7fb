//! The JSON parser: one JSON object per line, nested objects flattened to
//! dotted names (`{"http":{"status":200}}` -> `http.status = 200`), arrays kept
//! as compact JSON text, the timestamp taken from the first known time field.

use crate::model::{Input, Parsed, Settings, Value};
use crate::time;
use serde_json::Value as Json;

/// Settings this parser accepts, with their description and default.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("separator", "joins the names of nested objects", "."),
    (
        "timestamp_fields",
        "comma-separated fields tried in order for the event time (RFC 3339 text or epoch number)",
        "@timestamp,timestamp,time,ts",
    ),
    (
        "max_depth",
        "objects nested deeper than this are kept as JSON text",
        "16",
    ),
];

/// A configured JSON parser.
#[derive(Debug, Clone)]
pub struct JsonParser {
    separator: String,
    timestamp_fields: Vec<String>,
    max_depth: usize,
}

impl Default for JsonParser {
    fn default() -> Self {
        JsonParser {
            separator: ".".into(),
            timestamp_fields: ["@timestamp", "timestamp", "time", "ts"]
                .map(String::from)
                .to_vec(),
            max_depth: 16,
        }
    }
}

impl JsonParser {
    /// Builds a parser from settings; fails on unknown or invalid ones.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        settings.reject_unknown(&SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>())?;
        let mut p = JsonParser::default();
        if let Some(sep) = settings.get("separator") {
            if sep.is_empty() {
                return Err(
                    "setting `separator`: must not be empty; expected e.g. `.` or `_`".into(),
                );
            }
            p.separator = sep.to_string();
        }
        if let Some(list) = settings.get("timestamp_fields") {
            p.timestamp_fields = list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(depth) = settings.get("max_depth") {
            p.max_depth = depth.parse().map_err(|_| {
                format!("setting `max_depth`: expected a whole number, got `{depth}`")
            })?;
        }
        Ok(p)
    }

    /// Parses one line.
    pub fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let root: Json =
            serde_json::from_str(input.raw.trim()).map_err(|e| format!("invalid JSON: {e}"))?;
        let Json::Object(map) = root else {
            return Err(format!("expected a JSON object, found {}", kind(&root)));
        };
        let mut out = Parsed {
            fields: Vec::with_capacity(map.len()),
            ..Parsed::default()
        };
        let mut name = String::new();
        self.flatten(&mut name, map, 0, &mut out);
        for candidate in &self.timestamp_fields {
            let ts = match out.get(candidate) {
                Some(Value::Text(s)) => time::parse_rfc3339(s),
                Some(Value::Int(i)) => time::from_epoch_int(*i),
                Some(Value::Float(f)) => time::from_epoch_number(*f),
                _ => None,
            };
            if ts.is_some() {
                out.timestamp_ns = ts;
                break;
            }
        }
        Ok(out)
    }

    fn flatten(
        &self,
        name: &mut String,
        map: serde_json::Map<String, Json>,
        depth: usize,
        out: &mut Parsed,
    ) {
        for (key, value) in map {
            let len = name.len();
            if !name.is_empty() {
                name.push_str(&self.separator);
            }
            name.push_str(&key);
            match value {
                Json::Object(inner) if depth + 1 < self.max_depth && !inner.is_empty() => {
                    self.flatten(name, inner, depth + 1, out)
                }
                other => out.fields.push((name.clone(), scalar(other))),
            }
            name.truncate(len);
        }
    }
}

fn scalar(value: Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => n
                .as_f64()
                .map(Value::Float)
                .unwrap_or_else(|| Value::Text(n.to_string())),
        },
        Json::String(s) => Value::Text(s),
        other => Value::Text(other.to_string()),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_flatten_and_timestamp_is_found() {
        let p = JsonParser::default();
        let line = r#"{"ts":"2024-01-02T03:04:05Z","http":{"status":404,"req":{"path":"/x"}},"tags":["a",1],"ok":false,"n":null,"f":1.5}"#;
        let out = p.parse(&Input::line(line, 0)).unwrap();
        assert_eq!(out.get("http.status"), Some(&Value::Int(404)));
        assert_eq!(out.get("http.req.path"), Some(&Value::text("/x")));
        assert_eq!(out.get("tags"), Some(&Value::text(r#"["a",1]"#)));
        assert_eq!(out.get("ok"), Some(&Value::Bool(false)));
        assert_eq!(out.get("n"), Some(&Value::Null));
        assert_eq!(out.get("f"), Some(&Value::Float(1.5)));
        assert_eq!(
            out.timestamp_ns,
            time::parse_rfc3339("2024-01-02T03:04:05Z")
        );
    }

    #[test]
    fn non_objects_and_garbage_fail_with_a_reason() {
        let p = JsonParser::default();
        assert!(
            p.parse(&Input::line("[1,2]", 0))
                .unwrap_err()
                .contains("array")
        );
        assert!(
            p.parse(&Input::line("{\"a\":", 0))
                .unwrap_err()
                .contains("invalid JSON")
        );
    }

    #[test]
    fn settings_are_validated() {
        assert!(JsonParser::new(&Settings::from_pairs(&[("max_depth", "x")])).is_err());
        assert!(
            JsonParser::new(&Settings::from_pairs(&[("colour", "x")]))
                .unwrap_err()
                .contains("unknown setting")
        );
        let p = JsonParser::new(&Settings::from_pairs(&[("separator", "_")])).unwrap();
        let out = p.parse(&Input::line(r#"{"a":{"b":1}}"#, 0)).unwrap();
        assert_eq!(out.get("a_b"), Some(&Value::Int(1)));
    }
}

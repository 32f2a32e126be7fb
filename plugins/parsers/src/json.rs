//! The JSON parser: one JSON object per line, nested objects flattened to
//! dotted names (`{"http":{"status":200}}` -> `http.status = 200`), arrays kept
//! as compact JSON text, the timestamp taken from the first known time field.
//!
//! Arrays, and objects nested deeper than `max_depth`, are kept as the text
//! the input spells them with, minus the whitespace between tokens: for
//! compact input that is the input's own slice. They are not parsed into a
//! tree and serialised back (a profile put that at a sixth of the plugin's time), so key
//! order, duplicate keys, string escapes (`"\u00e9"`) and number spelling
//! (`1.0e2`) stay as written, and a number no `f64` holds (`1e400`) or an
//! array nested deeper than serde_json's recursion limit is kept rather than
//! rejected. The syntax is still checked: invalid JSON fails the line.

#[cfg(test)]
use crate::model::Value;
use crate::model::{Input, Parsed, Settings, Sink};
use crate::time;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use serde_json::value::RawValue;

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

/// Names `timestamp_fields` may hold at most.
const MAX_TIMESTAMP_FIELDS: usize = 64;

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
            if p.timestamp_fields.len() > MAX_TIMESTAMP_FIELDS {
                return Err(format!(
                    "setting `timestamp_fields`: {} names given; expected at most {MAX_TIMESTAMP_FIELDS}",
                    p.timestamp_fields.len()
                ));
            }
        }
        if let Some(depth) = settings.get("max_depth") {
            p.max_depth = depth.parse().map_err(|_| {
                format!("setting `max_depth`: expected a whole number, got `{depth}`")
            })?;
        }
        Ok(p)
    }

    /// Parses one line into a [`Parsed`] (native callers and tests).
    pub fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let mut out = Parsed {
            fields: Vec::with_capacity(16),
            ..Parsed::default()
        };
        self.parse_into(input, &mut out)?;
        Ok(out)
    }

    /// Parses one line, streaming its fields into `out` as they are read:
    /// no tree, no owned strings (what the plugin runs). On an error `out`
    /// may hold some fields; the caller discards them.
    pub fn parse_into<S: Sink + ?Sized>(
        &self,
        input: &Input<'_>,
        out: &mut S,
    ) -> Result<(), String> {
        let text = input.raw.trim();
        if !text.starts_with('{') {
            // Not an object: say what it is (or why it is not JSON).
            let root: Json =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            return Err(format!("expected a JSON object, found {}", kind(&root)));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let mut name = String::with_capacity(64);
        // Allocated on the first array or too-deep object of the line.
        let mut json_text = String::new();
        let mut ts = TimestampPick::default();
        Flatten {
            parser: self,
            name: &mut name,
            json_text: &mut json_text,
            depth: 0,
            out,
            ts: &mut ts,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("invalid JSON: {e}"))?;
        if let Some((_, ns)) = ts.best {
            out.timestamp(ns);
        }
        Ok(())
    }
}

/// The event time, picked while streaming: the first field named like the
/// earliest of `timestamp_fields` whose value is a time. As with a lookup
/// after parsing, only the first field of a name counts.
#[derive(Default)]
struct TimestampPick {
    /// Candidates whose first field was seen (bit per index).
    seen: u64,
    /// Index of the best candidate so far and its time.
    best: Option<(usize, i64)>,
}

/// Streams one JSON object into dotted fields without building a tree: keys
/// are appended to `name`, scalars written to the sink as they are read.
struct Flatten<'a, S: Sink + ?Sized> {
    parser: &'a JsonParser,
    name: &'a mut String,
    /// Scratch buffer for the JSON text of arrays and too-deep objects.
    json_text: &'a mut String,
    depth: usize,
    out: &'a mut S,
    ts: &'a mut TimestampPick,
}

impl<'de, S: Sink + ?Sized> DeserializeSeed<'de> for Flatten<'_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: Sink + ?Sized> Visitor<'de> for Flatten<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.note(|| None);
        self.out.bool(self.name, v);
        Ok(())
    }
    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.note(|| time::from_epoch_int(v));
        self.out.int(self.name, v);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => self.visit_f64(v as f64),
        }
    }
    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.note(|| time::from_epoch_number(v));
        self.out.float(self.name, v);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.text(v)
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.note(|| None);
        self.out.null(self.name);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Each element as its raw slice (validated, not parsed into a tree).
        self.json_text(|buf| {
            buf.push('[');
            while let Some(element) = seq.next_element::<&'de RawValue>()? {
                if buf.len() > 1 {
                    buf.push(',');
                }
                push_compact(buf, element.get());
            }
            buf.push(']');
            Ok(())
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let top = self.depth == 0;
        if self.depth >= self.parser.max_depth {
            return self.json_text(|buf| {
                buf.push('{');
                // serde_json only offers a key that is a string.
                while let Some(key) = map.next_key::<&'de RawValue>()? {
                    if buf.len() > 1 {
                        buf.push(',');
                    }
                    buf.push_str(key.get());
                    buf.push(':');
                    push_compact(buf, map.next_value::<&'de RawValue>()?.get());
                }
                buf.push('}');
                Ok(())
            });
        }
        let len = self.name.len();
        let mut empty = true;
        loop {
            if !top {
                self.name.push_str(&self.parser.separator);
            }
            if map.next_key_seed(Key(self.name))?.is_none() {
                self.name.truncate(len);
                break;
            }
            empty = false;
            map.next_value_seed(Flatten {
                parser: self.parser,
                name: self.name,
                json_text: &mut *self.json_text,
                depth: self.depth + 1,
                out: &mut *self.out,
                ts: &mut *self.ts,
            })?;
            self.name.truncate(len);
        }
        if empty && !top {
            return self.text("{}");
        }
        Ok(())
    }
}

impl<S: Sink + ?Sized> Flatten<'_, S> {
    fn text<E>(mut self, v: &str) -> Result<(), E> {
        self.note(|| time::parse_rfc3339(v));
        self.out.text(self.name, v);
        Ok(())
    }

    /// A text field whose value `write` builds in the scratch buffer.
    fn json_text<E>(mut self, write: impl FnOnce(&mut String) -> Result<(), E>) -> Result<(), E> {
        let mut buf = std::mem::take(&mut *self.json_text);
        buf.clear();
        let result = write(&mut buf);
        if result.is_ok() {
            self.note(|| time::parse_rfc3339(&buf));
            self.out.text(self.name, &buf);
        }
        *self.json_text = buf;
        result
    }

    /// Offers the current field to the timestamp pick; `time` is only run
    /// for a candidate name.
    fn note(&mut self, time: impl FnOnce() -> Option<i64>) {
        let ts = &mut *self.ts;
        for (k, candidate) in self.parser.timestamp_fields.iter().enumerate() {
            if ts.best.is_some_and(|(best, _)| best <= k) {
                return;
            }
            if candidate == self.name.as_str() {
                if ts.seen & (1 << k) == 0 {
                    ts.seen |= 1 << k;
                    if let Some(ns) = time() {
                        ts.best = Some((k, ns));
                    }
                }
                return;
            }
        }
    }
}

/// Appends `raw`, one JSON value as the input spells it (already validated),
/// without whitespace between tokens. Whitespace is ASCII, so every cut is on
/// a character boundary.
fn push_compact(buf: &mut String, raw: &str) {
    let bytes = raw.as_bytes();
    // Only an array or object can hold whitespace outside strings.
    if !matches!(bytes.first(), Some(b'[' | b'{'))
        || !bytes
            .iter()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        buf.push_str(raw);
        return;
    }
    let (mut in_string, mut escaped, mut from) = (false, false, 0);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            buf.push_str(&raw[from..i]);
            from = i + 1;
        }
    }
    buf.push_str(&raw[from..]);
}

/// Appends an object key to the current name.
struct Key<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
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
    fn arrays_keep_their_input_text_without_whitespace() {
        let p = JsonParser::default();
        let line =
            "{\"a\": [ \"x y\" ,\t{ \"k\" : [1, 2] , \"q\":\"\\\" ]\" },\n2 ], \"e\" : [ ] }";
        let out = p.parse(&Input::line(line, 0)).unwrap();
        assert_eq!(
            out.get("a"),
            Some(&Value::text(r#"["x y",{"k":[1,2],"q":"\" ]"},2]"#))
        );
        assert_eq!(out.get("e"), Some(&Value::text("[]")));
        // As written: key order, duplicate keys, escapes, number spelling,
        // numbers no f64 holds; only the whitespace between tokens goes.
        let line = r#"{"a":[{"b":1,"a":2,"b":3},"\u00e9\/",1.0E2,-0,1e400]}"#;
        let out = p.parse(&Input::line(line, 0)).unwrap();
        assert_eq!(
            out.get("a"),
            Some(&Value::text(
                r#"[{"b":1,"a":2,"b":3},"\u00e9\/",1.0E2,-0,1e400]"#
            ))
        );
        // Nesting past serde_json's recursion limit is kept, not rejected.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(1000), "]".repeat(1000));
        let out = p.parse(&Input::line(&deep, 0)).unwrap();
        assert_eq!(
            out.get("a"),
            Some(&Value::text(&format!(
                "{}{}",
                "[".repeat(1000),
                "]".repeat(1000)
            )))
        );
        // Still validated.
        for bad in [
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":["x]}"#,
            r#"{"a":[{1:2}]}"#,
            "{\"a\":[\"\\q\"]}",
        ] {
            assert!(
                p.parse(&Input::line(bad, 0))
                    .unwrap_err()
                    .contains("invalid JSON"),
                "{bad}"
            );
        }
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

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn objects_deeper_than_max_depth_stay_json_text() {
        let p = JsonParser::new(&Settings::from_pairs(&[("max_depth", "1")])).unwrap();
        let out = p
            .parse(&Input::line(r#"{"a":{"b":{"c":1}},"d":2}"#, 0))
            .unwrap();
        assert_eq!(
            out.fields,
            vec![
                ("a".to_string(), Value::text(r#"{"b":{"c":1}}"#)),
                ("d".to_string(), Value::Int(2))
            ]
        );
        let p = JsonParser::new(&Settings::from_pairs(&[("max_depth", "2")])).unwrap();
        let out = p.parse(&Input::line(r#"{"a":{"b":{"c":1}}}"#, 0)).unwrap();
        assert_eq!(out.get("a.b"), Some(&Value::text(r#"{"c":1}"#)));
        let out = p
            .parse(&Input::line(
                r#"{"a":{"b":{ "z" : [ 1 ], "y":{ }, "z":"\u0041 " }}}"#,
                0,
            ))
            .unwrap();
        assert_eq!(
            out.get("a.b"),
            Some(&Value::text(r#"{"z":[1],"y":{},"z":"\u0041 "}"#))
        );
        let out = p.parse(&Input::line(r#"{"a":{"b":{ }}}"#, 0)).unwrap();
        assert_eq!(out.get("a.b"), Some(&Value::text("{}")));
        assert!(
            p.parse(&Input::line(r#"{"a":{"b":{"c":1,}}}"#, 0))
                .unwrap_err()
                .contains("invalid JSON")
        );
        assert!(
            p.parse(&Input::line(r#"{"a":1} x"#, 0))
                .unwrap_err()
                .contains("trailing characters")
        );
    }
}

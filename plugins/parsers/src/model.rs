//! The plain data model shared by the parsers and the guest SDK: an input line
//! with what the core knows about it, a [`Sink`] a parser writes an event's
//! fields into, a parsed event ([`Parsed`], the sink used natively), a field
//! value, settings.
//!
//! It mirrors `wit/parser.wit` without depending on any binding generator, so
//! the parsers stay testable natively; in a plugin the SDK's sink writes the
//! contract's packed buffer directly, without building a [`Parsed`].

/// A field value (mirrors the WIT `value` variant).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl Value {
    /// A text value.
    pub fn text(s: impl Into<String>) -> Self {
        Value::Text(s.into())
    }
}

/// One input event: the raw text plus what the core knows about it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub raw: &'a str,
    pub repository: &'a str,
    pub tags: &'a [(String, String)],
    /// When the core received the event (ns since the Unix epoch, UTC).
    pub ingest_time_ns: i64,
}

impl<'a> Input<'a> {
    /// An input with only raw text and an ingest time (tests, benchmarks).
    pub fn line(raw: &'a str, ingest_time_ns: i64) -> Self {
        Input {
            raw,
            repository: "",
            tags: &[],
            ingest_time_ns,
        }
    }
}

/// Where a parser writes one event: fields in the order it finds them, and
/// optionally the event time and a replacement raw text (last call wins).
/// Text is borrowed: a sink copies it where it needs it, so a parser can hand
/// over slices of its input or of a scratch buffer without allocating.
pub trait Sink {
    /// Adds a text field.
    fn text(&mut self, name: &str, value: &str);
    /// Adds a whole-number field.
    fn int(&mut self, name: &str, value: i64);
    /// Adds a floating point field.
    fn float(&mut self, name: &str, value: f64);
    /// Adds a true/false field.
    fn bool(&mut self, name: &str, value: bool);
    /// Adds an explicit null field (e.g. JSON `null`, access log `-`).
    fn null(&mut self, name: &str);
    /// Sets the event time, ns since the Unix epoch (UTC); without it the
    /// core uses the ingest time.
    fn timestamp(&mut self, ns: i64);
    /// Replaces the raw text (e.g. by the message without its header).
    fn raw(&mut self, raw: &str);

    /// Adds a field of any kind.
    fn value(&mut self, name: &str, value: &Value) {
        match value {
            Value::Text(s) => self.text(name, s),
            Value::Int(i) => self.int(name, *i),
            Value::Float(f) => self.float(name, *f),
            Value::Bool(b) => self.bool(name, *b),
            Value::Null => self.null(name),
        }
    }
}

/// One parsed event, owned (what the host hands back for an event).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub timestamp_ns: Option<i64>,
    pub fields: Vec<(String, Value)>,
    /// Replacement raw text, if the parser rewrites it.
    pub raw: Option<String>,
}

impl Parsed {
    /// Adds a field.
    pub fn push(&mut self, name: impl Into<String>, value: Value) {
        self.fields.push((name.into(), value));
    }

    /// Adds a text field.
    pub fn push_text(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.fields.push((name.into(), Value::Text(value.into())));
    }

    /// Looks a field up by name (first match).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Writes this event into a sink (what the plugins of parsers that build
    /// a [`Parsed`] do).
    pub fn write_to<S: Sink + ?Sized>(&self, out: &mut S) {
        for (name, value) in &self.fields {
            out.value(name, value);
        }
        if let Some(ts) = self.timestamp_ns {
            out.timestamp(ts);
        }
        if let Some(raw) = &self.raw {
            out.raw(raw);
        }
    }

    /// Runs a streaming parser into a new [`Parsed`].
    pub fn collect(parse: impl FnOnce(&mut Parsed) -> Result<(), String>) -> Result<Parsed, String> {
        let mut out = Parsed::default();
        parse(&mut out)?;
        Ok(out)
    }
}

impl Sink for Parsed {
    fn text(&mut self, name: &str, value: &str) {
        self.fields.push((name.to_string(), Value::Text(value.to_string())));
    }
    fn int(&mut self, name: &str, value: i64) {
        self.fields.push((name.to_string(), Value::Int(value)));
    }
    fn float(&mut self, name: &str, value: f64) {
        self.fields.push((name.to_string(), Value::Float(value)));
    }
    fn bool(&mut self, name: &str, value: bool) {
        self.fields.push((name.to_string(), Value::Bool(value)));
    }
    fn null(&mut self, name: &str) {
        self.fields.push((name.to_string(), Value::Null));
    }
    fn timestamp(&mut self, ns: i64) {
        self.timestamp_ns = Some(ns);
    }
    fn raw(&mut self, raw: &str) {
        self.raw = Some(raw.to_string());
    }
}

/// Name/value settings given to `configure`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pairs: Vec<(String, String)>,
}

impl Settings {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Settings { pairs }
    }

    /// Builds settings from string pairs (tests, benchmarks).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Settings {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of a setting, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All given settings.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Fails on a setting whose name is not in `known`.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), String> {
        for (name, _) in &self.pairs {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown setting `{name}`; this parser takes: {}",
                    if known.is_empty() {
                        "no settings".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }

    /// A boolean setting (`true`/`false`), with a default.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!(
                "setting `{name}`: expected `true` or `false`, got `{other}`"
            )),
        }
    }
}

/// Parses a bare token as an integer, a float or keeps it as text.
pub fn infer(token: &str) -> Value {
    let looks_numeric = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && token.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(i) = token.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = token.parse::<f64>()
            && f.is_finite()
        {
            return Value::Float(f);
        }
    }
    Value::Text(token.to_string())
}

//! Host bindings generated from `wit/parser.wit`, and the few helpers on the
//! generated types. Owns the contract's Rust shape on the host side; it must
//! never grow logic beyond conversions.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "parser",
    additional_derives: [PartialEq],
});

pub use weir::parser::types::PluginInfo as WitPluginInfo;
pub use weir::parser::types::{Field, Value};

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

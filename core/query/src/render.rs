//! A stored row as LogScale renders an event: one flat JSON object.
//!
//! `@timestamp` is a number (ms since the epoch); every other value is a string, as in
//! LogScale's query results (`"_count": "5"`, `"status": "200"`). Parsed fields are
//! flattened the way LogScale's `parseJson()` names them: `a.b` for a nested object,
//! `a[0]` for an array element; numbers and booleans become their JSON text and null
//! becomes `"null"`. Tags are `#name`; the parser, when one ran and no `type` tag is
//! set, is `#type` (LogScale's parser tag). `@error` is `"true"` with `@error_msg` when
//! the parser failed. Built-in fields win over a parsed field of the same name.

use serde_json::{Map, Value};
use weir_segment::SegmentRow;

/// One event or result row.
pub type Event = Map<String, Value>;

pub fn render(row: &SegmentRow) -> Event {
    let mut event = Map::new();
    for (name, value) in &row.fields {
        flatten(name.clone(), value, &mut event);
    }
    for (name, value) in &row.tags {
        event.insert(format!("#{name}"), Value::String(value.clone()));
    }
    if let Some(parser) = &row.parser
        && !row.tags.contains_key("type")
    {
        event.insert("#type".into(), Value::String(parser.clone()));
    }
    event.insert("#repo".into(), Value::String(row.repository.clone()));
    event.insert("@timestamp".into(), Value::from(row.timestamp_ms));
    event.insert("@timezone".into(), Value::String("Z".into()));
    event.insert("@ingesttimestamp".into(), Value::String(row.ingest_timestamp_ms.to_string()));
    event.insert("@rawstring".into(), Value::String(row.raw.clone()));
    event.insert("@id".into(), Value::String(row.id.clone()));
    match &row.error {
        Some(message) => {
            event.insert("@error".into(), Value::String("true".into()));
            event.insert("@error_msg".into(), Value::String(message.clone()));
        }
        None => {
            event.remove("@error");
            event.remove("@error_msg");
        }
    }
    event
}

pub(crate) fn flatten(name: String, value: &Value, out: &mut Event) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                flatten(format!("{name}.{key}"), inner, out);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                flatten(format!("{name}[{index}]"), inner, out);
            }
        }
        Value::String(text) => {
            out.insert(name, Value::String(text.clone()));
        }
        other => {
            out.insert(name, Value::String(other.to_string()));
        }
    }
}

/// A field's value as text, for matching: strings as they are, `@timestamp` as digits.
pub fn field_text<'a>(event: &'a Event, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    match event.get(name)? {
        Value::String(text) => Some(std::borrow::Cow::Borrowed(text)),
        Value::Null => None,
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn row() -> SegmentRow {
        SegmentRow {
            repository: "web".into(),
            timestamp_ms: 1_750_000_000_123,
            ingest_timestamp_ms: 1_750_000_001_000,
            raw: "GET /index.html 200".into(),
            id: "3-17-0".into(),
            offset: 17,
            tags: BTreeMap::from([("host".to_owned(), "h1".to_owned())]),
            fields: json!({"status": 200, "ok": true, "gone": null, "user": {"name": "ann", "roles": ["a", "b"]}, "@timestamp": "spoof"})
                .as_object()
                .unwrap()
                .clone()
                .into(),
            parser: Some("accesslog".into()),
            error: None,
        }
    }

    #[test]
    fn renders_as_logscale() {
        let event = render(&row());
        assert_eq!(
            Value::Object(event),
            json!({
                "@timestamp": 1_750_000_000_123i64,
                "@timezone": "Z",
                "@ingesttimestamp": "1750000001000",
                "@rawstring": "GET /index.html 200",
                "@id": "3-17-0",
                "#repo": "web",
                "#host": "h1",
                "#type": "accesslog",
                "status": "200",
                "ok": "true",
                "gone": "null",
                "user.name": "ann",
                "user.roles[0]": "a",
                "user.roles[1]": "b",
            })
        );
    }

    #[test]
    fn a_failed_parse_shows_the_error_and_a_type_tag_wins() {
        let mut row = row();
        row.error = Some("no match".into());
        row.tags.insert("type".into(), "mine".into());
        row.fields.clear();
        let event = render(&row);
        assert_eq!(event["@error"], "true");
        assert_eq!(event["@error_msg"], "no match");
        assert_eq!(event["#type"], "mine");
        assert_eq!(field_text(&event, "@timestamp").unwrap(), "1750000000123");
    }
}

//! The Elasticsearch bulk API (`POST|PUT /_bulk`, `/{index}/_bulk`) as shippers use it
//! (Beats, Logstash, Fluent Bit, Vector, the official clients' bulk helpers): NDJSON
//! action lines, each `index` or `create` followed by its document.
//!
//! Unlike the other formats, a bad item does not refuse the request: Elasticsearch answers
//! each item on its own, and its clients retry or report per item. So every action gets
//! an item in the answer, in request order: `index`/`create` with a JSON object document
//! are accepted (201); `delete` and `update` are answered as unsupported (400); a line
//! that is not an action, or a document that is not a JSON object, is answered 400 while
//! the items around it are still processed. Pure functions, no I/O.
//!
//! Mapping (also in the README): the events go to the token's repository; one event per
//! document, raw text = the document line as sent, timestamp from its `@timestamp` (RFC
//! 3339 or epoch milliseconds) when it has one. The index (the action's `_index`, else the
//! one in the path) is kept as the batch attribute `_index` (consecutive documents of one
//! index share a batch), a client-given `_id` as the event attribute `_id`. `_type`,
//! `pipeline`, `routing` and other metadata are tolerated and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use weir_proto::{Event, EventBatch, Fields};

use crate::formats::{FormatError, Target, timestamp_ms};

/// The answer for one action line.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `index`, `create`, `delete` or `update`; `index` for a line that is no action.
    pub action: String,
    pub index: Option<String>,
    /// The client's `_id`, or one made up for an accepted document.
    pub id: Option<String>,
    pub outcome: Result<(), ItemError>,
}

/// Why an item was not accepted, as Elasticsearch names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemError {
    pub status: u16,
    pub kind: &'static str,
    pub reason: String,
}

impl ItemError {
    fn new(kind: &'static str, reason: String) -> Self {
        ItemError { status: 400, kind, reason }
    }
}

/// A decoded bulk request: what to ingest, and the answer per item.
#[derive(Debug)]
pub struct Bulk {
    pub batches: Vec<EventBatch>,
    pub items: Vec<Item>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "@timestamp")]
    timestamp: Option<Value>,
}

enum Line<'a> {
    Action { name: &'a str, meta: Map<String, Value> },
    Broken(String),
}

const ACTIONS: [&str; 4] = ["index", "create", "delete", "update"];

fn parse_action(number: usize, line: &str) -> Line<'static> {
    let map: Map<String, Value> = match serde_json::from_str(line) {
        Ok(map) => map,
        Err(e) => return Line::Broken(format!("Malformed action/metadata line [{number}]: {e}")),
    };
    let mut entries = map.into_iter();
    match (entries.next(), entries.next()) {
        (Some((name, Value::Object(meta))), None) => match ACTIONS.iter().find(|a| **a == name) {
            Some(name) => Line::Action { name, meta },
            None => Line::Broken(format!(
                "Malformed action/metadata line [{number}], expected one of [create, delete, index, update] but found [{name}]"
            )),
        },
        _ => Line::Broken(format!(
            "Malformed action/metadata line [{number}], expected an object with a single action (create, delete, index, update) holding an object"
        )),
    }
}

/// Decodes a bulk body. Only a body with no action at all is refused as a whole.
pub fn decode(body: &[u8], path_index: Option<&str>, target: &Target) -> Result<Bulk, FormatError> {
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .peekable();
    let mut items = Vec::new();
    let mut batches: Vec<EventBatch> = Vec::new();
    while let Some((number, line)) = lines.next() {
        let action = match std::str::from_utf8(line) {
            Ok(text) => parse_action(number, text),
            Err(e) => Line::Broken(format!("action/metadata line [{number}] is not valid UTF-8 at byte {}", e.valid_up_to())),
        };
        let (name, meta) = match action {
            Line::Action { name, meta } => (name, meta),
            Line::Broken(reason) => {
                // Resynchronise: the next line is this broken action's document unless it
                // is itself an action.
                if lines.peek().is_some_and(|(n, next)| {
                    !matches!(std::str::from_utf8(next).map(|t| parse_action(*n, t)), Ok(Line::Action { .. }))
                }) {
                    lines.next();
                }
                items.push(Item { action: "index".into(), index: None, id: None, outcome: Err(ItemError::new("illegal_argument_exception", reason)) });
                continue;
            }
        };
        let index = match meta.get("_index") {
            None => path_index.map(str::to_owned),
            Some(Value::String(index)) => Some(index.clone()),
            Some(other) => {
                if name != "delete" {
                    lines.next();
                }
                let reason = format!("action line [{number}]: _index must be a string, not {other}");
                items.push(Item { action: name.into(), index: None, id: None, outcome: Err(ItemError::new("illegal_argument_exception", reason)) });
                continue;
            }
        };
        let id = match meta.get("_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(other) => Some(other.to_string()),
        };
        let mut item = Item { action: name.into(), index: index.clone(), id: id.clone(), outcome: Ok(()) };
        if name == "delete" || name == "update" {
            if name == "update" {
                lines.next();
            }
            item.outcome = Err(ItemError::new(
                "illegal_argument_exception",
                format!("action [{name}] is not supported: Weir ingests events and never changes or removes one; use index or create"),
            ));
            items.push(item);
            continue;
        }
        let Some((source_number, source)) = lines.next() else {
            item.outcome = Err(ItemError::new("action_request_validation_exception", format!("action line [{number}] has no document line after it")));
            items.push(item);
            continue;
        };
        let Some(index) = index else {
            item.outcome = Err(ItemError::new(
                "action_request_validation_exception",
                format!("Validation Failed: 1: index is missing (line [{number}]); name it in the action's _index or the path /{{index}}/_bulk"),
            ));
            items.push(item);
            continue;
        };
        let event = std::str::from_utf8(source)
            .map_err(|e| format!("document line [{source_number}] is not valid UTF-8 at byte {}", e.valid_up_to()))
            .and_then(|text| {
                let document: Document = serde_json::from_str(text)
                    .map_err(|e| format!("failed to parse document line [{source_number}] as a JSON object: {e}"))?;
                let mut attributes = Fields::new();
                if let Some(id) = &id {
                    attributes.insert("_id".into(), Value::String(id.clone()));
                }
                // A timestamp that does not parse stays in the text; the event gets the
                // ingest time rather than being refused.
                let timestamp_ms = document.timestamp.as_ref().and_then(|t| timestamp_ms(t).ok());
                Ok(Event { timestamp_ms, raw: text.trim().to_owned(), attributes })
            });
        match event {
            Ok(event) => {
                item.id = Some(id.unwrap_or_else(|| format!("weir-{}-{}", target.ingest_ts_ms, items.len())));
                match batches.last_mut() {
                    Some(last) if last.attributes.get("_index").and_then(Value::as_str) == Some(index.as_str()) => last.events.push(event),
                    _ => batches.push(EventBatch {
                        repository: target.repository.to_owned(),
                        tags: BTreeMap::new(),
                        parser: target.parser.map(str::to_owned),
                        ingest_ts_ms: target.ingest_ts_ms,
                        attributes: Map::from_iter([("_index".to_owned(), Value::String(index))]),
                        events: vec![event],
                    }),
                }
            }
            Err(reason) => item.outcome = Err(ItemError::new("document_parsing_exception", reason)),
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(FormatError::new("request body is required: the bulk body holds no action line", 5));
    }
    Ok(Bulk { batches, items })
}

/// The bulk answer Elasticsearch clients parse: `{"took","errors","items"}`.
pub fn answer(items: &[Item], took_ms: u64) -> Value {
    let errors = items.iter().any(|i| i.outcome.is_err());
    let items: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut body = json!({"_index": item.index, "_id": item.id});
            match &item.outcome {
                Ok(()) => {
                    body["_version"] = json!(1);
                    body["result"] = json!("created");
                    body["_shards"] = json!({"total": 1, "successful": 1, "failed": 0});
                    body["status"] = json!(201);
                }
                Err(e) => {
                    body["status"] = json!(e.status);
                    body["error"] = json!({"type": e.kind, "reason": e.reason});
                }
            }
            json!({ item.action.as_str(): body })
        })
        .collect();
    json!({"took": took_ms, "errors": errors, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target { repository: "repo", parser: None, ingest_ts_ms: 7 };

    fn statuses(bulk: &Bulk) -> Vec<(String, u16)> {
        bulk.items
            .iter()
            .map(|i| (i.action.clone(), i.outcome.as_ref().map_or_else(|e| e.status, |()| 201)))
            .collect()
    }

    #[test]
    fn index_and_create_become_events_grouped_by_index() {
        let body = concat!(
            "{\"index\":{\"_index\":\"web\",\"_id\":\"1\",\"_type\":\"_doc\",\"pipeline\":\"p\"}}\n",
            "{\"@timestamp\":\"2024-01-02T03:04:05.678Z\",\"msg\":\"a\"}\n",
            "{\"create\":{}}\r\n",
            "{\"msg\":\"b\",\"@timestamp\":1700000000000}\n",
            "\n",
            "{\"index\":{\"_index\":\"db\"}}\n",
            "{\"msg\":\"c\",\"@timestamp\":\"not a time\"}"
        );
        let bulk = decode(body.as_bytes(), Some("web"), &TARGET).unwrap();
        assert_eq!(statuses(&bulk), [("index".into(), 201), ("create".into(), 201), ("index".into(), 201)]);
        assert_eq!(bulk.batches.len(), 2, "an index change starts a batch");
        assert_eq!(bulk.batches[0].attributes["_index"], "web");
        assert_eq!(bulk.batches[1].attributes["_index"], "db");
        let events = &bulk.batches[0].events;
        assert_eq!(events[0].raw, r#"{"@timestamp":"2024-01-02T03:04:05.678Z","msg":"a"}"#);
        assert_eq!(events[0].timestamp_ms, Some(1_704_164_645_678));
        assert_eq!(events[0].attributes["_id"], "1");
        assert_eq!(events[1].timestamp_ms, Some(1_700_000_000_000));
        assert!(events[1].attributes.is_empty(), "no _id given, none stored");
        assert_eq!(bulk.batches[1].events[0].timestamp_ms, None, "an unparseable @timestamp leaves the ingest time");
        assert_eq!(bulk.items[0].id.as_deref(), Some("1"));
        assert!(bulk.items[1].id.is_some(), "a made-up id for the answer");
    }

    #[test]
    fn bad_items_are_answered_per_item_and_the_others_still_processed() {
        let body = concat!(
            "{\"index\":{}}\n{\"n\":1}\n",
            "{\"index\":{}\n{\"n\":2}\n", // broken action line: its document is skipped
            "{\"index\":{}}\n[\"not\",\"an object\"]\n",
            "{\"delete\":{\"_id\":\"x\"}}\n",
            "{\"update\":{\"_id\":\"x\"}}\n{\"doc\":{}}\n",
            "{\"upsert_all\":{}}\n{\"n\":3}\n",
            "{\"index\":{}}\n{\"n\":4\n",
            "{\"bogus\":1}\n", // broken, followed directly by an action: nothing skipped
            "{\"create\":{}}\n{\"n\":5}\n",
        );
        let bulk = decode(body.as_bytes(), Some("i"), &TARGET).unwrap();
        assert_eq!(
            statuses(&bulk),
            [
                ("index".into(), 201),
                ("index".into(), 400),
                ("index".into(), 400),
                ("delete".into(), 400),
                ("update".into(), 400),
                ("index".into(), 400),
                ("index".into(), 400),
                ("index".into(), 400),
                ("create".into(), 201),
            ]
        );
        let raws: Vec<&str> = bulk.batches.iter().flat_map(|b| &b.events).map(|e| e.raw.as_str()).collect();
        assert_eq!(raws, [r#"{"n":1}"#, r#"{"n":5}"#]);
        let reason = |i: usize| bulk.items[i].outcome.clone().unwrap_err();
        assert!(reason(1).reason.contains("line [3]"), "{:?}", reason(1));
        assert_eq!(reason(2).kind, "document_parsing_exception");
        assert!(reason(3).reason.contains("not supported"));
        assert!(reason(5).reason.contains("found [upsert_all]"), "{:?}", reason(5));

        let answer = answer(&bulk.items, 3);
        assert_eq!(answer["errors"], true);
        assert_eq!(answer["items"].as_array().unwrap().len(), 9);
        assert_eq!(answer["items"][0]["index"]["status"], 201);
        assert_eq!(answer["items"][3]["delete"]["error"]["type"], "illegal_argument_exception");
    }

    #[test]
    fn missing_index_and_missing_document_are_item_errors_and_an_empty_body_is_refused() {
        let bulk = decode(b"{\"index\":{}}\n{\"a\":1}\n{\"index\":{\"_index\":\"x\"}}\n", None, &TARGET).unwrap();
        let kinds: Vec<&str> = bulk.items.iter().map(|i| i.outcome.as_ref().unwrap_err().kind).collect();
        assert_eq!(kinds, ["action_request_validation_exception", "action_request_validation_exception"]);
        assert!(bulk.batches.is_empty());
        assert_eq!(decode(b"\n \n", None, &TARGET).unwrap_err().hec_code, 5);
        assert_eq!(answer(&[], 0), json!({"took": 0, "errors": false, "items": []}));
    }
}

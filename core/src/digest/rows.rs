//! One ingest record → the rows a segment stores: decode the batch, drop it if Global (or
//! the segment being built) already stored it, parse its events, keep everything else.
//!
//! Owns the event → row mapping (timestamps, fields, error columns) and the rule that
//! nothing is lost on the way: a record that is not a Weir batch becomes one raw row with
//! `@error`, a failed parse keeps the raw text with `@error` (I3). Must never touch Kafka
//! or Global: the worker hands records in and takes rows out.

use std::collections::BTreeMap;

use weir_global::{Dedup, StoredBatches, StoredPart};
// The fields the plugin host sets that have columns of their own.
use weir_plugin_host::{ERROR_FIELD, ERROR_MSG_FIELD, Event as ParsedEvent, Field, PARSER_FIELD, ParserRegistry, RawEvent, Value};
use weir_proto::event::now_ms;
use weir_proto::{EventBatch, Fields};
use weir_segment::SegmentRow;

use crate::kafka::ingest_reader::{IngestRecord, RecordBatch};

/// The `@error_msg` of a record that is not a Weir event batch.
pub const FOREIGN_RECORD_ERROR: &str = "not a Weir event batch";

/// What became of one record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordOutcome {
    pub events: u64,
    pub failed: u64,
    /// The record was a copy of a batch part already stored; no rows.
    pub duplicate: bool,
    pub foreign: bool,
}

/// What the digest asks of its parsers. The plugin host's [`ParserRegistry`] is the only
/// implementation the core uses; the seam exists so that the digest benchmark can put a
/// native build of a parser in the same place and compare it with its Wasm build on the
/// very same row-building code.
pub trait BatchParser {
    /// Whether a parser of this name exists (a batch may ask for one by name).
    fn has_parser(&self, name: &str) -> bool;
    /// The parser of a repository's batches that ask for none (or for an unknown one).
    fn parser_for(&self, repository: &str) -> Option<&str>;
    /// Every input back, parsed or with `@error` fields; `None` if no such parser exists.
    fn parse_with(&self, parser: &str, batch: Vec<RawEvent>) -> Option<Vec<ParsedEvent>>;
}

impl BatchParser for ParserRegistry {
    fn has_parser(&self, name: &str) -> bool {
        self.parsers().any(|p| p == name)
    }
    fn parser_for(&self, repository: &str) -> Option<&str> {
        ParserRegistry::parser_for(self, repository, None)
    }
    fn parse_with(&self, parser: &str, batch: Vec<RawEvent>) -> Option<Vec<ParsedEvent>> {
        ParserRegistry::parse_with(self, parser, batch)
    }
}

/// Turns records into rows for one partition, remembering which batch parts the current
/// segment holds.
pub struct RowBuilder<'a, P: BatchParser + ?Sized = ParserRegistry> {
    pub partition: u32,
    pub parsers: Option<&'a P>,
    /// Where records that are not Weir batches go.
    pub foreign_repository: &'a str,
}

/// The batch parts a segment stores, for its `register_segment` command and for the
/// digest's own dedup overlay.
#[derive(Debug, Default)]
pub struct StoredSet {
    /// (edge, incarnation) → (single-record seqs, parts of split batches).
    by_incarnation: BTreeMap<(String, String), (Vec<u64>, Vec<StoredPart>)>,
}

impl StoredSet {
    pub fn add(&mut self, batch: &RecordBatch) {
        let entry = self.by_incarnation.entry((batch.id.edge_id.clone(), batch.id.incarnation.clone())).or_default();
        if batch.parts == 1 {
            entry.0.push(batch.id.seq);
        } else {
            entry.1.push(StoredPart { seq: batch.id.seq, part: batch.part, parts: batch.parts });
        }
    }

    /// As Global's command wants it: whole batches as merged seq ranges.
    pub fn to_stored(&self) -> Vec<StoredBatches> {
        self.by_incarnation
            .iter()
            .map(|((edge_id, incarnation), (seqs, parts))| {
                let mut seqs = seqs.clone();
                seqs.sort_unstable();
                seqs.dedup();
                let mut whole: Vec<(u64, u64)> = Vec::new();
                for seq in seqs {
                    match whole.last_mut() {
                        Some(last) if last.1 == seq => last.1 = seq + 1,
                        _ => whole.push((seq, seq + 1)),
                    }
                }
                StoredBatches { edge_id: edge_id.clone(), incarnation: incarnation.clone(), whole, parts: parts.clone() }
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_incarnation.is_empty()
    }
}

impl<P: BatchParser + ?Sized> RowBuilder<'_, P> {
    /// The rows of `record`, unless `dedup` says its batch part is stored already; marks
    /// the part in `dedup` and `stored` when it is kept.
    pub fn rows(&self, record: &IngestRecord, dedup: &mut Dedup, stored: &mut StoredSet, out: &mut Vec<SegmentRow>) -> RecordOutcome {
        if let Some(batch) = &record.batch {
            if dedup.is_stored(&batch.id, batch.part, batch.parts) {
                return RecordOutcome { duplicate: true, ..RecordOutcome::default() };
            }
        }
        let batch: EventBatch = match serde_json::from_slice(&record.payload) {
            Ok(batch) => batch,
            Err(error) => {
                out.push(self.foreign_row(record, &error.to_string()));
                return RecordOutcome { events: 1, failed: 1, foreign: true, duplicate: false };
            }
        };
        if let Some(part) = &record.batch {
            let mut one = StoredSet::default();
            one.add(part);
            dedup.mark(&one.to_stored(), record.offset);
            stored.add(part);
        }
        let outcome = self.batch_rows(record.offset, batch, out);
        RecordOutcome { duplicate: false, foreign: false, ..outcome }
    }

    fn foreign_row(&self, record: &IngestRecord, reason: &str) -> SegmentRow {
        let now = now_ms();
        SegmentRow {
            repository: self.foreign_repository.to_owned(),
            timestamp_ms: now,
            ingest_timestamp_ms: now,
            raw: String::from_utf8_lossy(&record.payload).into_owned(),
            id: SegmentRow::event_id(self.partition as i32, record.offset as i64, 0),
            offset: record.offset as i64,
            tags: BTreeMap::new(),
            fields: Fields::new(),
            parser: None,
            error: Some(format!("{FOREIGN_RECORD_ERROR}: record at offset {} of partition {}: {reason}", record.offset, self.partition)),
        }
    }

    fn batch_rows(&self, offset: u64, batch: EventBatch, out: &mut Vec<SegmentRow>) -> RecordOutcome {
        let EventBatch { repository, tags, parser, ingest_ts_ms, attributes, mut events } = batch;
        let attributes = Fields::from(attributes);
        let chosen = self.parsers.and_then(|registry| match parser.as_deref() {
            Some(asked) if registry.has_parser(asked) => Some(asked.to_owned()),
            _ => registry.parser_for(&repository).map(str::to_owned),
        });
        // The batch's attributes, then the event's own (moved, not copied: this runs per
        // event), which win on a name both have.
        let base = |own: weir_proto::Fields| {
            let mut fields = attributes.clone();
            fields.extend(own);
            fields
        };
        let row = |index: usize, raw: String, timestamp_ms: i64, fields, parser: Option<String>, error: Option<String>| SegmentRow {
            repository: repository.clone(),
            timestamp_ms,
            ingest_timestamp_ms: ingest_ts_ms,
            raw,
            id: SegmentRow::event_id(self.partition as i32, offset as i64, index as u32),
            offset: offset as i64,
            tags: tags.clone(),
            fields,
            parser,
            error,
        };
        let (Some(registry), Some(parser_name)) = (self.parsers, chosen) else {
            let n = events.len() as u64;
            for (i, event) in events.into_iter().enumerate() {
                let ts = event.timestamp_ms.unwrap_or(ingest_ts_ms);
                out.push(row(i, event.raw, ts, base(event.attributes), None, None));
            }
            return RecordOutcome { events: n, ..RecordOutcome::default() };
        };
        let raw: Vec<RawEvent> = events
            .iter()
            .map(|e| RawEvent {
                raw: e.raw.clone(),
                repository: repository.clone(),
                tags: tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                ingest_time_ns: ingest_ts_ms.saturating_mul(1_000_000),
            })
            .collect();
        let parsed = registry.parse_with(&parser_name, raw).unwrap_or_default();
        // A plugin may split or drop lines; only when it kept one event per input do the
        // client's per-event timestamp and attributes still belong to an output event.
        let aligned = parsed.len() == events.len();
        let mut outcome = RecordOutcome::default();
        for (i, event) in parsed.into_iter().enumerate() {
            let source = aligned.then(|| &mut events[i]);
            let mut fields = match source {
                Some(source) => base(std::mem::take(&mut source.attributes)),
                None => attributes.clone(),
            };
            let source = aligned.then(|| &events[i]);
            let columns = split_fields(event.fields, &mut fields, &parser_name);
            let timestamp_ms = event
                .timestamp_ns
                .map(|ns| ns.div_euclid(1_000_000))
                .or_else(|| source.and_then(|e| e.timestamp_ms))
                .unwrap_or(ingest_ts_ms);
            outcome.events += 1;
            outcome.failed += u64::from(columns.error.is_some());
            out.push(row(i, event.raw, timestamp_ms, fields, Some(columns.parser), columns.error));
        }
        outcome
    }
}

/// The columns of a parsed event that are not fields: `@parser` and the `@error` state.
pub struct Columns {
    pub parser: String,
    /// `@error_msg`, else the `@error` code; `None` when the parse succeeded.
    pub error: Option<String>,
}

/// Moves a parsed event's fields into `fields`, except the plugin host's `@error`,
/// `@error_msg` and `@parser`, which have columns of their own (the digest and re-parse
/// store them alike).
pub fn split_fields(parsed: Vec<Field>, fields: &mut Fields, parser: &str) -> Columns {
    let text = |value: &Value| match value {
        Value::Text(s) => s.clone(),
        other => other.to_json().to_string(),
    };
    let (mut code, mut message, mut parser) = (None, None, parser.to_owned());
    let mut others = Vec::with_capacity(parsed.len());
    for field in parsed {
        match field.name.as_str() {
            ERROR_FIELD => code = Some(text(&field.value)),
            ERROR_MSG_FIELD => message = Some(text(&field.value)),
            PARSER_FIELD => parser = text(&field.value),
            _ => others.push((field.name, field.value.to_json())),
        }
    }
    // One pass over them all, not a search per field: a parser may set hundreds.
    fields.extend(others);
    Columns { parser, error: code.map(|code| message.unwrap_or(code)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::wire::BatchId;

    fn record(offset: u64, payload: &[u8], batch: Option<(u64, u32, u32)>) -> IngestRecord {
        IngestRecord {
            offset,
            payload: payload.to_vec(),
            batch: batch.map(|(seq, part, parts)| RecordBatch {
                id: BatchId { edge_id: "e".into(), incarnation: "i".into(), seq },
                part,
                parts,
            }),
            timestamp_ms: None,
        }
    }

    fn batch_json(raws: &[&str]) -> Vec<u8> {
        let mut batch = EventBatch {
            repository: "web".into(),
            tags: BTreeMap::from([("host".into(), "h1".into())]),
            parser: None,
            ingest_ts_ms: 1_000,
            attributes: serde_json::Map::from_iter([("site".to_owned(), serde_json::json!("a"))]),
            events: raws.iter().map(|r| weir_proto::Event::raw(*r)).collect(),
        };
        batch.events[0].timestamp_ms = Some(500);
        serde_json::to_vec(&batch).unwrap()
    }

    #[test]
    fn a_batch_without_a_parser_keeps_every_event_with_its_fields() {
        let builder = RowBuilder { partition: 3, parsers: None::<&ParserRegistry>, foreign_repository: "foreign" };
        let (mut dedup, mut stored, mut out) = (Dedup::default(), StoredSet::default(), Vec::new());
        let outcome = builder.rows(&record(7, &batch_json(&["a", "b"]), Some((1, 0, 1))), &mut dedup, &mut stored, &mut out);
        assert_eq!(outcome, RecordOutcome { events: 2, ..RecordOutcome::default() });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "3-7-0");
        assert_eq!(out[0].timestamp_ms, 500, "the client's time");
        assert_eq!(out[1].timestamp_ms, 1_000, "else the ingest time");
        assert_eq!(out[1].fields["site"], "a");
        assert_eq!(out[1].tags["host"], "h1");
        assert_eq!(stored.to_stored()[0].whole, vec![(1, 2)]);
    }

    #[test]
    fn a_batch_part_seen_before_is_dropped_and_a_foreign_record_is_kept_raw() {
        let builder = RowBuilder { partition: 0, parsers: None::<&ParserRegistry>, foreign_repository: "foreign" };
        let (mut dedup, mut stored, mut out) = (Dedup::default(), StoredSet::default(), Vec::new());
        builder.rows(&record(1, &batch_json(&["a"]), Some((5, 0, 2))), &mut dedup, &mut stored, &mut out);
        let again = builder.rows(&record(2, &batch_json(&["a"]), Some((5, 0, 2))), &mut dedup, &mut stored, &mut out);
        assert!(again.duplicate);
        let other_part = builder.rows(&record(3, &batch_json(&["b"]), Some((5, 1, 2))), &mut dedup, &mut stored, &mut out);
        assert!(!other_part.duplicate);
        assert_eq!(out.len(), 2);
        let foreign = builder.rows(&record(4, b"\xffnot json", None), &mut dedup, &mut stored, &mut out);
        assert!(foreign.foreign);
        let row = out.last().unwrap();
        assert_eq!(row.repository, "foreign");
        assert!(row.error.as_deref().unwrap().starts_with(FOREIGN_RECORD_ERROR), "{:?}", row.error);
        assert!(row.raw.ends_with("not json"));
        let stored = stored.to_stored();
        assert_eq!(stored[0].parts.len(), 2);
        assert!(stored[0].whole.is_empty());
    }
}

//! `weir-core segments ls|verify|cat`: the operator's view of this node's segment files
//! against what Global says they are.
//!
//! Owns the checks (registered? same blake3? every row group readable?) and the NDJSON
//! form of a stored event. Reads Global the way `global dump` does (snapshot + topic to
//! its end) and never writes anything: a bad file is named, not repaired.

use std::io::Write;
use std::path::{Path, PathBuf};


use serde_json::{Map, Value, json};
use weir_global::State;
use weir_segment::{SegmentReader, SegmentRow};

use super::data_dir::{self, DataDir};

/// One local segment file and what is wrong with it, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub path: PathBuf,
    pub segment_id: String,
    pub problem: Option<String>,
}

/// Checks one file: registered in `state`, its blake3 the registered one, its footer and
/// every row group readable (each row group's own hash checked by the reader).
pub fn check(state: &State, path: &Path) -> Checked {
    let segment_id = data_dir::segment_id(path).unwrap_or_default().to_owned();
    let problem = (|| {
        let Some(segment) = state.segment(&segment_id) else {
            return Some("not registered in Global (left by a crash, or from another cluster)".to_owned());
        };
        match weir_segment::blake3_of_file(path) {
            Ok(hash) if hash == segment.info.blake3 => {}
            Ok(hash) => return Some(format!("blake3 {hash} differs from the registered {}", segment.info.blake3)),
            Err(error) => return Some(error.to_string()),
        }
        let reader = match SegmentReader::open(path) {
            Ok(reader) => reader,
            Err(error) => return Some(error.to_string()),
        };
        let rows = match reader.all_rows() {
            Ok(rows) => rows,
            Err(error) => return Some(error.to_string()),
        };
        let mut n = 0u64;
        for row in rows {
            if let Err(error) = row {
                return Some(error.to_string());
            }
            n += 1;
        }
        (n != segment.info.n_events).then(|| format!("{n} events readable, {} registered", segment.info.n_events))
    })();
    Checked { path: path.to_owned(), segment_id, problem }
}

/// `segments ls`: every segment Global knows, with whether this node has its file.
pub fn list(state: &State, data_dir: &DataDir, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{:<40} {:>4} {:>12} {:>12} {:>9} {:>11}  {:<5} repositories", "segment", "part", "offset_start", "offset_end", "events", "bytes", "local")?;
    for p in state.partitions() {
        for segment in state.segments(p) {
            let info = &segment.info;
            let local = data_dir.segment_path(&info.segment_id).is_file();
            writeln!(
                out,
                "{:<40} {:>4} {:>12} {:>12} {:>9} {:>11}  {:<5} {}",
                info.segment_id,
                info.partition,
                info.offset_start,
                info.offset_end,
                info.n_events,
                info.bytes,
                if local { "yes" } else { "no" },
                info.repositories.join(",")
            )?;
        }
    }
    Ok(())
}

/// `segments cat`: the events of one file as NDJSON, in LogScale's field names.
pub fn cat(path: &Path, out: &mut impl Write) -> Result<u64, String> {
    let reader = SegmentReader::open(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    for row in reader.all_rows().map_err(|e| e.to_string())? {
        let row = row.map_err(|e| e.to_string())?;
        serde_json::to_writer(&mut *out, &event_json(&row)).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// A stored event with LogScale's field names: `@timestamp`, `@rawstring`, `@id`, `#repo`,
/// tags as `#name`, the parsed fields, and `@error`/`@error_msg` when parsing failed. Not
/// `weir_query::render`: that is the query API's LogScale wire form (every value a string,
/// nested fields flattened); an operator piping a file into `jq` gets the stored types.
pub fn event_json(row: &SegmentRow) -> Value {
    let mut event = Map::new();
    for (name, value) in &row.fields {
        event.insert(name.clone(), value.clone());
    }
    for (name, value) in &row.tags {
        event.insert(format!("#{name}"), json!(value));
    }
    event.insert("@timestamp".into(), json!(row.timestamp_ms));
    event.insert("@ingesttimestamp".into(), json!(row.ingest_timestamp_ms));
    event.insert("@rawstring".into(), json!(row.raw));
    event.insert("@id".into(), json!(row.id));
    event.insert("#repo".into(), json!(row.repository));
    if let Some(parser) = &row.parser {
        event.insert("@parser".into(), json!(parser));
    }
    if let Some(error) = &row.error {
        event.insert("@error".into(), json!(true));
        event.insert("@error_msg".into(), json!(error));
    }
    Value::Object(event)
}

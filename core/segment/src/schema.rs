//! The columns of a segment and the names of its key-value metadata (format version 1).
//!
//! Column choices, for readers with no Weir code:
//! - `tags` is a Parquet MAP<string, string>: tags are few, always strings, and DuckDB
//!   (`tags['host']`, `map_keys(tags)`), Spark and Trino read a MAP natively and typed.
//! - `fields` is JSON object text: parsed fields are open-ended (each event its own keys)
//!   and typed (string, integer, float, bool, null); a MAP<string, string> would lose the
//!   types and a struct column cannot hold per-event keys. DuckDB reads it with
//!   `fields->>'$.status'` / `json_extract`, Spark with `get_json_object`, Trino with
//!   `json_extract_scalar`.
//! - `@error` is a non-null bool (filterable as `WHERE "@error"`), `@error_msg` says why.

use std::sync::Arc;

use arrow_array::Array;
use arrow_array::builder::{MapBuilder, MapFieldNames, StringBuilder};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

pub const TIMESTAMP: &str = "@timestamp";
pub const INGEST_TIMESTAMP: &str = "@ingesttimestamp";
pub const RAWSTRING: &str = "@rawstring";
pub const ID: &str = "@id";
pub const REPO: &str = "#repo";
pub const OFFSET: &str = "@offset";
pub const TAGS: &str = "tags";
pub const FIELDS: &str = "fields";
pub const PARSER: &str = "@parser";
pub const ERROR: &str = "@error";
pub const ERROR_MSG: &str = "@error_msg";

/// Index of `#repo` among the columns (for its row-group statistics).
pub const REPO_COLUMN: usize = 4;

/// Key-value metadata keys, written once when the file is closed.
pub mod key {
    pub const FORMAT_VERSION: &str = "weir.format_version";
    pub const SEGMENT_ID: &str = "weir.segment_id";
    pub const PARTITION: &str = "weir.partition";
    pub const OFFSET_START: &str = "weir.offset_start";
    pub const OFFSET_END: &str = "weir.offset_end";
    pub const N_EVENTS: &str = "weir.n_events";
    /// Absent when the segment has no events.
    pub const MIN_TIMESTAMP_MS: &str = "weir.min_timestamp_ms";
    pub const MAX_TIMESTAMP_MS: &str = "weir.max_timestamp_ms";
    /// JSON array of repository names, sorted.
    pub const REPOSITORIES: &str = "weir.repositories";
    /// JSON array of [`super::RowGroupEntry`], one per row group in file order.
    pub const ROW_GROUPS: &str = "weir.row_groups";
}

/// One row group as the writer recorded it: the index from repository to row groups, and
/// the blake3 of the row group's bytes so a reader that reads only some row groups can
/// still check what it decodes (Parquet pages carry no checksum of their own here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowGroupEntry {
    pub repository: String,
    pub rows: u64,
    /// Byte range `[start, end)` of the row group's column chunks in the file.
    pub start: u64,
    pub end: u64,
    pub blake3: String,
}

pub(crate) fn map_field_names() -> MapFieldNames {
    // The names the Parquet spec gives a MAP's repeated group and its leaves.
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

pub(crate) fn tags_builder(capacity: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(Some(map_field_names()), StringBuilder::new(), StringBuilder::new(), capacity)
        .with_values_field(Field::new("value", DataType::Utf8, false))
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The Arrow schema of format version 1, in column order.
pub fn arrow_schema() -> SchemaRef {
    let tags_type = tags_builder(0).finish().data_type().clone();
    Arc::new(Schema::new(vec![
        Field::new(TIMESTAMP, timestamp_type(), false),
        Field::new(INGEST_TIMESTAMP, timestamp_type(), false),
        Field::new(RAWSTRING, DataType::Utf8, false),
        Field::new(ID, DataType::Utf8, false),
        Field::new(REPO, DataType::Utf8, false),
        Field::new(OFFSET, DataType::Int64, false),
        Field::new(TAGS, tags_type, false),
        Field::new(FIELDS, DataType::Utf8, false),
        Field::new(PARSER, DataType::Utf8, true),
        Field::new(ERROR, DataType::Boolean, false),
        Field::new(ERROR_MSG, DataType::Utf8, true),
    ]))
}

//! The segment file format that the digest, the tools and the bucket code all use.
//!
//! A segment is one Apache Parquet file (zstd) holding the events of **one flush of one
//! Kafka partition**, covering the contiguous offset range `[offset_start, offset_end)`.
//! Any Parquet reader (DuckDB, Spark, Trino) reads it with no Weir code; the columns use
//! LogScale's names (`@timestamp`, `@rawstring`, `#repo`, ...), see [`schema`].
//!
//! Owns: the columns and their types, the file's key-value metadata
//! (`weir.format_version` = [`FORMAT_VERSION`], segment id, partition, offset range,
//! counts, the repository → row group index with a blake3 per row group), rows grouped
//! by repository (each row group holds one repository, so readers prune the others),
//! the durable write (temporary name, fsync, rename, directory fsync) and the blake3 of
//! the whole file computed while it is written. A change of any of these is a new
//! format version; a reader refuses versions it does not know.
//!
//! Must never: talk to Kafka, know about Global (where a segment's id, range and hash are
//! registered), decide when to flush, or parse events. Callers hand it finished rows.

mod error;
mod reader;
pub mod schema;
mod writer;

pub use error::SegmentError;
pub use reader::{SegmentInfo, SegmentReader, SegmentRows, blake3_of_file};
pub use schema::RowGroupEntry;
pub use writer::{SegmentMeta, SegmentOptions, SegmentWriter, WrittenSegment};

/// The version written in `weir.format_version`; readers refuse any other.
pub const FORMAT_VERSION: u32 = 1;

/// One event as stored in a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    /// `#repo`: the repository the event belongs to.
    pub repository: String,
    /// `@timestamp`: event time, milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// `@ingesttimestamp`: when the first Weir node received the event.
    pub ingest_timestamp_ms: i64,
    /// `@rawstring`: the raw text (or the parser's replacement of it).
    pub raw: String,
    /// `@id`: unique per event; [`SegmentRow::event_id`] gives the usual form.
    pub id: String,
    /// `@offset`: the Kafka offset of the record the event came from.
    pub offset: i64,
    /// `tags`: the source's tags (Parquet MAP<string, string>).
    pub tags: std::collections::BTreeMap<String, String>,
    /// `fields`: the parsed fields, stored as JSON object text.
    pub fields: weir_proto::Fields,
    /// `@parser`: the parser that ran, if any.
    pub parser: Option<String>,
    /// `@error_msg` when the parser failed (then `@error` is true); the event is kept with
    /// its raw text all the same.
    pub error: Option<String>,
}

impl SegmentRow {
    /// `<partition>-<offset>-<index in record>`: unique per event as long as a Kafka
    /// offset of a partition is digested into one segment only.
    pub fn event_id(partition: i32, offset: i64, index_in_record: u32) -> String {
        // Written by hand, not with `format!`: this runs per event in the digest, where
        // the formatting machinery was 3% of a digesting core's CPU.
        let mut id = String::with_capacity(32);
        id.push_str(itoa::Buffer::new().format(partition));
        id.push('-');
        id.push_str(itoa::Buffer::new().format(offset));
        id.push('-');
        id.push_str(itoa::Buffer::new().format(index_in_record));
        id
    }
}

/// The file name of a segment: `<segment_id>.parquet`. Temporary files start with a dot
/// and end with `.tmp`, so neither this nor a `*.parquet` glob ever matches one.
pub fn segment_file_name(segment_id: &str) -> String {
    format!("{segment_id}.parquet")
}

/// Whether a directory entry's name is a finished segment (not a temporary file).
pub fn is_segment_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".parquet")
}

#[cfg(test)]
mod tests;

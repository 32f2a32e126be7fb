//! Writing a segment: rows buffered per repository, each flushed as its own row groups,
//! through a writer that hashes every byte on its way to the file, to a temporary name
//! that becomes the segment's name only once the file is complete and synced.
//!
//! Not `weir_node::atomic_write::AtomicWrite`: it writes byte slices it is handed whole,
//! whereas a segment streams out row group by row group (memory stays bounded by the
//! buffer, not the file), and it would pull QUIC, TLS and tokio into this crate. The
//! sequence is the same: tmp in the same directory, fsync, rename, fsync the directory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder};
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::schema::{self, RowGroupEntry, key};
use crate::{FORMAT_VERSION, SegmentError, SegmentRow, segment_file_name};

/// The Parquet magic at the start of the file; row group bytes start after it.
const MAGIC_LEN: u64 = 4;

/// Which segment a writer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Unique; the file is `<segment_id>.parquet`. Letters, digits, `-`, `_`, `.` only,
    /// not starting with a dot (temporary files do).
    pub segment_id: String,
    /// The Kafka partition the events come from.
    pub partition: i32,
    /// The first Kafka offset the segment covers.
    pub offset_start: i64,
}

/// Tuning of a writer.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Rows held in memory before the largest repository's rows are written out as a row
    /// group, by an estimate of their size. Past it a repository can have several row
    /// groups that are not next to each other; every row group still holds one
    /// repository, which is what pruning needs.
    pub max_buffered_bytes: usize,
    /// zstd level (1..=22); 3 is zstd's own default, fast to write.
    pub zstd_level: i32,
    /// Rows per row group at most: a repository with more rows gets several row groups.
    pub max_rows_per_row_group: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions { max_buffered_bytes: 64 << 20, zstd_level: 3, max_rows_per_row_group: 1 << 20 }
    }
}

/// A finished segment, durable under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSegment {
    pub path: PathBuf,
    pub segment_id: String,
    pub partition: i32,
    pub offset_start: i64,
    pub offset_end: i64,
    /// blake3 of the whole file, lowercase hex.
    pub blake3_hex: String,
    pub bytes: u64,
    pub n_events: u64,
    /// Event time bounds (`@timestamp`), `None` for a segment without events.
    pub min_timestamp_ms: Option<i64>,
    pub max_timestamp_ms: Option<i64>,
    /// Sorted.
    pub repositories: Vec<String>,
    pub row_groups: Vec<RowGroupEntry>,
}

/// A repository's rows, in chunks of at most [`CHUNK_ROWS`]: one growing `Vec` of rows
/// was copied whole at each doubling (tens of MiB for a 64 MiB segment).
#[derive(Default)]
struct RepoBuffer {
    chunks: Vec<Vec<SegmentRow>>,
    n_rows: usize,
    bytes: usize,
}

const CHUNK_ROWS: usize = 4096;

impl RepoBuffer {
    fn push(&mut self, row: SegmentRow) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_ROWS => chunk.push(row),
            // Grown as rows come (a repository with a few rows holds a few), but never
            // past one chunk, so a doubling copies at most a chunk.
            _ => self.chunks.push(vec![row]),
        }
        self.n_rows += 1;
    }
}

/// Writes one segment; see the crate doc. Dropping it without [`finish`](Self::finish)
/// removes the temporary file.
pub struct SegmentWriter {
    meta: SegmentMeta,
    tmp_path: PathBuf,
    final_path: PathBuf,
    writer: Option<ArrowWriter<HashingFile>>,
    /// Set once the file is under its final name; until then, drop removes the temporary.
    renamed: bool,
    buffers: BTreeMap<String, RepoBuffer>,
    buffered_bytes: usize,
    options: SegmentOptions,
    /// Repository of each row group written so far, in file order.
    row_group_repos: Vec<String>,
    repositories: BTreeSet<String>,
    n_events: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
    max_offset: Option<i64>,
}

impl SegmentWriter {
    /// Starts `<dir>/<segment_id>.parquet` with the default options.
    pub fn create(dir: &Path, meta: SegmentMeta) -> Result<SegmentWriter, SegmentError> {
        SegmentWriter::create_with(dir, meta, SegmentOptions::default())
    }

    pub fn create_with(dir: &Path, meta: SegmentMeta, options: SegmentOptions) -> Result<SegmentWriter, SegmentError> {
        check_segment_id(&meta.segment_id)?;
        if meta.offset_start < 0 {
            return Err(invalid(&meta, format!("offset_start {} is negative", meta.offset_start)));
        }
        if options.max_rows_per_row_group == 0 {
            return Err(invalid(&meta, "max_rows_per_row_group must be at least 1".into()));
        }
        let level = ZstdLevel::try_new(options.zstd_level)
            .map_err(|e| invalid(&meta, format!("zstd level {}: {e}", options.zstd_level)))?;
        let final_path = dir.join(segment_file_name(&meta.segment_id));
        if final_path.exists() {
            return Err(SegmentError::Exists { path: final_path });
        }
        let tmp_path = dir.join(format!(".{}.parquet.tmp", meta.segment_id));
        // Truncate, not create_new: a leftover of this name is an earlier attempt at the
        // same segment that crashed before its rename, never someone else's file.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(SegmentError::io("create", &tmp_path))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            // Row groups are cut by this writer only (one repository each, and the byte
            // ranges it hashes must be known), never by the Parquet writer on its own.
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            // Raw text, ids and field JSON are nearly unique per row: a dictionary only
            // falls back, and min/max statistics on them serve no reader (the #repo ones
            // are checked by `verify`). Without both the files are 7% smaller.
            .set_column_dictionary_enabled(ColumnPath::from(schema::RAWSTRING), false)
            .set_column_dictionary_enabled(ColumnPath::from(schema::ID), false)
            .set_column_dictionary_enabled(ColumnPath::from(schema::FIELDS), false)
            .set_column_statistics_enabled(ColumnPath::from(schema::RAWSTRING), EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from(schema::ID), EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from(schema::FIELDS), EnabledStatistics::None)
            .set_created_by(format!("weir-segment {} (format {FORMAT_VERSION})", env!("CARGO_PKG_VERSION")))
            .build();
        let sink = HashingFile::new(file);
        let writer = ArrowWriter::try_new(sink, schema::arrow_schema(), Some(properties))
            .map_err(|source| SegmentError::Encode { path: tmp_path.clone(), source })?;
        tracing::debug!(segment_id = %meta.segment_id, partition = meta.partition, path = %tmp_path.display(), "segment started");
        Ok(SegmentWriter {
            meta,
            tmp_path,
            final_path,
            writer: Some(writer),
            renamed: false,
            buffers: BTreeMap::new(),
            buffered_bytes: 0,
            options,
            row_group_repos: Vec::new(),
            repositories: BTreeSet::new(),
            n_events: 0,
            min_ts: None,
            max_ts: None,
            max_offset: None,
        })
    }

    /// The temporary file being written (not a segment until `finish`).
    pub fn temporary_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Adds a row. Rows of a repository keep the order they were pushed in; repositories
    /// may interleave.
    pub fn push(&mut self, row: SegmentRow) -> Result<(), SegmentError> {
        if row.offset < self.meta.offset_start {
            let reason = format!("row offset {} is below offset_start {}", row.offset, self.meta.offset_start);
            return Err(invalid(&self.meta, reason));
        }
        if row.repository.is_empty() {
            return Err(invalid(&self.meta, format!("row {} has an empty repository", row.id)));
        }
        let size = estimate_size(&row);
        self.n_events += 1;
        self.min_ts = Some(self.min_ts.map_or(row.timestamp_ms, |t| t.min(row.timestamp_ms)));
        self.max_ts = Some(self.max_ts.map_or(row.timestamp_ms, |t| t.max(row.timestamp_ms)));
        self.max_offset = Some(self.max_offset.map_or(row.offset, |o| o.max(row.offset)));
        if !self.repositories.contains(&row.repository) {
            self.repositories.insert(row.repository.clone());
        }
        let buffer = self.buffers.entry(row.repository.clone()).or_default();
        buffer.push(row);
        buffer.bytes += size;
        self.buffered_bytes += size;
        while self.buffered_bytes > self.options.max_buffered_bytes {
            let Some(largest) = self.buffers.iter().max_by_key(|(_, b)| b.bytes).map(|(r, _)| r.clone()) else {
                break;
            };
            self.flush_repository(&largest)?;
        }
        Ok(())
    }

    fn flush_repository(&mut self, repository: &str) -> Result<(), SegmentError> {
        let Some(buffer) = self.buffers.remove(repository) else {
            return Ok(());
        };
        self.buffered_bytes -= buffer.bytes;
        let writer = self.writer.as_mut().expect("writer present until finish");
        let mut rows = buffer.chunks.iter().flatten();
        let mut left = buffer.n_rows;
        while left > 0 {
            let n = left.min(self.options.max_rows_per_row_group);
            left -= n;
            let group: Vec<&SegmentRow> = rows.by_ref().take(n).collect();
            let batch = to_batch(&group).map_err(|e| SegmentError::Encode {
                path: self.tmp_path.clone(),
                source: parquet::errors::ParquetError::General(format!("building the arrow batch: {e}")),
            })?;
            let encode = |source| SegmentError::Encode { path: self.tmp_path.clone(), source };
            writer.write(&batch).map_err(encode)?;
            writer.flush().map_err(encode)?;
            // The row group ends here: the hashing writer closes its range at this byte
            // once the buffered bytes reach it.
            let end = writer.bytes_written() as u64;
            writer.inner_mut().mark_row_group_end(end);
            self.row_group_repos.push(repository.to_owned());
            if writer.flushed_row_groups().len() != self.row_group_repos.len() {
                return Err(SegmentError::Encode {
                    path: self.tmp_path.clone(),
                    source: parquet::errors::ParquetError::General("row groups out of step with the writer".into()),
                });
            }
        }
        Ok(())
    }

    /// Writes what is buffered, closes the file with its metadata, makes it durable under
    /// its final name. `offset_end` is the first offset after the segment's range.
    pub fn finish(mut self, offset_end: i64) -> Result<WrittenSegment, SegmentError> {
        if offset_end < self.meta.offset_start || self.max_offset.is_some_and(|o| o >= offset_end) {
            let reason = format!(
                "offset_end {offset_end} must be at least offset_start {} and above every row's offset (highest {:?})",
                self.meta.offset_start, self.max_offset
            );
            return Err(invalid(&self.meta, reason));
        }
        // BTreeMap order: the repositories left in the buffers come out sorted.
        let left: Vec<String> = self.buffers.keys().cloned().collect();
        for repository in left {
            self.flush_repository(&repository)?;
        }
        let mut writer = self.writer.take().expect("writer present until finish");
        let encode = |source| SegmentError::Encode { path: self.tmp_path.clone(), source };
        // Push the buffered bytes through the hasher so every row group's hash is final
        // before the index that holds the hashes goes into the footer.
        writer.sync().map_err(SegmentError::io("write", &self.tmp_path))?;
        let hashes = writer.inner_mut().take_row_group_hashes();
        if hashes.len() != self.row_group_repos.len() {
            return Err(encode(parquet::errors::ParquetError::General(format!(
                "{} row groups but {} hashed ranges",
                self.row_group_repos.len(),
                hashes.len()
            ))));
        }
        for ((start, end, _), rg) in hashes.iter().zip(writer.flushed_row_groups()) {
            let first = rg.columns().iter().map(|c| c.byte_range().0).min();
            let last = rg.columns().iter().map(|c| c.byte_range().0 + c.byte_range().1).max();
            if (first, last) != (Some(*start), Some(*end)) {
                return Err(encode(parquet::errors::ParquetError::General(format!(
                    "hashed range {start}..{end} is not the row group's {first:?}..{last:?}"
                ))));
            }
        }
        let row_groups: Vec<RowGroupEntry> = hashes
            .into_iter()
            .zip(&self.row_group_repos)
            .zip(writer.flushed_row_groups())
            .map(|(((start, end, hash), repository), rg)| RowGroupEntry {
                repository: repository.clone(),
                rows: rg.num_rows() as u64,
                start,
                end,
                blake3: hash.to_hex().to_string(),
            })
            .collect();
        let repositories: Vec<String> = self.repositories.iter().cloned().collect();
        let mut kv = vec![
            (key::FORMAT_VERSION, FORMAT_VERSION.to_string()),
            (key::SEGMENT_ID, self.meta.segment_id.clone()),
            (key::PARTITION, self.meta.partition.to_string()),
            (key::OFFSET_START, self.meta.offset_start.to_string()),
            (key::OFFSET_END, offset_end.to_string()),
            (key::N_EVENTS, self.n_events.to_string()),
            (key::REPOSITORIES, serde_json::to_string(&repositories).expect("strings serialize")),
            (key::ROW_GROUPS, serde_json::to_string(&row_groups).expect("entries serialize")),
        ];
        if let (Some(min), Some(max)) = (self.min_ts, self.max_ts) {
            kv.push((key::MIN_TIMESTAMP_MS, min.to_string()));
            kv.push((key::MAX_TIMESTAMP_MS, max.to_string()));
        }
        for (k, v) in kv {
            writer.append_key_value_metadata(KeyValue::new(k.to_owned(), v));
        }
        // Writes the footer (with the metadata above) and hands back the hashing writer.
        let sink = writer.into_inner().map_err(encode)?;
        let (file, hash, bytes) = sink.into_parts();
        file.sync_all().map_err(SegmentError::io("sync", &self.tmp_path))?;
        drop(file);
        // The id is unique and one digest owns a partition, so the check and the rename do
        // not race in practice; the check keeps a bug from replacing a registered segment.
        if self.final_path.exists() {
            return Err(SegmentError::Exists { path: self.final_path.clone() });
        }
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(SegmentError::io("rename into place", &self.final_path))?;
        self.renamed = true;
        let dir = self.final_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(SegmentError::io("sync the directory", dir))?;
        let written = WrittenSegment {
            path: self.final_path.clone(),
            segment_id: self.meta.segment_id.clone(),
            partition: self.meta.partition,
            offset_start: self.meta.offset_start,
            offset_end,
            blake3_hex: hash.to_hex().to_string(),
            bytes,
            n_events: self.n_events,
            min_timestamp_ms: self.min_ts,
            max_timestamp_ms: self.max_ts,
            repositories,
            row_groups,
        };
        tracing::info!(
            segment_id = %written.segment_id,
            partition = written.partition,
            offset_start = written.offset_start,
            offset_end = written.offset_end,
            n_events = written.n_events,
            bytes = written.bytes,
            row_groups = written.row_groups.len(),
            blake3 = %written.blake3_hex,
            "segment written"
        );
        Ok(written)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        // Not finished (an error, or the caller gave up): the temporary file is garbage.
        if !self.renamed {
            self.writer = None;
            if let Err(error) = std::fs::remove_file(&self.tmp_path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.tmp_path.display(), %error, "cannot remove an abandoned segment temporary file");
            }
        }
    }
}

fn invalid(meta: &SegmentMeta, reason: String) -> SegmentError {
    SegmentError::Invalid { segment_id: meta.segment_id.clone(), reason }
}

fn check_segment_id(id: &str) -> Result<(), SegmentError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SegmentError::Invalid {
            segment_id: id.to_owned(),
            reason: "a segment id is 1 to 200 of [A-Za-z0-9._-], not starting with a dot".into(),
        })
    }
}

/// Bytes a row takes in the buffer, roughly: its strings plus fixed overhead.
fn estimate_size(row: &SegmentRow) -> usize {
    let tags: usize = row.tags.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    let fields: usize = row.fields.iter().map(|(k, v)| k.len() + json_size(v) + 64).sum();
    row.repository.len()
        + row.raw.len()
        + row.id.len()
        + row.parser.as_ref().map_or(0, String::len)
        + row.error.as_ref().map_or(0, String::len)
        + tags
        + fields
        + 200
}

fn json_size(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(s) => s.len() + 24,
        serde_json::Value::Array(a) => a.iter().map(json_size).sum::<usize>() + 24,
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| k.len() + json_size(v) + 64).sum::<usize>() + 24,
        _ => 16,
    }
}

fn to_batch(rows: &[&SegmentRow]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let timestamps: TimestampMillisecondArray = rows.iter().map(|r| Some(r.timestamp_ms)).collect();
    let ingest: TimestampMillisecondArray = rows.iter().map(|r| Some(r.ingest_timestamp_ms)).collect();
    let raw: StringArray = rows.iter().map(|r| Some(r.raw.as_str())).collect();
    let id: StringArray = rows.iter().map(|r| Some(r.id.as_str())).collect();
    let repo: StringArray = rows.iter().map(|r| Some(r.repository.as_str())).collect();
    let offset: Int64Array = rows.iter().map(|r| Some(r.offset)).collect();
    let mut tags = schema::tags_builder(rows.len());
    for row in rows {
        for (k, v) in &row.tags {
            tags.keys().append_value(k);
            tags.values().append_value(v);
        }
        tags.append(true)?;
    }
    let mut fields = StringBuilder::with_capacity(rows.len(), 0);
    for row in rows {
        fields.append_value(serde_json::to_string(&row.fields).expect("a JSON map serializes"));
    }
    let parser: StringArray = rows.iter().map(|r| r.parser.as_deref()).collect();
    let mut error = BooleanBuilder::with_capacity(rows.len());
    for row in rows {
        error.append_value(row.error.is_some());
    }
    let error: BooleanArray = error.finish();
    let error_msg: StringArray = rows.iter().map(|r| r.error.as_deref()).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(timestamps.with_timezone("UTC")),
        Arc::new(ingest.with_timezone("UTC")),
        Arc::new(raw),
        Arc::new(id),
        Arc::new(repo),
        Arc::new(offset),
        Arc::new(tags.finish()),
        Arc::new(fields.finish()),
        Arc::new(parser),
        Arc::new(error),
        Arc::new(error_msg),
    ];
    RecordBatch::try_new(schema::arrow_schema(), columns)
}

/// The file, behind a writer that hashes every byte on its way to it: the whole file's
/// blake3, and one blake3 per row group byte range as the ranges become known.
struct HashingFile {
    file: File,
    whole: blake3::Hasher,
    pos: u64,
    range: blake3::Hasher,
    range_start: u64,
    /// Ends of row groups whose bytes have not all come through yet.
    pending_ends: VecDeque<u64>,
    done: Vec<(u64, u64, blake3::Hash)>,
}

impl HashingFile {
    fn new(file: File) -> HashingFile {
        HashingFile {
            file,
            whole: blake3::Hasher::new(),
            pos: 0,
            range: blake3::Hasher::new(),
            range_start: MAGIC_LEN,
            pending_ends: VecDeque::new(),
            done: Vec::new(),
        }
    }

    /// The row group being written ends at byte `end`. Bytes past it are only written
    /// after this call (they belong to the next row group or the footer), so `end` is
    /// never behind `pos`.
    fn mark_row_group_end(&mut self, end: u64) {
        self.pending_ends.push_back(end);
        self.hash_range(&[]);
    }

    fn take_row_group_hashes(&mut self) -> Vec<(u64, u64, blake3::Hash)> {
        std::mem::take(&mut self.done)
    }

    fn into_parts(self) -> (File, blake3::Hash, u64) {
        (self.file, self.whole.finalize(), self.pos)
    }

    fn hash_range(&mut self, mut bytes: &[u8]) {
        loop {
            if self.pos < MAGIC_LEN {
                let n = (MAGIC_LEN - self.pos).min(bytes.len() as u64) as usize;
                self.pos += n as u64;
                bytes = &bytes[n..];
            }
            match self.pending_ends.front() {
                Some(&end) if self.pos + bytes.len() as u64 >= end && self.pos >= MAGIC_LEN => {
                    // Never negative (see `mark_row_group_end`); were it, `finish` finds the
                    // range out of step with the footer and fails instead of panicking here.
                    let n = end.saturating_sub(self.pos) as usize;
                    self.range.update(&bytes[..n]);
                    self.pos = end;
                    bytes = &bytes[n..];
                    self.done.push((self.range_start, end, self.range.finalize()));
                    self.range.reset();
                    self.range_start = end;
                    self.pending_ends.pop_front();
                }
                _ => {
                    // Bytes of the row group still being written, or of the footer
                    // (hashed here but never used: only the whole-file hash covers it).
                    self.range.update(bytes);
                    self.pos += bytes.len() as u64;
                    return;
                }
            }
        }
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.whole.update(&buf[..n]);
        self.hash_range(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_ids_are_plain_file_names() {
        for good in ["p3-0000000000000042", "a.b_c-1"] {
            assert!(check_segment_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", "é"] {
            assert!(check_segment_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_hashing_writer_splits_ranges_at_row_group_ends_whatever_the_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 3, 7, 100, 1000] {
            let mut sink = HashingFile::new(File::create(dir.path().join("f")).unwrap());
            // Row groups [4, 300) and [300, 640); the ends become known mid-stream.
            let mut written = 0;
            let mut marked = 0;
            for piece in bytes.chunks(chunk) {
                // As in the real writer, an end is known before any byte past it arrives.
                for (i, end) in [300, 640].into_iter().enumerate() {
                    if marked == i && written + piece.len() > end {
                        sink.mark_row_group_end(end as u64);
                        marked += 1;
                    }
                }
                sink.write_all(piece).unwrap();
                written += piece.len();
            }
            let hashes = sink.take_row_group_hashes();
            assert_eq!(hashes.len(), 2, "chunk {chunk}");
            assert_eq!((hashes[0].0, hashes[0].1), (4, 300));
            assert_eq!(hashes[0].2, blake3::hash(&bytes[4..300]), "chunk {chunk}");
            assert_eq!((hashes[1].0, hashes[1].1), (300, 640));
            assert_eq!(hashes[1].2, blake3::hash(&bytes[300..640]), "chunk {chunk}");
            let (_, whole, len) = sink.into_parts();
            assert_eq!(whole, blake3::hash(&bytes));
            assert_eq!(len, 1000);
        }
    }
}

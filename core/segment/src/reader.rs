//! Reading a segment: its metadata, the rows of one repository (other row groups are not
//! read), and the blake3 check of the whole file.
//!
//! Nothing from the file is trusted: the footer's metadata must agree with itself and with
//! the Parquet row groups, and each row group's bytes are checked against the blake3 the
//! writer recorded before they are decoded, so a flipped byte is an error, never a wrong
//! row. (A flip inside the footer's metadata strings can only be caught by `verify`
//! against the hash registered for the segment.)

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::statistics::Statistics;

use crate::schema::{self, RowGroupEntry, key};
use crate::{FORMAT_VERSION, SegmentError, SegmentRow};

/// Rows decoded at a time: memory stays at one batch of one row group.
const BATCH_ROWS: usize = 4096;

/// What a segment's footer says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub format_version: u32,
    pub segment_id: String,
    pub partition: i32,
    pub offset_start: i64,
    pub offset_end: i64,
    pub n_events: u64,
    pub min_timestamp_ms: Option<i64>,
    pub max_timestamp_ms: Option<i64>,
    pub repositories: Vec<String>,
    pub row_groups: Vec<RowGroupEntry>,
}

/// An open segment file.
pub struct SegmentReader {
    path: PathBuf,
    file: File,
    metadata: ArrowReaderMetadata,
    info: SegmentInfo,
}

/// blake3 of a file, read in a stream (not into memory), lowercase hex.
pub fn blake3_of_file(path: &Path) -> Result<String, SegmentError> {
    let mut file = File::open(path).map_err(SegmentError::io("open", path))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file).map_err(SegmentError::io("read", path))?;
    Ok(hasher.finalize().to_hex().to_string())
}

impl SegmentReader {
    /// Opens a segment and checks its footer: format version, columns, metadata.
    pub fn open(path: &Path) -> Result<SegmentReader, SegmentError> {
        let file = File::open(path).map_err(SegmentError::io("open", path))?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| SegmentError::corrupt(path, format!("not a readable Parquet file: {e}")))?;
        let expected = schema::arrow_schema();
        let actual = metadata.schema();
        if actual.fields().len() != expected.fields().len() {
            let reason = format!("{} columns, format {FORMAT_VERSION} has {}", actual.fields().len(), expected.fields().len());
            return Err(SegmentError::corrupt(path, reason));
        }
        for (a, e) in actual.fields().iter().zip(expected.fields()) {
            if a.name() != e.name() || a.data_type() != e.data_type() {
                let reason = format!("column {} of type {} where format {FORMAT_VERSION} has {} of type {}", a.name(), a.data_type(), e.name(), e.data_type());
                return Err(SegmentError::corrupt(path, reason));
            }
        }
        let info = parse_info(path, &metadata)?;
        Ok(SegmentReader { path: path.to_owned(), file, metadata, info })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &SegmentInfo {
        &self.info
    }

    /// Number of row groups in the file.
    pub fn n_row_groups(&self) -> usize {
        self.info.row_groups.len()
    }

    /// Whether the whole file's blake3 is `expected_blake3` (hex), read in a stream.
    pub fn verify(&self, expected_blake3: &str) -> Result<bool, SegmentError> {
        SegmentReader::verify_file(&self.path, expected_blake3)
    }

    /// [`verify`](Self::verify) for a file that may not even open as a segment (a
    /// truncated copy): `Ok(false)` on a mismatch, `Err` only if it cannot be read.
    pub fn verify_file(path: &Path, expected_blake3: &str) -> Result<bool, SegmentError> {
        Ok(blake3_of_file(path)?.eq_ignore_ascii_case(expected_blake3))
    }

    /// The rows of `repository`, in the order they were written, reading only its row
    /// groups.
    pub fn rows(&self, repository: &str) -> Result<SegmentRows, SegmentError> {
        let groups = (0..self.info.row_groups.len()).filter(|&i| self.info.row_groups[i].repository == repository).collect();
        self.rows_of(groups, Some(repository.to_owned()))
    }

    /// Every row, repository after repository as stored.
    pub fn all_rows(&self) -> Result<SegmentRows, SegmentError> {
        self.rows_of((0..self.info.row_groups.len()).collect(), None)
    }

    fn rows_of(&self, groups: VecDeque<usize>, repository: Option<String>) -> Result<SegmentRows, SegmentError> {
        let file = self.file.try_clone().map_err(SegmentError::io("reopen", &self.path))?;
        Ok(SegmentRows {
            path: self.path.clone(),
            file,
            metadata: self.metadata.clone(),
            entries: self.info.row_groups.clone(),
            offsets: (self.info.offset_start, self.info.offset_end),
            repository,
            groups,
            current: None,
            rows: VecDeque::new(),
            row_groups_read: Vec::new(),
            failed: false,
        })
    }
}

/// Rows of a segment, one row group decoded at a time, each checked against its blake3
/// first. After an error it yields nothing more.
pub struct SegmentRows {
    path: PathBuf,
    file: File,
    metadata: ArrowReaderMetadata,
    entries: Vec<RowGroupEntry>,
    offsets: (i64, i64),
    repository: Option<String>,
    groups: VecDeque<usize>,
    current: Option<(usize, ParquetRecordBatchReader)>,
    rows: VecDeque<SegmentRow>,
    row_groups_read: Vec<usize>,
    failed: bool,
}

impl SegmentRows {
    /// Indexes of the row groups read so far: pruning means another repository's never
    /// appear here.
    pub fn row_groups_read(&self) -> &[usize] {
        &self.row_groups_read
    }

    fn corrupt(&self, reason: impl Into<String>) -> SegmentError {
        SegmentError::corrupt(&self.path, reason)
    }

    fn open_row_group(&mut self, index: usize) -> Result<ParquetRecordBatchReader, SegmentError> {
        let entry = &self.entries[index];
        self.file.seek(SeekFrom::Start(entry.start)).map_err(SegmentError::io("seek", &self.path))?;
        let mut hasher = blake3::Hasher::new();
        let copied = std::io::copy(&mut (&mut self.file).take(entry.end - entry.start), &mut hasher)
            .map_err(SegmentError::io("read", &self.path))?;
        if copied != entry.end - entry.start {
            return Err(self.corrupt(format!("row group {index} is cut short ({copied} of {} bytes)", entry.end - entry.start)));
        }
        if hasher.finalize().to_hex().as_str() != entry.blake3 {
            return Err(self.corrupt(format!("row group {index} (bytes {}..{}) does not match its blake3", entry.start, entry.end)));
        }
        let file = self.file.try_clone().map_err(SegmentError::io("reopen", &self.path))?;
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
            .with_row_groups(vec![index])
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| self.corrupt(format!("row group {index}: {e}")))
    }

    fn next_row(&mut self) -> Result<Option<SegmentRow>, SegmentError> {
        loop {
            if let Some(row) = self.rows.pop_front() {
                return Ok(Some(row));
            }
            if let Some((index, reader)) = self.current.as_mut() {
                let index = *index;
                match reader.next() {
                    Some(Ok(batch)) => {
                        self.rows = batch_rows(&batch).map_err(|reason| self.corrupt(format!("row group {index}: {reason}")))?;
                        for row in &self.rows {
                            if self.repository.as_ref().is_some_and(|r| *r != row.repository) || row.repository != self.entries[index].repository {
                                return Err(self.corrupt(format!("row group {index} holds repository {:?} where the index says {:?}", row.repository, self.entries[index].repository)));
                            }
                            if row.offset < self.offsets.0 || row.offset >= self.offsets.1 {
                                return Err(self.corrupt(format!("row {} has offset {} outside the segment's range [{}, {})", row.id, row.offset, self.offsets.0, self.offsets.1)));
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => return Err(self.corrupt(format!("row group {index}: {e}"))),
                    None => self.current = None,
                }
            }
            let Some(index) = self.groups.pop_front() else {
                return Ok(None);
            };
            let reader = self.open_row_group(index)?;
            self.row_groups_read.push(index);
            self.current = Some((index, reader));
        }
    }
}

impl Iterator for SegmentRows {
    type Item = Result<SegmentRow, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_row() {
            Ok(row) => row.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn kv<'a>(path: &Path, pairs: &'a [(String, Option<String>)], name: &str) -> Result<Option<&'a str>, SegmentError> {
    let mut found = pairs.iter().filter(|(k, _)| k == name);
    let value = found.next().map(|(_, v)| v.as_deref().unwrap_or(""));
    if found.next().is_some() {
        return Err(SegmentError::corrupt(path, format!("metadata key {name} appears twice")));
    }
    Ok(value)
}

fn required<T: std::str::FromStr>(path: &Path, pairs: &[(String, Option<String>)], name: &str) -> Result<T, SegmentError> {
    let value = kv(path, pairs, name)?.ok_or_else(|| SegmentError::corrupt(path, format!("metadata key {name} is missing; not a Weir segment?")))?;
    value.parse().map_err(|_| SegmentError::corrupt(path, format!("metadata key {name} has a bad value {value:?}")))
}

fn optional<T: std::str::FromStr>(path: &Path, pairs: &[(String, Option<String>)], name: &str) -> Result<Option<T>, SegmentError> {
    match kv(path, pairs, name)? {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|_| SegmentError::corrupt(path, format!("metadata key {name} has a bad value {value:?}"))),
    }
}

fn json<T: serde::de::DeserializeOwned>(path: &Path, pairs: &[(String, Option<String>)], name: &str) -> Result<T, SegmentError> {
    let value = kv(path, pairs, name)?.ok_or_else(|| SegmentError::corrupt(path, format!("metadata key {name} is missing")))?;
    serde_json::from_str(value).map_err(|e| SegmentError::corrupt(path, format!("metadata key {name}: {e}")))
}

fn parse_info(path: &Path, metadata: &ArrowReaderMetadata) -> Result<SegmentInfo, SegmentError> {
    let parquet = metadata.metadata();
    let pairs: Vec<(String, Option<String>)> = parquet
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect())
        .unwrap_or_default();
    let format_version: u32 = required(path, &pairs, key::FORMAT_VERSION)?;
    if format_version != FORMAT_VERSION {
        let reason = format!("format version {format_version}; this build reads version {FORMAT_VERSION} only");
        return Err(SegmentError::corrupt(path, reason));
    }
    let info = SegmentInfo {
        format_version,
        segment_id: required(path, &pairs, key::SEGMENT_ID)?,
        partition: required(path, &pairs, key::PARTITION)?,
        offset_start: required(path, &pairs, key::OFFSET_START)?,
        offset_end: required(path, &pairs, key::OFFSET_END)?,
        n_events: required(path, &pairs, key::N_EVENTS)?,
        min_timestamp_ms: optional(path, &pairs, key::MIN_TIMESTAMP_MS)?,
        max_timestamp_ms: optional(path, &pairs, key::MAX_TIMESTAMP_MS)?,
        repositories: json(path, &pairs, key::REPOSITORIES)?,
        row_groups: json(path, &pairs, key::ROW_GROUPS)?,
    };
    let bad = |reason: String| Err(SegmentError::corrupt(path, reason));
    if info.offset_end < info.offset_start {
        return bad(format!("offset range [{}, {}) is reversed", info.offset_start, info.offset_end));
    }
    if info.row_groups.len() != parquet.num_row_groups() {
        return bad(format!("index lists {} row groups, the file has {}", info.row_groups.len(), parquet.num_row_groups()));
    }
    let mut total = 0u64;
    let mut previous_end = 4u64;
    for (i, (entry, rg)) in info.row_groups.iter().zip(parquet.row_groups()).enumerate() {
        if entry.rows != rg.num_rows() as u64 {
            return bad(format!("row group {i} has {} rows, the index says {}", rg.num_rows(), entry.rows));
        }
        // The hashed range must be exactly the row group's column chunks, or the hash
        // would not cover what gets decoded.
        // Computed here rather than with `byte_range`, which asserts (panics) on the
        // negative values a corrupted footer can hold.
        let mut start = u64::MAX;
        let mut end = 0u64;
        for column in rg.columns() {
            let first = column.dictionary_page_offset().unwrap_or(column.data_page_offset());
            let (Ok(first), Ok(len)) = (u64::try_from(first), u64::try_from(column.compressed_size())) else {
                return bad(format!("row group {i} has a column chunk at a negative offset or size"));
            };
            start = start.min(first);
            end = end.max(first.saturating_add(len));
        }
        if (start, end) != (entry.start, entry.end) || entry.start < previous_end || entry.end < entry.start {
            return bad(format!("row group {i} spans bytes {start}..{end}, the index says {}..{}", entry.start, entry.end));
        }
        previous_end = entry.end;
        if !info.repositories.contains(&entry.repository) {
            return bad(format!("row group {i} is of repository {:?}, which the repository list lacks", entry.repository));
        }
        // Row-group statistics (what DuckDB and Spark prune by) must agree with the index.
        if let Some(Statistics::ByteArray(stats)) = rg.column(schema::REPO_COLUMN).statistics() {
            let repo = entry.repository.as_bytes();
            if stats.min_bytes_opt() != Some(repo) || stats.max_bytes_opt() != Some(repo) {
                return bad(format!("row group {i}: #repo statistics disagree with the index ({:?})", entry.repository));
            }
        }
        total += entry.rows;
    }
    if total != info.n_events || parquet.file_metadata().num_rows() as u64 != info.n_events {
        return bad(format!("n_events is {}, the row groups hold {total}", info.n_events));
    }
    Ok(info)
}

/// The rows of a batch, or what is wrong with it.
fn batch_rows(batch: &RecordBatch) -> Result<VecDeque<SegmentRow>, String> {
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("no column {name}"));
    let timestamps = column(schema::TIMESTAMP)?.as_primitive_opt::<TimestampMillisecondType>().ok_or("bad @timestamp")?;
    let ingest = column(schema::INGEST_TIMESTAMP)?.as_primitive_opt::<TimestampMillisecondType>().ok_or("bad @ingesttimestamp")?;
    let raw = column(schema::RAWSTRING)?.as_string_opt::<i32>().ok_or("bad @rawstring")?;
    let id = column(schema::ID)?.as_string_opt::<i32>().ok_or("bad @id")?;
    let repo = column(schema::REPO)?.as_string_opt::<i32>().ok_or("bad #repo")?;
    let offset = column(schema::OFFSET)?.as_primitive_opt::<Int64Type>().ok_or("bad @offset")?;
    let tags = column(schema::TAGS)?.as_map_opt().ok_or("bad tags")?;
    let tag_keys = tags.keys().as_string_opt::<i32>().ok_or("bad tags keys")?;
    let tag_values = tags.values().as_string_opt::<i32>().ok_or("bad tags values")?;
    let fields = column(schema::FIELDS)?.as_string_opt::<i32>().ok_or("bad fields")?;
    let parser = column(schema::PARSER)?.as_string_opt::<i32>().ok_or("bad @parser")?;
    let error = column(schema::ERROR)?.as_boolean_opt().ok_or("bad @error")?;
    let error_msg = column(schema::ERROR_MSG)?.as_string_opt::<i32>().ok_or("bad @error_msg")?;
    for (name, array) in [
        (schema::TIMESTAMP, batch.column(0)),
        (schema::INGEST_TIMESTAMP, batch.column(1)),
        (schema::RAWSTRING, batch.column(2)),
        (schema::ID, batch.column(3)),
        (schema::REPO, batch.column(4)),
        (schema::OFFSET, batch.column(5)),
        (schema::TAGS, batch.column(6)),
        (schema::FIELDS, batch.column(7)),
        (schema::ERROR, batch.column(9)),
    ] {
        if array.null_count() > 0 {
            return Err(format!("{name} has nulls"));
        }
    }
    let offsets = tags.value_offsets();
    let mut rows = VecDeque::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut row_tags = std::collections::BTreeMap::new();
        for j in offsets[i] as usize..offsets[i + 1] as usize {
            row_tags.insert(tag_keys.value(j).to_owned(), tag_values.value(j).to_owned());
        }
        let row_fields = serde_json::from_str::<weir_proto::Fields>(fields.value(i)).map_err(|e| format!("fields of row {i} is not a JSON object: {e}"))?;
        let error_text = error_msg.is_valid(i).then(|| error_msg.value(i).to_owned());
        if error.value(i) != error_text.is_some() {
            return Err(format!("row {i}: @error and @error_msg disagree"));
        }
        rows.push_back(SegmentRow {
            repository: repo.value(i).to_owned(),
            timestamp_ms: timestamps.value(i),
            ingest_timestamp_ms: ingest.value(i),
            raw: raw.value(i).to_owned(),
            id: id.value(i).to_owned(),
            offset: offset.value(i),
            tags: row_tags,
            fields: row_fields,
            parser: parser.is_valid(i).then(|| parser.value(i).to_owned()),
            error: error_text,
        });
    }
    Ok(rows)
}

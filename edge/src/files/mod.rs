//! File input: each `[[files]]` section of the edge config reads the files its globs
//! match, like `tail -F`, into the same spool as the HTTP and syslog inputs.
//!
//! One thread per section (`section`) owns the section's open files and its checkpoint
//! file. It scans every `scan_interval_ms` (the source of truth) and sooner when `notify`
//! reports a change in a watched directory. Per file it reads up to one batch, appends it
//! to the spool (returns after fsync), and only then moves the file's checkpoint
//! (`checkpoint`, fingerprint → offset, tmp + fsync + rename). So a kill -9 loses nothing
//! that was read, and repeats at most one batch per file. While the spool is full the
//! append is retried with a backoff and nothing more is read: backpressure, not drops.
//!
//! Identity and rotation rules (also in the README):
//! - A file is known by the fingerprint of its first `fingerprint_bytes` bytes
//!   (`fingerprint`); a shorter plain file waits. A renamed file keeps its open
//!   descriptor and its place; a file found with the fingerprint of one being read is a
//!   copy and is left alone until that one is closed, then read from the checkpoint on.
//! - Rotation by rename: the old inode is read to its end through the descriptor kept
//!   open, then closed once it is no longer matched (or deleted) and has not grown for
//!   one scan interval; the new file is read from its start.
//! - copytruncate, or any shrink below the read position, or a new start (fingerprint
//!   changed): the file is read again from offset 0. The copy, if the globs match it,
//!   is read from the checkpoint of the original, so nothing it holds is lost.
//! - A file found again after a restart with its checkpoint's inode but shorter than
//!   the checkpoint was truncated meanwhile: read from 0. Another inode with a known
//!   fingerprint (a copy, a `.gz` of a rotated file) resumes at min(checkpoint, length).
//! - `.gz` files are decompressed and read once to their end, then marked complete.
//! - `read_from = "end"` applies to files found at the section's first scan without a
//!   checkpoint; files that appear later are always read from their start.

mod checkpoint;
mod discover;
mod fingerprint;
mod reader;
mod section;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use weir_http_ingest::IngestSink;
use weir_node::config::ConfigError;

pub use checkpoint::CheckpointError;

/// Where a section starts in a file it has no checkpoint for, at its first scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    Beginning,
    End,
}

/// One `[[files]]` section of the edge config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Unique among the sections; names the checkpoint file and the `file.input` tag.
    pub name: String,
    /// Absolute glob patterns of the files to read (`*`, `?`, `[...]`, `**`).
    pub include: Vec<String>,
    /// Files matching any of these are not read.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Repository the events are stored in.
    pub repository: String,
    /// Parser the core should use; default: the repository's.
    #[serde(default)]
    pub parser: Option<String>,
    /// Tags of every batch (with `file.input = name`); they choose the Kafka partition.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// For files found at the first scan without a checkpoint.
    #[serde(default = "default_read_from")]
    pub read_from: ReadFrom,
    /// A regex; a line matching it begins a new event, other lines join the event before.
    #[serde(default)]
    pub multiline_start: Option<String>,
    /// A multiline event whose file stays quiet this long is complete.
    #[serde(default = "default_multiline_timeout_ms")]
    pub multiline_timeout_ms: u64,
    /// Longest event; longer ones keep their first bytes and get `@truncated_bytes`.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Bytes hashed to identify a file; shorter plain files wait until they are this long.
    #[serde(default = "default_fingerprint_bytes")]
    pub fingerprint_bytes: usize,
    /// Time between two scans of the globs (the source of truth; `notify` wakes earlier).
    #[serde(default = "default_scan_interval_ms")]
    pub scan_interval_ms: u64,
    /// Whether to watch the directories for changes; without it only scans find them.
    #[serde(default = "default_watch")]
    pub watch: bool,
    /// Events per batch (one file's events; one spool append and one checkpoint write).
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Bytes of event text per batch.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Directory of the checkpoint file `<name>.json`; default `<spool.dir>/file-checkpoints`.
    #[serde(default)]
    pub checkpoint_dir: Option<PathBuf>,
}

fn default_read_from() -> ReadFrom {
    ReadFrom::Beginning
}
fn default_multiline_timeout_ms() -> u64 {
    1_000
}
fn default_max_line_bytes() -> usize {
    64 << 10
}
fn default_fingerprint_bytes() -> usize {
    1024
}
fn default_scan_interval_ms() -> u64 {
    1_000
}
fn default_watch() -> bool {
    true
}
fn default_batch_max_events() -> usize {
    1_000
}
fn default_batch_max_bytes() -> usize {
    1 << 20
}

/// Default directory of the checkpoint files, under the spool's.
pub const CHECKPOINT_DIR: &str = "file-checkpoints";

impl FilesConfig {
    /// `<checkpoint_dir>/<name>.json`.
    pub fn checkpoint_path(&self, spool_dir: &Path) -> PathBuf {
        let dir = self.checkpoint_dir.clone().unwrap_or_else(|| spool_dir.join(CHECKPOINT_DIR));
        dir.join(format!("{}.json", self.name))
    }

    fn tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.tags.clone();
        tags.entry("file.input".into()).or_insert_with(|| self.name.clone());
        tags
    }
}

/// Checks every section; the error names the section and the key. `max_event_bytes` is
/// the edge's `ingest.max_event_bytes`, `segment_bytes` the spool's.
pub fn validate(sections: &[FilesConfig], max_event_bytes: usize, segment_bytes: u64) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for (index, section) in sections.iter().enumerate() {
        let fail = |reason: String| ConfigError::Value {
            key: "files",
            reason: format!("[[files]] section {} (name = {:?}): {reason}", index + 1, section.name),
        };
        if section.name.is_empty() || !section.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(fail("`name` must be non-empty letters, digits, '-' or '_' (it names the checkpoint file)".into()));
        }
        if !names.insert(section.name.as_str()) {
            return Err(fail("another section has the same `name`; each needs its own (its checkpoints are kept under it)".into()));
        }
        if section.repository.is_empty() {
            return Err(fail("`repository` is empty".into()));
        }
        discover::Globs::new(&section.include, &section.exclude).map_err(|e| fail(e.to_string()))?;
        if let Some(rule) = &section.multiline_start {
            regex::Regex::new(rule).map_err(|e| fail(format!("`multiline_start` {rule:?} is not a valid regex: {e}")))?;
        }
        if section.max_line_bytes == 0 || section.max_line_bytes > max_event_bytes {
            return Err(fail(format!(
                "`max_line_bytes` {} must be between 1 and ingest.max_event_bytes ({max_event_bytes})",
                section.max_line_bytes
            )));
        }
        if section.batch_max_bytes < section.max_line_bytes || section.batch_max_bytes as u64 > segment_bytes / 4 {
            return Err(fail(format!(
                "`batch_max_bytes` {} must be at least max_line_bytes ({}) and at most a quarter of spool.segment_bytes ({})",
                section.batch_max_bytes,
                section.max_line_bytes,
                segment_bytes / 4
            )));
        }
        if section.batch_max_events == 0 {
            return Err(fail("`batch_max_events` must be at least 1".into()));
        }
        if !(16..=1 << 20).contains(&section.fingerprint_bytes) {
            return Err(fail(format!("`fingerprint_bytes` {} must be between 16 and 1048576", section.fingerprint_bytes)));
        }
        if section.scan_interval_ms < 10 {
            return Err(fail(format!("`scan_interval_ms` {} must be at least 10", section.scan_interval_ms)));
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("[[files]] section {name:?}: cannot create the checkpoint directory {}: {source}", dir.display())]
    CheckpointDir { name: String, dir: PathBuf, source: std::io::Error },
    #[error("[[files]] section {name:?}: {source}")]
    Checkpoint { name: String, source: CheckpointError },
    #[error("[[files]] section {name:?}: {reason}")]
    Config { name: String, reason: String },
}

/// Starts one reader per section. Each ends after `shutdown`; a batch waiting for the
/// spool then is not spooled, and its lines are read again at the next start.
pub fn start(
    sections: &[FilesConfig],
    spool_dir: &Path,
    sink: Arc<dyn IngestSink>,
    shutdown: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, FilesError> {
    let mut running = Vec::new();
    for config in sections {
        let path = config.checkpoint_path(spool_dir);
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|source| FilesError::CheckpointDir { name: config.name.clone(), dir, source })?;
        let checkpoints = checkpoint::Checkpoints::load(&path)
            .map_err(|source| FilesError::Checkpoint { name: config.name.clone(), source })?;
        let section = section::Section::new(config.clone(), checkpoints, sink.clone(), shutdown.clone())
            .map_err(|reason| FilesError::Config { name: config.name.clone(), reason })?;
        tracing::info!(input = %config.name, include = ?config.include, repository = %config.repository, "file input started");
        running.push(section.spawn());
    }
    Ok(running)
}

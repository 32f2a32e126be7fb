//! The one error type of the segment format: what went wrong, naming the file.

use std::path::PathBuf;

/// What went wrong with a segment, naming the file (or, for bad input, the segment).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A file system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The final name is taken: a segment id is written once, never replaced.
    #[error("segment file {} already exists; a segment id is written once", path.display())]
    Exists { path: PathBuf },
    /// The caller's input breaks the format's rules (id, offsets, rows).
    #[error("invalid input for segment {segment_id}: {reason}")]
    Invalid { segment_id: String, reason: String },
    /// Encoding the Parquet file failed.
    #[error("cannot encode segment file {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The file is not a segment this code can read: truncated, corrupted, another format
    /// version, or a Parquet file Weir did not write. Check it with `verify` against the
    /// blake3 registered for it and fetch another copy.
    #[error("segment file {} is unreadable: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl SegmentError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SegmentError {
        let path = path.into();
        move |source| SegmentError::Io { action, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> SegmentError {
        SegmentError::Corrupt { path: path.into(), reason: reason.into() }
    }
}

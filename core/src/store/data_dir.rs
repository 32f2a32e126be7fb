//! Every path under a core's `data_dir`, and segment id ↔ file name both ways.
//!
//! ```text
//! <data_dir>/
//!   global.snapshot                 Global's local snapshot (cluster::global_log)
//!   segments/<id>.parquet           this node's segment files (digest, reparse)
//!   segments/.<id>.parquet.tmp      a segment being written (weir_segment's writer)
//!   segments-fetched/<id>.parquet   copies fetched from other cores for queries (store::fetched)
//!   .reparse-<pid>/                 a reparse run's own Global snapshot (store::reparse)
//! ```
//!
//! Must never be bypassed: no other module joins a name onto `data_dir` or takes a segment
//! id out of a file name, so the sweep, the fetched cache, reparse and the peer server
//! cannot disagree about what a file is.

use std::path::{Path, PathBuf};

const SNAPSHOT_FILE: &str = "global.snapshot";
const SEGMENTS_DIR: &str = "segments";
const FETCHED_DIR: &str = "segments-fetched";
const REPARSE_PREFIX: &str = ".reparse-";

/// A core's data directory (`data_dir` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Global's snapshot of this node.
    pub fn snapshot_path(&self) -> PathBuf {
        self.root.join(SNAPSHOT_FILE)
    }

    /// This node's own segment files: the digest's and reparse's output, the copies other
    /// nodes count on.
    pub fn segments_dir(&self) -> PathBuf {
        self.root.join(SEGMENTS_DIR)
    }

    pub fn segment_path(&self, segment_id: &str) -> PathBuf {
        self.segments_dir().join(file_name(segment_id))
    }

    /// Files fetched from other cores for queries: a bounded cache, never a copy that counts.
    pub fn fetched_dir(&self) -> PathBuf {
        self.root.join(FETCHED_DIR)
    }

    pub fn fetched_path(&self, segment_id: &str) -> PathBuf {
        self.fetched_dir().join(file_name(segment_id))
    }

    /// A scratch directory of this process's reparse run (its own Global snapshot).
    pub fn reparse_scratch(&self) -> PathBuf {
        self.root.join(format!("{REPARSE_PREFIX}{}", std::process::id()))
    }

    /// The finished segment files of [`DataDir::segments_dir`], sorted by name.
    pub fn segment_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        match std::fs::read_dir(self.segments_dir()) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    if segment_id(&path).is_some() {
                        files.push(path);
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        files.sort();
        Ok(files)
    }
}

/// The file name of a segment.
pub fn file_name(segment_id: &str) -> String {
    weir_segment::segment_file_name(segment_id)
}

/// The segment id of a finished segment file's path (or bare name); `None` for anything
/// else (a temporary file, another file).
pub fn segment_id(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    weir_segment::is_segment_file_name(name).then(|| name.strip_suffix(".parquet")).flatten()
}

/// Whether a name in a segments directory is a segment file being written (or left by a
/// crash while it was).
pub fn is_temporary(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|name| name.starts_with('.') && name.ends_with(".tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_file_names_go_both_ways_and_nothing_else_is_a_segment() {
        let dir = DataDir::new("/data");
        let path = dir.segment_path("p3-o10-e2-abcd");
        assert_eq!(path, Path::new("/data/segments/p3-o10-e2-abcd.parquet"));
        assert_eq!(segment_id(&path), Some("p3-o10-e2-abcd"));
        assert_eq!(segment_id(&dir.fetched_path("x")), Some("x"));
        assert_eq!(segment_id(Path::new("/data/segments/.p3-o10.parquet.tmp")), None);
        assert!(is_temporary(Path::new("/data/segments/.p3-o10.parquet.tmp")));
        assert_eq!(segment_id(Path::new("/data/segments/notes.txt")), None);
        assert_eq!(dir.snapshot_path(), Path::new("/data/global.snapshot"));
        assert!(dir.reparse_scratch().file_name().unwrap().to_str().unwrap().starts_with(".reparse-"));
    }
}

//! Every path under a core's `data_dir`, and segment id ↔ file name both ways.
//!
//! ```text
//! <data_dir>/
//!   disk-id                         this data directory's id, made with it (heartbeats, copies)
//!   global.snapshot                 Global's local snapshot (cluster::global_log)
//!   segments/<id>.parquet           this node's segment files, each registered or staged in
//!                                   Global, or pending (being registered) in this process
//!   segments/.<id>.parquet.tmp      a segment being written by the digest (weir_segment's writer)
//!   segments-fetched/<id>.parquet   copies fetched from other cores for queries (store::fetched)
//!   staging/<name>/                 one writer's own directory (a reparse run: its Global
//!                                   snapshot and new files), locked while it runs (store::staging)
//! ```
//!
//! Must never be bypassed: no other module joins a name onto `data_dir` or takes a segment
//! id out of a file name, so the sweep, the fetched cache, reparse and the peer server
//! cannot disagree about what a file is.

use std::path::{Path, PathBuf};

const SNAPSHOT_FILE: &str = "global.snapshot";
const SEGMENTS_DIR: &str = "segments";
const FETCHED_DIR: &str = "segments-fetched";
const STAGING_DIR: &str = "staging";
const DISK_ID_FILE: &str = "disk-id";

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

    /// Where writers other than the digest (reparse, later merge and replication) keep
    /// their files until Global knows them: one directory per writer ([`super::staging`]).
    pub fn staging_root(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    /// The id of this data directory: read, or made (random, durable) when the directory
    /// has none. A wiped disk gets a new one, so Global stops counting the copies the old
    /// disk held.
    pub fn disk_id(&self) -> std::io::Result<String> {
        let path = self.root.join(DISK_ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        std::fs::create_dir_all(&self.root)?;
        let seed = format!("{}:{}:{:?}", self.root.display(), std::process::id(), std::time::SystemTime::now());
        let id = format!("disk-{}", &blake3::hash(seed.as_bytes()).to_hex()[..16]);
        weir_node::atomic_write::AtomicWrite::new(self.root.join(".disk-id.tmp"))
            .write(&path, &[id.as_bytes()])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(id)
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
        assert_eq!(dir.staging_root(), Path::new("/data/staging"));
    }

    #[test]
    fn a_disk_id_is_made_once_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::new(root.path().join("data"));
        let id = dir.disk_id().unwrap();
        assert!(id.starts_with("disk-") && id.len() == 21, "{id}");
        assert_eq!(dir.disk_id().unwrap(), id, "read back, not made again");
        let wiped = DataDir::new(root.path().join("other"));
        assert_ne!(wiped.disk_id().unwrap(), id, "another (or a wiped) directory has another id");
    }
}

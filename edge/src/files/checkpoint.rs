//! The checkpoint file of one `[[files]]` section: fingerprint → how far its content is
//! in the spool. JSON, replaced with tmp + fsync + rename + directory fsync
//! (`weir_node::atomic_write`), so a crash leaves the old or the new file, whole.
//!
//! Written only after the batch it accounts for was fsync'd in the spool: nothing behind
//! a checkpoint can be lost by a crash, and what a crash repeats is at most the batch
//! between the spool's fsync and this file's rename, per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_node::atomic_write::{AtomicWrite, AtomicWriteError};

use super::fingerprint::Fingerprint;

const FORMAT_VERSION: u32 = 1;

/// Where one file's content stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Content bytes (decompressed for `.gz`) whose events are in the spool.
    pub offset: u64,
    /// The inode that was read (with its device): a different inode with the same
    /// fingerprint is a copy, the same one shorter than `offset` was truncated.
    pub dev: u64,
    pub ino: u64,
    /// Where it was last seen; for people reading the file.
    pub path: PathBuf,
    /// A `.gz` read to its end: never read again.
    #[serde(default)]
    pub complete: bool,
    /// When a file with this fingerprint was last seen (ms since the epoch); entries
    /// unseen for [`FORGET_AFTER_MS`] are dropped.
    pub seen_ms: i64,
}

/// A week: a file not seen for that long is taken to be gone for good.
pub const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "cannot read the file checkpoints {}: {source}; fix its permissions, or move it away \
         to read every matched file again (by read_from)",
        path.display()
    )]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the file checkpoints {} are not valid ({reason}); move the file away to read every \
         matched file again (by read_from)",
        path.display()
    )]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// The checkpoints of one section, in memory and on disk.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Checkpoints {
    /// Loads `path`; a missing file is an empty table (first start).
    pub fn load(path: &Path) -> Result<Checkpoints, CheckpointError> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                let on_disk: OnDisk = serde_json::from_slice(&bytes)
                    .map_err(|e| CheckpointError::Invalid { path: path.to_owned(), reason: e.to_string() })?;
                if on_disk.version != FORMAT_VERSION {
                    return Err(CheckpointError::Invalid {
                        path: path.to_owned(),
                        reason: format!("format version {} is not {FORMAT_VERSION}", on_disk.version),
                    });
                }
                on_disk.files
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(CheckpointError::Read { path: path.to_owned(), source }),
        };
        Ok(Checkpoints { path: path.to_owned(), entries })
    }

    pub fn get(&self, fp: &Fingerprint) -> Option<&Entry> {
        self.entries.get(&fp.0)
    }

    pub fn set(&mut self, fp: &Fingerprint, entry: Entry) {
        self.entries.insert(fp.0.clone(), entry);
    }

    /// Notes that a file with `fp` exists.
    pub fn seen(&mut self, fp: &Fingerprint, now_ms: i64) {
        if let Some(entry) = self.entries.get_mut(&fp.0) {
            entry.seen_ms = now_ms;
        }
    }

    /// Drops entries unseen for [`FORGET_AFTER_MS`]; whether any were.
    pub fn forget_old(&mut self, now_ms: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|_, e| now_ms - e.seen_ms < FORGET_AFTER_MS);
        before != self.entries.len()
    }

    /// Replaces the file with the table, durably. Blocking (fsyncs).
    pub fn store(&self) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec_pretty(&OnDisk { version: FORMAT_VERSION, files: self.entries.clone() })
            .expect("checkpoints serialise");
        AtomicWrite::new(self.path.with_extension("json.tmp")).sync_dir(true).write(&self.path, &[&json])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, seen_ms: i64) -> Entry {
        Entry { offset, dev: 1, ino: 2, path: "/var/log/a.log".into(), complete: false, seen_ms }
    }

    #[test]
    fn stored_checkpoints_load_back_and_old_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.json");
        let mut table = Checkpoints::load(&path).unwrap();
        assert!(table.get(&Fingerprint("f1".into())).is_none());
        table.set(&Fingerprint("f1".into()), entry(10, 1_000));
        table.set(&Fingerprint("f2".into()), entry(20, FORGET_AFTER_MS + 5_000));
        table.store().unwrap();
        let mut back = Checkpoints::load(&path).unwrap();
        assert_eq!(back.get(&Fingerprint("f1".into())), Some(&entry(10, 1_000)));
        assert!(!dir.path().join("app.json.tmp").exists());
        assert!(back.forget_old(FORGET_AFTER_MS + 2_000));
        assert!(back.get(&Fingerprint("f1".into())).is_none());
        assert!(back.get(&Fingerprint("f2".into())).is_some());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.json");
        std::fs::write(&path, b"{\"version\": 1, \"files\": {\"x\": ").unwrap();
        let error = Checkpoints::load(&path).unwrap_err().to_string();
        assert!(error.contains("app.json") && error.contains("move the file away"), "{error}");
        std::fs::write(&path, b"{\"version\": 9, \"files\": {}}").unwrap();
        let error = Checkpoints::load(&path).unwrap_err().to_string();
        assert!(error.contains("format version 9"), "{error}");
    }
}

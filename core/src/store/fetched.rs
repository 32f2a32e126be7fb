//! The segment files this core fetched from other cores for queries
//! (`<data_dir>/segments-fetched`): a cache bounded by bytes (`limits.fetched_segments_bytes`).
//!
//! Owns which fetched files stay. The least recently used go first once the files hold
//! more than the bound; a file used within [`IN_USE`] is never removed (a query opens the
//! path it was given right after asking), so the bound can be passed for a while when
//! many queries touch many segments at once. Files of segments Global no longer has (a
//! re-parse replaced them) are removed first. Never touches the node's own segments: they
//! are the digest's, and copies other nodes count on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A file used this recently is kept even over the bound.
pub const IN_USE: Duration = Duration::from_secs(60);

pub struct FetchedCache {
    dir: PathBuf,
    limit_bytes: u64,
    files: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    bytes: u64,
    last_used: SystemTime,
}

impl FetchedCache {
    /// The cache over `dir` as it is on disk: files found there count, with their
    /// modification time as their last use.
    pub fn open(dir: PathBuf, limit_bytes: u64) -> FetchedCache {
        let mut files = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && name.ends_with(".parquet") {
                    let last_used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    files.insert(name, Entry { bytes: meta.len(), last_used });
                }
            }
        }
        FetchedCache { dir, limit_bytes, files: Mutex::new(files) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the files held now.
    pub fn bytes(&self) -> u64 {
        self.files.lock().expect("fetched cache lock").values().map(|e| e.bytes).sum()
    }

    /// A query is about to read `name`: it becomes the most recently used.
    pub fn touch(&self, name: &str) {
        if let Some(entry) = self.files.lock().expect("fetched cache lock").get_mut(name) {
            entry.last_used = SystemTime::now();
        }
    }

    /// `name` was fetched (`bytes` long) and is about to be read; then files are removed,
    /// least recently used first, until the cache is within its bound. `registered` says
    /// whether Global still has a segment file name.
    pub fn added(&self, name: &str, bytes: u64, registered: impl Fn(&str) -> bool) {
        let now = SystemTime::now();
        let mut files = self.files.lock().expect("fetched cache lock");
        files.insert(name.to_owned(), Entry { bytes, last_used: now });
        let mut total: u64 = files.values().map(|e| e.bytes).sum();
        if total <= self.limit_bytes {
            return;
        }
        // Segments Global dropped first, then the least recently used.
        let mut order: Vec<(bool, SystemTime, String, u64)> =
            files.iter().map(|(n, e)| (registered(n), e.last_used, n.clone(), e.bytes)).collect();
        order.sort();
        for (_, last_used, name, bytes) in order {
            if total <= self.limit_bytes {
                break;
            }
            if now.duration_since(last_used).unwrap_or_default() < IN_USE {
                continue;
            }
            match std::fs::remove_file(self.dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(file = %name, %error, "could not remove a fetched segment file");
                    continue;
                }
            }
            files.remove(&name);
            total -= bytes;
            metrics::counter!("weir_segments_fetched_evicted_total").increment(1);
        }
        metrics::gauge!("weir_segments_fetched_bytes").set(total as f64);
        if total > self.limit_bytes {
            tracing::warn!(
                bytes = total,
                limit = self.limit_bytes,
                "fetched segment files over limits.fetched_segments_bytes: every file was used in the last minute"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: usize, age: Duration) {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; bytes]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn the_least_recently_used_go_first_and_recent_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        write(dir.path(), "a.parquet", 100, 3 * hour);
        write(dir.path(), "b.parquet", 100, 2 * hour);
        write(dir.path(), "c.parquet", 100, hour);
        write(dir.path(), "notes.txt", 1000, 4 * hour);
        let cache = FetchedCache::open(dir.path().to_owned(), 250);
        assert_eq!(cache.bytes(), 300, "only segment files count");
        cache.touch("a.parquet");
        write(dir.path(), "d.parquet", 100, Duration::ZERO);
        cache.added("d.parquet", 100, |_| true);
        // 400 > 250: b and c (least recently used; a was just touched) go.
        let left: Vec<bool> = ["a", "b", "c", "d"].iter().map(|n| dir.path().join(format!("{n}.parquet")).exists()).collect();
        assert_eq!(left, [true, false, false, true]);
        assert_eq!(cache.bytes(), 200);
        assert!(dir.path().join("notes.txt").exists(), "other files are not the cache's");

        // Over the bound with every file in use: all stay.
        write(dir.path(), "e.parquet", 100, Duration::ZERO);
        cache.added("e.parquet", 100, |_| true);
        assert_eq!(cache.bytes(), 300);
        assert!(["a", "d", "e"].iter().all(|n| dir.path().join(format!("{n}.parquet")).exists()));
    }

    #[test]
    fn files_of_segments_global_dropped_go_before_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        write(dir.path(), "old.parquet", 100, 5 * hour);
        write(dir.path(), "replaced.parquet", 100, 2 * hour);
        let cache = FetchedCache::open(dir.path().to_owned(), 250);
        write(dir.path(), "new.parquet", 100, Duration::ZERO);
        cache.added("new.parquet", 100, |name| name != "replaced.parquet");
        assert!(dir.path().join("old.parquet").exists());
        assert!(!dir.path().join("replaced.parquet").exists());
    }
}

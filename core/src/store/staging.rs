//! A writer's own directory under `<data_dir>/staging/`: where a reparse (later a merge or
//! a replication fetch) writes files Global does not know yet, out of the sweep's reach.
//!
//! A file leaves its staging directory for `segments/` only once Global knows its segment
//! (staged or registered), by [`Staging::promote`]: so every file in `segments/` is known to
//! Global, or pending in the digest of this process (`sweep::Pending`), or garbage.
//!
//! Each directory holds a lock file its writer keeps locked while it runs (an advisory
//! `flock`, released by the kernel when the process dies): the sweep removes only
//! directories whose lock it can take, so a running reparse in another process never
//! loses its files, and a crashed one's are cleaned up.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::data_dir::{self, DataDir};

const LOCK_FILE: &str = "lock";

/// One writer's staging directory, locked until dropped; dropping it removes it.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    _lock: File,
}

impl Staging {
    /// Creates and locks `<data_dir>/staging/<name>` (emptied if a crashed writer left one).
    pub fn create(data_dir: &DataDir, name: &str) -> std::io::Result<Staging> {
        let dir = data_dir.staging_root().join(name);
        if dir.exists() {
            if is_held(&dir) {
                return Err(std::io::Error::other(format!("staging directory {} is in use by another process", dir.display())));
            }
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let lock = File::create(dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|e| std::io::Error::other(format!("staging directory {} is in use: {e}", dir.display())))?;
        Ok(Staging { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the finished file of `segment_id` into the node's segments directory (its
    /// modification time set to now, so a sweep that listed the directory before Global
    /// applied the segment's record finds the file too young to judge) and makes the
    /// rename durable. Call only once Global knows the segment.
    pub fn promote(&self, data_dir: &DataDir, segment_id: &str) -> std::io::Result<PathBuf> {
        let from = self.dir.join(data_dir::file_name(segment_id));
        let to = data_dir.segment_path(segment_id);
        File::options().write(true).open(&from)?.set_modified(std::time::SystemTime::now())?;
        std::fs::rename(&from, &to)?;
        File::open(data_dir.segments_dir())?.sync_all()?;
        Ok(to)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot remove a staging directory");
        }
    }
}

/// Removes the staging directories no running writer holds (left by a crash); returns how
/// many. A directory whose lock is held is in use and kept.
pub fn remove_abandoned(data_dir: &DataDir) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.staging_root()) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if is_held(&dir) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed a staging directory its writer left");
                removed += 1;
            }
            Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot remove an abandoned staging directory"),
        }
    }
    removed
}

/// Whether a writer holds `dir`'s lock. No lock file (a crash right after `mkdir`) or a
/// lock nobody holds: abandoned.
fn is_held(dir: &Path) -> bool {
    File::options().write(true).open(dir.join(LOCK_FILE)).is_ok_and(|lock| lock.try_lock().is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_staging_directory_is_kept_and_an_abandoned_one_removed() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(root.path());
        std::fs::create_dir_all(data_dir.segments_dir()).unwrap();
        let held = Staging::create(&data_dir, "reparse-1").unwrap();
        std::fs::write(held.path().join(data_dir::file_name("s1")), b"x").unwrap();
        // A crashed writer's directory: its lock file is there, but nobody holds it.
        let crashed = data_dir.staging_root().join("reparse-2");
        std::fs::create_dir_all(&crashed).unwrap();
        std::fs::write(crashed.join(LOCK_FILE), b"").unwrap();
        std::fs::write(crashed.join(data_dir::file_name("s2")), b"x").unwrap();
        assert_eq!(remove_abandoned(&data_dir), 1);
        assert!(!crashed.exists());
        assert!(held.path().join(data_dir::file_name("s1")).exists(), "the running writer's file stays");
        assert!(Staging::create(&data_dir, "reparse-1").is_err(), "a second writer cannot take a held directory");
        let promoted = held.promote(&data_dir, "s1").unwrap();
        assert_eq!(promoted, data_dir.segment_path("s1"));
        assert!(promoted.exists());
        let dir = held.path().to_owned();
        drop(held);
        assert!(!dir.exists(), "dropped: removed");
    }
}

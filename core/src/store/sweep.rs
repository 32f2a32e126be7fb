//! Removing segment files Global does not know: left by a crash between the write and the
//! registration, by a refused registration whose delete failed, or replaced by a reparse
//! (run on any core) while this node ran.
//!
//! Must never remove a file a registration or a query may still need: at start only
//! before any worker writes (temporary files included, no writer holds them then), while
//! running only finished files older than [`SWEEP_MIN_AGE`] (a file just finished is
//! registered moments later, and a replaced one may still be read by a query that listed
//! it before the swap).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::data_dir::{self, DataDir};
use crate::cluster::GlobalLog;

/// How often a running node looks for segment files Global no longer has.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// ... and how old such a file must be (callers also keep it above twice the flush interval).
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(600);

/// Removes the segment files of this node Global does not know. `min_age` none: at start,
/// also temporary files.
pub fn remove_unregistered(global: &GlobalLog, data_dir: &DataDir, min_age: Option<Duration>) {
    let registered = |id: &str| global.read(|s| s.segment(id).is_some());
    for path in orphans(&data_dir.segments_dir(), registered, min_age) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed a segment file Global does not know"),
            Err(error) => tracing::warn!(file = %path.display(), %error, "cannot remove an unregistered segment file"),
        }
    }
}

/// The files [`remove_unregistered`] removes.
fn orphans(dir: &Path, registered: impl Fn(&str) -> bool, min_age: Option<Duration>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let orphan = match data_dir::segment_id(&path) {
            Some(id) => !registered(id),
            None => min_age.is_none() && data_dir::is_temporary(&path),
        };
        let old_enough = || match min_age {
            None => true,
            Some(min_age) => entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() >= min_age),
        };
        if orphan && old_enough() {
            out.push(path);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn orphans_are_unregistered_files_and_while_running_only_old_finished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
        };
        file("kept.parquet", 3600);
        file("replaced.parquet", 3600);
        file("just-written.parquet", 1);
        file(".writing.parquet.tmp", 3600);
        let registered = |id: &str| id == "kept";
        let names = |paths: Vec<PathBuf>| {
            let mut names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(names(orphans(dir.path(), registered, None)), [".writing.parquet.tmp", "just-written.parquet", "replaced.parquet"]);
        assert_eq!(names(orphans(dir.path(), registered, Some(Duration::from_secs(600)))), ["replaced.parquet"]);
    }
}

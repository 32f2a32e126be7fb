//! Removing segment files Global does not know: left by a crash between the write and the
//! registration, by a refused registration whose delete failed, or replaced by a reparse
//! (run on any core) while this node ran; and staging directories a crashed writer left.
//!
//! Must never remove a file a registration, a swap or a query may still need:
//! - a file the digest of this process is registering is [`Pending`] (however long Global
//!   takes to answer);
//! - a file of another process (reparse) stays in its locked staging directory until Global
//!   knows its segment ([`super::staging`]), and is young when it enters `segments/`;
//! - so a finished file is removed only when Global does not know it (neither registered
//!   nor staged) and it is older than the sweep's minimum age (a replaced one may still be
//!   read by a query that listed it before the swap);
//! - temporary files only at start, before any digest worker writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::data_dir::{self, DataDir};
use super::staging;
use crate::cluster::GlobalLog;

/// How often a running node looks for segment files Global no longer has.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// ... and how old such a file must be (callers also keep it above twice the flush interval).
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(600);
/// At start, how old an unknown finished file must be: a reparse in another process may
/// have just promoted a file whose record this node has not applied yet.
pub const SWEEP_MIN_AGE_AT_START: Duration = Duration::from_secs(60);

/// Segment ids whose files this process wrote and is registering: never swept.
#[derive(Debug, Clone, Default)]
pub struct Pending(Arc<Mutex<BTreeSet<String>>>);

impl Pending {
    /// Marks `segment_id` pending until the guard is dropped.
    pub fn hold(&self, segment_id: &str) -> PendingGuard {
        self.0.lock().expect("lock").insert(segment_id.to_owned());
        PendingGuard { pending: self.clone(), segment_id: segment_id.to_owned() }
    }

    pub fn contains(&self, segment_id: &str) -> bool {
        self.0.lock().expect("lock").contains(segment_id)
    }
}

/// A segment id held pending; dropping it ends the hold.
#[derive(Debug)]
pub struct PendingGuard {
    pending: Pending,
    segment_id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending.0.lock().expect("lock").remove(&self.segment_id);
    }
}

/// When a sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At start, before any digest worker writes: temporary files go too.
    Start,
    /// While running: finished files at least this old.
    Running(Duration),
}

/// Removes the segment files of this node Global does not know (registered or staged) and
/// this process is not registering, and abandoned staging directories.
pub fn remove_unregistered(global: &GlobalLog, data_dir: &DataDir, pending: &Pending, when: When) {
    staging::remove_abandoned(data_dir);
    let known = |id: &str| pending.contains(id) || global.read(|s| s.segment(id).is_some());
    for path in orphans(&data_dir.segments_dir(), known, when) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed a segment file Global does not know"),
            Err(error) => tracing::warn!(file = %path.display(), %error, "cannot remove an unregistered segment file"),
        }
    }
}

/// The files [`remove_unregistered`] removes.
fn orphans(dir: &Path, known: impl Fn(&str) -> bool, when: When) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let min_age = match when {
        When::Start => SWEEP_MIN_AGE_AT_START,
        When::Running(min_age) => min_age,
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let old_enough = || entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() >= min_age);
        let orphan = match data_dir::segment_id(&path) {
            Some(id) => !known(id) && old_enough(),
            None => when == When::Start && data_dir::is_temporary(&path),
        };
        if orphan {
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
    fn orphans_are_unknown_old_files_and_temporary_ones_only_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
        };
        file("kept.parquet", 3600);
        file("replaced.parquet", 3600);
        file("just-written.parquet", 1);
        file("crashed-flush.parquet", 120);
        // A flush waiting on Global for an hour: finished long ago, registration pending.
        file("waiting-on-global.parquet", 3600);
        file(".writing.parquet.tmp", 3600);
        let pending = Pending::default();
        let _held = pending.hold("waiting-on-global");
        let known = |id: &str| id == "kept" || pending.contains(id);
        let names = |paths: Vec<PathBuf>| {
            let mut names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(names(orphans(dir.path(), known, When::Start)), [".writing.parquet.tmp", "crashed-flush.parquet", "replaced.parquet"]);
        assert_eq!(names(orphans(dir.path(), known, When::Running(Duration::from_secs(600)))), ["replaced.parquet"]);
        drop(_held);
        assert!(!pending.contains("waiting-on-global"), "the hold ends with its guard");
    }
}

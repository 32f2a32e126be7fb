//! Names and lifecycle of the files in the spool directory: segment and ack-log paths,
//! creating and deleting segments, fsyncing the directory, and the directory lock.
//!
//! Owns no state and no record contents. Must never delete a segment before its ack log
//! (a crash in between would resend the whole segment) and never delete anything the
//! caller has not decided is fully acknowledged.

use super::*;
use weir_node::atomic_write::{AtomicWrite, Step};

pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_EXT}"))
}

pub(super) fn ack_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{ACK_EXT}"))
}

pub(super) fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing spool directory", dir, e))
}

pub(super) fn create_segment(dir: &Path, base: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, base);
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error("creating segment", &path, e))
}

/// Removes a segment and then its ack log. In that order so a crash in
/// between leaves an orphan ack log (removed on open), never a segment
/// without its acks (which would resend it all).
pub(super) fn delete_segment_files(dir: &Path, base: u64) {
    for path in [segment_path(dir, base), ack_path(dir, base)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(
                file = %path.display(),
                error = %e,
                "could not delete fully acknowledged spool file, its space stays in use"
            ),
        }
    }
}

pub(super) fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("opening lock file", &path, e))?;
    // A flock also stays held while a child that this process forked (to
    // spawn any program) has not reached exec yet, since the child shares the
    // open file until exec closes it; a reopen right after a drop can hit that
    // window, so retry briefly before reporting another owner.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error("locking", &path, e)),
        }
    }
}

/// Makes `bytes` the content of `dir/name`, durably: written to `dir/tmp_name`,
/// fsynced, renamed over `name`, then the directory fsynced. When this returns Ok no
/// crash can bring back the old content, and a crash before leaves the old file whole
/// (plus perhaps the tmp file, which the caller's `open` removes).
pub(super) fn replace_durably(
    dir: &Path,
    tmp_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), SpoolError> {
    AtomicWrite::new(dir.join(tmp_name))
        .sync_dir(true)
        .write(&dir.join(name), &[bytes])
        .map_err(|e| {
            let op = match e.step {
                Step::Rename => "renaming into place",
                Step::SyncDir => "syncing spool directory",
                Step::Create | Step::Write | Step::Sync => "writing",
            };
            io_error(op, &e.path, e.source)
        })
}

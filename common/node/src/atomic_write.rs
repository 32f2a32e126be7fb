//! Replacing a file's content atomically: the bytes go to a temporary file in the same
//! directory, which is then renamed over the target, so a reader (or a restart after a
//! crash) sees the whole old content or the whole new one, never a mix.
//!
//! Owns only that sequence and how durable it is (fsync of the file before the rename,
//! fsync of the directory after); the callers own the names of their temporary files and
//! clean up leftovers of a crash. It must never fsync less than a caller asked for, nor
//! write the target in place.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The step of [`AtomicWrite::write`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating (or truncating) the temporary file.
    Create,
    /// Writing the temporary file.
    Write,
    /// Fsyncing the temporary file.
    Sync,
    /// Renaming the temporary file over the target.
    Rename,
    /// Fsyncing the target's directory.
    SyncDir,
}

impl Step {
    /// What the step does, for messages: "cannot {verb} {path}".
    pub fn verb(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Write => "write",
            Step::Sync => "sync",
            Step::Rename => "rename into place",
            Step::SyncDir => "sync the directory",
        }
    }
}

/// A failed write: which step, on which path (the temporary file, the target, or the
/// directory, as the step implies).
#[derive(Debug, thiserror::Error)]
#[error("cannot {} {}: {source}", step.verb(), path.display())]
pub struct AtomicWriteError {
    pub step: Step,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// How to replace a file: build with [`AtomicWrite::new`], adjust, then [`write`](Self::write).
#[derive(Debug, Clone)]
pub struct AtomicWrite {
    tmp: PathBuf,
    sync_file: bool,
    sync_dir: bool,
    private: bool,
}

impl AtomicWrite {
    /// Through the temporary file `tmp` (same directory as the target, or the rename is
    /// not atomic), created or truncated; the file is fsynced before the rename, the
    /// directory is not (see [`sync_dir`](Self::sync_dir)).
    pub fn new(tmp: impl Into<PathBuf>) -> AtomicWrite {
        AtomicWrite { tmp: tmp.into(), sync_file: true, sync_dir: false, private: false }
    }

    /// Whether the file is fsynced before the rename. Without it a crash may leave the
    /// target empty or torn; only for content that is checked when read (a cache).
    pub fn sync_file(mut self, yes: bool) -> AtomicWrite {
        self.sync_file = yes;
        self
    }

    /// Whether the directory is fsynced after the rename, so the new content survives a
    /// crash once `write` returns. Off lets a caller replace several files and sync the
    /// directory once.
    pub fn sync_dir(mut self, yes: bool) -> AtomicWrite {
        self.sync_dir = yes;
        self
    }

    /// The temporary file must not exist yet and is created with mode 0600; if anything up
    /// to the rename fails, it is removed. For unique temporary names: nobody would ever clean one up otherwise,
    /// whereas a fixed name is overwritten by the next write or removed by its owner.
    pub fn private(mut self) -> AtomicWrite {
        self.private = true;
        self
    }

    /// Makes `parts`, one after the other, the content of `path`.
    pub fn write(&self, path: &Path, parts: &[&[u8]]) -> Result<(), AtomicWriteError> {
        let result = self.write_steps(path, parts);
        if self.private && result.as_ref().is_err_and(|e| e.step != Step::SyncDir) {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn write_steps(&self, path: &Path, parts: &[&[u8]]) -> Result<(), AtomicWriteError> {
        let mut options = OpenOptions::new();
        options.write(true);
        if self.private {
            options.create_new(true).mode(0o600);
        } else {
            options.create(true).truncate(true);
        }
        let mut file = options.open(&self.tmp).map_err(failed(Step::Create, &self.tmp))?;
        for part in parts {
            file.write_all(part).map_err(failed(Step::Write, &self.tmp))?;
        }
        if self.sync_file {
            file.sync_all().map_err(failed(Step::Sync, &self.tmp))?;
        }
        drop(file);
        std::fs::rename(&self.tmp, path).map_err(failed(Step::Rename, path))?;
        if self.sync_dir {
            // An empty parent is the current directory (a bare file name).
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(dir).and_then(|d| d.sync_all()).map_err(failed(Step::SyncDir, dir))?;
        }
        Ok(())
    }
}

fn failed(step: Step, path: &Path) -> impl FnOnce(std::io::Error) -> AtomicWriteError + '_ {
    move |source| AtomicWriteError { step, path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-node-atomic-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = scratch();
        let target = dir.join("file");
        std::fs::write(&target, b"old content").unwrap();
        AtomicWrite::new(dir.join("file.tmp")).sync_dir(true).write(&target, &[b"new ", b"content"]).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new content");
        assert!(!dir.join("file.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_files_are_0600_clean_up_on_failure_and_refuse_an_existing_temporary() {
        let dir = scratch();
        let target = dir.join("entry");
        AtomicWrite::new(dir.join(".entry.tmp")).private().sync_file(false).write(&target, &[b"x"]).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);

        // The rename fails (the target is a non-empty directory): the temporary goes.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        let error = AtomicWrite::new(dir.join(".b.tmp")).private().write(&blocked, &[b"x"]).unwrap_err();
        assert_eq!(error.step, Step::Rename);
        assert!(!dir.join(".b.tmp").exists());

        // An existing temporary is not written through.
        std::fs::write(dir.join(".c.tmp"), b"theirs").unwrap();
        let error = AtomicWrite::new(dir.join(".c.tmp")).private().write(&dir.join("c"), &[b"x"]).unwrap_err();
        assert_eq!(error.step, Step::Create);
        assert!(!dir.join("c").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

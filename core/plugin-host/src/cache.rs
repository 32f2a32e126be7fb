//! The on-disk cache of compiled components. Owns the cache directory (its
//! ownership and mode checks), the node's secret cache key (`cache.key` in
//! that directory: 32 random bytes, mode 0600) and the entries: a file per
//! blake3 of (cache format, engine configuration, plugin bytes), holding
//! wasmtime's compiled artifact followed by a blake3 keyed hash, under the
//! cache key, of (format, entry name, artifact).
//!
//! An artifact is native code that `Component::deserialize` maps executable
//! without any check of its own, so a forged or swapped entry would run as the
//! core. This module must never deserialize an entry whose keyed hash does not
//! verify with this node's key (such an entry is logged, deleted and the
//! plugin recompiled), nor use a directory or key that someone other than the
//! user running the core could write (that is refused with [`Error::CacheDir`]
//! or [`Error::CacheKey`]). The key binds each entry to its name, so a valid
//! entry of another plugin, engine or node is refused too. Any other cache
//! failure (read-only disk, I/O error) is never fatal: the plugin is compiled
//! in memory.

use crate::error::Error;
use weir_node::atomic_write::AtomicWrite;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Part of every entry's name and keyed hash; v1 entries (an unkeyed blake3
/// trailer) are never read.
const FORMAT: &[u8] = b"weir-plugin-cache-v2";

/// The cache key's file name inside the cache directory.
pub(crate) const KEY_FILE: &str = "cache.key";

const KEY_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// Feeds `Hash` output into blake3.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
    }
}

/// The name of a plugin's entry on an engine.
fn entry_name(engine: &Engine, plugin_hash: &blake3::Hash) -> blake3::Hash {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    h.0.update(FORMAT);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update(plugin_hash.as_bytes());
    h.0.finalize()
}

/// The effective user id, to check who owns the cache.
#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    unsafe extern "C" {
        // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no
        // memory; `uid_t` is a `u32` on every Unix Weir builds for.
        safe fn geteuid() -> u32;
    }
    geteuid()
}

/// A cache directory that passed the checks, with this node's key.
pub(crate) struct Cache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl Cache {
    /// Creates `dir` (mode 0700) and the key if missing, and checks both.
    /// `Ok(None)`: the cache cannot be used (logged); plugins compile in memory.
    pub(crate) fn open(dir: &Path) -> Result<Option<Cache>, Error> {
        let unusable = |e: std::io::Error| {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot use the plugin cache; compiling plugins at each start");
            Ok(None)
        };
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            return unusable(e);
        }
        let meta = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => return unusable(e),
        };
        let refuse = |reason: String| {
            Err(Error::CacheDir {
                path: dir.to_path_buf(),
                reason,
            })
        };
        if !meta.is_dir() {
            return refuse("it is not a directory".into());
        }
        let uid = effective_uid();
        if meta.uid() != uid {
            return refuse(format!(
                "it is owned by uid {}, not by uid {uid} that runs this process",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return refuse(format!(
                "its mode {:o} lets group or others write to it",
                meta.mode() & 0o7777
            ));
        }
        let key_path = dir.join(KEY_FILE);
        let key = match read_key(&key_path, uid).and_then(|key| match key {
            Some(key) => Ok(key),
            None => create_key(dir, &key_path, uid),
        }) {
            Ok(key) => key,
            Err(KeyError::Io(e)) => return unusable(e),
            Err(KeyError::Unsafe(reason)) => {
                return Err(Error::CacheKey {
                    path: key_path,
                    reason,
                });
            }
        };
        Ok(Some(Cache {
            dir: dir.to_path_buf(),
            key,
        }))
    }

    /// The keyed hash that authenticates the artifact of entry `name`.
    fn mac(&self, name: &blake3::Hash, artifact: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(FORMAT);
        h.update(name.as_bytes());
        h.update(artifact);
        h.finalize()
    }

    /// Loads an entry whose keyed hash verifies; deletes one that does not.
    fn load(
        &self,
        engine: &Engine,
        name: &blake3::Hash,
        path: &Path,
        plugin: &str,
    ) -> Option<Component> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %e, "cannot read plugin cache entry; recompiling");
                return None;
            }
        };
        let verified = data
            .len()
            .checked_sub(MAC_LEN)
            .map(|at| data.split_at(at))
            .filter(|(artifact, mac)| {
                // blake3::Hash compares in constant time.
                <[u8; MAC_LEN]>::try_from(*mac)
                    .is_ok_and(|mac| blake3::Hash::from(mac) == self.mac(name, artifact))
            });
        let Some((artifact, _)) = verified else {
            tracing::warn!(plugin, path = %path.display(), "plugin cache entry failed verification (tampered, corrupt or from another node); discarding it and recompiling");
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(plugin, path = %path.display(), error = %e, "cannot delete plugin cache entry");
            }
            return None;
        };
        match deserialize(engine, artifact) {
            Ok(c) => {
                tracing::debug!(plugin, path = %path.display(), "loaded compiled plugin from cache");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %e, "unusable plugin cache entry; recompiling");
                None
            }
        }
    }

    /// Writes an entry: a private temporary file renamed into place, so a
    /// reader sees a whole entry or none (a torn one fails verification).
    fn store(&self, name: &blake3::Hash, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        // Not fsynced: after a crash a torn entry fails verification and is recompiled.
        AtomicWrite::new(temp_path(&self.dir, "entry"))
            .private()
            .sync_file(false)
            .write(path, &[artifact, self.mac(name, artifact).as_bytes()])
            .map_err(|e| e.source)
    }
}

/// Why the key could not be had.
enum KeyError {
    /// The key file exists but must not be trusted: refuse to start.
    Unsafe(String),
    /// Reading or writing failed: run without the cache.
    Io(std::io::Error),
}

impl From<std::io::Error> for KeyError {
    fn from(e: std::io::Error) -> Self {
        KeyError::Io(e)
    }
}

/// Reads and checks the key file; `Ok(None)` if there is none.
fn read_key(path: &Path, uid: u32) -> Result<Option<[u8; KEY_LEN]>, KeyError> {
    // Not followed if a symbolic link: the key must be this directory's own file.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(KeyError::Unsafe("it is a symbolic link".into()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut file = File::open(path)?;
    // Checked on the open file, so the checks and the read see the same file.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(KeyError::Unsafe("it is not a regular file".into()));
    }
    if meta.uid() != uid {
        return Err(KeyError::Unsafe(format!(
            "it is owned by uid {}, not by uid {uid} that runs this process",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeyError::Unsafe(format!(
            "its mode {:o} lets group or others use it",
            meta.mode() & 0o7777
        )));
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyError::Unsafe(format!(
            "it holds {} bytes instead of {KEY_LEN}",
            meta.len()
        )));
    }
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key)?;
    Ok(Some(key))
}

/// Creates the key: random bytes in a private temporary file, hard-linked to
/// its name, which fails if another process made it first (then its key is
/// used): a key file is never seen half-written nor replaced.
fn create_key(dir: &Path, path: &Path, uid: u32) -> Result<[u8; KEY_LEN], KeyError> {
    let mut key = [0u8; KEY_LEN];
    File::open("/dev/urandom")?.read_exact(&mut key)?;
    let tmp = temp_path(dir, "key");
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the plugin cache key");
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key(path, uid)?.ok_or_else(|| {
            KeyError::Io(std::io::Error::other(
                "the key file vanished while being created",
            ))
        }),
        Err(e) => Err(e.into()),
    }
}

/// A temporary file name in `dir` unique to this process and call.
fn temp_path(dir: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{what}.tmp.{}.{n}", std::process::id()))
}

/// Compiles `bytes`, or loads the compiled artifact from `cache`.
pub(crate) fn compile(
    engine: &Engine,
    cache: Option<&Cache>,
    plugin: &str,
    bytes: &[u8],
    plugin_hash: &blake3::Hash,
) -> Result<Component, String> {
    let Some(cache) = cache else {
        return Component::from_binary(engine, bytes).map_err(|e| format!("{e:#}"));
    };
    let name = entry_name(engine, plugin_hash);
    let path = cache.dir.join(format!("{}.cwasm", name.to_hex()));
    if let Some(component) = cache.load(engine, &name, &path, plugin) {
        return Ok(component);
    }
    let started = Instant::now();
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| format!("{e:#}"))?;
    tracing::info!(
        plugin,
        ms = started.elapsed().as_millis() as u64,
        bytes = bytes.len(),
        "compiled plugin"
    );
    if let Err(e) = cache.store(&name, &path, &compiled) {
        tracing::warn!(plugin, path = %path.display(), error = %e, "cannot write the plugin cache; compiling at each start");
    }
    deserialize(engine, &compiled).map_err(|e| format!("{e:#}"))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` is either what `Engine::precompile_component` just
    // produced in this process, or a cache entry whose keyed hash verified
    // with this node's secret key, bound to the entry's name: only this node
    // can have written it, from such output, for this plugin and engine. It is
    // a copy in memory, so the file changing after the check does not matter.
    // wasmtime itself checks the artifact's engine and version compatibility.
    unsafe { Component::deserialize(engine, artifact) }
}

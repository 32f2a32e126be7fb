//! A local snapshot: the state and the offset it reflects, so a node starts from there
//! instead of replaying the topic from offset 0. The file is only an optimisation: any
//! doubt about it (damaged, truncated, of another format) is an error, and the node then
//! rebuilds from offset 0, which is always possible while the topic keeps its history.
//!
//! Layout: `WEIRGLB2` (2: state of Global record version 2; an older snapshot is rebuilt from the topic) | blake3 of the body (32 bytes) | body length (u64 BE) | body (JSON).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_node::atomic_write::{AtomicWrite, AtomicWriteError};

use crate::state::State;

const MAGIC: &[u8; 8] = b"WEIRGLB2";
const HEADER: usize = MAGIC.len() + 32 + 8;

/// The state as of `applied_offset` (`None`: nothing applied yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub applied_offset: Option<u64>,
    pub state: State,
}

/// Why a snapshot cannot be written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the Global snapshot {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    #[error("{path} is not a Global snapshot of this format")]
    NotASnapshot { path: PathBuf },
    #[error("Global snapshot {path} is truncated: {actual} bytes, its header says {expected}")]
    Truncated { path: PathBuf, expected: u64, actual: u64 },
    #[error("Global snapshot {path} is damaged: its checksum does not match")]
    Checksum { path: PathBuf },
    #[error("Global snapshot {path} does not decode: {detail}")]
    Decode { path: PathBuf, detail: String },
}

impl Snapshot {
    pub fn of(state: &State) -> Snapshot {
        Snapshot { applied_offset: state.applied_offset(), state: state.clone() }
    }

    /// The snapshot's bytes (deterministic: the same state gives the same bytes).
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a Snapshot always serialises");
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Replaces `path` durably (temporary file beside it, fsync, rename, directory fsync):
    /// after a crash the old snapshot or the new one is there, whole.
    pub fn write(&self, path: &Path) -> Result<(), SnapshotError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        AtomicWrite::new(PathBuf::from(tmp)).sync_dir(true).write(path, &[&self.encode()])?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|source| SnapshotError::Read { path: path.to_owned(), source })?;
        Snapshot::decode(&bytes, path)
    }

    /// Checks and reads the bytes of a snapshot from `path` (a file, or where they were
    /// downloaded from, for the error message).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Snapshot, SnapshotError> {
        let path = || path.to_owned();
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            // Too short to hold a header at all: name it truncated if what is there is our magic.
            if bytes.len() < HEADER && MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) && !bytes.is_empty() {
                return Err(SnapshotError::Truncated { path: path(), expected: HEADER as u64, actual: bytes.len() as u64 });
            }
            return Err(SnapshotError::NotASnapshot { path: path() });
        }
        let hash: [u8; 32] = bytes[8..40].try_into().expect("32 bytes");
        let len = u64::from_be_bytes(bytes[40..48].try_into().expect("8 bytes"));
        let body = &bytes[HEADER..];
        if body.len() as u64 != len {
            return Err(SnapshotError::Truncated { path: path(), expected: HEADER as u64 + len, actual: bytes.len() as u64 });
        }
        if blake3::hash(body) != blake3::Hash::from_bytes(hash) {
            return Err(SnapshotError::Checksum { path: path() });
        }
        let snapshot: Snapshot = serde_json::from_slice(body).map_err(|e| SnapshotError::Decode { path: path(), detail: e.to_string() })?;
        if snapshot.applied_offset != snapshot.state.applied_offset() {
            let detail = format!("header offset {:?}, state offset {:?}", snapshot.applied_offset, snapshot.state.applied_offset());
            return Err(SnapshotError::Decode { path: path(), detail });
        }
        Ok(snapshot)
    }
}

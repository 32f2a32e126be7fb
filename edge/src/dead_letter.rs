//! Batches no core will accept as they are: set aside on disk instead of retried forever.
//!
//! A core answers `BadRequest`, `TooLarge` or `UnsupportedVersion` when a batch can never
//! be published as it is (a core's limits lower than the edge's, a version mismatch).
//! Such a batch was acknowledged to a client, so it is not the edge's to drop; left in
//! the spool it would hold its segment's space forever and be re-sent on every session.
//! The forwarder therefore writes it here, durably, and only then removes it from the
//! spool. An operator reads the `.json` file, fixes the cause (e.g. raises the core's
//! `quic.max_batch_bytes`), and runs `weir-edge dead-letter requeue`, which appends the
//! batches to the spool again.
//!
//! Each batch is two files, named after its batch id:
//! * `<edge>-<seq>.spooled`: the spool record exactly as it was (`u64 BE n_events | zstd
//!   JSON payload`), what `requeue` appends;
//! * `<edge>-<seq>.json`: what an operator reads: batch id, refusing core, error code and
//!   message, time, event count, and the events themselves when the payload decodes.
//!
//! Both are written to a temporary name, fsync'd and renamed, then the directory is
//! fsync'd: a crash leaves a batch either whole in the spool, or whole here (or, between
//! the rename and the spool's ack, in both, which sends it once more: at least once).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_proto::wire::{self, BatchId, ErrorCode};

use crate::spool::decode_spooled;

const SPOOLED_EXT: &str = "spooled";
const JSON_EXT: &str = "json";
/// Largest decompressed payload shown in the `.json` file; the `.spooled` file always has
/// the whole batch.
const MAX_SHOWN_PAYLOAD_BYTES: usize = 64 << 20;
/// Refusals remembered for clients still waiting on a core's ack (`x-weir-ack: core`).
const REMEMBERED_REFUSALS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot {action} {}: {source}; check that the directory exists and is writable, and the disk has space", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("dead letter {} is not a spooled batch ({reason}); move it away and look at its .json twin", path.display())]
    Malformed { path: PathBuf, reason: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DeadLetterError + 'a {
    move |source| DeadLetterError::Io { action, path: path.to_owned(), source }
}

/// What the `.json` file says about a refused batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub batch_id: String,
    pub core: String,
    pub code: ErrorCode,
    pub message: String,
    pub refused_at_ms: i64,
    pub n_events: u64,
}

/// One dead letter found on disk.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub refusal: Refusal,
    pub spooled: PathBuf,
    pub json: PathBuf,
}

/// The dead-letter directory, and the refusals a waiting client should hear about.
#[derive(Clone)]
pub struct DeadLetters {
    dir: PathBuf,
    recent: Arc<Mutex<HashMap<u64, Refusal>>>,
}

impl DeadLetters {
    pub fn new(dir: impl Into<PathBuf>) -> DeadLetters {
        DeadLetters { dir: dir.into(), recent: Arc::default() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a refused batch durably; returns the path of its `.json` file. Blocking.
    pub fn store(&self, batch_id: &BatchId, spooled: &Bytes, refusal: Refusal) -> Result<PathBuf, DeadLetterError> {
        fs::create_dir_all(&self.dir).map_err(io("create the dead-letter directory", &self.dir))?;
        let stem = format!("{}-{}", batch_id.edge_id, batch_id.seq);
        let mut shown = serde_json::to_value(&refusal).expect("refusal serialises");
        if let Some((_, payload)) = decode_spooled(spooled) {
            match wire::decode_payload(&payload, MAX_SHOWN_PAYLOAD_BYTES) {
                Ok(batches) => shown["batches"] = serde_json::to_value(batches).expect("batches serialise"),
                Err(e) => shown["payload_error"] = e.to_string().into(),
            }
        }
        let json = serde_json::to_vec_pretty(&shown).expect("json serialises");
        write_durably(&self.dir.join(format!("{stem}.{SPOOLED_EXT}")), spooled)?;
        let json_path = self.dir.join(format!("{stem}.{JSON_EXT}"));
        write_durably(&json_path, &json)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("sync the directory", &self.dir))?;
        let mut recent = self.recent.lock().expect("lock");
        if recent.len() >= REMEMBERED_REFUSALS {
            // Only clients waiting right now care; an old entry's client has long timed out.
            recent.clear();
        }
        recent.insert(batch_id.seq, refusal);
        Ok(json_path)
    }

    /// The refusal of spool batch `seq`, if it was dead-lettered since this process started.
    pub fn refusal(&self, seq: u64) -> Option<Refusal> {
        self.recent.lock().expect("lock").get(&seq).cloned()
    }

    /// Every dead letter in the directory, oldest batch first.
    pub fn list(&self) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DeadLetterError::Io { action: "list", path: self.dir.clone(), source: e }),
        };
        let mut letters = Vec::new();
        for entry in entries {
            let spooled = entry.map_err(io("list", &self.dir))?.path();
            if spooled.extension().and_then(|e| e.to_str()) != Some(SPOOLED_EXT) {
                continue;
            }
            let json = spooled.with_extension(JSON_EXT);
            let text = fs::read(&json).map_err(io("read", &json))?;
            let refusal: Refusal = serde_json::from_slice(&text)
                .map_err(|e| DeadLetterError::Malformed { path: json.clone(), reason: e.to_string() })?;
            letters.push(DeadLetter { refusal, spooled, json });
        }
        letters.sort_by(|a, b| a.refusal.refused_at_ms.cmp(&b.refusal.refused_at_ms).then(a.spooled.cmp(&b.spooled)));
        Ok(letters)
    }

    /// Reads a dead letter's spool record back, checked for its header.
    pub fn spooled(letter: &DeadLetter) -> Result<Bytes, DeadLetterError> {
        let bytes = Bytes::from(fs::read(&letter.spooled).map_err(io("read", &letter.spooled))?);
        if decode_spooled(&bytes).is_none() {
            return Err(DeadLetterError::Malformed { path: letter.spooled.clone(), reason: "shorter than its header".into() });
        }
        Ok(bytes)
    }

    /// Removes a dead letter's files once it is back in the spool.
    pub fn remove(letter: &DeadLetter) -> Result<(), DeadLetterError> {
        fs::remove_file(&letter.spooled).map_err(io("remove", &letter.spooled))?;
        fs::remove_file(&letter.json).map_err(io("remove", &letter.json))
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), DeadLetterError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::encode_spooled;
    use weir_proto::{Event, EventBatch};

    fn refusal(seq: u64) -> Refusal {
        Refusal {
            batch_id: format!("edge-1:{seq}"),
            core: "127.0.0.1:4433".into(),
            code: ErrorCode::TooLarge,
            message: "too big".into(),
            refused_at_ms: seq as i64,
            n_events: 1,
        }
    }

    #[test]
    fn stored_letters_list_read_back_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path().join("dead-letter"));
        assert!(letters.list().unwrap().is_empty(), "a missing directory has no letters");
        let batch = EventBatch {
            repository: "repo".into(),
            tags: Default::default(),
            parser: None,
            ingest_ts_ms: 0,
            events: vec![Event::raw("the refused line")],
        };
        let spooled = encode_spooled(1, &wire::encode_payload(&[batch]).unwrap());
        for seq in [7, 3] {
            let id = BatchId { edge_id: "edge-1".into(), seq };
            let json = letters.store(&id, &spooled, refusal(seq)).unwrap();
            let text = fs::read_to_string(&json).unwrap();
            assert!(text.contains("the refused line") && text.contains("too_large"), "{text}");
        }
        assert_eq!(letters.refusal(7).unwrap().message, "too big");
        assert!(letters.refusal(8).is_none());

        let listed = letters.list().unwrap();
        let ids: Vec<&str> = listed.iter().map(|l| l.refusal.batch_id.as_str()).collect();
        assert_eq!(ids, ["edge-1:3", "edge-1:7"], "oldest refusal first");
        assert_eq!(DeadLetters::spooled(&listed[0]).unwrap(), spooled);
        for letter in &listed {
            DeadLetters::remove(letter).unwrap();
        }
        assert!(letters.list().unwrap().is_empty());
    }

    #[test]
    fn an_undecodable_payload_is_still_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let letters = DeadLetters::new(dir.path());
        let spooled = encode_spooled(1, b"not zstd");
        let json = letters.store(&BatchId { edge_id: "e".into(), seq: 1 }, &spooled, refusal(1)).unwrap();
        assert!(fs::read_to_string(json).unwrap().contains("payload_error"));
        assert_eq!(DeadLetters::spooled(&letters.list().unwrap()[0]).unwrap(), spooled);
    }

    #[test]
    fn a_damaged_letter_gets_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("e-1.spooled"), b"x").unwrap();
        fs::write(dir.path().join("e-1.json"), b"{").unwrap();
        let error = DeadLetters::new(dir.path()).list().unwrap_err().to_string();
        assert!(error.contains("e-1.json"), "{error}");
    }
}

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
//! A spool record that is corrupt on disk (see `crate::spool`) lands here too, reason
//! `corrupt`, as two files named `corrupt-<incarnation>-<segment>-<offset>`:
//! * `.corrupt`: the record's bytes exactly as found on disk, its 20-byte header
//!   included; not requeued by `requeue` (they failed their checksum), an operator
//!   decides what can be saved;
//! * `.json`: where it was found, why it failed, its seq when known, and the events when
//!   the payload part still decodes.
//!
//! Both are written to a temporary name, fsync'd and renamed, then the directory is
//! fsync'd: a crash leaves a batch either whole in the spool, or whole here (or, between
//! the rename and the spool's ack, in both, which sends it once more: at least once).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_node::atomic_write::AtomicWrite;
use weir_proto::wire::{self, BatchId, ErrorCode};

use crate::spool::{CorruptRecord, RECORD_HEADER_BYTES, Spool, SpoolError, decode_spooled};

const SPOOLED_EXT: &str = "spooled";
const JSON_EXT: &str = "json";
const CORRUPT_EXT: &str = "corrupt";
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
    #[error("cannot drop a dead-lettered corrupt record from the spool: {0}")]
    Spool(#[from] SpoolError),
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

/// What the `.json` file says about a corrupt spool record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorruptLetter {
    /// Always `corrupt`.
    pub reason: String,
    /// What failed, e.g. "checksum mismatch".
    pub detail: String,
    pub incarnation: String,
    pub segment: u64,
    pub offset: u64,
    pub seq: Option<u64>,
    /// Length of the `.corrupt` file.
    pub bytes: u64,
    pub found_at_ms: i64,
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
        let mut letters: Vec<DeadLetter> = self
            .read_letters(SPOOLED_EXT)?
            .into_iter()
            .map(|(refusal, spooled, json)| DeadLetter { refusal, spooled, json })
            .collect();
        letters.sort_by(|a, b| a.refusal.refused_at_ms.cmp(&b.refusal.refused_at_ms).then(a.spooled.cmp(&b.spooled)));
        Ok(letters)
    }

    /// Name stem of the dead letter of a corrupt record. The incarnation keeps records
    /// of a wiped spool (whose segments restart at 0) from overwriting older letters.
    fn corrupt_stem(incarnation: &str, record: &CorruptRecord) -> String {
        format!("corrupt-{incarnation}-{:020}-{}", record.segment, record.offset)
    }

    /// Whether the corrupt record at `segment`/`offset` of the spool `incarnation` is here.
    pub fn has_corrupt(&self, incarnation: &str, segment: u64, offset: u64) -> bool {
        let record = CorruptRecord { segment, offset, seq: None, reason: String::new(), bytes: Bytes::new() };
        self.dir.join(format!("{}.{JSON_EXT}", Self::corrupt_stem(incarnation, &record))).exists()
    }

    /// Writes a corrupt spool record durably, keeping all its bytes; returns the path of
    /// its `.json` file. Idempotent: the same record found again overwrites its letter.
    /// Blocking.
    pub fn store_corrupt(&self, incarnation: &str, record: &CorruptRecord) -> Result<PathBuf, DeadLetterError> {
        fs::create_dir_all(&self.dir).map_err(io("create the dead-letter directory", &self.dir))?;
        let stem = Self::corrupt_stem(incarnation, record);
        let letter = CorruptLetter {
            reason: "corrupt".into(),
            detail: record.reason.clone(),
            incarnation: incarnation.to_owned(),
            segment: record.segment,
            offset: record.offset,
            seq: record.seq,
            bytes: record.bytes.len() as u64,
            found_at_ms: weir_proto::event::now_ms(),
        };
        let mut shown = serde_json::to_value(&letter).expect("letter serialises");
        // Often only a few bytes are damaged: show what still decodes, assuming the
        // header kept its length.
        let spooled = record.bytes.slice((RECORD_HEADER_BYTES as usize).min(record.bytes.len())..);
        if let Some((n_events, payload)) = decode_spooled(&spooled) {
            shown["n_events_claimed"] = n_events.into();
            match wire::decode_payload(&payload, MAX_SHOWN_PAYLOAD_BYTES) {
                Ok(batches) => shown["batches"] = serde_json::to_value(batches).expect("batches serialise"),
                Err(e) => shown["payload_error"] = e.to_string().into(),
            }
        }
        let json = serde_json::to_vec_pretty(&shown).expect("json serialises");
        write_durably(&self.dir.join(format!("{stem}.{CORRUPT_EXT}")), &record.bytes)?;
        let json_path = self.dir.join(format!("{stem}.{JSON_EXT}"));
        write_durably(&json_path, &json)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("sync the directory", &self.dir))?;
        Ok(json_path)
    }

    /// Every corrupt-record letter in the directory: its `.json` (parsed) and `.corrupt`.
    pub fn list_corrupt(&self) -> Result<Vec<(CorruptLetter, PathBuf)>, DeadLetterError> {
        let mut letters: Vec<_> =
            self.read_letters::<CorruptLetter>(CORRUPT_EXT)?.into_iter().map(|(letter, bytes, _)| (letter, bytes)).collect();
        letters.sort_by(|a, b| (a.0.found_at_ms, &a.1).cmp(&(b.0.found_at_ms, &b.1)));
        Ok(letters)
    }

    /// Every file with extension `ext` in the directory, with its `.json` twin parsed:
    /// `(json content, file, json path)`. A missing directory holds none.
    fn read_letters<T: serde::de::DeserializeOwned>(&self, ext: &str) -> Result<Vec<(T, PathBuf, PathBuf)>, DeadLetterError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DeadLetterError::Io { action: "list", path: self.dir.clone(), source: e }),
        };
        let mut letters = Vec::new();
        for entry in entries {
            let path = entry.map_err(io("list", &self.dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(ext) {
                continue;
            }
            let json = path.with_extension(JSON_EXT);
            let text = fs::read(&json).map_err(io("read", &json))?;
            let parsed = serde_json::from_slice(&text)
                .map_err(|e| DeadLetterError::Malformed { path: json.clone(), reason: e.to_string() })?;
            letters.push((parsed, path, json));
        }
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

/// Moves every corrupt record the spool found into the dead-letter directory and then
/// drops it from the spool; returns how many. Blocking. A record that cannot be written
/// here stays set aside in the spool (never forwarded) and the error is returned, so the
/// caller retries later.
pub fn quarantine_corrupt(spool: &Spool, letters: &DeadLetters) -> Result<usize, DeadLetterError> {
    let mut moved = 0;
    for record in spool.corrupt_records() {
        let json = letters.store_corrupt(spool.incarnation(), &record)?;
        spool.resolve_corrupt(&record)?;
        metrics::counter!("weir_dead_letters_total").increment(1);
        tracing::info!(
            segment = record.segment,
            offset = record.offset,
            seq = record.seq,
            file = %json.display(),
            "corrupt spool record moved to the dead-letter directory"
        );
        moved += 1;
    }
    Ok(moved)
}

/// Written and fsynced through `NAME.tmp`; the directory is not synced here: the callers
/// sync it once, after both files of a letter.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), DeadLetterError> {
    AtomicWrite::new(path.with_extension("tmp"))
        .write(path, &[bytes])
        .map_err(|e| DeadLetterError::Io { action: e.step.verb(), path: e.path, source: e.source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{SpoolConfig, encode_spooled};
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
        let spooled = spooled_batch("the refused line");
        for seq in [7, 3] {
            let id = BatchId { edge_id: "edge-1".into(), incarnation: "i".into(), seq };
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
        let json = letters.store(&BatchId { edge_id: "e".into(), incarnation: "i".into(), seq: 1 }, &spooled, refusal(1)).unwrap();
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

    fn spooled_batch(line: &str) -> Bytes {
        let batch = EventBatch {
            repository: "repo".into(),
            tags: Default::default(),
            parser: None,
            ingest_ts_ms: 0,
            attributes: Default::default(),
            events: vec![Event::raw(line)],
        };
        encode_spooled(1, &wire::encode_payload(&[batch]).unwrap())
    }

    fn flip(path: &Path, offset: usize) {
        let mut data = fs::read(path).unwrap();
        data[offset] ^= 0x40;
        fs::write(path, data).unwrap();
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let segs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        assert_eq!(segs.len(), 1, "{segs:?}");
        segs.into_iter().next().unwrap()
    }

    /// Point 7: a record damaged on disk in the middle of a segment neither stops the
    /// records behind it nor disappears: it lands in the dead-letter directory with its
    /// bytes, and is acked in the spool.
    #[tokio::test]
    async fn a_corrupt_record_mid_segment_is_dead_lettered_and_the_rest_still_delivered() {
        let tmp = tempfile::tempdir().unwrap();
        let config = SpoolConfig::new(tmp.path().join("spool"));
        let spool = Spool::open(config.clone()).unwrap();
        let mut offsets = Vec::new();
        let mut offset = 0;
        for i in 0..10 {
            let batch = spooled_batch(&format!("line {i}"));
            offsets.push(offset);
            offset += RECORD_HEADER_BYTES as usize + batch.len();
            assert_eq!(spool.append(batch).await.unwrap(), i);
        }
        let incarnation = spool.incarnation().to_owned();
        drop(spool);
        let segment = only_segment(&config.dir);
        // One byte in the zstd payload of seq 4, past the n_events prefix.
        flip(&segment, offsets[4] + RECORD_HEADER_BYTES as usize + 12);
        let damaged = fs::read(&segment).unwrap()[offsets[4]..offsets[5]].to_vec();

        let spool = Spool::open(config.clone()).unwrap();
        let pending = spool.pending_after(None, 100).unwrap();
        assert_eq!(pending.iter().map(|b| b.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(pending[4].payload, spooled_batch("line 5"));

        let letters = DeadLetters::new(config.dir.join(crate::spool::DEAD_LETTER_DIR));
        assert_eq!(quarantine_corrupt(&spool, &letters).unwrap(), 1);
        assert!(spool.corrupt_records().is_empty());
        assert_eq!(quarantine_corrupt(&spool, &letters).unwrap(), 0, "nothing twice");
        let listed = letters.list_corrupt().unwrap();
        assert_eq!(listed.len(), 1);
        let (letter, bytes) = &listed[0];
        assert_eq!((letter.reason.as_str(), letter.seq, letter.offset), ("corrupt", Some(4), offsets[4] as u64));
        assert_eq!(letter.incarnation, incarnation);
        assert_eq!(fs::read(bytes).unwrap(), damaged, "every byte of the record is kept");
        assert!(letters.has_corrupt(&incarnation, letter.segment, letter.offset));
        assert!(letters.list().unwrap().is_empty(), "not mixed up with refused batches");
        let json = fs::read_to_string(bytes.with_extension("json")).unwrap();
        assert!(json.contains("\"detail\": \"checksum mismatch\""), "{json}");
        drop(spool);

        // Acked: the next open neither finds it again nor loses the others.
        let spool = Spool::open(config).unwrap();
        assert!(spool.corrupt_records().is_empty());
        assert_eq!(spool.pending_after(None, 100).unwrap().len(), 9);
    }

    fn edge_config(dir: &Path) -> crate::config::EdgeConfig {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.example.toml");
        let mut config = crate::config::EdgeConfig::load(&example).unwrap();
        config.spool = SpoolConfig::new(dir.join("spool"));
        config.forward.dead_letter_dir = None;
        config
    }

    #[tokio::test]
    async fn fsck_finds_damage_refuses_while_open_and_repair_dead_letters_it() {
        let tmp = tempfile::tempdir().unwrap();
        let config = edge_config(tmp.path());
        let spool = Spool::open(config.spool.clone()).unwrap();
        let mut offsets = Vec::new();
        let mut offset = 0;
        for i in 0..6 {
            let batch = spooled_batch(&format!("line {i}"));
            offsets.push(offset);
            offset += RECORD_HEADER_BYTES as usize + batch.len();
            spool.append(batch).await.unwrap();
        }
        drop(spool);
        let clean = crate::fsck_spool(&config, false).unwrap();
        assert!(clean.is_clean() && clean.before.corrupt.is_empty());

        let segment = only_segment(&config.spool.dir);
        // Seq 1's payload and seq 3's magic: one with a trusted seq, one without.
        flip(&segment, offsets[1] + 30);
        flip(&segment, offsets[3]);
        let report = crate::fsck_spool(&config, false).unwrap();
        assert!(!report.is_clean());
        let seqs: Vec<_> = report.before.corrupt.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [Some(1), None]);
        assert!(report.after.is_none(), "no repair without --repair");
        assert!(!crate::fsck_spool(&config, false).unwrap().is_clean(), "checking changed nothing");

        let running = Spool::open(config.spool.clone()).unwrap();
        let refused = crate::fsck_spool(&config, true).unwrap_err();
        assert!(matches!(refused, crate::EdgeError::Spool(SpoolError::Locked { .. })), "{refused}");
        drop(running);

        let repaired = crate::fsck_spool(&config, true).unwrap();
        assert_eq!(repaired.repaired, 2);
        assert!(repaired.is_clean(), "{:?}", repaired.after);
        // Both stay on disk until their segment goes: one acked, the one without a seq
        // known by its dead letter.
        let after = repaired.after.unwrap();
        let state: Vec<_> = after.corrupt.iter().map(|c| (c.seq, c.acked, c.dead_lettered)).collect();
        assert_eq!(state, [(Some(1), true, true), (None, false, true)]);
        assert!(crate::fsck_spool(&config, false).unwrap().is_clean());
        assert_eq!(DeadLetters::new(config.dead_letter_dir()).list_corrupt().unwrap().len(), 2);
    }
}


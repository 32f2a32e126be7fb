//! Durable disk spool between HTTP ingest and the QUIC forwarder.
//!
//! The spool owns one directory. HTTP handlers [`Spool::append`] already-encoded
//! batches; the call returns only once the batch is on stable storage, so the
//! client may be acknowledged. The forwarder reads unacknowledged batches with
//! [`Spool::pending_after`], sends them to a core node and calls [`Spool::ack`]
//! once the core confirmed them. A batch leaves the disk only after every batch
//! sharing its segment file has been acknowledged.
//!
//! This file is the facade: config, errors and the public types. The work is in
//! `handle` (the `Spool` handle), `writer` (group commit), `state`, `recovery`,
//! `record` (byte layout), `reservation` (the seq-reservation file),
//! `incarnation` (the spool's id), `scan` (torn versus corrupt),
//! `inspect` (the operator's read-only report), `files` (names, directory lock) and `spooled`
//! (the `n_events | payload` batch framing).
//!
//! # On-disk format
//!
//! All integers are little-endian.
//!
//! * `<base>.seg`: append-only segment file, `<base>` being 20 decimal digits,
//!   the first sequence number that may be stored in it. Files roll when the
//!   next record would push them past `segment_bytes`. Each record is
//!
//!   ```text
//!   offset  size  field
//!        0     4  magic   0x3150_5357 (bytes "WSP1"; format version 1)
//!        4     4  len     payload length in bytes
//!        8     8  seq     sequence number, strictly increasing through the spool
//!       16     4  crc     crc32c over bytes 0..16 of the header, then the payload
//!       20   len  payload opaque batch bytes
//!   ```
//!
//! * `<base>.ack`: acknowledgements for records of segment `<base>`, a sequence
//!   of 12-byte entries `seq: u64, crc32c(seq bytes): u32`. Appended without
//!   fsync: losing an ack only means the batch is sent again, which the
//!   pipeline tolerates (delivery is at least once).
//! * `incarnation`: the spool's random 128-bit id, 24 bytes `magic "WSI1" | id |
//!   crc32c(bytes 0..20)`, shown as 32 hex digits. Created once, when a spool directory
//!   has none, the same durable way as `seq-reservation` (via `incarnation.tmp`); never
//!   changed afterwards. A wiped or replaced spool gets a new one, so the batch id
//!   `(edge_id, incarnation, seq)` is never repeated although seqs restart at 0.
//! * `lock`: held with an exclusive `flock` while a process has the spool open.
//! * `seq-reservation`: the sequence high-water mark, 16 bytes
//!
//!   ```text
//!   offset  size  field
//!        0     4  magic   0x3152_5357 (bytes "WSR1"; format version 1)
//!        4     8  limit   no sequence number at or above it was ever handed out
//!       12     4  crc     crc32c over bytes 0..12
//!   ```
//!
//!   Replaced, never modified: the new content goes to `seq-reservation.tmp`,
//!   which is fsynced and renamed over it, then the directory is fsynced. A
//!   crash therefore leaves either the old or the new file, whole; a leftover
//!   `.tmp` is from an interrupted replacement and removed on open. Missing in
//!   spools written by versions before it; those open as before and get one
//!   with their first append.
//!
//! # Guarantees
//!
//! * `append` returns `Ok(seq)` only after the record was written and
//!   `fdatasync`ed, and after the directory was fsynced if the record started
//!   a new segment file. Concurrent appends share one fsync (group commit in a
//!   dedicated writer thread), so no tokio worker ever blocks on fsync.
//! * A batch is visible to `pending_after` only once it is durable, so the
//!   forwarder never sends something a crash could take back.
//! * Sequence numbers are strictly increasing and never handed out twice,
//!   across restarts, whatever happened to the segment files. This matters
//!   beyond the edge: cores drop a batch whose id (`edge_id:seq`) they have
//!   already seen, so a reused number silently loses the second batch. The
//!   segments alone cannot guarantee it: a corrupt record's seq is often
//!   unreadable, and segments may be deleted or damaged, so the highest intact
//!   seq can lie below numbers already used.
//!   Hence the writer reserves numbers in blocks of `seq_block` in the
//!   `seq-reservation` file, durably before any record carrying one is
//!   written, and `open` continues at or above the stored limit. That costs
//!   two fsyncs per block instead of per batch. A damaged reservation file
//!   makes `open` fail with [`SpoolError::CorruptSeqReservation`] rather than
//!   guess. The numbers have gaps: a failed write burns its numbers, and a
//!   restart skips what is left of the current block.
//! * Disk use (segment files plus appends in flight) stays within `max_bytes`;
//!   an append that does not fit fails at once with [`SpoolError::Full`].
//! * [`Spool::open`] recovers from a crash at any point: a torn tail of the
//!   last segment (a write the crash interrupted, never acknowledged) is logged
//!   and truncated, intact unacknowledged records become pending again in
//!   sequence order.
//! * A corrupt record (damaged after it was durable: bit rot, a bad disk) never
//!   stops the records behind it. Recovery resynchronises at the next intact
//!   record, and `pending_after` skips a record that fails its checksum when read.
//!   Either way the record is logged once (ERROR), counted in
//!   `weir_spool_corrupt_records_total` and set aside: never forwarded, listed by
//!   [`Spool::corrupt_records`] with its bytes, its space held until
//!   [`Spool::resolve_corrupt`] (the edge dead-letters it first, see
//!   `crate::dead_letter`). Which bytes count as torn and which as corrupt is
//!   explained in `scan`.
//!
//! Not guaranteed: a corrupt record whose header is damaged has no trusted seq,
//! so resolving it cannot be written to the ack log; the next `open` finds it
//! again (and it is dead-lettered again, under the same name) for as long as its
//! segment file exists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

mod files;
mod handle;
mod incarnation;
mod inspect;
mod record;
mod recovery;
mod reservation;
mod scan;
mod spooled;
mod state;
#[cfg(test)]
mod tests;
mod writer;

use files::*;
pub use handle::{Queued, Spool};
use incarnation::*;
pub use inspect::{CorruptInspection, Inspection, SegmentInspection, inspect, inspect_locked};
use record::*;
use recovery::*;
use reservation::*;
use scan::*;
pub use spooled::{decode_spooled, encode_spooled};
use state::*;
use writer::*;

/// Size of the record header that precedes every payload in a segment file.
pub const RECORD_HEADER_BYTES: u64 = 20;
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"WSP1");
const ACK_ENTRY_BYTES: usize = 12;
const SEGMENT_EXT: &str = "seg";
const ACK_EXT: &str = "ack";
const LOCK_FILE: &str = "lock";
/// The forwarder's dead-letter directory (`crate::dead_letter`) lives here by default;
/// the spool leaves it alone.
pub const DEAD_LETTER_DIR: &str = "dead-letter";
const SEQ_RESERVATION_FILE: &str = "seq-reservation";
const SEQ_RESERVATION_TMP: &str = "seq-reservation.tmp";
const SEQ_RESERVATION_MAGIC: u32 = u32::from_le_bytes(*b"WSR1");
const SEQ_RESERVATION_BYTES: usize = 16;
/// Largest `seq_block`; far more than any restart rate needs, and it keeps
/// `u64` sequence space from running out through skipped blocks.
const MAX_SEQ_BLOCK: u64 = 1 << 32;
/// How long `open` waits for the directory lock before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Appends queued for or being written by the writer thread; beyond this,
/// `append` waits for a slot instead of piling up work.
const WRITE_QUEUE_DEPTH: usize = 1024;
/// Upper bound on the appends that share one fsync, so one group commit cannot
/// grow without end while clients keep sending.
const MAX_GROUP_COMMIT: usize = 512;
/// Upper bound of the in-memory copy of pending payloads; the forwarder reads
/// the newest batches right after they were appended, so this spares disk
/// reads in steady state. A quarter of `max_bytes` when that is smaller.
const MAX_CACHE_BYTES: u64 = 32 << 20;

const fn default_max_bytes() -> u64 {
    1 << 30
}

const fn default_segment_bytes() -> u64 {
    64 << 20
}

const fn default_seq_block() -> u64 {
    1 << 16
}

/// Spool settings, the `[spool]` section of the edge config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// Upper bound of disk use in bytes (default 1 GiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Size at which segment files roll (default 64 MiB). Also the largest
    /// record (header plus batch) the spool accepts. At most `max_bytes / 2`.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Sequence numbers reserved at a time in the `seq-reservation` file
    /// (default 65536, between 1 and 2^32). Each reservation costs two fsyncs
    /// that the appends of that group commit wait for, and each restart skips
    /// what is left of the current block: smaller means more syncs, larger
    /// means bigger gaps in the sequence.
    #[serde(default = "default_seq_block")]
    pub seq_block: u64,
}

impl SpoolConfig {
    /// Config for `dir` with the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            seq_block: default_seq_block(),
        }
    }
}

/// Spool failures. `Full`, `DiskFull` and `Io` on append are retryable: nothing
/// was acknowledged, see [`SpoolError::is_retryable`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "spool is full ({used_bytes} of {max_bytes} bytes in use); retry later, space frees \
         as core nodes acknowledge batches; if this persists check connectivity from this \
         edge to the core nodes or raise spool max_bytes"
    )]
    Full { used_bytes: u64, max_bytes: u64 },

    #[error(
        "filesystem holding the spool is out of space while {op} {}: {error}; free space \
         on it or lower spool max_bytes below the free space, then retry",
        path.display()
    )]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        error: Arc<io::Error>,
    },

    #[error(
        "spool i/o failed while {op} {}: {error}; check the disk health and the permissions \
         of the spool directory",
        path.display()
    )]
    Io {
        op: &'static str,
        path: PathBuf,
        error: Arc<io::Error>,
    },

    #[error(
        "batch of {len} bytes is larger than the spool accepts ({max_len} bytes, set by spool \
         segment_bytes); send smaller batches or raise segment_bytes"
    )]
    TooLarge { len: u64, max_len: u64 },

    #[error(
        "spool directory {} is in use by another process; stop that process or give this \
         one its own spool dir",
        dir.display()
    )]
    Locked { dir: PathBuf },

    #[error("invalid spool config: {reason}; fix the spool section of the edge config")]
    InvalidConfig { reason: String },

    #[error(
        "ack for sequence {seq}, which the spool has not stored (next sequence is {next_seq}); \
         the ack was ignored, this is a forwarder bug"
    )]
    UnknownSeq { seq: u64, next_seq: u64 },

    #[error(
        "spool sequence reservation file {} is damaged ({reason}), so the spool cannot tell \
         which sequence numbers it already handed out and refuses to open: a reused number \
         would make core nodes drop a new batch as a duplicate. Check the disk for errors. \
         Deleting the file lets the spool continue after the highest sequence number found \
         in its segment files, which is safe unless a segment file was damaged too (the spool \
         logs a warning when it truncates one); if in doubt, delete it and also give this \
         edge a new edge_id",
        path.display()
    )]
    CorruptSeqReservation { path: PathBuf, reason: String },

    #[error(
        "spool incarnation file {} is damaged ({reason}), so the spool cannot tell which \
         incarnation id its batches were sent under and refuses to open: a made-up id could \
         repeat batch ids core nodes already hold and make them drop new batches as \
         duplicates. Check the disk for errors, then restore the file from a backup or, if \
         there is none, delete it: the spool then gets a new incarnation and its pending \
         batches are sent again under it (duplicates, not losses)",
        path.display()
    )]
    CorruptIncarnation { path: PathBuf, reason: String },

    #[error(
        "spool writer thread has stopped; restart the edge node and look in earlier logs for \
         the cause"
    )]
    WriterStopped,
}

impl SpoolError {
    /// Whether the caller may retry the same append later (HTTP 429/503 with
    /// Retry-After) rather than reject the batch.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Full { .. } | Self::DiskFull { .. } | Self::Io { .. }
        )
    }

    /// The answer to the client whose events the spool did not take: a full spool pushes
    /// back (429), another retryable failure is 503, a batch over the spool's limit 413.
    pub fn into_refusal(self) -> weir_proto::Refusal {
        use weir_proto::Refusal;
        let retry_after = std::time::Duration::from_secs(5);
        let message = self.to_string();
        match self {
            SpoolError::Full { .. } => Refusal::overloaded(message, retry_after),
            e if e.is_retryable() => Refusal::unavailable(message, retry_after),
            SpoolError::TooLarge { .. } => Refusal::too_large(message),
            _ => Refusal::internal(message),
        }
    }
}

fn io_error(op: &'static str, path: &Path, error: io::Error) -> SpoolError {
    let path = path.to_path_buf();
    let error = Arc::new(error);
    if is_disk_full(&error) {
        SpoolError::DiskFull { op, path, error }
    } else {
        SpoolError::Io { op, path, error }
    }
}

fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A batch read back for the forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    pub seq: u64,
    pub payload: Bytes,
}

/// A record that failed its checks on disk: set aside instead of forwarded, until
/// [`Spool::resolve_corrupt`] after its bytes were kept elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Base of the segment file holding it, and where in that file it starts.
    pub segment: u64,
    pub offset: u64,
    /// Its sequence number, when it could be trusted.
    pub seq: Option<u64>,
    /// What failed, e.g. "checksum mismatch".
    pub reason: String,
    /// The bytes as found on disk, record header included.
    pub bytes: Bytes,
}

/// Counters for readiness and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpoolStats {
    /// Bytes of segment files on disk plus appends in flight.
    pub used_bytes: u64,
    pub max_bytes: u64,
    /// Durable batches not yet acknowledged.
    pub pending_batches: u64,
    /// Payload bytes of the pending batches.
    pub pending_bytes: u64,
    /// Corrupt records found and not yet dead-lettered (not in `pending_batches`).
    pub corrupt_records: u64,
    /// Sequence number the next append will get (at least).
    pub next_seq: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Data fsyncs since open; compare with appends to see group commit work.
    pub fsyncs: u64,
    /// Appends that returned a sequence number since open.
    pub appends: u64,
}

fn validate(config: &SpoolConfig) -> Result<(), SpoolError> {
    let invalid = |reason: String| Err(SpoolError::InvalidConfig { reason });
    if config.segment_bytes <= RECORD_HEADER_BYTES {
        return invalid(format!(
            "segment_bytes is {}, it must exceed the {RECORD_HEADER_BYTES}-byte record header",
            config.segment_bytes
        ));
    }
    if config.segment_bytes > u64::from(u32::MAX) {
        return invalid(format!(
            "segment_bytes is {}, at most {} is supported",
            config.segment_bytes,
            u32::MAX
        ));
    }
    // With less, a fully acknowledged active segment could hold enough space
    // that the append which would roll it away never fits: stuck full forever.
    if config.max_bytes / 2 < config.segment_bytes {
        return invalid(format!(
            "max_bytes ({}) must be at least twice segment_bytes ({})",
            config.max_bytes, config.segment_bytes
        ));
    }
    if config.seq_block == 0 || config.seq_block > MAX_SEQ_BLOCK {
        return invalid(format!(
            "seq_block is {}, it must be between 1 and {MAX_SEQ_BLOCK}",
            config.seq_block
        ));
    }
    Ok(())
}

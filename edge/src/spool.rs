//! Durable disk spool between HTTP ingest and the QUIC forwarder.
//!
//! The spool owns one directory. HTTP handlers [`Spool::append`] already-encoded
//! batches; the call returns only once the batch is on stable storage, so the
//! client may be acknowledged. The forwarder reads unacknowledged batches with
//! [`Spool::pending_after`], sends them to a core node and calls [`Spool::ack`]
//! once the core confirmed them. A batch leaves the disk only after every batch
//! sharing its segment file has been acknowledged.
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
//!   segments alone cannot guarantee it: a record corrupted on disk after it
//!   was forwarded ends its segment on recovery, and with it every later
//!   record, so the highest intact seq can lie below numbers already used.
//!   Hence the writer reserves numbers in blocks of `seq_block` in the
//!   `seq-reservation` file, durably before any record carrying one is
//!   written, and `open` continues at or above the stored limit. That costs
//!   two fsyncs per block instead of per batch. A damaged reservation file
//!   makes `open` fail with [`SpoolError::CorruptSeqReservation`] rather than
//!   guess. The numbers have gaps: a failed write burns its numbers, and a
//!   restart skips what is left of the current block.
//! * Disk use (segment files plus appends in flight) stays within `max_bytes`;
//!   an append that does not fit fails at once with [`SpoolError::Full`].
//! * [`Spool::open`] recovers from a crash at any point: a torn or corrupt tail
//!   is logged and truncated, intact unacknowledged records become pending
//!   again in sequence order.
//!
//! Not guaranteed: a record corrupted on disk after it was acknowledged (bit
//! rot) ends its segment on recovery, so the intact records after it in the
//! same segment are dropped too, with a warning. Their sequence numbers stay
//! used (see above).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

#[cfg(test)]
mod tests;

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
        "spooled batch {seq} in {} at offset {offset} is corrupt on disk (checksum mismatch); \
         it cannot be sent, ack it to drop it and check the disk for errors",
        path.display()
    )]
    Corrupt {
        seq: u64,
        path: PathBuf,
        offset: u64,
    },

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
    /// Sequence number the next append will get (at least).
    pub next_seq: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Data fsyncs since open; compare with appends to see group commit work.
    pub fsyncs: u64,
    /// Appends that returned a sequence number since open.
    pub appends: u64,
}

/// Handle to an open spool. Cheap to clone; the writer thread stops, after
/// finishing the writes already queued, when the last clone is dropped (that
/// drop waits for at most one group commit).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::UnboundedSender<Cmd>>,
    queue: Arc<Semaphore>,
    writer: Option<JoinHandle<()>>,
    // Held for the flock; released on drop, after the writer stopped.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            error!(dir = %self.shared.dir.display(), "spool writer thread panicked");
        }
    }
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    seq_block: u64,
    cache_budget: u64,
    state: Mutex<State>,
    /// Bumped (to `next_seq`) whenever batches became durable.
    published: watch::Sender<u64>,
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    fail_next_seq_reservation: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this module; the counters
        // may then be off, but refusing all further appends and acks would turn
        // it into an outage, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct State {
    /// Live segment files by base sequence number.
    segments: BTreeMap<u64, SegMeta>,
    /// Base of the segment the writer appends to; never deleted.
    active: u64,
    /// Durable, unacknowledged records.
    index: BTreeMap<u64, Entry>,
    used: u64,
    reserved: u64,
    pending_bytes: u64,
    cache_bytes: u64,
    /// Every seq below is durable (pending or acked), was burned by a failed
    /// write or was skipped by a restart; none at or above exists yet.
    next_seq: u64,
    fsyncs: u64,
    /// Writes of the `seq-reservation` file since open (not in `fsyncs`).
    seq_reservations: u64,
    appends: u64,
    ack_waiters: HashMap<u64, Vec<oneshot::Sender<()>>>,
}

struct SegMeta {
    /// Durable bytes in the file.
    size: u64,
    /// Durable records not yet acknowledged.
    unacked: u64,
    reader: Option<Arc<File>>,
}

struct Entry {
    segment: u64,
    /// Offset of the record header in the segment file.
    offset: u64,
    len: u32,
    cached: Option<Bytes>,
}

enum Cmd {
    Append(AppendReq),
    Ack { segment: u64, seq: u64 },
    Delete { segment: u64 },
}

struct AppendReq {
    payload: Bytes,
    reservation: Reservation,
    _permit: OwnedSemaphorePermit,
    reply: oneshot::Sender<Result<u64, SpoolError>>,
}

/// Bytes counted against `max_bytes` for an append not yet on disk. Released
/// on drop so a cancelled append does not leak space; the writer settles it
/// under the state lock instead (dropping it there would deadlock).
struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Reservation {
    fn settle(&mut self, st: &mut State) {
        st.reserved -= self.bytes;
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let bytes = self.bytes;
            self.shared.lock().reserved -= bytes;
        }
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_EXT}"))
}

fn ack_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{ACK_EXT}"))
}

fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    // Callers reject payloads above segment_bytes, which validation keeps
    // below u32::MAX.
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[start..start + 16]), payload);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

struct Header {
    magic: u32,
    len: u32,
    seq: u64,
    crc: u32,
}

fn decode_header(h: &[u8; RECORD_HEADER_BYTES as usize]) -> Header {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    Header {
        magic: u32_at(0),
        len: u32_at(4),
        seq: u64::from_le_bytes(seq),
        crc: u32_at(16),
    }
}

fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..16]), payload)
}

fn encode_ack(buf: &mut Vec<u8>, seq: u64) {
    let bytes = seq.to_le_bytes();
    buf.extend_from_slice(&bytes);
    buf.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing spool directory", dir, e))
}

fn create_segment(dir: &Path, base: u64) -> Result<File, SpoolError> {
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
fn delete_segment_files(dir: &Path, base: u64) {
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

impl Spool {
    /// Opens (creating if needed) the spool in `config.dir`, recovering what a
    /// previous process left, and starts the writer thread. Does blocking I/O
    /// proportional to the spool size; call it before serving or from
    /// `spawn_blocking`.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        validate(&config)?;
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| io_error("creating spool directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let recovered = recover(&config)?;

        let cache_budget = (config.max_bytes / 4).min(MAX_CACHE_BYTES);
        let (published, _) = watch::channel(recovered.state.next_seq);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            seq_block: config.seq_block,
            cache_budget,
            state: Mutex::new(recovered.state),
            published,
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_next_seq_reservation: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            shared: shared.clone(),
            rx,
            active: recovered.active,
            must_roll: false,
            next_seq: recovered.next_seq,
            seq_limit: recovered.seq_limit,
            ack_files: HashMap::new(),
            ack_buf: BTreeMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| io_error("starting writer thread for", &dir, e))?;
        Ok(Spool {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                queue: Arc::new(Semaphore::new(WRITE_QUEUE_DEPTH)),
                writer: Some(handle),
                _lock: lock,
            }),
        })
    }

    /// Stores `payload` durably and returns its sequence number. Fails at once
    /// with [`SpoolError::Full`] when it does not fit in `max_bytes`.
    ///
    /// If the future is dropped after the batch was queued, the batch may
    /// still be stored and forwarded (at least once delivery).
    pub async fn append(&self, payload: Bytes) -> Result<u64, SpoolError> {
        let shared = &self.inner.shared;
        let record_bytes = RECORD_HEADER_BYTES + payload.len() as u64;
        if record_bytes > shared.segment_bytes {
            return Err(SpoolError::TooLarge {
                len: payload.len() as u64,
                max_len: shared.segment_bytes - RECORD_HEADER_BYTES,
            });
        }
        let reservation = {
            let mut st = shared.lock();
            let used_bytes = st.used + st.reserved;
            if used_bytes + record_bytes > shared.max_bytes {
                debug!(
                    used_bytes,
                    max_bytes = shared.max_bytes,
                    "spool full, append rejected"
                );
                return Err(SpoolError::Full {
                    used_bytes,
                    max_bytes: shared.max_bytes,
                });
            }
            st.reserved += record_bytes;
            Reservation {
                shared: shared.clone(),
                bytes: record_bytes,
            }
        };
        let permit = self
            .inner
            .queue
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SpoolError::WriterStopped)?;
        let (reply, done) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or(SpoolError::WriterStopped)?;
        tx.send(Cmd::Append(AppendReq {
            payload,
            reservation,
            _permit: permit,
            reply,
        }))
        .map_err(|_| SpoolError::WriterStopped)?;
        done.await.map_err(|_| SpoolError::WriterStopped)?
    }

    /// Marks `seq` as delivered to a core node. Idempotent; acks may come in
    /// any order. Frees the segment file once all its records are acked and it
    /// is no longer the one being appended to.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let tx = self.inner.tx.as_ref().ok_or(SpoolError::WriterStopped)?;
        let mut st = self.inner.shared.lock();
        let Some(entry) = st.index.remove(&seq) else {
            if seq >= st.next_seq {
                return Err(SpoolError::UnknownSeq {
                    seq,
                    next_seq: st.next_seq,
                });
            }
            // Already acked, or dropped as corrupt on recovery.
            return Ok(());
        };
        st.pending_bytes -= u64::from(entry.len);
        if entry.cached.is_some() {
            st.cache_bytes -= u64::from(entry.len);
        }
        let active = st.active;
        let condemned = match st.segments.get_mut(&entry.segment) {
            Some(seg) => {
                seg.unacked -= 1;
                seg.unacked == 0 && entry.segment != active
            }
            None => false,
        };
        if condemned && let Some(seg) = st.segments.remove(&entry.segment) {
            // Counted as free now: the writer unlinks it before it writes the
            // next group commit, so disk use overshoots by at most this file for
            // that moment.
            st.used -= seg.size;
        }
        for waiter in st.ack_waiters.remove(&seq).into_iter().flatten() {
            let _ = waiter.send(());
        }
        // Sent under the lock so the writer sees Ack before Delete for a segment.
        let sent = tx
            .send(Cmd::Ack {
                segment: entry.segment,
                seq,
            })
            .is_ok()
            && (!condemned
                || tx
                    .send(Cmd::Delete {
                        segment: entry.segment,
                    })
                    .is_ok());
        if sent {
            Ok(())
        } else {
            Err(SpoolError::WriterStopped)
        }
    }

    /// Up to `max` unacknowledged batches with `seq > after` (all when `after`
    /// is `None`), in sequence order. Serves recent batches from memory and
    /// reads older ones from disk (blocking, page-cache speed reads).
    pub fn pending_after(
        &self,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<SpooledBatch>, SpoolError> {
        let Some(start) = first_after(after) else {
            return Ok(Vec::new());
        };
        let shared = &self.inner.shared;
        let mut out = Vec::new();
        // (position in out, file, path, record offset, payload len)
        let mut reads = Vec::new();
        {
            let mut st = shared.lock();
            let st = &mut *st;
            for (&seq, entry) in st.index.range(start..).take(max) {
                if let Some(payload) = &entry.cached {
                    out.push(SpooledBatch {
                        seq,
                        payload: payload.clone(),
                    });
                    continue;
                }
                let Some(seg) = st.segments.get_mut(&entry.segment) else {
                    continue;
                };
                let path = segment_path(&shared.dir, entry.segment);
                let file = match &seg.reader {
                    Some(f) => f.clone(),
                    None => {
                        let f = Arc::new(
                            File::open(&path)
                                .map_err(|e| io_error("opening segment for reading", &path, e))?,
                        );
                        seg.reader = Some(f.clone());
                        f
                    }
                };
                reads.push((out.len(), file, path, entry.offset, entry.len));
                out.push(SpooledBatch {
                    seq,
                    payload: Bytes::new(),
                });
            }
        }
        // Outside the lock: the Arc<File> keeps the data readable even if the
        // segment gets deleted meanwhile.
        for (pos, file, path, offset, len) in reads {
            let mut buf = vec![0u8; RECORD_HEADER_BYTES as usize + len as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| io_error("reading segment", &path, e))?;
            let (header, payload) = buf.split_at(RECORD_HEADER_BYTES as usize);
            let mut h = [0u8; RECORD_HEADER_BYTES as usize];
            h.copy_from_slice(header);
            let h = decode_header(&h);
            let seq = out[pos].seq;
            if h.magic != RECORD_MAGIC
                || h.seq != seq
                || h.len != len
                || h.crc != record_crc(header, payload)
            {
                error!(file = %path.display(), offset, seq, "spooled batch is corrupt on disk");
                return Err(SpoolError::Corrupt { seq, path, offset });
            }
            buf.drain(..RECORD_HEADER_BYTES as usize);
            out[pos].payload = Bytes::from(buf);
        }
        Ok(out)
    }

    /// Resolves once an unacknowledged batch with `seq > after` exists.
    pub async fn wait_for_more(&self, after: Option<u64>) {
        let Some(start) = first_after(after) else {
            return std::future::pending().await;
        };
        let shared = &self.inner.shared;
        // Subscribe before looking so a publish in between is not missed.
        let mut published = shared.published.subscribe();
        loop {
            published.borrow_and_update();
            if shared.lock().index.range(start..).next().is_some() {
                return;
            }
            if published.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                return std::future::pending().await;
            }
        }
    }

    /// Resolves once `seq` is acknowledged (at once if it already was).
    pub async fn wait_acked(&self, seq: u64) {
        let done = {
            let mut st = self.inner.shared.lock();
            if seq < st.next_seq && !st.index.contains_key(&seq) {
                return;
            }
            let (tx, rx) = oneshot::channel();
            st.ack_waiters.entry(seq).or_default().push(tx);
            rx
        };
        // An error means the spool state went away, nothing left to wait for.
        let _ = done.await;
    }

    /// Current counters; cheap (one short lock), fine to call per request.
    pub fn stats(&self) -> SpoolStats {
        let shared = &self.inner.shared;
        let st = shared.lock();
        SpoolStats {
            used_bytes: st.used + st.reserved,
            max_bytes: shared.max_bytes,
            pending_batches: st.index.len() as u64,
            pending_bytes: st.pending_bytes,
            next_seq: st.next_seq,
            segments: st.segments.len() as u64,
            fsyncs: st.fsyncs,
            appends: st.appends,
        }
    }

    /// The config the spool was opened with.
    pub fn config(&self) -> SpoolConfig {
        let shared = &self.inner.shared;
        SpoolConfig {
            dir: shared.dir.clone(),
            max_bytes: shared.max_bytes,
            segment_bytes: shared.segment_bytes,
            seq_block: shared.seq_block,
        }
    }
}

fn first_after(after: Option<u64>) -> Option<u64> {
    match after {
        None => Some(0),
        Some(a) => a.checked_add(1),
    }
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

fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
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

struct Recovered {
    state: State,
    active: Active,
    next_seq: u64,
    /// Stored reservation limit; 0 when there was no reservation file.
    seq_limit: u64,
}

struct ScannedRecord {
    seq: u64,
    offset: u64,
    payload: Vec<u8>,
}

/// Valid records of one segment; `valid_len` is where the intact prefix ends.
struct Scan {
    records: Vec<ScannedRecord>,
    valid_len: u64,
}

fn recover(config: &SpoolConfig) -> Result<Recovered, SpoolError> {
    let dir = &config.dir;
    // First, so a damaged file stops `open` before recovery changes anything.
    let stored_limit = read_seq_limit(dir)?;
    let mut bases = Vec::new();
    let mut ack_logs = HashSet::new();
    let entries = fs::read_dir(dir).map_err(|e| io_error("listing spool directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing spool directory", dir, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_name) {
            Some((base, SEGMENT_EXT)) => bases.push(base),
            Some((base, ACK_EXT)) => {
                ack_logs.insert(base);
            }
            _ if name == LOCK_FILE || name == SEQ_RESERVATION_FILE || name == DEAD_LETTER_DIR => {}
            // Left by a crash while replacing the reservation: its limit was
            // never in force (no seq from it was used), so it carries nothing.
            _ if name == SEQ_RESERVATION_TMP => {
                let path = entry.path();
                if let Err(e) = fs::remove_file(&path) {
                    warn!(file = %path.display(), error = %e, "could not remove leftover spool file");
                }
            }
            _ => warn!(
                file = %entry.path().display(),
                "ignoring unexpected file in spool directory"
            ),
        }
    }
    bases.sort_unstable();

    let cache_budget = (config.max_bytes / 4).min(MAX_CACHE_BYTES);
    let mut st = State {
        segments: BTreeMap::new(),
        active: 0,
        index: BTreeMap::new(),
        used: 0,
        reserved: 0,
        pending_bytes: 0,
        cache_bytes: 0,
        next_seq: 0,
        fsyncs: 0,
        seq_reservations: 0,
        appends: 0,
        ack_waiters: HashMap::new(),
    };
    let mut highest: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let acked = if ack_logs.contains(&base) {
            read_acks(&ack_path(dir, base))
        } else {
            HashSet::new()
        };
        let scan = scan_segment(&path, base, bases.get(i + 1).copied())?;
        let mut unacked = 0;
        for rec in scan.records {
            highest = Some(rec.seq);
            if acked.contains(&rec.seq) {
                continue;
            }
            unacked += 1;
            let len = rec.payload.len() as u64;
            st.pending_bytes += len;
            // Oldest first: the forwarder sends those first.
            let cached = if st.cache_bytes + len <= cache_budget {
                st.cache_bytes += len;
                Some(Bytes::from(rec.payload))
            } else {
                None
            };
            st.index.insert(
                rec.seq,
                Entry {
                    segment: base,
                    offset: rec.offset,
                    len: len as u32,
                    cached,
                },
            );
        }
        st.used += scan.valid_len;
        st.segments.insert(
            base,
            SegMeta {
                size: scan.valid_len,
                unacked,
                reader: None,
            },
        );
    }

    // The last segment name is the floor: it was named after the next seq
    // when it was created, and the active segment is never deleted. Both it
    // and the highest intact record only bound what the segments still show;
    // the stored reservation bounds every seq ever handed out, including
    // those of records lost to corruption. The first two still count for
    // spools without a reservation file (older versions, or deleted by the
    // operator after it was damaged).
    let floor = bases.last().copied().unwrap_or(0);
    let next_seq = highest
        .map_or(floor, |h| (h + 1).max(floor))
        .max(stored_limit.unwrap_or(0));
    st.next_seq = next_seq;

    let active = match bases.last() {
        Some(&base) => {
            let path = segment_path(dir, base);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io_error("opening segment for appending", &path, e))?;
            Active {
                base,
                size: st.segments[&base].size,
                file,
            }
        }
        None => {
            let file = create_segment(dir, next_seq)?;
            sync_dir(dir)?;
            st.segments.insert(
                next_seq,
                SegMeta {
                    size: 0,
                    unacked: 0,
                    reader: None,
                },
            );
            Active {
                base: next_seq,
                size: 0,
                file,
            }
        }
    };
    st.active = active.base;

    // Only now that the active segment (the floor) exists on disk.
    let done: Vec<u64> = st
        .segments
        .iter()
        .filter(|&(&base, seg)| seg.unacked == 0 && base != active.base)
        .map(|(&base, _)| base)
        .collect();
    for base in done {
        if let Some(seg) = st.segments.remove(&base) {
            st.used -= seg.size;
        }
        delete_segment_files(dir, base);
    }
    for base in ack_logs {
        if !st.segments.contains_key(&base) {
            delete_segment_files(dir, base);
        }
    }

    info!(
        dir = %dir.display(),
        segments = st.segments.len(),
        pending_batches = st.index.len(),
        pending_bytes = st.pending_bytes,
        used_bytes = st.used,
        next_seq,
        seq_reservation = stored_limit,
        "spool opened"
    );
    Ok(Recovered {
        state: st,
        active,
        next_seq,
        seq_limit: stored_limit.unwrap_or(0),
    })
}

fn encode_seq_limit(limit: u64) -> [u8; SEQ_RESERVATION_BYTES] {
    let mut buf = [0u8; SEQ_RESERVATION_BYTES];
    buf[..4].copy_from_slice(&SEQ_RESERVATION_MAGIC.to_le_bytes());
    buf[4..12].copy_from_slice(&limit.to_le_bytes());
    let crc = crc32c::crc32c(&buf[..12]);
    buf[12..].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// The stored reservation limit, `None` if there is no reservation file.
fn read_seq_limit(dir: &Path) -> Result<Option<u64>, SpoolError> {
    let path = dir.join(SEQ_RESERVATION_FILE);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("reading", &path, e)),
    };
    // The file is only ever replaced whole by a rename after an fsync, so no
    // crash leaves it partial: any damage here happened on disk, and the
    // number it held is unknown.
    let corrupt = |reason: String| {
        error!(file = %path.display(), reason = %reason, "spool sequence reservation file is damaged");
        Err(SpoolError::CorruptSeqReservation {
            path: path.clone(),
            reason,
        })
    };
    let Ok(buf) = <[u8; SEQ_RESERVATION_BYTES]>::try_from(data.as_slice()) else {
        return corrupt(format!(
            "{} bytes long, expected {SEQ_RESERVATION_BYTES}",
            data.len()
        ));
    };
    let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if u32_at(0) != SEQ_RESERVATION_MAGIC {
        return corrupt("bad magic".into());
    }
    if u32_at(12) != crc32c::crc32c(&buf[..12]) {
        return corrupt("checksum mismatch".into());
    }
    let mut limit = [0u8; 8];
    limit.copy_from_slice(&buf[4..12]);
    Ok(Some(u64::from_le_bytes(limit)))
}

/// Makes `limit` the stored reservation, durably: when this returns Ok, no
/// crash can bring back a smaller one. Write, fsync, rename, fsync the
/// directory, so a crash at any point leaves a whole old or new file.
fn store_seq_limit(dir: &Path, limit: u64) -> Result<(), SpoolError> {
    let tmp = dir.join(SEQ_RESERVATION_TMP);
    let path = dir.join(SEQ_RESERVATION_FILE);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&encode_seq_limit(limit))?;
            f.sync_all()
        })
        .map_err(|e| io_error("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_error("renaming into place", &path, e))?;
    sync_dir(dir)
}

fn read_acks(path: &Path) -> HashSet<u64> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) => {
            // Without the acks the segment is resent, which is safe.
            warn!(file = %path.display(), error = %e, "could not read spool ack log, its batches will be resent");
            return HashSet::new();
        }
    };
    let mut acked = HashSet::new();
    let mut bad = 0usize;
    for chunk in data.chunks_exact(ACK_ENTRY_BYTES) {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&chunk[..8]);
        let crc = u32::from_le_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
        if crc32c::crc32c(&seq) == crc {
            acked.insert(u64::from_le_bytes(seq));
        } else {
            bad += 1;
        }
    }
    // Unsynced ack logs can lose a tail or hold zeros after a power loss; the
    // affected batches are resent.
    if bad > 0 || data.len() % ACK_ENTRY_BYTES != 0 {
        warn!(
            file = %path.display(),
            bad_entries = bad,
            trailing_bytes = data.len() % ACK_ENTRY_BYTES,
            "spool ack log has damaged entries, those batches will be resent"
        );
    }
    acked
}

/// Reads every record of a segment, stops at the first one that is torn or
/// fails validation and truncates the file there (with a warning).
fn scan_segment(path: &Path, base: u64, next_base: Option<u64>) -> Result<Scan, SpoolError> {
    let read_err = |e| io_error("reading segment", path, e);
    let file = File::open(path).map_err(|e| io_error("opening segment", path, e))?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut prev: Option<u64> = None;
    let problem = loop {
        if offset == file_len {
            break None;
        }
        if file_len - offset < RECORD_HEADER_BYTES {
            break Some("torn record header");
        }
        let mut raw = [0u8; RECORD_HEADER_BYTES as usize];
        reader.read_exact(&mut raw).map_err(read_err)?;
        let h = decode_header(&raw);
        if h.magic != RECORD_MAGIC {
            break Some("bad record magic");
        }
        if u64::from(h.len) > file_len - offset - RECORD_HEADER_BYTES {
            break Some("torn record payload");
        }
        if h.seq < base || prev.is_some_and(|p| h.seq <= p) || next_base.is_some_and(|n| h.seq >= n)
        {
            break Some("sequence number out of order");
        }
        let mut payload = vec![0u8; h.len as usize];
        reader.read_exact(&mut payload).map_err(read_err)?;
        if record_crc(&raw, &payload) != h.crc {
            break Some("checksum mismatch");
        }
        records.push(ScannedRecord {
            seq: h.seq,
            offset,
            payload,
        });
        prev = Some(h.seq);
        offset += RECORD_HEADER_BYTES + u64::from(h.len);
    };
    if let Some(reason) = problem {
        warn!(
            file = %path.display(),
            offset,
            reason,
            dropped_bytes = file_len - offset,
            kept_records = records.len(),
            "spool segment has a torn or corrupt tail, truncating it"
        );
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| {
                f.set_len(offset)?;
                f.sync_all()
            })
            .map_err(|e| io_error("truncating corrupt tail of segment", path, e))?;
    }
    Ok(Scan {
        records,
        valid_len: offset,
    })
}

struct Active {
    base: u64,
    /// Bytes in the file (written, not necessarily published yet).
    size: u64,
    file: File,
}

/// Owns every write to the spool directory: segment appends, ack logs and
/// deletions. Runs on its own thread so fsync never blocks the runtime.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    active: Active,
    /// Set after a failed write: the next record goes to a fresh file so an
    /// fd whose writeback error was already reported is never trusted again.
    must_roll: bool,
    next_seq: u64,
    /// Durable in the reservation file: seqs below it may be handed out
    /// without touching that file again.
    seq_limit: u64,
    ack_files: HashMap<u64, File>,
    ack_buf: BTreeMap<u64, Vec<u8>>,
}

/// Where one record of a group commit went.
struct Placed {
    seq: u64,
    segment: u64,
    offset: u64,
}

/// Bookkeeping of one group commit, needed to publish or roll it back.
#[derive(Default)]
struct Batch {
    placed: Vec<Placed>,
    /// Segments written to, with their size before this commit.
    touched: Vec<(u64, u64)>,
    created: Vec<u64>,
    rolled_away: Vec<u64>,
    fsyncs: u64,
    seq_reservations: u64,
}

impl Writer {
    fn run(mut self) {
        while let Some(cmd) = self.rx.blocking_recv() {
            let mut appends = Vec::new();
            self.handle(cmd, &mut appends);
            // Everything that queued up during the previous fsync joins this one.
            while appends.len() < MAX_GROUP_COMMIT {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd, &mut appends),
                    Err(_) => break,
                }
            }
            self.flush_acks();
            if !appends.is_empty() {
                self.commit(appends);
            }
        }
        self.flush_acks();
        debug!(dir = %self.shared.dir.display(), "spool writer stopped");
    }

    fn handle(&mut self, cmd: Cmd, appends: &mut Vec<AppendReq>) {
        match cmd {
            Cmd::Append(req) => appends.push(req),
            Cmd::Ack { segment, seq } => encode_ack(self.ack_buf.entry(segment).or_default(), seq),
            Cmd::Delete { segment } => {
                self.ack_buf.remove(&segment);
                self.ack_files.remove(&segment);
                delete_segment_files(&self.shared.dir, segment);
                debug!(segment, "deleted fully acknowledged spool segment");
            }
        }
    }

    fn flush_acks(&mut self) {
        if self.ack_buf.is_empty() {
            return;
        }
        let mut bufs = std::mem::take(&mut self.ack_buf);
        {
            // An ack racing with the deletion of its segment must not recreate
            // the ack log after the segment is gone.
            let st = self.shared.lock();
            bufs.retain(|segment, _| st.segments.contains_key(segment));
        }
        for (segment, buf) in bufs {
            let path = ack_path(&self.shared.dir, segment);
            let file = match self.ack_files.entry(segment) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match OpenOptions::new().append(true).create(true).open(&path) {
                        Ok(f) => v.insert(f),
                        Err(e) => {
                            warn!(file = %path.display(), error = %e, "could not open spool ack log, these batches will be resent after a restart");
                            continue;
                        }
                    }
                }
            };
            // No fsync: a lost ack only causes a resend.
            if let Err(e) = file.write_all(&buf) {
                warn!(file = %path.display(), error = %e, "could not write spool ack log, these batches will be resent after a restart");
            }
        }
    }

    fn commit(&mut self, mut reqs: Vec<AppendReq>) {
        let mut batch = Batch::default();
        let result = self.write_batch(&reqs, &mut batch);
        if result.is_err() {
            self.rollback(&batch);
        }
        let dir = self.shared.dir.clone();
        let mut condemned = Vec::new();
        let mut replies = Vec::with_capacity(reqs.len());
        {
            let mut st = self.shared.lock();
            let st = &mut *st;
            st.fsyncs += batch.fsyncs;
            st.seq_reservations += batch.seq_reservations;
            for &base in &batch.created {
                st.segments.insert(
                    base,
                    SegMeta {
                        size: 0,
                        unacked: 0,
                        reader: None,
                    },
                );
            }
            for (req, placed) in reqs.iter_mut().zip(&batch.placed) {
                req.reservation.settle(st);
                if result.is_err() {
                    continue;
                }
                let len = req.payload.len() as u64;
                let record_bytes = RECORD_HEADER_BYTES + len;
                if let Some(seg) = st.segments.get_mut(&placed.segment) {
                    seg.size += record_bytes;
                    seg.unacked += 1;
                }
                st.used += record_bytes;
                st.pending_bytes += len;
                st.appends += 1;
                let cached = if st.cache_bytes + len <= self.shared.cache_budget {
                    st.cache_bytes += len;
                    Some(req.payload.clone())
                } else {
                    None
                };
                st.index.insert(
                    placed.seq,
                    Entry {
                        segment: placed.segment,
                        offset: placed.offset,
                        len: len as u32,
                        cached,
                    },
                );
            }
            // Requests never placed (the batch failed before reaching them).
            for req in reqs.iter_mut().skip(batch.placed.len()) {
                req.reservation.settle(st);
            }
            st.active = self.active.base;
            st.next_seq = self.next_seq;
            for base in &batch.rolled_away {
                let done = st
                    .segments
                    .get(base)
                    .is_some_and(|seg| seg.unacked == 0 && *base != st.active);
                if done && let Some(seg) = st.segments.remove(base) {
                    st.used -= seg.size;
                    condemned.push(*base);
                }
            }
            self.shared.published.send_replace(self.next_seq);
            for (i, req) in reqs.into_iter().enumerate() {
                let reply = match (&result, batch.placed.get(i)) {
                    (Ok(()), Some(placed)) => Ok(placed.seq),
                    (Err(e), _) => Err(e.clone()),
                    (Ok(()), None) => Err(SpoolError::WriterStopped),
                };
                replies.push((req.reply, reply));
                // The rest of req (settled reservation, permit) drops here,
                // which does not take the lock.
            }
        }
        for base in condemned {
            self.ack_buf.remove(&base);
            self.ack_files.remove(&base);
            delete_segment_files(&dir, base);
        }
        if let Err(e) = &result {
            error!(dir = %dir.display(), error = %e, batches = replies.len(), "spool group commit failed, appends rejected");
        }
        for (reply, outcome) in replies {
            // The caller may have gone away; the batch is stored regardless.
            let _ = reply.send(outcome);
        }
    }

    fn write_batch(&mut self, reqs: &[AppendReq], batch: &mut Batch) -> Result<(), SpoolError> {
        let dir = self.shared.dir.clone();
        let segment_bytes = self.shared.segment_bytes;
        self.reserve_seqs(reqs.len() as u64, batch)?;
        let mut buf = Vec::new();
        for req in reqs {
            let record_bytes = RECORD_HEADER_BYTES + req.payload.len() as u64;
            let fill = self.active.size + buf.len() as u64;
            if self.must_roll || (fill > 0 && fill + record_bytes > segment_bytes) {
                self.flush_buf(&mut buf)?;
                if batch
                    .touched
                    .last()
                    .is_some_and(|t| t.0 == self.active.base)
                {
                    self.sync_active(batch)?;
                }
                let base = self.next_seq;
                let file = create_segment(&dir, base)?;
                batch.created.push(base);
                batch.rolled_away.push(self.active.base);
                self.active = Active {
                    base,
                    size: 0,
                    file,
                };
                self.must_roll = false;
                debug!(segment = base, "spool segment rolled");
            }
            if batch.touched.last().is_none_or(|t| t.0 != self.active.base) {
                batch.touched.push((self.active.base, self.active.size));
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            batch.placed.push(Placed {
                seq,
                segment: self.active.base,
                offset: self.active.size + buf.len() as u64,
            });
            encode_record(&mut buf, seq, &req.payload);
        }
        self.flush_buf(&mut buf)?;
        self.sync_active(batch)?;
        if !batch.created.is_empty() {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Makes sure the next `count` seqs are covered by the stored reservation
    /// before any record carrying one is written: the page cache may write a
    /// record back on its own, long before our fsync, so "before it is
    /// durable" means before the write. Whole blocks at a time, so the
    /// two fsyncs this costs are rare; appends arriving meanwhile join the
    /// next group commit as they do during any fsync.
    fn reserve_seqs(&mut self, count: u64, batch: &mut Batch) -> Result<(), SpoolError> {
        if self.next_seq.saturating_add(count) <= self.seq_limit {
            return Ok(());
        }
        let limit = self
            .next_seq
            .saturating_add(count.max(self.shared.seq_block));
        #[cfg(test)]
        if self
            .shared
            .fail_next_seq_reservation
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io_error(
                "writing",
                &self.shared.dir.join(SEQ_RESERVATION_TMP),
                io::Error::other("injected reservation failure"),
            ));
        }
        // On failure the file may hold the old limit or the new one; either
        // covers every seq handed out, as none were beyond the old one.
        store_seq_limit(&self.shared.dir, limit)?;
        self.seq_limit = limit;
        batch.seq_reservations += 1;
        debug!(seq_limit = limit, "spool sequence numbers reserved");
        Ok(())
    }

    fn flush_buf(&mut self, buf: &mut Vec<u8>) -> Result<(), SpoolError> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.shared.dir, self.active.base);
        self.active
            .file
            .write_all(buf)
            .map_err(|e| io_error("writing segment", &path, e))?;
        self.active.size += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    fn sync_active(&mut self, batch: &mut Batch) -> Result<(), SpoolError> {
        let path = segment_path(&self.shared.dir, self.active.base);
        batch.fsyncs += 1;
        #[cfg(test)]
        if self
            .shared
            .fail_next_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io_error(
                "syncing segment",
                &path,
                io::Error::other("injected fsync failure"),
            ));
        }
        // fdatasync also persists the grown file size, which is all the
        // metadata a reader needs.
        self.active
            .file
            .sync_data()
            .map_err(|e| io_error("syncing segment", &path, e))
    }

    /// Cuts every segment this commit wrote back to its size before the
    /// commit, so a record whose append was reported failed does not come
    /// back after a restart, and moves on to a new file for the next commit.
    fn rollback(&mut self, batch: &Batch) {
        // Nothing written (a failed reservation): the active fd saw no error.
        if batch.touched.is_empty() {
            return;
        }
        self.must_roll = true;
        for &(base, size) in &batch.touched {
            let path = segment_path(&self.shared.dir, base);
            let res = OpenOptions::new().write(true).open(&path).and_then(|f| {
                f.set_len(size)?;
                f.sync_all()
            });
            if let Err(e) = res {
                // Its records may then reappear after a restart under their
                // own (never reused) seqs: a duplicate, not a loss.
                error!(file = %path.display(), error = %e, "could not roll back failed spool write");
            }
            if base == self.active.base {
                self.active.size = size;
            }
        }
    }
}

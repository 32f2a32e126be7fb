//! In-memory state shared by the handle and the writer thread: live segments, the index
//! of durable unacknowledged records, byte accounting against `max_bytes`.
//!
//! Holds no file handles it writes to and does no I/O; every change to it happens under
//! its one mutex, which must never be held across an fsync.

use super::*;

pub(super) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) max_bytes: u64,
    pub(super) segment_bytes: u64,
    pub(super) seq_block: u64,
    pub(super) cache_budget: u64,
    pub(super) state: Mutex<State>,
    /// Bumped (to `next_seq`) whenever batches became durable.
    pub(super) published: watch::Sender<u64>,
    /// Bumped whenever a corrupt record was found after `open`.
    pub(super) corrupt_found: watch::Sender<()>,
    #[cfg(test)]
    pub(super) fail_next_sync: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    pub(super) fail_next_seq_reservation: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this module; the counters
        // may then be off, but refusing all further appends and acks would turn
        // it into an outage, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) struct State {
    /// Live segment files by base sequence number.
    pub(super) segments: BTreeMap<u64, SegMeta>,
    /// Base of the segment the writer appends to; never deleted.
    pub(super) active: u64,
    /// Durable, unacknowledged records.
    pub(super) index: BTreeMap<u64, Entry>,
    pub(super) used: u64,
    pub(super) reserved: u64,
    pub(super) pending_bytes: u64,
    pub(super) cache_bytes: u64,
    /// Every seq below is durable (pending or acked), was burned by a failed
    /// write or was skipped by a restart; none at or above exists yet.
    pub(super) next_seq: u64,
    pub(super) fsyncs: u64,
    /// Writes of the `seq-reservation` file since open (not in `fsyncs`).
    pub(super) seq_reservations: u64,
    pub(super) appends: u64,
    pub(super) ack_waiters: HashMap<u64, Vec<oneshot::Sender<()>>>,
    /// Corrupt records not yet dead-lettered, by (segment, offset). Not in
    /// `index`, so never handed to the forwarder; counted in their segment's
    /// `unacked`, so the bytes stay on disk until resolved.
    pub(super) corrupt: BTreeMap<(u64, u64), CorruptEntry>,
}

pub(super) struct CorruptEntry {
    /// Known when the record's header could be trusted (see `scan`), or when
    /// the index knew it (corruption found while reading).
    pub(super) seq: Option<u64>,
    pub(super) reason: &'static str,
    /// The record's bytes as found, header included.
    pub(super) bytes: Bytes,
}

pub(super) struct SegMeta {
    /// Durable bytes in the file.
    pub(super) size: u64,
    /// Durable records not yet acknowledged.
    pub(super) unacked: u64,
    pub(super) reader: Option<Arc<File>>,
}

pub(super) struct Entry {
    pub(super) segment: u64,
    /// Offset of the record header in the segment file.
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) cached: Option<Bytes>,
}

/// Bytes counted against `max_bytes` for an append not yet on disk. Released
/// on drop so a cancelled append does not leak space; the writer settles it
/// under the state lock instead (dropping it there would deadlock).
pub(super) struct Reservation {
    pub(super) shared: Arc<Shared>,
    pub(super) bytes: u64,
}

impl Reservation {
    pub(super) fn settle(&mut self, st: &mut State) {
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

impl State {
    /// Keeps a record found corrupt on disk for the dead-letter directory instead of
    /// the forwarder; logged and counted once, here, where it is found. The caller
    /// has it counted as unacked in its segment, so the bytes stay on disk until it
    /// is resolved.
    pub(super) fn set_aside_corrupt(
        &mut self,
        path: &Path,
        segment: u64,
        offset: u64,
        seq: Option<u64>,
        reason: &'static str,
        bytes: Bytes,
    ) {
        error!(
            file = %path.display(),
            segment,
            offset,
            seq,
            bytes = bytes.len(),
            reason,
            "spool record is corrupt on disk; it goes to the dead-letter directory and the \
             records after it are still forwarded; check the disk for errors"
        );
        metrics::counter!("weir_spool_corrupt_records_total").increment(1);
        self.corrupt
            .insert((segment, offset), CorruptEntry { seq, reason, bytes });
    }
}

//! [`Spool`], the cloneable handle: `open`, `append`, `ack`, `pending_after` and the
//! waits. Checks limits and hands writes to the writer thread.
//!
//! Must never write to the spool directory itself (the writer owns that) nor block a
//! tokio worker on fsync; reads of older records are plain page-cache reads.

use super::*;

/// Handle to an open spool. Cheap to clone; the writer thread stops, after
/// finishing the writes already queued, when the last clone is dropped (that
/// drop waits for at most one group commit).
#[derive(Clone)]
pub struct Spool {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: Option<mpsc::UnboundedSender<Cmd>>,
    pub(super) queue: Arc<Semaphore>,
    pub(super) writer: Option<JoinHandle<()>>,
    pub(super) incarnation: String,
    // Held for the flock; released on drop, after the writer stopped.
    pub(super) _lock: File,
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

impl Spool {
    /// Opens (creating if needed) the spool in `config.dir`, recovering what a
    /// previous process left, and starts the writer thread. Does blocking I/O
    /// proportional to the spool size; call it before serving or from
    /// `spawn_blocking`.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        Self::open_with_syncer(config, Box::new(Fsync))
    }

    /// [`Spool::open`] with the writer's fsyncs going through `syncer`.
    pub(super) fn open_with_syncer(
        config: SpoolConfig,
        syncer: Box<dyn Syncer>,
    ) -> Result<Spool, SpoolError> {
        validate(&config)?;
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| io_error("creating spool directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        // Before recovery, so a damaged file stops `open` before anything changes.
        let incarnation = load_or_create_incarnation(&dir)?;
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
            corrupt_found: watch::channel(()).0,
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
            syncer,
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
                incarnation,
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
        self.queue(payload).await?.durable().await
    }

    /// Hands `payload` to the writer and returns once it is queued, not yet stored:
    /// payloads queued one after the other get increasing sequence numbers, so a caller
    /// can keep several batches in flight in order and wait for each with
    /// [`Queued::durable`]. Fails like [`Spool::append`].
    pub async fn queue(&self, payload: Bytes) -> Result<Queued, SpoolError> {
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
        Ok(Queued { done })
    }

    /// Marks `seq` as delivered to a core node. Idempotent; acks may come in
    /// any order. Frees the segment file once all its records are acked and it
    /// is no longer the one being appended to.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let mut st = self.inner.shared.lock();
        let Some(entry) = st.index.remove(&seq) else {
            if seq >= st.next_seq {
                return Err(SpoolError::UnknownSeq {
                    seq,
                    next_seq: st.next_seq,
                });
            }
            // Already acked, or corrupt (resolved with `resolve_corrupt`).
            return Ok(());
        };
        st.pending_bytes -= u64::from(entry.len);
        if entry.cached.is_some() {
            st.cache_bytes -= u64::from(entry.len);
        }
        self.release(&mut st, entry.segment, Some(seq))
    }

    /// Counts one record of `segment` as done: wakes whoever waits for `seq`,
    /// logs the ack and frees the segment once nothing in it is left.
    fn release(&self, st: &mut State, segment: u64, seq: Option<u64>) -> Result<(), SpoolError> {
        let tx = self.inner.tx.as_ref().ok_or(SpoolError::WriterStopped)?;
        let active = st.active;
        let condemned = match st.segments.get_mut(&segment) {
            Some(seg) => {
                seg.unacked -= 1;
                seg.unacked == 0 && segment != active
            }
            None => false,
        };
        if condemned && let Some(seg) = st.segments.remove(&segment) {
            // Counted as free now: the writer unlinks it before it writes the
            // next group commit, so disk use overshoots by at most this file for
            // that moment.
            st.used -= seg.size;
        }
        if let Some(seq) = seq {
            for waiter in st.ack_waiters.remove(&seq).into_iter().flatten() {
                let _ = waiter.send(());
            }
        }
        // Sent under the lock so the writer sees Ack before Delete for a segment.
        let sent = seq.is_none_or(|seq| tx.send(Cmd::Ack { segment, seq }).is_ok())
            && (!condemned || tx.send(Cmd::Delete { segment }).is_ok());
        if sent {
            Ok(())
        } else {
            Err(SpoolError::WriterStopped)
        }
    }

    /// Corrupt records found on disk and not yet resolved, in (segment, offset)
    /// order. They are never returned by `pending_after`.
    pub fn corrupt_records(&self) -> Vec<CorruptRecord> {
        let st = self.inner.shared.lock();
        st.corrupt
            .iter()
            .map(|(&(segment, offset), c)| CorruptRecord {
                segment,
                offset,
                seq: c.seq,
                reason: c.reason.to_owned(),
                bytes: c.bytes.clone(),
            })
            .collect()
    }

    /// Drops a corrupt record from the spool, like an ack: call it once its bytes
    /// are kept elsewhere (the dead-letter directory). Idempotent. A record with a
    /// known seq is acked in the ack log and stays resolved across restarts; one
    /// without is found again by the next `open` while its segment file exists.
    pub fn resolve_corrupt(&self, record: &CorruptRecord) -> Result<(), SpoolError> {
        let mut st = self.inner.shared.lock();
        let Some(entry) = st.corrupt.remove(&(record.segment, record.offset)) else {
            return Ok(());
        };
        self.release(&mut st, record.segment, entry.seq)
    }

    /// Resolves once at least one unresolved corrupt record exists.
    pub async fn wait_for_corrupt(&self) {
        let shared = &self.inner.shared;
        let mut found = shared.corrupt_found.subscribe();
        loop {
            found.borrow_and_update();
            if !shared.lock().corrupt.is_empty() {
                return;
            }
            if found.changed().await.is_err() {
                return std::future::pending().await;
            }
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
        let mut corrupt = Vec::new();
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
                corrupt.push((pos, path, offset, Bytes::from(buf)));
                continue;
            }
            buf.drain(..RECORD_HEADER_BYTES as usize);
            out[pos].payload = Bytes::from(buf);
        }
        if !corrupt.is_empty() {
            // Set aside rather than returned as an error: an error here would end
            // every forwarder session at this record, and the records behind it
            // would never be sent.
            let mut st = shared.lock();
            for (pos, path, offset, bytes) in corrupt.into_iter().rev() {
                let seq = out.remove(pos).seq;
                let Some(entry) = st.index.remove(&seq) else {
                    // Acked meanwhile: nothing left to set aside.
                    continue;
                };
                st.pending_bytes -= u64::from(entry.len);
                // Still counted in its segment's `unacked`: it moves, it is not acked.
                st.set_aside_corrupt(
                    &path,
                    entry.segment,
                    offset,
                    Some(seq),
                    "checksum mismatch",
                    bytes,
                );
            }
            drop(st);
            shared.corrupt_found.send_replace(());
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

    /// The spool's incarnation id, 32 lowercase hex digits (128 random bits), fixed
    /// for the life of the spool directory. Part of the batch id with the sequence
    /// number, which restarts at 0 when the spool is wiped or replaced.
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
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
            corrupt_records: st.corrupt.len() as u64,
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

pub(super) fn first_after(after: Option<u64>) -> Option<u64> {
    match after {
        None => Some(0),
        Some(a) => a.checked_add(1),
    }
}

/// A payload handed to the spool's writer ([`Spool::queue`]).
#[must_use = "the payload is stored only when `durable` says so"]
pub struct Queued {
    done: oneshot::Receiver<Result<u64, SpoolError>>,
}

impl Queued {
    /// Waits until the payload is fsync'd; its sequence number.
    pub async fn durable(self) -> Result<u64, SpoolError> {
        self.done.await.map_err(|_| SpoolError::WriterStopped)?
    }
}

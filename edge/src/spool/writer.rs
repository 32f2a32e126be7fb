//! The writer thread: the only code that writes to segment files, ack logs and the
//! reservation file, and deletes segments. Batches concurrent appends into one group
//! commit sharing one fdatasync.
//!
//! Must never reply `Ok` to an append before the fsync covering its record returned, and
//! never publish a record to readers before that either.

use super::*;

/// What makes a written record durable. The writer calls it for every fdatasync of a
/// segment and every fsync of the directory after a segment was created; the real one
/// is [`Fsync`]. A seam so a test can record the order of writes, syncs and replies
/// and fail when an append could return before the sync covering its record.
pub(super) trait Syncer: Send + 'static {
    /// Called after `file` got bytes appended, before any append in them may return.
    fn sync_data(&mut self, file: &File) -> io::Result<()>;
    /// Called after a segment file was created in `dir`, before its records count.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Called with every buffer appended to a segment, before it is written; only for
    /// observers, the default does nothing.
    fn before_write(&mut self, _buf: &[u8]) {}
}

/// The production [`Syncer`]: fdatasync for segments, fsync for the directory.
pub(super) struct Fsync;

impl Syncer for Fsync {
    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        // fdatasync also persists the grown file size, which is all the metadata a
        // reader needs.
        file.sync_data()
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|d| d.sync_all())
    }
}

pub(super) enum Cmd {
    Append(AppendReq),
    Ack { segment: u64, seq: u64 },
    Delete { segment: u64 },
}

pub(super) struct AppendReq {
    pub(super) payload: Bytes,
    pub(super) reservation: Reservation,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) reply: oneshot::Sender<Result<u64, SpoolError>>,
}

pub(super) struct Active {
    pub(super) base: u64,
    /// Bytes in the file (written, not necessarily published yet).
    pub(super) size: u64,
    pub(super) file: File,
}

/// Owns every write to the spool directory: segment appends, ack logs and
/// deletions. Runs on its own thread so fsync never blocks the runtime.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::UnboundedReceiver<Cmd>,
    pub(super) active: Active,
    /// Set after a failed write: the next record goes to a fresh file so an
    /// fd whose writeback error was already reported is never trusted again.
    pub(super) must_roll: bool,
    pub(super) next_seq: u64,
    /// Durable in the reservation file: seqs below it may be handed out
    /// without touching that file again.
    pub(super) seq_limit: u64,
    pub(super) ack_files: HashMap<u64, File>,
    pub(super) ack_buf: BTreeMap<u64, Vec<u8>>,
    pub(super) syncer: Box<dyn Syncer>,
}

/// Where one record of a group commit went.
pub(super) struct Placed {
    pub(super) seq: u64,
    pub(super) segment: u64,
    pub(super) offset: u64,
}

/// Bookkeeping of one group commit, needed to publish or roll it back.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) placed: Vec<Placed>,
    /// Segments written to, with their size before this commit.
    pub(super) touched: Vec<(u64, u64)>,
    pub(super) created: Vec<u64>,
    pub(super) rolled_away: Vec<u64>,
    pub(super) fsyncs: u64,
    pub(super) seq_reservations: u64,
}

impl Writer {
    pub(super) fn run(mut self) {
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
            self.syncer
                .sync_dir(&dir)
                .map_err(|e| io_error("syncing spool directory", &dir, e))?;
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
        self.syncer.before_write(buf);
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
        self.syncer
            .sync_data(&self.active.file)
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

//! Rebuilds the spool's state from the directory on open: reads the reservation, scans
//! every segment, drops acknowledged records, truncates torn tails, removes leftovers.
//!
//! Runs once, before the writer thread exists. Must never hand out a state whose
//! `next_seq` is below a sequence number that may already have been used.

use super::*;

pub(super) struct Recovered {
    pub(super) state: State,
    pub(super) active: Active,
    pub(super) next_seq: u64,
    /// Stored reservation limit; 0 when there was no reservation file.
    pub(super) seq_limit: u64,
}

pub(super) fn recover(config: &SpoolConfig) -> Result<Recovered, SpoolError> {
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
            _ if name == LOCK_FILE
                || name == SEQ_RESERVATION_FILE
                || name == INCARNATION_FILE
                || name == DEAD_LETTER_DIR => {}
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
        corrupt: BTreeMap::new(),
    };
    let mut highest: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let acked = if ack_logs.contains(&base) {
            read_acks(&ack_path(dir, base))
        } else {
            HashSet::new()
        };
        let data = fs::read(&path).map_err(|e| io_error("reading segment", &path, e))?;
        let scan = scan_segment_bytes(&data, base, bases.get(i + 1).copied(), stored_limit);
        let mut unacked = 0;
        for rec in &scan.records {
            highest = Some(rec.seq);
            if acked.contains(&rec.seq) {
                continue;
            }
            unacked += 1;
            let len = u64::from(rec.len);
            st.pending_bytes += len;
            // Oldest first: the forwarder sends those first. Copied out so the
            // cache never pins the whole segment buffer.
            let cached = if st.cache_bytes + len <= cache_budget {
                st.cache_bytes += len;
                let start = (rec.offset + RECORD_HEADER_BYTES) as usize;
                Some(Bytes::copy_from_slice(
                    &data[start..start + rec.len as usize],
                ))
            } else {
                None
            };
            st.index.insert(
                rec.seq,
                Entry {
                    segment: base,
                    offset: rec.offset,
                    len: rec.len,
                    cached,
                },
            );
        }
        for region in &scan.corrupt {
            if let Some(seq) = region.seq {
                // Its number was handed out: new batches must not get it again.
                highest = highest.max(Some(seq));
                if acked.contains(&seq) {
                    // Dead-lettered (or delivered) before; nothing left to do.
                    continue;
                }
            }
            unacked += 1;
            let start = region.offset as usize;
            let bytes = Bytes::copy_from_slice(&data[start..start + region.len as usize]);
            st.set_aside_corrupt(&path, base, region.offset, region.seq, region.reason, bytes);
        }
        let valid_len = scan.kept_len(data.len() as u64);
        if let Some(torn) = &scan.torn_tail {
            warn!(
                file = %path.display(),
                offset = torn.offset,
                reason = torn.reason,
                dropped_bytes = torn.len,
                kept_records = scan.records.len(),
                "spool segment has a torn tail from an interrupted write, truncating it"
            );
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    f.set_len(valid_len)?;
                    f.sync_all()
                })
                .map_err(|e| io_error("truncating torn tail of segment", &path, e))?;
        }
        st.used += valid_len;
        st.segments.insert(
            base,
            SegMeta {
                size: valid_len,
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
        corrupt_records = st.corrupt.len(),
        "spool opened"
    );
    Ok(Recovered {
        state: st,
        active,
        next_seq,
        seq_limit: stored_limit.unwrap_or(0),
    })
}

/// What an ack log holds: the acked seqs and how much of it was damaged.
#[derive(Debug, Default)]
pub(super) struct AckLog {
    pub(super) acked: HashSet<u64>,
    pub(super) bad_entries: usize,
    pub(super) trailing_bytes: usize,
}

/// Reads an ack log; a missing one acks nothing. Read-only.
pub(super) fn read_ack_log(path: &Path) -> io::Result<AckLog> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AckLog::default()),
        Err(e) => return Err(e),
    };
    let mut log = AckLog {
        trailing_bytes: data.len() % ACK_ENTRY_BYTES,
        ..AckLog::default()
    };
    for chunk in data.chunks_exact(ACK_ENTRY_BYTES) {
        match decode_ack(chunk) {
            Some(seq) => {
                log.acked.insert(seq);
            }
            None => log.bad_entries += 1,
        }
    }
    Ok(log)
}

pub(super) fn read_acks(path: &Path) -> HashSet<u64> {
    let log = match read_ack_log(path) {
        Ok(log) => log,
        Err(e) => {
            // Without the acks the segment is resent, which is safe.
            warn!(file = %path.display(), error = %e, "could not read spool ack log, its batches will be resent");
            return HashSet::new();
        }
    };
    // Unsynced ack logs can lose a tail or hold zeros after a power loss; the
    // affected batches are resent.
    if log.bad_entries > 0 || log.trailing_bytes > 0 {
        warn!(
            file = %path.display(),
            bad_entries = log.bad_entries,
            trailing_bytes = log.trailing_bytes,
            "spool ack log has damaged entries, those batches will be resent"
        );
    }
    log.acked
}

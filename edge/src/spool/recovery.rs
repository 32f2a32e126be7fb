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

pub(super) struct ScannedRecord {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) payload: Vec<u8>,
}

/// Valid records of one segment; `valid_len` is where the intact prefix ends.
pub(super) struct Scan {
    pub(super) records: Vec<ScannedRecord>,
    pub(super) valid_len: u64,
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

pub(super) fn read_acks(path: &Path) -> HashSet<u64> {
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
pub(super) fn scan_segment(path: &Path, base: u64, next_base: Option<u64>) -> Result<Scan, SpoolError> {
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

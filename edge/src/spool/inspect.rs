//! Read-only report of a spool directory for operators (`weir-edge spool inspect` and
//! `spool fsck`): segments, pending, acked and corrupt records, torn tails, damaged files.
//!
//! Must never write, truncate or lock anything in the directory: `inspect` may run next
//! to a live edge (then a record being written may show as a torn tail), and `fsck`
//! takes the lock itself and repairs only through `Spool::open`.

use super::*;

/// What `inspect` found in a spool directory.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub dir: PathBuf,
    /// `None` when the file is missing (a spool never opened by this version) or damaged
    /// (then `problems` says so).
    pub incarnation: Option<String>,
    /// Stored sequence reservation limit, `None` when missing or damaged.
    pub seq_reservation: Option<u64>,
    pub segments: Vec<SegmentInspection>,
    /// Intact records in all segments, and how many of them are acked / pending.
    pub records: u64,
    pub acked: u64,
    pub pending: u64,
    pub pending_bytes: u64,
    pub corrupt: Vec<CorruptInspection>,
    /// Damaged files that stop the spool from opening, in words.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentInspection {
    pub base: u64,
    pub bytes: u64,
    pub records: u64,
    pub acked: u64,
    pub pending: u64,
    pub corrupt: u64,
    /// Bytes at the end of the last segment from an interrupted write; `open` cuts them.
    pub torn_tail_bytes: u64,
    /// Ack-log entries that failed their checksum; those batches are sent again.
    pub damaged_ack_entries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CorruptInspection {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    pub seq: Option<u64>,
    pub reason: String,
    /// Its seq is in the ack log: dead-lettered (or delivered) already.
    pub acked: bool,
    /// Set by the caller that knows the dead-letter directory.
    pub dead_lettered: bool,
}

impl CorruptInspection {
    /// Still needs to be dead-lettered.
    pub fn unresolved(&self) -> bool {
        !self.acked && !self.dead_lettered
    }
}

impl Inspection {
    /// Nothing damaged that `fsck --repair` (or the next start of the edge) would
    /// still have to handle, and nothing that stops the spool from opening.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
            && self.segments.iter().all(|s| s.torn_tail_bytes == 0)
            && !self.corrupt.iter().any(CorruptInspection::unresolved)
    }
}

/// Reads the spool in `dir` without changing or locking anything.
pub fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let mut problems = Vec::new();
    let incarnation = read_incarnation(dir).unwrap_or_else(|e| {
        problems.push(e.to_string());
        None
    });
    let seq_reservation = read_seq_limit(dir).unwrap_or_else(|e| {
        problems.push(e.to_string());
        None
    });
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("listing spool directory", dir, e))? {
        let entry = entry.map_err(|e| io_error("listing spool directory", dir, e))?;
        if let Some((base, SEGMENT_EXT)) = entry.file_name().to_str().and_then(parse_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut report = Inspection {
        dir: dir.to_path_buf(),
        incarnation,
        seq_reservation,
        segments: Vec::new(),
        records: 0,
        acked: 0,
        pending: 0,
        pending_bytes: 0,
        corrupt: Vec::new(),
        problems,
    };
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let data = match fs::read(&path) {
            Ok(data) => data,
            // Deleted by a live edge between listing and reading.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("reading segment", &path, e)),
        };
        let acks = read_ack_log(&ack_path(dir, base))
            .map_err(|e| io_error("reading ack log", &ack_path(dir, base), e))?;
        let scan = scan_segment_bytes(&data, base, bases.get(i + 1).copied(), seq_reservation);
        let mut seg = SegmentInspection {
            base,
            bytes: data.len() as u64,
            records: scan.records.len() as u64,
            acked: 0,
            pending: 0,
            corrupt: scan.corrupt.len() as u64,
            torn_tail_bytes: scan.torn_tail.as_ref().map_or(0, |t| t.len),
            damaged_ack_entries: acks.bad_entries as u64,
        };
        for rec in &scan.records {
            if acks.acked.contains(&rec.seq) {
                seg.acked += 1;
            } else {
                seg.pending += 1;
                report.pending_bytes += u64::from(rec.len);
            }
        }
        for region in scan.corrupt {
            report.corrupt.push(CorruptInspection {
                segment: base,
                offset: region.offset,
                bytes: region.len,
                seq: region.seq,
                reason: region.reason.to_owned(),
                acked: region.seq.is_some_and(|seq| acks.acked.contains(&seq)),
                dead_lettered: false,
            });
        }
        report.records += seg.records;
        report.acked += seg.acked;
        report.pending += seg.pending;
        report.segments.push(seg);
    }
    Ok(report)
}

/// [`inspect`] while holding the spool's lock, so no edge runs meanwhile; fails with
/// [`SpoolError::Locked`] when one does.
pub fn inspect_locked(dir: &Path) -> Result<Inspection, SpoolError> {
    if !dir.is_dir() {
        return Err(SpoolError::InvalidConfig {
            reason: format!("spool directory {} does not exist", dir.display()),
        });
    }
    let _lock = lock_dir(dir)?;
    inspect(dir)
}

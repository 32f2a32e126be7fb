//! Classifies the bytes of one segment file into intact records, corrupt records and a
//! torn tail, for recovery and for the read-only `spool inspect` / `fsck`.
//!
//! Pure: it works on bytes already read and must never touch a file, log, or decide
//! what happens to what it found. Its one judgement is torn versus corrupt:
//!
//! * a corrupt record is damage to bytes that were once durable. Anything that fails
//!   validation but has an intact record after it, anything damaged in a segment that
//!   is not the last one (older segments were fsynced whole before the next was
//!   created), and a whole record with a bad checksum at the end of the last segment.
//!   Those bytes may belong to a batch a client was told is stored, so they are kept and
//!   handed on (dead-lettered), and the records after them are still delivered.
//! * a torn tail is the end of the last segment cut short by a crash mid-write: a
//!   header or payload running past the end of the file, or bytes without a record
//!   magic (a filesystem may show zeros there). Nothing in it was acknowledged to anyone.
//!
//! A whole record at the end of the last segment with a bad checksum may also be a torn
//! write (pages of it reached the disk, some not); it is treated as corrupt anyway:
//! a spurious dead letter is recoverable, a dropped acknowledged batch is not.

use super::*;

/// An intact record: header at `offset`, payload `len` bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IntactRecord {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

/// Bytes `offset..offset + len` that hold no intact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CorruptRegion {
    pub(super) offset: u64,
    pub(super) len: u64,
    /// The seq from the region's header when it can be trusted: the region is exactly
    /// one record and its seq lies strictly between its intact neighbours', so it can be
    /// no other record's number.
    pub(super) seq: Option<u64>,
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TornTail {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) reason: &'static str,
}

#[derive(Debug, Default)]
pub(super) struct SegmentScan {
    pub(super) records: Vec<IntactRecord>,
    pub(super) corrupt: Vec<CorruptRegion>,
    pub(super) torn_tail: Option<TornTail>,
}

impl SegmentScan {
    /// Length the file keeps: everything but a torn tail.
    pub(super) fn kept_len(&self, file_len: u64) -> u64 {
        self.torn_tail.as_ref().map_or(file_len, |t| t.offset)
    }
}

/// Scans the segment with first seq `base` whose bytes are `data`. `next_base` is the
/// base of the following segment (`None` for the last one), which every seq here is
/// below; `seq_limit` is the stored reservation, which bounds the seqs of the last one.
pub(super) fn scan_segment_bytes(
    data: &[u8],
    base: u64,
    next_base: Option<u64>,
    seq_limit: Option<u64>,
) -> SegmentScan {
    let last = next_base.is_none();
    let mut scan = SegmentScan::default();
    let mut offset = 0usize;
    let mut prev: Option<u64> = None;
    while offset < data.len() {
        let lo = prev.map_or(base, |p| p.saturating_add(1));
        let reason = match check_record(data, offset, lo, next_base) {
            Ok(h) => {
                scan.records.push(IntactRecord {
                    seq: h.seq,
                    offset: offset as u64,
                    len: h.len,
                });
                prev = Some(h.seq);
                offset += RECORD_HEADER_BYTES as usize + h.len as usize;
                continue;
            }
            Err(reason) => reason,
        };
        let whole = whole_record_len(data, offset);
        let next = find_next_record(data, offset + 1, lo, next_base);
        // Exactly one record when its own length lands at the end or on another
        // record's magic (intact or not) before the next intact one.
        let one_record = whole.filter(|&len| {
            let end = offset + len;
            end == data.len() || (has_magic(data, end) && next.is_none_or(|(n, _)| end <= n))
        });
        // Its seq can be no other record's when it lies between its neighbours'.
        let hi = match next {
            Some((_, next_seq)) => Some(next_seq),
            // The highest seq a last segment can hold is below the reservation;
            // without one (older spools) only the very next seq is certain.
            None if last => Some(seq_limit.unwrap_or(lo.saturating_add(1))),
            None => next_base,
        };
        match (one_record, next) {
            (Some(len), _) => {
                let seq = trusted_seq(data, offset, lo, hi);
                prev = seq.or(prev);
                scan.corrupt.push(region(offset, len, seq, reason));
                offset += len;
            }
            (None, Some((next, _))) => {
                scan.corrupt
                    .push(region(offset, next - offset, None, reason));
                offset = next;
            }
            // A whole record followed by a torn one.
            (None, None) if last && whole.is_some() => {
                let len = whole.expect("checked");
                scan.corrupt.push(region(
                    offset,
                    len,
                    trusted_seq(data, offset, lo, hi),
                    reason,
                ));
                offset += len;
            }
            (None, None) if last => {
                scan.torn_tail = Some(TornTail {
                    offset: offset as u64,
                    len: (data.len() - offset) as u64,
                    reason,
                });
                break;
            }
            (None, None) => {
                scan.corrupt
                    .push(region(offset, data.len() - offset, None, reason));
                break;
            }
        }
    }
    scan
}

fn region(offset: usize, len: usize, seq: Option<u64>, reason: &'static str) -> CorruptRegion {
    CorruptRegion {
        offset: offset as u64,
        len: len as u64,
        seq,
        reason,
    }
}

/// Length of the record at `offset` if its header has the magic and its payload fits
/// in `data`, whatever its checksum says.
fn whole_record_len(data: &[u8], offset: usize) -> Option<usize> {
    let h = header_at(data, offset)?;
    let len = RECORD_HEADER_BYTES as usize + h.len as usize;
    (h.magic == RECORD_MAGIC && len <= data.len() - offset).then_some(len)
}

fn has_magic(data: &[u8], offset: usize) -> bool {
    data.get(offset..offset + 4) == Some(&RECORD_MAGIC.to_le_bytes()[..])
}

fn trusted_seq(data: &[u8], offset: usize, lo: u64, hi: Option<u64>) -> Option<u64> {
    let seq = header_at(data, offset)?.seq;
    (seq >= lo && hi.is_none_or(|hi| seq < hi)).then_some(seq)
}

/// First offset at or after `from` holding an intact record with a seq in
/// `lo..next_base`, with that seq.
fn find_next_record(
    data: &[u8],
    from: usize,
    lo: u64,
    next_base: Option<u64>,
) -> Option<(usize, u64)> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut at = from;
    while at + RECORD_HEADER_BYTES as usize <= data.len() {
        let hit = data[at..].windows(4).position(|w| w == magic)?;
        at += hit;
        if let Ok(h) = check_record(data, at, lo, next_base) {
            return Some((at, h.seq));
        }
        at += 1;
    }
    None
}

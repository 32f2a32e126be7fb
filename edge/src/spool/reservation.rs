//! The `seq-reservation` file: the durable high-water mark of sequence numbers handed
//! out, so a number is never reused after a crash, corruption or restart.
//!
//! Must never write the file in place: it is replaced whole (tmp, fsync, rename, directory
//! fsync), and a damaged one is reported, never guessed around.

use super::*;

pub(super) fn encode_seq_limit(limit: u64) -> [u8; SEQ_RESERVATION_BYTES] {
    let mut buf = [0u8; SEQ_RESERVATION_BYTES];
    buf[..4].copy_from_slice(&SEQ_RESERVATION_MAGIC.to_le_bytes());
    buf[4..12].copy_from_slice(&limit.to_le_bytes());
    let crc = crc32c::crc32c(&buf[..12]);
    buf[12..].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// The stored reservation limit, `None` if there is no reservation file.
pub(super) fn read_seq_limit(dir: &Path) -> Result<Option<u64>, SpoolError> {
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
pub(super) fn store_seq_limit(dir: &Path, limit: u64) -> Result<(), SpoolError> {
    replace_durably(
        dir,
        SEQ_RESERVATION_TMP,
        SEQ_RESERVATION_FILE,
        &encode_seq_limit(limit),
    )
}

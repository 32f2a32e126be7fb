//! Byte layout of one segment record (`magic | len | seq | crc | payload`) and of one
//! ack-log entry (`seq | crc`), see the format table in the module above.
//!
//! Pure encoding and decoding: it must never do I/O or decide what to do with a record
//! that fails validation; recovery and the reader decide that.

use super::*;

pub(super) fn encode_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
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

pub(super) struct Header {
    pub(super) magic: u32,
    pub(super) len: u32,
    pub(super) seq: u64,
    pub(super) crc: u32,
}

pub(super) fn decode_header(h: &[u8; RECORD_HEADER_BYTES as usize]) -> Header {
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

pub(super) fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..16]), payload)
}

pub(super) fn encode_ack(buf: &mut Vec<u8>, seq: u64) {
    let bytes = seq.to_le_bytes();
    buf.extend_from_slice(&bytes);
    buf.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
}

/// The header at `offset` of `data`, if a whole header fits there.
pub(super) fn header_at(data: &[u8], offset: usize) -> Option<Header> {
    let raw = data.get(offset..offset.checked_add(RECORD_HEADER_BYTES as usize)?)?;
    Some(decode_header(raw.try_into().expect("header-sized slice")))
}

/// Checks that an intact record starts at `offset` of `data` whose seq lies in
/// `lo..hi` (`hi` open when `None`); returns its header, or why not.
pub(super) fn check_record(
    data: &[u8],
    offset: usize,
    lo: u64,
    hi: Option<u64>,
) -> Result<Header, &'static str> {
    let Some(h) = header_at(data, offset) else {
        return Err("torn record header");
    };
    if h.magic != RECORD_MAGIC {
        return Err("bad record magic");
    }
    let body = offset + RECORD_HEADER_BYTES as usize;
    if h.len as usize > data.len() - body {
        return Err("torn record payload");
    }
    if h.seq < lo || hi.is_some_and(|hi| h.seq >= hi) {
        return Err("sequence number out of order");
    }
    let payload = &data[body..body + h.len as usize];
    if record_crc(&data[offset..body], payload) != h.crc {
        return Err("checksum mismatch");
    }
    Ok(h)
}

/// Decodes one ack-log entry; `None` when its checksum does not match.
pub(super) fn decode_ack(entry: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = entry.get(..8)?.try_into().ok()?;
    let crc = u32::from_le_bytes(entry.get(8..12)?.try_into().ok()?);
    (crc32c::crc32c(&seq) == crc).then(|| u64::from_le_bytes(seq))
}

//! The batch format inside a spool record: `u64 BE n_events | wire payload (zstd JSON)`.
//!
//! Owns only the framing of the event count in front of the payload, which ingest writes
//! and the forwarder and dead-letter directory read. It must never look inside the wire
//! payload: the record layer stays opaque to it, and decoding events is the core's job.

use bytes::{BufMut, Bytes, BytesMut};

/// A spooled batch: `u64 BE n_events | wire payload (zstd JSON)`. The event count travels
/// in the frame header; keeping it here saves decoding the payload to forward it.
pub fn encode_spooled(n_events: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + payload.len());
    out.put_u64(n_events);
    out.put_slice(payload);
    out.freeze()
}

/// Splits a spooled batch into its event count and wire payload.
pub fn decode_spooled(spooled: &Bytes) -> Option<(u64, Bytes)> {
    let n = u64::from_be_bytes(spooled.get(..8)?.try_into().ok()?);
    Some((n, spooled.slice(8..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_roundtrip() {
        let spooled = encode_spooled(42, b"payload");
        assert_eq!(
            decode_spooled(&spooled),
            Some((42, Bytes::from_static(b"payload")))
        );
        assert_eq!(decode_spooled(&Bytes::from_static(b"short")), None);
    }
}

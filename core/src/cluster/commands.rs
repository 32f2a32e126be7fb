//! The Global commands this node writes about segments, built in one place so that the
//! digest and reparse register and record copies alike.

use weir_global::{Cmd, Command, Location, SegmentInfo};
use weir_segment::WrittenSegment;

/// `add_copy`: `node` holds a copy of the segment whose bytes hash to `blake3`.
pub fn node_copy(segment_id: &str, blake3: &str, node: &str, issuer: &str) -> Command {
    Command::new(
        format!("copy:{segment_id}:{node}"),
        issuer,
        Cmd::AddCopy { segment_id: segment_id.to_owned(), location: Location::Node(node.to_owned()), verified_blake3: blake3.to_owned() },
    )
}

/// A written file's entry in Global, covering `[offset_start, offset_end)`.
pub fn segment_info(written: &WrittenSegment, offset_start: u64, offset_end: u64) -> SegmentInfo {
    SegmentInfo {
        segment_id: written.segment_id.clone(),
        partition: written.partition as u32,
        offset_start,
        offset_end,
        n_events: written.n_events,
        repositories: written.repositories.clone(),
        min_ts_ms: written.min_timestamp_ms.unwrap_or(0),
        max_ts_ms: written.max_timestamp_ms.unwrap_or(0),
        bytes: written.bytes,
        blake3: written.blake3_hex.clone(),
    }
}

//! The Global commands this node writes about segments, built in one place so that the
//! digest and reparse register and record copies alike.

use weir_global::{Cmd, Command, Location, SegmentInfo};
use weir_segment::WrittenSegment;

/// A suffix that makes a command id unique per attempt: a retry of one attempt re-sends
/// the same command (same id, recognised by Global), while a later attempt of the same
/// change (a copy removed, then added again) is a new command, not mistaken for the old.
pub fn attempt() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seed = format!("{}:{}:{:?}", std::process::id(), now.as_nanos(), std::thread::current().id());
    blake3::hash(seed.as_bytes()).to_hex()[..12].to_owned()
}

/// `add_copy`: this node (`node`, on its disk `disk`) holds a verified copy of the segment
/// whose bytes hash to `blake3`. Only `node` itself may say so.
pub fn node_copy(segment_id: &str, blake3: &str, node: &str, disk: &str) -> Command {
    Command::new(
        format!("copy:{segment_id}:{node}:{disk}:{}", attempt()),
        node,
        Cmd::AddCopy { segment_id: segment_id.to_owned(), location: Location::node(node, disk), verified_blake3: blake3.to_owned() },
    )
}

/// `remove_copy`: the copy at `location` is gone or bad, as seen by `issuer`.
pub fn remove_copy(segment_id: &str, location: Location, issuer: &str, reason: &str) -> Command {
    Command::new(
        format!("uncopy:{segment_id}:{}", attempt()),
        issuer,
        Cmd::RemoveCopy { segment_id: segment_id.to_owned(), location, reason: reason.to_owned() },
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

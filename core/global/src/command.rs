//! The command records of the Global topic: a versioned envelope around one change.
//!
//! A record is JSON: `{ "v": 1, "id": "<command id>", "node": "<issuer>", "cmd": { "type": ..., ... } }`.
//! The version is part of the contract: a node that meets a version it does not know must
//! stop applying (every later command may depend on it), never skip it, or its state would
//! silently diverge from the nodes that understood it. A record of a known version that
//! does not parse is skipped by every node of that version alike, so it is a rejection.

use serde::{Deserialize, Serialize};

/// The only envelope version this build writes and applies.
pub const VERSION: u32 = 1;

/// One change to Global, as written to the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Envelope version, [`VERSION`].
    pub v: u32,
    /// Chosen by the issuer, unique per change: a retried write of the same change keeps
    /// its id, so the second copy is recognised (see `Rejection::DuplicateCommand`).
    pub id: String,
    /// The node that wrote the record.
    pub node: String,
    pub cmd: Cmd,
}

impl Command {
    /// A command of the current version.
    pub fn new(id: impl Into<String>, node: impl Into<String>, cmd: Cmd) -> Command {
        Command { v: VERSION, id: id.into(), node: node.into(), cmd }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, integers and enums: serialising it cannot fail.
        serde_json::to_vec(self).expect("a Command always serialises")
    }

    /// Parses a record. An unknown version is [`DecodeError::UnsupportedVersion`] (stop),
    /// anything else unreadable is [`DecodeError::Malformed`] (skip, as every node does).
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: Option<u32>,
        }
        // The version first, on its own: a newer envelope may not parse as this one.
        let version: Version = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        match version.v {
            Some(VERSION) => serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string())),
            Some(v) => Err(DecodeError::UnsupportedVersion(v)),
            None => Err(DecodeError::Malformed("no envelope version `v`".into())),
        }
    }
}

/// Why a record is not a command this build can apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("Global command of envelope version {0}; this node applies version {VERSION} only: upgrade it")]
    UnsupportedVersion(u32),
    #[error("malformed Global command: {0}")]
    Malformed(String),
}

/// What a command changes, with the precondition [`crate::State::apply`] checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cmd {
    /// A node says it is alive and where to reach it. Precondition: `node_id` is the
    /// issuer, and `at_ms` (the issuer's clock, carried as data) is not older than the
    /// heartbeat stored, so a delayed record cannot roll a node back. `digest` says whether
    /// the node takes ingest partitions to digest (false: an ingest-only core); records
    /// written before the field existed read as true.
    NodeHeartbeat {
        node_id: String,
        addresses: Vec<String>,
        zone: String,
        at_ms: u64,
        #[serde(default = "crate::state::yes")]
        digest: bool,
    },
    /// `node_id` becomes the digest owner of `partition`. Precondition: `epoch` is the
    /// partition's epoch + 1, so of two claims for the same epoch the first in the log wins.
    ClaimPartition { partition: u32, node_id: String, epoch: u64 },
    /// The owner of `segment.partition` stored its offsets `[offset_start, offset_end)` in
    /// a segment. Preconditions: `epoch` is the partition's current epoch and the issuer
    /// its owner (a paused former owner is refused), the id is new, and `offset_start` is
    /// the partition's `next_offset` (no gap, no overlap). Then `next_offset = offset_end`
    /// and `dedup` (the batch parts the segment stored) enters the partition's dedup state.
    RegisterSegment { epoch: u64, segment: SegmentInfo, dedup: Vec<StoredBatches> },
    /// A verified copy of a segment exists at `location`. Precondition (I6): the segment
    /// exists and `verified_blake3` is its hash; the location is not counted yet.
    AddCopy { segment_id: String, location: Location, verified_blake3: String },
    /// Re-parse: `new` replaces `old` in one step. Preconditions: every `old` exists (once),
    /// every `new` id is new, and per partition the `new` tile exactly the offsets the
    /// `old` covered. Copies of `old` are not carried over: the new files need their own.
    ReplaceSegments { old: Vec<String>, new: Vec<SegmentInfo> },
}

/// A segment as registered: one contiguous Kafka offset range of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentInfo {
    pub segment_id: String,
    pub partition: u32,
    /// First Kafka offset covered.
    pub offset_start: u64,
    /// One past the last offset covered (Kafka's `next_offset` after the segment's last
    /// record). The range includes offsets without a stored event (duplicates dropped,
    /// transaction markers): the segment says those offsets are done.
    pub offset_end: u64,
    pub n_events: u64,
    pub repositories: Vec<String>,
    /// Event-time range; both 0 for a segment without events.
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub bytes: u64,
    /// blake3 of the file, 64 lowercase hex digits.
    pub blake3: String,
}

impl SegmentInfo {
    /// Whether the segment may hold events of `repository` with an event time in
    /// `[start_ms, end_ms]` (both inclusive): the one filter the read path, the query
    /// executor and reparse share ([`crate::State::segments_overlapping`]).
    pub fn may_hold(&self, repository: &str, start_ms: i64, end_ms: i64) -> bool {
        self.n_events > 0 && self.repositories.iter().any(|r| r == repository) && self.min_ts_ms <= end_ms && self.max_ts_ms >= start_ms
    }
}

/// Where a verified copy of a segment is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// On a core node's disk.
    Node(String),
    /// In the bucket, under this key.
    Bucket(String),
}

/// The batch parts of one edge incarnation that a segment stored (compact: whole batches
/// as seq ranges, split batches part by part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBatches {
    pub edge_id: String,
    pub incarnation: String,
    /// Batches whose every part is stored (in this segment or before), as half-open
    /// `[start, end)` seq ranges.
    #[serde(default)]
    pub whole: Vec<(u64, u64)>,
    /// Single parts of batches of several parts.
    #[serde(default)]
    pub parts: Vec<StoredPart>,
}

/// Part `part` of `parts` of batch `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPart {
    pub seq: u64,
    pub part: u32,
    pub parts: u32,
}

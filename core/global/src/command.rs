//! The command records of the Global topic: a versioned envelope around one change.
//!
//! A record is JSON: `{ "v": 2, "id": "<command id>", "node": "<issuer>", "cmd": { "type": ..., ... } }`.
//! The version is part of the contract: a node that meets a version it does not know must
//! stop applying (every later command may depend on it), never skip it, or its state would
//! silently diverge from the nodes that understood it. A record of a known version that
//! does not parse is skipped by every node of that version alike, so it is a rejection.
//!
//! Versions: 1 (addresses as a list, node copies without a disk, reparse registering its
//! new segments in the swap) is still read, so a log written by older nodes replays, and
//! [`crate::State::apply`] checks it by its own rules ([`v1`]); this build writes 2 only.

use serde::{Deserialize, Serialize};

/// The envelope version this build writes.
pub const VERSION: u32 = 2;
/// The oldest envelope version this build still applies.
pub const OLDEST_VERSION: u32 = 1;

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

    /// Parses a record of any version this build applies (a version 1 record comes back
    /// in today's shapes, with `v: 1`). An unknown version is
    /// [`DecodeError::UnsupportedVersion`] (stop), anything else unreadable is
    /// [`DecodeError::Malformed`] (skip, as every node does).
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: Option<u32>,
        }
        // The version first, on its own: a newer envelope may not parse as this one.
        let version: Version = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        match version.v {
            Some(VERSION) => serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string())),
            Some(1) => serde_json::from_slice::<v1::Command>(bytes).map(v1::Command::upgrade).map_err(|e| DecodeError::Malformed(e.to_string())),
            Some(v) => Err(DecodeError::UnsupportedVersion(v)),
            None => Err(DecodeError::Malformed("no envelope version `v`".into())),
        }
    }
}

/// Why a record is not a command this build can apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("Global command of envelope version {0}; this node applies versions {OLDEST_VERSION} to {VERSION}: upgrade it")]
    UnsupportedVersion(u32),
    #[error("malformed Global command: {0}")]
    Malformed(String),
}

/// What a command changes, with the precondition [`crate::State::apply`] checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cmd {
    /// A node says it is alive, where to reach it and which disk it has. Precondition:
    /// `node_id` is the issuer, and `at_ms` (the issuer's clock, carried as data) is not
    /// older than the heartbeat stored, so a delayed record cannot roll a node back.
    /// `digest` says whether the node takes ingest partitions to digest (false: an
    /// ingest-only core). `disk_id` names the data directory (created with it): a node
    /// whose disk was wiped comes back with a new one, and its old copies stop counting.
    NodeHeartbeat {
        node_id: String,
        addresses: Addresses,
        zone: String,
        at_ms: u64,
        digest: bool,
        disk_id: String,
    },
    /// `node_id` becomes the digest owner of `partition`. Precondition: `epoch` is the
    /// partition's epoch + 1, so of two claims for the same epoch the first in the log wins.
    ClaimPartition { partition: u32, node_id: String, epoch: u64 },
    /// The owner of `segment.partition` stored its offsets `[offset_start, offset_end)` in
    /// a segment. Preconditions: `epoch` is the partition's current epoch and the issuer
    /// its owner (a paused former owner is refused), the id is new, and `offset_start` is
    /// the partition's `next_offset` (no gap, no overlap). Then `next_offset = offset_end`,
    /// and `dedup` (the batch parts the segment stored) enters the partition's dedup state
    /// and stays on the segment, so a re-digest of its range stores exactly those parts.
    RegisterSegment { epoch: u64, segment: SegmentInfo, dedup: Vec<StoredBatches> },
    /// A verified copy of a segment exists at `location`. Preconditions (I6): the segment
    /// exists (registered or staged) and `verified_blake3` is its hash; the location is not
    /// counted yet; a node copy comes from that node, known to Global, on its current disk.
    AddCopy { segment_id: String, location: Location, verified_blake3: String },
    /// The copy at `location` is gone or bad (`reason` says which). Preconditions: the copy
    /// is recorded; a node copy is removed by that node.
    RemoveCopy { segment_id: String, location: Location, reason: String },
    /// A segment that replaces others once it is safe (reparse, merge): known to Global
    /// so that copies can be recorded for it, but not yet part of its partition (queries
    /// and the safe offset ignore it). Preconditions: a new id, a well-formed segment.
    /// `stored` are the batch parts it holds (those of the segments it will replace).
    StageSegment { segment: SegmentInfo, stored: Vec<StoredBatches> },
    /// A staged segment that will not be swapped in (its writer gave up) leaves Global;
    /// its copies go with it. Precondition: it is staged.
    DropStaged { segment_id: String },
    /// Staged `new` replace registered `old` in one step. Preconditions (the fence): every
    /// `old` is registered (once), every `new` is staged (once) with at least one copy, and
    /// per partition the `new` tile exactly the offsets the `old` covered. A replacement
    /// that lost a race (an old segment already replaced) is refused whole. The new
    /// segments keep the copies recorded while they were staged.
    ///
    /// Below the partition's truncation Kafka no longer holds the records: there every new
    /// segment must itself be safe under the storage rule (live as of `at_ms`, the
    /// issuer's clock), so a swap never makes truncated data less safe.
    ReplaceSegments {
        old: Vec<String>,
        new: Vec<String>,
        #[serde(default)]
        at_ms: u64,
    },
    /// The owner of a partition re-digested the range of a lost segment `old` (no copy
    /// reachable) from Kafka into the staged segment `new`, storing exactly the batch parts
    /// `old` stored: `new` takes its place. Preconditions (the fence): `epoch` is current
    /// and the issuer its owner; `old` is registered; `new` is staged with at least one copy
    /// and covers exactly `old`'s offsets of the same partition.
    SupersedeSegment { epoch: u64, old: String, new: String },
    /// How the cluster makes a segment safe (I5); every node decides by this one rule.
    /// Precondition: a replication factor of at least 1 and a node timeout.
    SetStorageRule { rule: StorageRule },
    /// The owner of `partition` may have Kafka delete its records below `offset`.
    /// Preconditions: a storage rule is set; `epoch` is current and the issuer its owner;
    /// `offset` is above the last truncation and at most the safe offset, computed here
    /// with the nodes live as of `at_ms` (the issuer's clock); `segments` are exactly the
    /// segments between the last truncation and `offset`, the ones that justify it. Only
    /// once this applied does the owner call Kafka's DeleteRecords.
    Truncate { partition: u32, epoch: u64, offset: u64, at_ms: u64, segments: Vec<String> },
    /// The Kafka cluster and topics this Global describes, by the ids Kafka gave them.
    /// Precondition: none bound yet (the first node to start binds them). A node that
    /// finds other ids than the bound ones (a topic deleted and created again) stops.
    BindTopics { topics: Topics },
    /// Partition `partition`'s log starts at `offset`: the records below were never
    /// digested and are gone from Kafka (a topic whose retention ran before the first
    /// digest, or a loss an operator accepts). Audited: the issuer and `reason` stay in
    /// the log and the state. Precondition: `offset` above the current log start. The
    /// resume point moves up to it if below; segments below it stay.
    SetLogStart {
        partition: u32,
        offset: u64,
        reason: String,
    },
    /// Version 1's re-parse: `new` registered in the swap itself, without copies. Read from
    /// old logs only; never written.
    #[serde(skip)]
    ReplaceSegmentsV1 { old: Vec<String>, new: Vec<SegmentInfo> },
}

/// The Kafka cluster and topics a Global describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    pub cluster_id: String,
    pub ingest_topic: String,
    pub ingest_topic_id: String,
    pub global_topic: String,
    pub global_topic_id: String,
}

/// Where segments are made safe (`storage.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    /// Local disks: a segment is safe with verified copies on `replication_factor` distinct
    /// live nodes, in as many distinct zones as the live nodes' zones allow.
    Local,
    /// One verified upload to the bucket makes a segment safe; disks are caches.
    Bucket,
    /// Some nodes keep copies on their disks, and everything is uploaded: the upload makes
    /// it safe.
    Hybrid,
}

/// The storage rule, in Global so that every node computes the same safe offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRule {
    pub mode: StorageMode,
    /// Local mode: distinct live nodes with a verified copy.
    pub replication_factor: u32,
    /// A node counts as live while its last heartbeat is at most this old.
    pub node_timeout_ms: u64,
}

impl StorageRule {
    /// Why this rule cannot keep every segment through the loss of one node, if it cannot.
    pub fn weakness(&self) -> Option<String> {
        match self.mode {
            StorageMode::Local if self.replication_factor < 2 => Some(format!(
                "storage.mode = \"local\" with replication_factor = {}: a segment is \"safe\" on one disk, so losing that disk after Kafka truncated loses its events; set replication_factor >= 2 or use a bucket",
                self.replication_factor
            )),
            _ => None,
        }
    }
}

/// Where a node is reached. Named, not positional, so an address added later cannot be
/// mistaken for another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    /// The HTTP listener (ingest, read API), `host:port`.
    pub http: String,
    /// The QUIC listener (edges, peers), `host:port`; none for a core without `[quic]`,
    /// which then cannot serve its segments to other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<String>,
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
    /// On a core node's disk: the node and the disk id it had when it verified the copy.
    /// Copies recorded by version 1 have an empty disk id: they locate a file, but never
    /// count as safe.
    Node { node: String, disk: String },
    /// In the bucket, under this key.
    Bucket(String),
}

impl Location {
    pub fn node(node: impl Into<String>, disk: impl Into<String>) -> Location {
        Location::Node { node: node.into(), disk: disk.into() }
    }

    /// The node holding a node copy.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Location::Node { node, .. } => Some(node),
            Location::Bucket(_) => None,
        }
    }
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

/// Version 1 of the records, as older nodes wrote them: decoded into today's shapes.
pub mod v1 {
    use serde::Deserialize;

    use super::{Addresses, SegmentInfo, StoredBatches};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Command {
        id: String,
        node: String,
        cmd: Cmd,
        #[allow(dead_code, reason = "read to be refused if missing; the caller matched it")]
        v: u32,
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    enum Cmd {
        NodeHeartbeat {
            node_id: String,
            /// `[http, quic]`, the QUIC one missing without `[quic]`.
            addresses: Vec<String>,
            zone: String,
            at_ms: u64,
            #[serde(default = "crate::state::yes")]
            digest: bool,
        },
        ClaimPartition { partition: u32, node_id: String, epoch: u64 },
        RegisterSegment { epoch: u64, segment: SegmentInfo, dedup: Vec<StoredBatches> },
        AddCopy { segment_id: String, location: Location, verified_blake3: String },
        ReplaceSegments { old: Vec<String>, new: Vec<SegmentInfo> },
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Location {
        Node(String),
        Bucket(String),
    }

    impl Command {
        pub(super) fn upgrade(self) -> super::Command {
            let cmd = match self.cmd {
                Cmd::NodeHeartbeat { node_id, addresses, zone, at_ms, digest } => {
                    let mut addresses = addresses.into_iter();
                    let addresses = Addresses { http: addresses.next().unwrap_or_default(), quic: addresses.next() };
                    // No disk id: the node's copies of version 1 never count as safe.
                    super::Cmd::NodeHeartbeat { node_id, addresses, zone, at_ms, digest, disk_id: String::new() }
                }
                Cmd::ClaimPartition { partition, node_id, epoch } => super::Cmd::ClaimPartition { partition, node_id, epoch },
                Cmd::RegisterSegment { epoch, segment, dedup } => super::Cmd::RegisterSegment { epoch, segment, dedup },
                Cmd::AddCopy { segment_id, location, verified_blake3 } => {
                    let location = match location {
                        Location::Node(node) => super::Location::Node { node, disk: String::new() },
                        Location::Bucket(key) => super::Location::Bucket(key),
                    };
                    super::Cmd::AddCopy { segment_id, location, verified_blake3 }
                }
                Cmd::ReplaceSegments { old, new } => super::Cmd::ReplaceSegmentsV1 { old, new },
            };
            super::Command { v: 1, id: self.id, node: self.node, cmd }
        }
    }
}

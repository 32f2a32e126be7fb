//! The state every node derives from the Global topic, and the one function that changes
//! it: [`State::apply`]. Every precondition is checked against this state alone, before
//! anything changes, so a command either applies whole or not at all, identically on
//! every node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use weir_proto::wire::BatchId;

use crate::command::{Addresses, Cmd, Command, DecodeError, Location, OLDEST_VERSION, SegmentInfo, StorageMode, StorageRule, StoredBatches, Topics, VERSION};
use crate::dedup::Dedup;

/// Command ids remembered to recognise a retried copy of a command.
pub const RECENT_COMMANDS: usize = 10_000;

/// Cluster metadata as of `applied_offset`. Every map is ordered, so two states built from
/// the same log serialise to the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    applied_offset: Option<u64>,
    nodes: BTreeMap<String, Node>,
    partitions: BTreeMap<u32, Partition>,
    segments: BTreeMap<String, Segment>,
    /// Command id → (offset, applied) of the last [`RECENT_COMMANDS`] commands, and their order.
    recent: BTreeMap<String, (u64, bool)>,
    recent_order: VecDeque<String>,
    /// The Kafka cluster and topics this state describes, once bound.
    topics: Option<Topics>,
    /// How segments become safe; none until a node sets it (then nothing is safe).
    rule: Option<StorageRule>,
}

/// A core node as it last announced itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub addresses: Addresses,
    pub zone: String,
    /// The node's own clock at its last heartbeat (data, not this node's clock).
    pub heartbeat_ms: u64,
    /// Whether the node digests (takes ingest partitions); false for an ingest-only core.
    pub digest: bool,
    /// The id of the node's data directory; empty for a node last heard of by version 1.
    pub disk_id: String,
}

/// serde's default for flags that were always on before they existed.
pub(crate) fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Partition {
    owner: Option<String>,
    epoch: u64,
    next_offset: u64,
    /// offset_start → segment id.
    segments: BTreeMap<u64, String>,
    dedup: Dedup,
    /// The first offset of the partition's log that Weir accounts for (0 unless set).
    log_start: u64,
    /// Who set it and why (`set_log_start`).
    log_start_reason: Option<String>,
    /// Kafka may delete the partition's records below this offset (`truncate`).
    truncated: u64,
}

/// Who digests a partition, under which epoch, and where it resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub owner: Option<String>,
    pub epoch: u64,
    /// The first Kafka offset no registered segment covers: the resume point.
    pub next_offset: u64,
    /// Where the partition's segments start (`set_log_start`; 0 unless set).
    pub log_start: u64,
    /// The last truncation: Kafka may have deleted the records below it.
    pub truncated: u64,
}

/// A registered (or staged) segment and its verified copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub info: SegmentInfo,
    pub copies: BTreeSet<Location>,
    /// The batch parts the segment holds: what a re-digest of its offsets must store.
    pub stored: Vec<StoredBatches>,
    /// Staged: waiting to replace registered segments, not yet part of its partition.
    pub staged: bool,
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Rejected { reason: Rejection },
}

/// Why a command did not apply: its precondition did not hold in the state it met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("command {id} was already in the log at offset {first_offset} (applied: {first_applied})")]
    DuplicateCommand { id: String, first_offset: u64, first_applied: bool },
    #[error("{issuer} cannot send a heartbeat for {node_id}")]
    HeartbeatForOtherNode { issuer: String, node_id: String },
    #[error("heartbeat of {node_id} at {at_ms} ms is older than the stored one at {stored_ms} ms")]
    StaleHeartbeat { node_id: String, at_ms: u64, stored_ms: u64 },
    #[error("claim of partition {partition} for epoch {epoch} refused: its epoch is {current}, a claim must name {}", current + 1)]
    EpochNotNext { partition: u32, epoch: u64, current: u64 },
    #[error("partition {partition} is at epoch {current}, the command was issued under epoch {epoch}")]
    StaleEpoch { partition: u32, epoch: u64, current: u64 },
    #[error("{issuer} does not own partition {partition} (owner: {owner:?})")]
    NotOwner { partition: u32, issuer: String, owner: Option<String> },
    #[error("segment {segment_id} already exists")]
    SegmentExists { segment_id: String },
    #[error("segment {segment_id} appears twice in the command")]
    SegmentRepeated { segment_id: String },
    #[error("segment {segment_id} is not registered")]
    UnknownSegment { segment_id: String },
    #[error("segment {segment_id}: empty or inverted offset range [{start}, {end})")]
    EmptyRange { segment_id: String, start: u64, end: u64 },
    #[error("segment {segment_id}: event time range {min_ts_ms}..{max_ts_ms} is inverted")]
    InvertedTimeRange { segment_id: String, min_ts_ms: i64, max_ts_ms: i64 },
    #[error("segment {segment_id}: {blake3:?} is not a blake3 hash (64 lowercase hex digits)")]
    NotAHash { segment_id: String, blake3: String },
    #[error("partition {partition}: segment starts at {offset_start}, leaving a gap after next offset {next_offset}")]
    Gap { partition: u32, offset_start: u64, next_offset: u64 },
    #[error("partition {partition}: segment starts at {offset_start}, overlapping what is stored below next offset {next_offset}")]
    Overlap { partition: u32, offset_start: u64, next_offset: u64 },
    #[error("segment {segment_id}: invalid dedup entry: {detail}")]
    InvalidDedup { segment_id: String, detail: String },
    #[error("copy of segment {segment_id} at {location:?} has blake3 {got}, the segment's is {expected}")]
    HashMismatch { segment_id: String, location: Location, expected: String, got: String },
    #[error("segment {segment_id} already has a copy at {location:?}")]
    CopyExists { segment_id: String, location: Location },
    #[error("a replacement needs at least one old segment")]
    EmptyReplacement,
    #[error("{issuer} cannot record or remove a copy on node {node}: only that node can")]
    CopyOfOtherNode { issuer: String, node: String },
    #[error("node {node} is not known to Global (no heartbeat)")]
    UnknownNode { node: String },
    #[error("copy on node {node} names disk {disk:?}, the node's current disk is {current:?}")]
    StaleDisk { node: String, disk: String, current: String },
    #[error("heartbeat of {node_id} names no disk id")]
    NoDiskId { node_id: String },
    #[error("segment {segment_id} has no copy at {location:?}")]
    NoSuchCopy { segment_id: String, location: Location },
    #[error("segment {segment_id} is not staged")]
    NotStaged { segment_id: String },
    #[error("segment {segment_id} is staged, not registered: it cannot be replaced")]
    StagedNotRegistered { segment_id: String },
    #[error("staged segment {segment_id} has no verified copy yet: swapping it in would lose its offsets")]
    NoCopy { segment_id: String },
    #[error("partition {partition}: the new segments cover {new:?}, the old ones {old:?}")]
    RangesDiffer {
        partition: u32,
        old: Vec<(u64, u64)>,
        new: Vec<(u64, u64)>,
    },
    #[error("Global already describes {bound:?}")]
    TopicsBound { bound: Box<Topics> },
    #[error("no storage rule is set: nothing is safe yet")]
    NoStorageRule,
    #[error("invalid storage rule: {0}")]
    InvalidRule(String),
    #[error("partition {partition}: truncation to {offset} is not above the last one, {truncated}")]
    TruncationNotForward { partition: u32, offset: u64, truncated: u64 },
    #[error("partition {partition}: truncation to {offset} passes the safe offset {safe}")]
    NotSafe { partition: u32, offset: u64, safe: u64 },
    #[error("partition {partition}: a truncation to {offset} is justified by {expected:?}, the command names {named:?}")]
    WrongJustification { partition: u32, offset: u64, expected: Vec<String>, named: Vec<String> },
    #[error("segment {segment_id} would replace truncated data but is not safe under the storage rule")]
    LessSafe { segment_id: String },
    #[error("partition {partition}: log start {offset} is not above the current {current}")]
    LogStartNotForward {
        partition: u32,
        offset: u64,
        current: u64,
    },
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// A command this state must not apply at all: the caller's bug or a newer log, never
/// a precondition (those are [`Rejection`]s, the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("offset {offset} is not after the last applied offset {applied}: commands apply once, in log order")]
    NotAfter { offset: u64, applied: u64 },
    #[error("Global command of envelope version {0}; this node applies versions {OLDEST_VERSION} to {VERSION}: upgrade it")]
    UnsupportedVersion(u32),
}

impl State {
    /// The offset of the last command applied; `None` before the first.
    pub fn applied_offset(&self) -> Option<u64> {
        self.applied_offset
    }

    /// The offset to consume next.
    pub fn next_offset(&self) -> u64 {
        self.applied_offset.map_or(0, |o| o + 1)
    }

    /// Applies the record at `offset` as it came from the topic: a malformed record is
    /// skipped (rejected) by every node alike; one of an unknown version stops this node.
    pub fn apply_record(&mut self, offset: u64, bytes: &[u8]) -> Result<Outcome, ApplyError> {
        match Command::decode(bytes) {
            Ok(command) => self.apply(offset, &command),
            Err(DecodeError::UnsupportedVersion(v)) => Err(ApplyError::UnsupportedVersion(v)),
            Err(DecodeError::Malformed(why)) => {
                self.advance(offset)?;
                Ok(Outcome::Rejected { reason: Rejection::Malformed(why) })
            }
        }
    }

    /// Applies the command at `offset`. Deterministic: it reads nothing but `self` and
    /// its arguments. A rejected command still advances [`applied_offset`](Self::applied_offset).
    pub fn apply(&mut self, offset: u64, command: &Command) -> Result<Outcome, ApplyError> {
        if !(OLDEST_VERSION..=VERSION).contains(&command.v) {
            return Err(ApplyError::UnsupportedVersion(command.v));
        }
        self.advance(offset)?;
        if let Some(&(first_offset, first_applied)) = self.recent.get(&command.id) {
            let reason = Rejection::DuplicateCommand { id: command.id.clone(), first_offset, first_applied };
            return Ok(Outcome::Rejected { reason });
        }
        let result = self.check(command).map(|()| self.change(offset, command));
        self.remember(offset, &command.id, result.is_ok());
        Ok(match result {
            Ok(()) => Outcome::Applied,
            Err(reason) => Outcome::Rejected { reason },
        })
    }

    fn advance(&mut self, offset: u64) -> Result<(), ApplyError> {
        if let Some(applied) = self.applied_offset
            && offset <= applied
        {
            return Err(ApplyError::NotAfter { offset, applied });
        }
        self.applied_offset = Some(offset);
        Ok(())
    }

    fn remember(&mut self, offset: u64, id: &str, applied: bool) {
        self.recent.insert(id.to_owned(), (offset, applied));
        self.recent_order.push_back(id.to_owned());
        while self.recent_order.len() > RECENT_COMMANDS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Every precondition, without changing anything.
    fn check(&self, command: &Command) -> Result<(), Rejection> {
        match &command.cmd {
            Cmd::NodeHeartbeat { node_id, at_ms, disk_id, .. } => {
                if *node_id != command.node {
                    return Err(Rejection::HeartbeatForOtherNode { issuer: command.node.clone(), node_id: node_id.clone() });
                }
                if command.v >= 2 && disk_id.is_empty() {
                    return Err(Rejection::NoDiskId { node_id: node_id.clone() });
                }
                match self.nodes.get(node_id) {
                    Some(node) if node.heartbeat_ms > *at_ms => {
                        Err(Rejection::StaleHeartbeat { node_id: node_id.clone(), at_ms: *at_ms, stored_ms: node.heartbeat_ms })
                    }
                    _ => Ok(()),
                }
            }
            Cmd::ClaimPartition { partition, epoch, .. } => {
                let current = self.partitions.get(partition).map_or(0, |p| p.epoch);
                if *epoch != current + 1 {
                    return Err(Rejection::EpochNotNext { partition: *partition, epoch: *epoch, current });
                }
                Ok(())
            }
            Cmd::RegisterSegment { epoch, segment, dedup } => {
                let p = segment.partition;
                let part = self.partitions.get(&p).cloned().unwrap_or_default();
                if *epoch != part.epoch {
                    return Err(Rejection::StaleEpoch { partition: p, epoch: *epoch, current: part.epoch });
                }
                if part.owner.as_deref() != Some(command.node.as_str()) {
                    return Err(Rejection::NotOwner { partition: p, issuer: command.node.clone(), owner: part.owner });
                }
                self.check_new_segment(segment)?;
                if segment.offset_start > part.next_offset {
                    return Err(Rejection::Gap { partition: p, offset_start: segment.offset_start, next_offset: part.next_offset });
                }
                if segment.offset_start < part.next_offset {
                    return Err(Rejection::Overlap { partition: p, offset_start: segment.offset_start, next_offset: part.next_offset });
                }
                check_dedup(&segment.segment_id, dedup)
            }
            Cmd::AddCopy { segment_id, location, verified_blake3 } => {
                let segment = self.segments.get(segment_id).ok_or_else(|| Rejection::UnknownSegment { segment_id: segment_id.clone() })?;
                if *verified_blake3 != segment.info.blake3 {
                    return Err(Rejection::HashMismatch {
                        segment_id: segment_id.clone(),
                        location: location.clone(),
                        expected: segment.info.blake3.clone(),
                        got: verified_blake3.clone(),
                    });
                }
                if segment.copies.contains(location) {
                    return Err(Rejection::CopyExists { segment_id: segment_id.clone(), location: location.clone() });
                }
                // Version 1 copies were self-declared; they never count as safe (no disk).
                if command.v >= 2
                    && let Location::Node { node, disk } = location
                {
                    self.check_node_copy(&command.node, node)?;
                    let current = &self.nodes.get(node).expect("checked known").disk_id;
                    if disk != current || disk.is_empty() {
                        return Err(Rejection::StaleDisk { node: node.clone(), disk: disk.clone(), current: current.clone() });
                    }
                }
                Ok(())
            }
            Cmd::RemoveCopy { segment_id, location, .. } => {
                let segment = self.segments.get(segment_id).ok_or_else(|| Rejection::UnknownSegment { segment_id: segment_id.clone() })?;
                if !segment.copies.contains(location) {
                    return Err(Rejection::NoSuchCopy { segment_id: segment_id.clone(), location: location.clone() });
                }
                if let Location::Node { node, .. } = location {
                    self.check_node_copy(&command.node, node)?;
                }
                Ok(())
            }
            Cmd::StageSegment { segment, stored } => {
                self.check_new_segment(segment)?;
                check_dedup(&segment.segment_id, stored)
            }
            Cmd::DropStaged { segment_id } => match self.segments.get(segment_id) {
                Some(segment) if segment.staged => Ok(()),
                Some(_) => Err(Rejection::NotStaged { segment_id: segment_id.clone() }),
                None => Err(Rejection::UnknownSegment { segment_id: segment_id.clone() }),
            },
            Cmd::ReplaceSegments { old, new, at_ms } => {
                let mut seen = BTreeSet::new();
                let mut ranges = Vec::with_capacity(new.len());
                self.check_below_truncation(old, new, *at_ms)?;
                for id in new {
                    if !seen.insert(id.as_str()) {
                        return Err(Rejection::SegmentRepeated { segment_id: id.clone() });
                    }
                    let segment = self.segments.get(id).ok_or_else(|| Rejection::UnknownSegment { segment_id: id.clone() })?;
                    if !segment.staged {
                        return Err(Rejection::NotStaged { segment_id: id.clone() });
                    }
                    if segment.copies.is_empty() {
                        return Err(Rejection::NoCopy { segment_id: id.clone() });
                    }
                    ranges.push(&segment.info);
                }
                self.check_replacement(old, &ranges, &seen)
            }
            Cmd::SupersedeSegment { epoch, old, new } => {
                let new_segment = self.segments.get(new).ok_or_else(|| Rejection::UnknownSegment { segment_id: new.clone() })?;
                let p = new_segment.info.partition;
                let part = self.partitions.get(&p).cloned().unwrap_or_default();
                if *epoch != part.epoch {
                    return Err(Rejection::StaleEpoch { partition: p, epoch: *epoch, current: part.epoch });
                }
                if part.owner.as_deref() != Some(command.node.as_str()) {
                    return Err(Rejection::NotOwner { partition: p, issuer: command.node.clone(), owner: part.owner });
                }
                if !new_segment.staged {
                    return Err(Rejection::NotStaged { segment_id: new.clone() });
                }
                if new_segment.copies.is_empty() {
                    return Err(Rejection::NoCopy { segment_id: new.clone() });
                }
                let old_segment = self.segments.get(old).ok_or_else(|| Rejection::UnknownSegment { segment_id: old.clone() })?;
                if old_segment.staged {
                    return Err(Rejection::StagedNotRegistered { segment_id: old.clone() });
                }
                let (o, n) = (&old_segment.info, &new_segment.info);
                if (o.partition, o.offset_start, o.offset_end) != (n.partition, n.offset_start, n.offset_end) {
                    return Err(Rejection::RangesDiffer { partition: n.partition, old: vec![(o.offset_start, o.offset_end)], new: vec![(n.offset_start, n.offset_end)] });
                }
                Ok(())
            }
            Cmd::SetStorageRule { rule } => {
                if rule.replication_factor == 0 || rule.node_timeout_ms == 0 {
                    return Err(Rejection::InvalidRule(format!("{rule:?}: a replication factor and a node timeout of at least 1")));
                }
                Ok(())
            }
            Cmd::Truncate { partition, epoch, offset, at_ms, segments } => self.check_truncation(command, *partition, *epoch, *offset, *at_ms, segments),
            Cmd::BindTopics { .. } => match &self.topics {
                Some(bound) => Err(Rejection::TopicsBound {
                    bound: Box::new(bound.clone()),
                }),
                None => Ok(()),
            },
            Cmd::SetLogStart {
                partition, offset, ..
            } => {
                let current = self.partitions.get(partition).map_or(0, |p| p.log_start);
                if *offset <= current {
                    return Err(Rejection::LogStartNotForward {
                        partition: *partition,
                        offset: *offset,
                        current,
                    });
                }
                Ok(())
            }
            Cmd::ReplaceSegmentsV1 { old, new } => {
                let mut seen = BTreeSet::new();
                for segment in new {
                    if !seen.insert(segment.segment_id.as_str()) {
                        return Err(Rejection::SegmentRepeated { segment_id: segment.segment_id.clone() });
                    }
                    self.check_new_segment(segment)?;
                }
                self.check_replacement(old, &new.iter().collect::<Vec<_>>(), &seen)
            }
        }
    }

    fn check_new_segment(&self, segment: &SegmentInfo) -> Result<(), Rejection> {
        let id = &segment.segment_id;
        if self.segments.contains_key(id) {
            return Err(Rejection::SegmentExists { segment_id: id.clone() });
        }
        if segment.offset_end <= segment.offset_start {
            return Err(Rejection::EmptyRange { segment_id: id.clone(), start: segment.offset_start, end: segment.offset_end });
        }
        if segment.min_ts_ms > segment.max_ts_ms {
            return Err(Rejection::InvertedTimeRange { segment_id: id.clone(), min_ts_ms: segment.min_ts_ms, max_ts_ms: segment.max_ts_ms });
        }
        if !is_blake3_hex(&segment.blake3) {
            return Err(Rejection::NotAHash { segment_id: id.clone(), blake3: segment.blake3.clone() });
        }
        Ok(())
    }

    /// Whether `node` is live at `at_ms` under `rule` (its last heartbeat recent enough).
    fn live_at(&self, rule: &StorageRule, at_ms: u64) -> impl Fn(&str) -> bool + '_ {
        let timeout = rule.node_timeout_ms;
        move |node| self.is_live(node, at_ms, timeout)
    }

    /// Whether `node`'s last heartbeat is at most `timeout_ms` older than `now_ms` (a clock
    /// the caller passes: the state reads none). The one liveness rule of the cluster.
    pub fn is_live(&self, node: &str, now_ms: u64, timeout_ms: u64) -> bool {
        self.nodes.get(node).is_some_and(|n| n.heartbeat_ms.saturating_add(timeout_ms) >= now_ms)
    }

    fn check_truncation(&self, command: &Command, p: u32, epoch: u64, offset: u64, at_ms: u64, named: &[String]) -> Result<(), Rejection> {
        let rule = self.rule.ok_or(Rejection::NoStorageRule)?;
        let part = self.partitions.get(&p).cloned().unwrap_or_default();
        if epoch != part.epoch {
            return Err(Rejection::StaleEpoch { partition: p, epoch, current: part.epoch });
        }
        if part.owner.as_deref() != Some(command.node.as_str()) {
            return Err(Rejection::NotOwner { partition: p, issuer: command.node.clone(), owner: part.owner });
        }
        if offset <= part.truncated {
            return Err(Rejection::TruncationNotForward { partition: p, offset, truncated: part.truncated });
        }
        let safe = self.safe_offset_under(p, &rule, self.live_at(&rule, at_ms));
        if offset > safe {
            return Err(Rejection::NotSafe { partition: p, offset, safe });
        }
        let expected: Vec<String> = self
            .segments(p)
            .into_iter()
            .filter(|s| s.info.offset_end > part.truncated.max(part.log_start) && s.info.offset_start < offset)
            .map(|s| s.info.segment_id.clone())
            .collect();
        if expected != named {
            return Err(Rejection::WrongJustification { partition: p, offset, expected, named: named.to_vec() });
        }
        Ok(())
    }

    /// Old segments that reach below their partition's truncation may only be replaced by
    /// new ones that are safe themselves.
    fn check_below_truncation(&self, old: &[String], new: &[String], at_ms: u64) -> Result<(), Rejection> {
        let truncated_below = old.iter().filter_map(|id| self.segments.get(id)).any(|s| {
            let truncated = self.partitions.get(&s.info.partition).map_or(0, |p| p.truncated);
            s.info.offset_start < truncated
        });
        if !truncated_below {
            return Ok(());
        }
        let rule = self.rule.ok_or(Rejection::NoStorageRule)?;
        for id in new {
            if let Some(segment) = self.segments.get(id)
                && !self.is_safe(segment, &rule, self.live_at(&rule, at_ms))
            {
                return Err(Rejection::LessSafe { segment_id: id.clone() });
            }
        }
        Ok(())
    }

    /// A node copy of `node` is recorded or removed by `issuer`: that node, known to Global.
    fn check_node_copy(&self, issuer: &str, node: &str) -> Result<(), Rejection> {
        if issuer != node {
            return Err(Rejection::CopyOfOtherNode { issuer: issuer.to_owned(), node: node.to_owned() });
        }
        if !self.nodes.contains_key(node) {
            return Err(Rejection::UnknownNode { node: node.to_owned() });
        }
        Ok(())
    }

    /// `old` are registered segments, once each and none of `new` (whose ids are in
    /// `seen`), and per partition `new` tile exactly what `old` covered.
    fn check_replacement(&self, old: &[String], new: &[&SegmentInfo], seen: &BTreeSet<&str>) -> Result<(), Rejection> {
        if old.is_empty() {
            return Err(Rejection::EmptyReplacement);
        }
        // partition → (old ranges, new ranges)
        let mut ranges: BTreeMap<u32, (Vec<Range>, Vec<Range>)> = BTreeMap::new();
        let mut old_seen = BTreeSet::new();
        for id in old {
            if !old_seen.insert(id.as_str()) || seen.contains(id.as_str()) {
                return Err(Rejection::SegmentRepeated { segment_id: id.clone() });
            }
            let segment = self.segments.get(id).ok_or_else(|| Rejection::UnknownSegment { segment_id: id.clone() })?;
            if segment.staged {
                return Err(Rejection::StagedNotRegistered { segment_id: id.clone() });
            }
            let info = &segment.info;
            ranges.entry(info.partition).or_default().0.push((info.offset_start, info.offset_end));
        }
        for segment in new {
            ranges.entry(segment.partition).or_default().1.push((segment.offset_start, segment.offset_end));
        }
        for (partition, (old, new)) in ranges {
            let (old_cover, new_cover) = (cover(&old), cover(&new));
            // The new ones must not overlap each other (cover() would merge them away).
            let new_total: u64 = new.iter().map(|(s, e)| e - s).sum();
            let cover_total: u64 = new_cover.iter().map(|(s, e)| e - s).sum();
            if old_cover != new_cover || new_total != cover_total {
                let mut new = new;
                new.sort_unstable();
                return Err(Rejection::RangesDiffer { partition, old: old_cover, new });
            }
        }
        Ok(())
    }

    /// Makes the change; [`check`](Self::check) passed.
    fn change(&mut self, offset: u64, command: &Command) {
        match &command.cmd {
            Cmd::NodeHeartbeat { node_id, addresses, zone, at_ms, digest, disk_id } => {
                let node =
                    Node { addresses: addresses.clone(), zone: zone.clone(), heartbeat_ms: *at_ms, digest: *digest, disk_id: disk_id.clone() };
                self.nodes.insert(node_id.clone(), node);
            }
            Cmd::ClaimPartition { partition, node_id, epoch } => {
                let part = self.partitions.entry(*partition).or_default();
                part.owner = Some(node_id.clone());
                part.epoch = *epoch;
            }
            Cmd::RegisterSegment { segment, dedup, .. } => {
                let part = self.partitions.entry(segment.partition).or_default();
                part.next_offset = segment.offset_end;
                part.segments.insert(segment.offset_start, segment.segment_id.clone());
                part.dedup.mark(dedup, offset);
                let stored = Segment { info: segment.clone(), copies: BTreeSet::new(), stored: dedup.clone(), staged: false };
                self.segments.insert(segment.segment_id.clone(), stored);
            }
            Cmd::AddCopy { segment_id, location, .. } => {
                if let Some(segment) = self.segments.get_mut(segment_id) {
                    segment.copies.insert(location.clone());
                }
            }
            Cmd::RemoveCopy { segment_id, location, .. } => {
                if let Some(segment) = self.segments.get_mut(segment_id) {
                    segment.copies.remove(location);
                }
            }
            Cmd::StageSegment { segment, stored } => {
                let staged = Segment { info: segment.clone(), copies: BTreeSet::new(), stored: stored.clone(), staged: true };
                self.segments.insert(segment.segment_id.clone(), staged);
            }
            Cmd::DropStaged { segment_id } => {
                self.segments.remove(segment_id);
            }
            Cmd::ReplaceSegments { old, new, .. } => {
                self.unlink(old);
                for id in new {
                    if let Some(segment) = self.segments.get_mut(id) {
                        segment.staged = false;
                        let part = self.partitions.entry(segment.info.partition).or_default();
                        part.segments.insert(segment.info.offset_start, id.clone());
                    }
                }
            }
            Cmd::BindTopics { topics } => self.topics = Some(topics.clone()),
            Cmd::SetStorageRule { rule } => self.rule = Some(*rule),
            Cmd::SupersedeSegment { old, new, .. } => {
                self.unlink(std::slice::from_ref(old));
                if let Some(segment) = self.segments.get_mut(new) {
                    segment.staged = false;
                    let part = self.partitions.entry(segment.info.partition).or_default();
                    part.segments.insert(segment.info.offset_start, new.clone());
                }
            }
            Cmd::Truncate { partition, offset: to, .. } => {
                if let Some(part) = self.partitions.get_mut(partition) {
                    part.truncated = *to;
                }
            }
            Cmd::SetLogStart {
                partition,
                offset: start,
                reason,
            } => {
                let part = self.partitions.entry(*partition).or_default();
                part.log_start = *start;
                part.next_offset = part.next_offset.max(*start);
                part.log_start_reason = Some(format!(
                    "set by {} at Global offset {offset}: {reason}",
                    command.node
                ));
            }
            Cmd::ReplaceSegmentsV1 { old, new } => {
                // What the old segments held, by partition: version 1 did not say per segment.
                let mut stored: BTreeMap<u32, Vec<StoredBatches>> = BTreeMap::new();
                for id in old {
                    if let Some(segment) = self.segments.get(id) {
                        stored.entry(segment.info.partition).or_default().extend(segment.stored.iter().cloned());
                    }
                }
                self.unlink(old);
                for info in new {
                    let part = self.partitions.entry(info.partition).or_default();
                    part.segments.insert(info.offset_start, info.segment_id.clone());
                    let held = stored.remove(&info.partition).unwrap_or_default();
                    self.segments.insert(info.segment_id.clone(), Segment { info: info.clone(), copies: BTreeSet::new(), stored: held, staged: false });
                }
            }
        }
    }

    /// Removes registered segments from Global and their partitions.
    fn unlink(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(segment) = self.segments.remove(id)
                && let Some(part) = self.partitions.get_mut(&segment.info.partition)
            {
                part.segments.remove(&segment.info.offset_start);
            }
        }
    }

    /// Owner, epoch and next offset of partition `p` (all zero/none before its first claim).
    pub fn partition(&self, p: u32) -> PartitionState {
        self.partitions.get(&p).map_or_else(PartitionState::default, |part| PartitionState {
            owner: part.owner.clone(),
            epoch: part.epoch,
            next_offset: part.next_offset,
            log_start: part.log_start,
            truncated: part.truncated,
        })
    }

    /// Partitions Global knows of.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions.keys().copied()
    }

    /// The segments of partition `p`, in offset order.
    pub fn segments(&self, p: u32) -> Vec<&Segment> {
        self.partitions
            .get(&p)
            .map(|part| part.segments.values().filter_map(|id| self.segments.get(id)).collect())
            .unwrap_or_default()
    }

    /// Every segment that may hold events of `repository` in `[start_ms, end_ms]` (see
    /// [`SegmentInfo::may_hold`]), by partition and offset.
    pub fn segments_overlapping(&self, repository: &str, start_ms: i64, end_ms: i64) -> Vec<&Segment> {
        self.partitions().flat_map(|p| self.segments(p)).filter(|s| s.info.may_hold(repository, start_ms, end_ms)).collect()
    }

    /// Where the digest of `p` resumes: the end of its last registered segment (0 before any).
    pub fn resume_point(&self, p: u32) -> u64 {
        self.partition(p).next_offset
    }

    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.get(id)
    }

    /// Whether `info` is registered (not only staged) with the same bytes: a writer whose
    /// registration was refused asks this before deleting its file, since the refusal may
    /// be of a retry whose first copy applied long ago (beyond the [`RECENT_COMMANDS`] that
    /// recognise a duplicate, and rejected then as stale or overlapping).
    pub fn holds(&self, info: &SegmentInfo) -> bool {
        self.segments.get(&info.segment_id).is_some_and(|s| !s.staged && s.info.blake3 == info.blake3)
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The Kafka cluster and topics this state describes, once a node bound them.
    pub fn topics(&self) -> Option<&Topics> {
        self.topics.as_ref()
    }

    /// Who set partition `p`'s log start, when and why (none unless set).
    pub fn log_start_reason(&self, p: u32) -> Option<&str> {
        self.partitions
            .get(&p)
            .and_then(|part| part.log_start_reason.as_deref())
    }

    /// Whether part `part` of `parts` of `batch` is stored in a registered segment of
    /// partition `p` (see [`crate::dedup`] for what is remembered and for how long).
    pub fn is_stored(&self, p: u32, batch: &BatchId, part: u32, parts: u32) -> bool {
        self.partitions.get(&p).is_some_and(|part_state| part_state.dedup.is_stored(batch, part, parts))
    }

    /// The dedup state of `p`, for the digest to copy and extend with the segment it builds.
    pub fn dedup(&self, p: u32) -> Dedup {
        self.partitions.get(&p).map(|part| part.dedup.clone()).unwrap_or_default()
    }

    /// The nodes whose copy of `segment` counts: on the disk the node announces now (a
    /// wiped node's old copies do not), among `live` ones.
    pub fn counted_node_copies<'a>(&'a self, segment: &'a Segment, live: impl Fn(&str) -> bool + 'a) -> impl Iterator<Item = &'a str> + 'a {
        segment.copies.iter().filter_map(move |location| match location {
            Location::Node { node, disk } if !disk.is_empty() && live(node) && self.nodes.get(node).is_some_and(|n| n.disk_id == *disk) => {
                Some(node.as_str())
            }
            _ => None,
        })
    }

    /// The staged segments (waiting to replace others), in id order.
    pub fn staged(&self) -> impl Iterator<Item = &Segment> + '_ {
        self.segments.values().filter(|s| s.staged)
    }

    /// The storage rule every node decides by (none until a node set it).
    pub fn storage_rule(&self) -> Option<&StorageRule> {
        self.rule.as_ref()
    }

    /// Whether `segment` is safe under `rule` (I5): a verified bucket copy, or in local
    /// mode copies on `replication_factor` distinct `live` nodes' current disks, in as many
    /// distinct zones as the live nodes' zones allow (up to the replication factor).
    pub fn is_safe(&self, segment: &Segment, rule: &StorageRule, live: impl Fn(&str) -> bool) -> bool {
        if segment.copies.iter().any(|l| matches!(l, Location::Bucket(_))) {
            return true;
        }
        if rule.mode != StorageMode::Local {
            return false;
        }
        let holders: BTreeSet<&str> = self.counted_node_copies(segment, &live).collect();
        let zone = |node: &str| self.nodes.get(node).map(|n| n.zone.as_str());
        let held_zones: BTreeSet<_> = holders.iter().filter_map(|n| zone(n)).collect();
        let live_zones: BTreeSet<_> = self.nodes.iter().filter(|(id, _)| live(id)).map(|(_, n)| n.zone.as_str()).collect();
        let wanted_zones = live_zones.len().min(rule.replication_factor as usize);
        holders.len() >= rule.replication_factor as usize && held_zones.len() >= wanted_zones
    }

    /// The offset below which every record of `p` is in safe segments (I5) under the
    /// stored rule (the log start, or the last truncation, while none is set): see
    /// [`State::safe_offset_under`].
    pub fn safe_offset(&self, p: u32, live: impl Fn(&str) -> bool) -> u64 {
        match &self.rule {
            Some(rule) => self.safe_offset_under(p, rule, live),
            None => self.partitions.get(&p).map_or(0, |part| part.log_start.max(part.truncated)),
        }
    }

    /// From the partition's log start (or its last truncation), the end of the longest run
    /// of its segments each safe under `rule` with `live` nodes. Truncation may delete
    /// below it.
    pub fn safe_offset_under(&self, p: u32, rule: &StorageRule, live: impl Fn(&str) -> bool) -> u64 {
        let Some(part) = self.partitions.get(&p) else { return 0 };
        // Below the last truncation was safe when it applied (and Kafka has nothing there).
        let mut safe = part.log_start.max(part.truncated);
        for segment in self.segments(p) {
            if segment.info.offset_end <= safe {
                continue;
            }
            // Segments tile, so each starts where the previous ended.
            if segment.info.offset_start > safe || !self.is_safe(segment, rule, &live) {
                break;
            }
            safe = segment.info.offset_end;
        }
        safe
    }
}

fn check_dedup(segment_id: &str, dedup: &[StoredBatches]) -> Result<(), Rejection> {
    let invalid = |detail: String| Rejection::InvalidDedup { segment_id: segment_id.to_owned(), detail };
    for batches in dedup {
        for &(start, end) in &batches.whole {
            if start >= end {
                return Err(invalid(format!("{}:{}: empty seq range [{start}, {end})", batches.edge_id, batches.incarnation)));
            }
        }
        for p in &batches.parts {
            if p.part >= p.parts {
                return Err(invalid(format!("{}:{}:{}: part {} of {}", batches.edge_id, batches.incarnation, p.seq, p.part, p.parts)));
            }
        }
    }
    Ok(())
}

/// A half-open `[start, end)` offset range.
type Range = (u64, u64);

/// Sorted ranges with overlapping and adjacent ones merged.
fn cover(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

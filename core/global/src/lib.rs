//! Global: the cluster's metadata as a replicated state machine (`DESIGN.md` "Global").
//!
//! Every change is a [`Command`] record on a single-partition Kafka topic; every core
//! node consumes the topic in order and feeds each record to [`State::apply`], so every
//! node holds the same state at the same offset. Each command carries a precondition that
//! `apply` checks against that state alone (a claim names the next epoch; a segment names
//! the current epoch and starts at the partition's `next_offset`; a copy names the
//! segment's hash). Of two conflicting commands the first in the log wins and the second
//! is [`Outcome::Rejected`] with a [`Rejection`] saying why, on every node alike. A writer
//! learns its outcome by waiting until its own record's offset is applied locally. No
//! consensus of our own: Kafka's log order is the only arbiter.
//!
//! Owns: nodes and their heartbeats, per partition the digest owner, its epoch and the
//! next offset to digest (the resume point), the segments that tile each partition's
//! offsets and their verified copies, the deduplication state ([`dedup`]), the safe offset
//! rule, and the local [`Snapshot`].
//!
//! Must never: do I/O in [`State::apply`] or the queries, read a clock (times are data in
//! commands), use randomness or an unordered map whose order could reach the state, or
//! talk to Kafka. The Kafka wiring (producing commands, consuming the topic, waiting for
//! an offset) belongs to the caller; only [`Snapshot::write`]/[`Snapshot::read`] touch
//! files.

pub mod command;
pub mod dedup;
pub mod snapshot;
pub mod state;

pub use command::{Addresses, Cmd, Command, DecodeError, Location, OLDEST_VERSION, SegmentInfo, StorageMode, StorageRule, StoredBatches, StoredPart, Topics, VERSION};
pub use dedup::Dedup;
pub use snapshot::{Snapshot, SnapshotError};
pub use state::{ApplyError, Node, Outcome, PartitionState, RECENT_COMMANDS, Rejection, Segment, State};

#[cfg(test)]
mod tests;

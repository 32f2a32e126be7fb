//! The cluster as this node takes part in it: its view of Global and the way to change it
//! ([`global_log::GlobalLog`]: apply the Global topic to a `weir_global::State`, submit a
//! command and learn its outcome), the commands this node writes ([`commands`]: register
//! a segment, record a copy), its heartbeats ([`heartbeat`]) and who should digest which
//! partition ([`assign`]).
//!
//! Must never decide anything Global decides: every decision is `State::apply`'s,
//! identical on every node; this room only submits and reads. The Kafka side of the
//! Global topic is `kafka::global_topic`.

pub mod assign;
pub mod commands;
pub mod global_log;
pub mod heartbeat;
pub mod rule;
pub mod status;
pub mod topics;

pub use global_log::{GlobalError, GlobalLog};

//! What lies on this node's disk and what may be done to it: the data directory's layout
//! ([`DataDir`], the only owner of paths under `data_dir`), the sweep of files Global does
//! not know ([`sweep`]), the bounded cache of segments fetched for queries ([`fetched`]),
//! the operator's segment tools ([`tools`]: `segments ls|verify|cat`) and reparse
//! ([`reparse`]). Replication, bucket uploads and truncation belong here too.
//!
//! Must never decide what Global holds: it reads Global and submits commands through
//! `cluster`, and never deletes a file Global counts as a copy.

pub mod bucket;
pub mod data_dir;
pub mod fetched;
pub mod reconcile;
pub mod replicate;
pub mod reparse;
pub mod truncate;
pub mod staging;
pub mod sweep;
pub mod tools;

pub use data_dir::DataDir;

//! The read API's integration tests over real segment files and a real local port, one
//! module per area, in one test binary. `bounded_memory` stays a binary of its own: it
//! measures the process's peak RSS, which another test's allocations would move.

#[path = "../common/mod.rs"]
mod common;
mod humiolib;
mod live;
mod read_api;

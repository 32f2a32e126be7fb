//! The plugin host's integration tests against the built plugins (`bash plugins/build.sh`),
//! one module per area, in one test binary: each binary links wasmtime, so one per area
//! cost a link each.

mod cache;
mod common;
mod fixtures;
mod isolation;
mod parsers;
mod registry;
mod reload;
mod sandbox;
mod scaffold;

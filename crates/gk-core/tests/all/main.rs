//! gk-core's integration tests, in one binary (one link instead of one per file, as wasmtime's
//! `tests/all`): one module per area, the helpers they share in `common`.

mod backends;
mod catalog;
mod cluster;
mod common;
mod loader;
mod manager;
mod packages;
mod scheduler;
mod spans;
mod stats_plugin;

//! gk-server's integration tests, in one binary (one link of the whole server instead of one
//! per file, as wasmtime's `tests/all`): one module per area, the helpers they share in
//! `common`. `cargo test -p gk-server --test all <module>::` runs one area (`admin_ui::` is the
//! browser test and the admin list).

mod admin_ui;
mod cli;
mod cluster;
mod common;
mod host_services;
mod init;
mod install;
mod jobs;
mod menus;
mod packages;
mod plugin_content;
mod plugin_routes;
mod rate_limits;
mod serve;
mod templates;
mod tutorial;
mod zero_config;

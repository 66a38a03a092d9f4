//! gk-server: the thin composition layer of GoatKit.
//!
//! It owns the HTTP adapter (axum on hyper), the command line, the server configuration and the
//! adapters that register the WASM and gRPC runtimes into gk-core. It holds no business logic:
//! anything a handler does beyond translating HTTP to a [`gk_core::Manager`] call belongs in
//! gk-core. It is the only crate that depends on every other one; nothing depends on it.
//!
//! Modules depend downwards only, with no cycle: [`router`] composes [`http`] (the JSON API),
//! [`admin`] (the HTML pages) and the plugin routes; neither of those imports the other. Both
//! use the leaves: [`state`] (`AppState`), [`error`] (HTTP errors and the notices' messages),
//! [`request_id`], [`upload`] (multipart plugin files), the cluster view, the log level and the
//! plugin routes' table.

pub mod admin;
pub mod auth;
mod cluster;
mod cluster_view;
pub mod config;
pub mod error;
pub mod http;
mod log_level;
pub mod pages;
mod reload;
pub mod request_id;
mod route_table;
pub mod router;
pub mod runtimes;
mod server;
pub mod state;
pub mod upload;

pub use config::ServeConfig;
pub use server::{RunningServer, ServerError, start};

//! gk-server: the thin composition layer of GoatKit.
//!
//! It owns the HTTP adapter (axum on hyper), the command line, the server configuration and the
//! adapters that register the WASM and gRPC runtimes into gk-core. It holds no business logic:
//! anything a handler does beyond translating HTTP to a [`gk_core::Manager`] call belongs in
//! gk-core. It is the only crate that depends on every other one; nothing depends on it.

pub mod admin;
pub mod auth;
mod cluster;
pub mod config;
pub mod http;
pub mod pages;
mod reload;
pub mod runtimes;
mod server;

pub use config::ServeConfig;
pub use server::{RunningServer, ServerError, start};

//! gk-sandbox: `SandboxedHostApi`, every rule between a plugin and the host.
//!
//! It wraps the real [`gk_sdk::HostApi`] for one plugin and enforces that plugin's
//! [`gk_sdk::ResourcePolicy`] on every call: permission checks, the SQL guard, the URL guard, the
//! config-key blacklist, cache namespacing, email domain scope, plugin-call scope and depth,
//! blocked status, rate limits, usage accounting and live policy updates.
//!
//! It depends on `gk-sdk` only: it does not load (gk-core) or run (gk-wasm, gk-grpc) plugins.
//! The enforcement lands with the sandbox issue; this crate holds its place in the workspace.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

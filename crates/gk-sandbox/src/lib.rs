//! gk-sandbox: [`SandboxedHostApi`], every rule between a plugin and the host, enforced and
//! fail-closed.
//!
//! It wraps the real [`gk_sdk::HostApi`] for one plugin and enforces that plugin's
//! [`gk_sdk::ResourcePolicy`] on every call:
//!
//! - **database**: each statement is parsed with `sqlparser` in the dialect of the database it
//!   goes to; every table it reads or writes at any depth (joins, subqueries, CTEs,
//!   data-modifying CTEs, DML behind `WITH`, `RETURNING`, `SELECT … INTO`, `INSERT … SELECT`,
//!   `UPDATE … FROM`, `DELETE … USING`) is checked against the `db` scope (anchored,
//!   case-insensitive globs; `@name:` entries for named databases); `db_query` runs only reads;
//!   schema changes need write access; statements whose objects cannot be listed (`GRANT`,
//!   `PRAGMA`, `SET`, `ATTACH`, …) are never allowed; only allow-listed SQL functions may be
//!   called; wildcards never cover system catalogs; placeholders are `?` only, one argument
//!   each. What reaches the host is the statement **printed back from the checked syntax
//!   tree** (never the plugin's text), with the policy's [`gk_sdk::TableScope`] for the
//!   database engine to enforce as well. Decisions are cached per query text and policy
//!   version.
//! - **cache**: keys are namespaced `plugin:<name>:<key>`.
//! - **http**: URLs are parsed; only http/https to hosts in scope (see [`url_guard`](crate)).
//! - **email**: one bare recipient whose domain or address is in scope.
//! - **config**: sensitive keys need an explicit config scope entry.
//! - **plugin calls**: target in scope, depth at most [`gk_sdk::MAX_CALL_DEPTH`], the caller
//!   stamped by the sandbox.
//! - **rate limits** (governor; for a whole cluster through a [`SharedLimiter`], with the
//!   local limits as the fallback), **accounting** (lock-free counters) and **live policy updates**
//!   (one atomic pointer swap).
//!
//! It depends on `gk-sdk` only: it does not load (gk-core) or run (gk-wasm, gk-grpc) plugins.

mod config;
mod config_guard;
mod db_rules;
mod email_guard;
mod error;
mod limits;
mod policy;
mod sandbox;
mod scope;
mod shared_limits;
mod sql_functions;
mod sql_guard;
mod stats;
mod url_guard;

pub use config::{
    DEFAULT_DECISION_CACHE_CAPACITY, DEFAULT_MAX_CACHE_KEY_BYTES, DEFAULT_MAX_CACHE_TTL,
    DEFAULT_MAX_CACHE_VALUE_BYTES, SandboxConfig, SqlDialect,
};
pub use config_guard::{SENSITIVE_PREFIXES, SENSITIVE_WORDS};
pub use error::PolicyError;
pub use sandbox::SandboxedHostApi;
pub use shared_limits::{
    Admission, LimitSpec, SHARED_RETRY_INTERVAL, SharedLimitError, SharedLimitStats, SharedLimiter,
};
pub use stats::{SandboxCounters, StatsSnapshot};

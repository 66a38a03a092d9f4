//! gk-core: the platform.
//!
//! Today it owns the production host services in [`host`]: the database through sea-orm
//! (named databases on SQLite, PostgreSQL and MariaDB). The manager, loader, store, cache,
//! HTTP, email, logs, config, i18n, signing, packaging and scheduler land with their issues.
//!
//! It depends on `gk-sdk` and `gk-sandbox` only, and knows runtimes through its own trait.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

mod error;
pub mod host;

pub use error::{CoreError, CoreResult};

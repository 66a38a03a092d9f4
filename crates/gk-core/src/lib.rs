//! gk-core: the platform.
//!
//! Today it owns the production host services in [`host`]: named databases through sea-orm
//! (SQLite, PostgreSQL, MariaDB), the in-memory cache, plugin log rings, configuration values,
//! translations and the email outbox, composed as [`host::ProductionHost`]; and the [`Store`]
//! of plugin state (enabled, policy) in the `sysconfig_*` tables. The manager, loader, Redis
//! cache, outbound HTTP, SMTP, signing, packaging and scheduler land with their issues.
//!
//! It depends on `gk-sdk` and `gk-sandbox` only, and knows runtimes through its own trait.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod discovery;
mod error;
pub mod host;
mod manager;
pub mod packaging;
mod scheduler;
pub mod signing;
mod store;

pub use error::{CoreError, CoreResult};
pub use manager::{Manager, ManagerError, PluginStats};
pub use scheduler::{DEFAULT_JOB_TIMEOUT, JobStats, Scheduler, parse_schedule};
pub use store::{Store, StoreError};

//! gk-core: the platform.
//!
//! It owns:
//! - [`host`]: the production host services a plugin's sandbox wraps — named databases through
//!   sea-orm (SQLite, PostgreSQL, MariaDB), the memory and Redis caches, outbound HTTP, SMTP and
//!   the email outbox, plugin log rings, configuration values and translations, composed as
//!   [`host::ProductionHost`];
//! - the [`Store`] of plugin state (enabled, policy, outbox) in the shared database;
//! - the [`Manager`]: registration with a sandbox built from the stored policy, lazy loading of
//!   [`discovery`]'d plugins through [`discovery::PluginRuntime`]s, enable/disable, policy CRUD,
//!   plugin-to-plugin calls, blue-green replace, stats;
//! - [`signing`] (ed25519), [`packaging`] (ZIP) and the [`Scheduler`].
//!
//! Runtimes plug in through [`discovery::PluginRuntime`]; the [`Loader`] scans the plugins
//! directory and watches it for hot reload.
//!
//! It depends on `gk-sdk` and `gk-sandbox` only, and knows runtimes through its own trait.

pub mod cluster;
pub mod discovery;
mod error;
pub mod host;
mod loader;
mod manager;
pub mod packaging;
pub mod plugin_files;
mod schedule;
mod scheduler;
pub mod signing;
mod store;

pub use error::{CoreError, CoreResult};
pub use loader::{
    DEBOUNCE, InstallError, Lifecycle, Loader, PluginOverview, WatchError, WatchHandle,
};
pub use manager::{
    ChangeListener, LATENCY_BUCKETS_MICROS, LOAD_TIME_SETTINGS, Manager, ManagerError, PluginItem,
    PluginStats, PolicyApplied, RESERVED_PATH_PREFIXES, RESERVED_TEMPLATES, ROUTE_METHODS,
    ROUTE_MIDDLEWARE, StateChange, StoredStateApplied, TranslationConflict, check_link,
};
pub use schedule::{ScheduleError, parse_schedule};
pub use scheduler::{DEFAULT_JOB_TIMEOUT, JobStats, Scheduler};
pub use store::{NodeRecord, Store, StoreError, StoredPackage};

//! gk-core: the platform.
//!
//! It will own the `Manager` (register, enable/disable, lazy loading, blue-green replace, policy
//! CRUD, stats, plugin-to-plugin calls), the `Loader` (discovery and hot reload), the `Store`
//! (sea-orm), the production host API (database, cache, HTTP, email, logs, config, i18n),
//! signing, packaging and the scheduler.
//!
//! It depends on `gk-sdk` and `gk-sandbox` only, and knows runtimes through its own trait.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

//! Settings of the sandbox itself (not of a plugin's policy).

use std::collections::HashMap;
use std::sync::Arc;

use crate::shared_limits::{SharedLimitStats, SharedLimiter, SharedLimits};

/// The SQL dialect of a database, used to parse its queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqlDialect {
    /// Accepts the common syntax of all three (the default).
    #[default]
    Generic,
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
}

/// The default number of SQL decisions remembered per policy version.
pub const DEFAULT_DECISION_CACHE_CAPACITY: usize = 4096;

/// The default largest cache value a plugin may store (1 MiB).
pub const DEFAULT_MAX_CACHE_VALUE_BYTES: usize = 1 << 20;

/// The default longest cache key a plugin may use.
pub const DEFAULT_MAX_CACHE_KEY_BYTES: usize = 512;

/// The default longest cache ttl a plugin may ask for (30 days).
pub const DEFAULT_MAX_CACHE_TTL: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// Settings shared by every sandbox of a host.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Dialect per database name (`default`, `analytics`, …); absent means generic.
    pub sql_dialects: HashMap<String, SqlDialect>,
    /// SQL decisions remembered per policy version; when full, the cache starts over.
    pub decision_cache_capacity: usize,
    /// Largest value `cache_set` accepts.
    pub max_cache_value_bytes: usize,
    /// Longest key the cache functions accept.
    pub max_cache_key_bytes: usize,
    /// Longest ttl `cache_set` accepts.
    pub max_cache_ttl: std::time::Duration,
    /// Tables of the platform itself (lower-cased names) that no scope reaches, `*` and exact
    /// entries included, in any database.
    pub reserved_tables: Vec<String>,
    /// The cluster's rate limiter, when the limits hold for the cluster (see
    /// [`with_shared_limiter`](Self::with_shared_limiter)).
    shared_limits: Option<Arc<SharedLimits>>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            sql_dialects: HashMap::new(),
            decision_cache_capacity: DEFAULT_DECISION_CACHE_CAPACITY,
            max_cache_value_bytes: DEFAULT_MAX_CACHE_VALUE_BYTES,
            max_cache_key_bytes: DEFAULT_MAX_CACHE_KEY_BYTES,
            max_cache_ttl: DEFAULT_MAX_CACHE_TTL,
            reserved_tables: Vec::new(),
            shared_limits: None,
        }
    }
}

impl SandboxConfig {
    /// Sets the dialect of one database.
    #[must_use]
    pub fn with_dialect(mut self, database: impl Into<String>, dialect: SqlDialect) -> Self {
        self.sql_dialects.insert(database.into(), dialect);
        self
    }

    /// Reserves the platform's tables: no scope reaches them.
    #[must_use]
    pub fn with_reserved_tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.reserved_tables
            .extend(tables.into_iter().map(|t| t.as_ref().to_lowercase()));
        self
    }

    /// Judges the rate limits of every host call in `limiter` (one round trip per call, for
    /// every node sharing it), with this node's own limits deciding whenever it does not answer
    /// (see [`SharedLimiter`] for what is logged and counted). Without it the limits are this
    /// node's alone.
    #[must_use]
    pub fn with_shared_limiter(mut self, limiter: Arc<dyn SharedLimiter>) -> Self {
        self.shared_limits = Some(Arc::new(SharedLimits::new(limiter)));
        self
    }

    /// How the shared rate limiter fared (checks, fallbacks, outages), if one is set.
    pub fn shared_limit_stats(&self) -> Option<SharedLimitStats> {
        self.shared_limits.as_deref().map(SharedLimits::stats)
    }

    pub(crate) fn shared_limits(&self) -> Option<&SharedLimits> {
        self.shared_limits.as_deref()
    }

    pub(crate) fn is_reserved(&self, table: &str) -> bool {
        self.reserved_tables.iter().any(|t| t == table)
    }

    pub(crate) fn dialect_of(&self, database: &str) -> SqlDialect {
        self.sql_dialects.get(database).copied().unwrap_or_default()
    }
}

//! Usage accounting: lock-free counters per plugin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Counters of one plugin's host calls. Updated with relaxed atomics: a snapshot taken while
/// calls run may be a few calls behind, never torn within one counter.
#[derive(Debug, Default)]
pub struct SandboxCounters {
    pub(crate) db_queries: AtomicU64,
    pub(crate) db_execs: AtomicU64,
    pub(crate) cache_ops: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    pub(crate) emails: AtomicU64,
    pub(crate) plugin_calls: AtomicU64,
    pub(crate) logs: AtomicU64,
    pub(crate) config_reads: AtomicU64,
    pub(crate) translations: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) limit_fallbacks: AtomicU64,
    pub(crate) last_call_at_ms: AtomicU64,
}

/// A copy of a plugin's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// `db_query` calls that reached the database.
    pub db_queries: u64,
    /// `db_exec` calls that reached the database.
    pub db_execs: u64,
    /// Cache reads, writes and deletes that reached the cache.
    pub cache_ops: u64,
    /// HTTP requests sent.
    pub http_requests: u64,
    /// Emails handed to the mailer.
    pub emails: u64,
    /// Calls into other plugins.
    pub plugin_calls: u64,
    /// Log entries written.
    pub logs: u64,
    /// Configuration reads.
    pub config_reads: u64,
    /// Translations.
    pub translations: u64,
    /// Calls refused by the policy.
    pub denied: u64,
    /// Calls refused by a rate limit.
    pub rate_limited: u64,
    /// Calls the backend failed.
    pub errors: u64,
    /// Rate-limit checks this node's own limits decided because the shared rate limiter did
    /// not answer (0 without one).
    #[serde(default)]
    pub limit_fallbacks: u64,
    /// When the plugin last made a host call (milliseconds since the Unix epoch; 0 = never).
    pub last_call_at_ms: u64,
}

impl SandboxCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_call_at_ms.store(now, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            db_queries: get(&self.db_queries),
            db_execs: get(&self.db_execs),
            cache_ops: get(&self.cache_ops),
            http_requests: get(&self.http_requests),
            emails: get(&self.emails),
            plugin_calls: get(&self.plugin_calls),
            logs: get(&self.logs),
            config_reads: get(&self.config_reads),
            translations: get(&self.translations),
            denied: get(&self.denied),
            rate_limited: get(&self.rate_limited),
            errors: get(&self.errors),
            limit_fallbacks: get(&self.limit_fallbacks),
            last_call_at_ms: get(&self.last_call_at_ms),
        }
    }
}

//! Rate limits shared by the nodes of a cluster: a [`SharedLimiter`] (gk-core's is in Redis)
//! judges all the limits of one host call at once, and the local `governor` limits decide
//! whenever it cannot answer.
//!
//! What happens when the shared limiter fails (its backend is down, slow or answers nonsense):
//! the call is judged by the node's own limits (the same ones as without a shared limiter), so
//! a plugin is never left unlimited; the first failure of an outage is logged at WARN, the
//! first answer after it at INFO, and each call decided locally is counted
//! ([`SharedLimitStats::fallback_checks`], and per plugin
//! [`StatsSnapshot::limit_fallbacks`](crate::StatsSnapshot::limit_fallbacks)). During an outage
//! each node allows the whole limit on its own: N nodes let up to N times the policy through.
//! After a failure the shared limiter is left alone for [`SHARED_RETRY_INTERVAL`], so a dead
//! backend does not add its timeout to every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gk_sdk::{HostError, HostResult};

use crate::stats::SandboxCounters;

/// How long after a failure of the shared limiter calls are judged locally without asking it.
pub const SHARED_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// One rate limit of a call: its name in the policy (`max_calls_per_second`,
/// `max_db_queries_per_min`, `max_http_req_per_min`, `max_emails_per_min`), how many calls it
/// allows per period, and the period. Like the local limits it is a GCRA: `amount` calls at
/// once, then one more every `period / amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    /// The policy field that sets this limit.
    pub name: &'static str,
    /// Calls allowed per period (never 0: a limit of 0 is no limit and is not sent).
    pub amount: u32,
    /// The period the amount is counted over.
    pub period: Duration,
}

/// The shared limiter's answer about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every limit had room; each has counted the call.
    Admitted,
    /// A limit is exhausted; none has counted the call.
    Refused {
        /// The first refused limit's name.
        limit: String,
        /// When that limit has room again.
        retry_after: Duration,
    },
}

/// Why the shared limiter gave no answer. The call is then judged by the local limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedLimitError {
    /// The backend cannot be reached or did not answer in time.
    #[error("shared rate limiter unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something that is not an answer.
    #[error("shared rate limiter gave an unexpected reply: {0}")]
    Protocol(String),
}

/// Rate limits kept for the whole cluster. One call to [`admit`](Self::admit) judges every
/// limit of a host call together (one round trip): all count the call, or none does. Set it
/// with [`SandboxConfig::with_shared_limiter`](crate::SandboxConfig::with_shared_limiter).
///
/// When it fails ([`SharedLimitError`]: its backend down, slow or answering nonsense), the call
/// is judged by the node's own `governor` limits, the same as without a shared limiter, so a
/// plugin is never left unlimited (during an outage N nodes let up to N times the policy
/// through). The first failure of an outage is logged at WARN, the first answer after it at
/// INFO; calls judged locally are counted in
/// [`SharedLimitStats::fallback_checks`] (per host) and
/// [`StatsSnapshot::limit_fallbacks`](crate::StatsSnapshot::limit_fallbacks) (per plugin).
/// After a failure the limiter is not asked for [`SHARED_RETRY_INTERVAL`], so a dead backend
/// does not add its timeout to every call.
#[async_trait]
pub trait SharedLimiter: Send + Sync + std::fmt::Debug {
    /// Counts one call of `plugin` against `limits` (never empty), or says which is exhausted.
    async fn admit(
        &self,
        plugin: &str,
        limits: &[LimitSpec],
    ) -> Result<Admission, SharedLimitError>;
}

/// How the shared limits fared since the host started, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedLimitStats {
    /// Calls the shared limiter judged.
    pub shared_checks: u64,
    /// Calls the local limits judged because the shared limiter did not answer.
    pub fallback_checks: u64,
    /// Outages: times the shared limiter failed after answering (or from the start).
    pub outages: u64,
    /// Whether the shared limiter is failing now (calls are judged locally).
    pub degraded: bool,
}

/// A [`SharedLimiter`] with the state of its outages, shared by every sandbox of a host.
pub(crate) struct SharedLimits {
    limiter: Arc<dyn SharedLimiter>,
    shared_checks: AtomicU64,
    fallback_checks: AtomicU64,
    outages: AtomicU64,
    degraded: AtomicBool,
    /// Milliseconds since `epoch` before which the limiter is not asked (after a failure).
    quiet_until_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("limiter", &self.limiter)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SharedLimits {
    pub(crate) fn new(limiter: Arc<dyn SharedLimiter>) -> Self {
        Self {
            limiter,
            shared_checks: AtomicU64::new(0),
            fallback_checks: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            quiet_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn stats(&self) -> SharedLimitStats {
        SharedLimitStats {
            shared_checks: self.shared_checks.load(Ordering::Relaxed),
            fallback_checks: self.fallback_checks.load(Ordering::Relaxed),
            outages: self.outages.load(Ordering::Relaxed),
            degraded: self.degraded.load(Ordering::Relaxed),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Judges one call of `plugin` against `limits` in the shared limiter, or with `local` when
    /// it does not answer (or failed less than [`SHARED_RETRY_INTERVAL`] ago).
    pub(crate) async fn admit(
        &self,
        plugin: &str,
        limits: &[LimitSpec],
        counters: &SandboxCounters,
        local: impl FnOnce() -> HostResult<()>,
    ) -> HostResult<()> {
        if limits.is_empty() {
            return Ok(());
        }
        if self.now_ms() < self.quiet_until_ms.load(Ordering::Relaxed) {
            return self.fall_back(counters, local);
        }
        match self.limiter.admit(plugin, limits).await {
            Ok(admission) => {
                SandboxCounters::bump(&self.shared_checks);
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "the shared rate limiter answers again: rate limits hold for the cluster"
                    );
                }
                match admission {
                    Admission::Admitted => Ok(()),
                    Admission::Refused { limit, retry_after } => Err(HostError::RateLimited {
                        limit,
                        retry_after: retry_after.max(Duration::from_millis(1)),
                    }),
                }
            }
            Err(error) => {
                self.quiet_until_ms.store(
                    self.now_ms()
                        .saturating_add(SHARED_RETRY_INTERVAL.as_millis() as u64),
                    Ordering::Relaxed,
                );
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    SandboxCounters::bump(&self.outages);
                    tracing::warn!(%error, "the shared rate limiter does not answer: each node applies the rate limits on its own until it does");
                }
                self.fall_back(counters, local)
            }
        }
    }

    fn fall_back(
        &self,
        counters: &SandboxCounters,
        local: impl FnOnce() -> HostResult<()>,
    ) -> HostResult<()> {
        SandboxCounters::bump(&self.fallback_checks);
        SandboxCounters::bump(&counters.limit_fallbacks);
        local()
    }
}

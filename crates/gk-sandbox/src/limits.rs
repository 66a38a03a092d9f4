//! Rate limits, with `governor` (GCRA): a limit of N per second or per minute lets N calls
//! through at once and then one more every 1/N of the period.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use gk_sdk::{HostError, ResourcePolicy};
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::shared_limits::LimitSpec;

/// The period a limit is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Second,
    Minute,
}

/// One limit: its name in the policy, its size, and its state.
struct Limit {
    name: &'static str,
    period: Period,
    amount: NonZeroU32,
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}/{:?}", self.name, self.amount, self.period)
    }
}

impl Limit {
    fn new(name: &'static str, period: Period, amount: NonZeroU32) -> Self {
        let quota = match period {
            Period::Second => Quota::per_second(amount),
            Period::Minute => Quota::per_minute(amount),
        };
        Self {
            name,
            period,
            amount,
            limiter: RateLimiter::direct(quota),
        }
    }

    fn spec(&self) -> LimitSpec {
        LimitSpec {
            name: self.name,
            amount: self.amount.get(),
            period: match self.period {
                Period::Second => Duration::from_secs(1),
                Period::Minute => Duration::from_secs(60),
            },
        }
    }

    fn check(&self) -> Result<(), HostError> {
        self.limiter
            .check()
            .map_err(|not_until| HostError::RateLimited {
                limit: self.name.to_owned(),
                retry_after: not_until
                    .wait_time_from(DefaultClock::default().now())
                    .max(Duration::from_millis(1)),
            })
    }
}

/// The limits of one policy version.
#[derive(Debug, Default)]
pub(crate) struct LimitSet {
    calls: Option<Arc<Limit>>,
    db: Option<Arc<Limit>>,
    http: Option<Arc<Limit>>,
    email: Option<Arc<Limit>>,
}

impl LimitSet {
    /// Builds the limits of `policy`. A limit whose size did not change since `previous` keeps its
    /// state, so updating an unrelated part of a policy does not refill every bucket.
    pub(crate) fn build(policy: &ResourcePolicy, previous: Option<&LimitSet>) -> Self {
        let make =
            |name: &'static str, period: Period, amount: u32, old: Option<&Option<Arc<Limit>>>| {
                let amount = NonZeroU32::new(amount)?;
                match old.and_then(Option::as_ref) {
                    Some(limit) if limit.amount == amount && limit.period == period => {
                        Some(Arc::clone(limit))
                    }
                    _ => Some(Arc::new(Limit::new(name, period, amount))),
                }
            };
        Self {
            calls: make(
                "max_calls_per_second",
                Period::Second,
                policy.max_calls_per_second,
                previous.map(|p| &p.calls),
            ),
            db: make(
                "max_db_queries_per_min",
                Period::Minute,
                policy.max_db_queries_per_min,
                previous.map(|p| &p.db),
            ),
            http: make(
                "max_http_req_per_min",
                Period::Minute,
                policy.max_http_req_per_min,
                previous.map(|p| &p.http),
            ),
            email: make(
                "max_emails_per_min",
                Period::Minute,
                policy.max_emails_per_min,
                previous.map(|p| &p.email),
            ),
        }
    }

    /// The limit a kind of call counts against besides the per-call one.
    fn own(&self, own: OwnLimit) -> Option<&Limit> {
        match own {
            OwnLimit::None => None,
            OwnLimit::Db => self.db.as_deref(),
            OwnLimit::Http => self.http.as_deref(),
            OwnLimit::Email => self.email.as_deref(),
        }
    }

    /// Counts one host call against the per-second limit, then against its own limit, in this
    /// node's limiters.
    pub(crate) fn check_local(&self, own: OwnLimit) -> Result<(), HostError> {
        self.calls.as_deref().map_or(Ok(()), Limit::check)?;
        self.own(own).map_or(Ok(()), Limit::check)
    }

    /// The same limits as [`LimitSpec`]s for a shared limiter: the per-second one, then the
    /// call's own; only the first `len` entries of the array are limits.
    pub(crate) fn specs(&self, own: OwnLimit) -> ([LimitSpec; 2], usize) {
        let mut specs = [LimitSpec {
            name: "",
            amount: 0,
            period: Duration::ZERO,
        }; 2];
        let mut len = 0;
        for limit in [self.calls.as_deref(), self.own(own)].into_iter().flatten() {
            specs[len] = limit.spec();
            len += 1;
        }
        (specs, len)
    }
}

/// The limit a host call counts against besides `max_calls_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnLimit {
    /// None (cache, log, config, translate, plugin calls).
    None,
    /// `max_db_queries_per_min`.
    Db,
    /// `max_http_req_per_min`.
    Http,
    /// `max_emails_per_min`.
    Email,
}

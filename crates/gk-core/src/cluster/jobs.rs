//! Plugin jobs run once across the cluster: before running an occurrence of a job, the
//! [`Scheduler`](crate::Scheduler) of each node claims `(plugin, job, tick)`, where `tick` is
//! the occurrence's time on the cron schedule (the same on every node whose clock is within
//! the schedule's interval of the others); the one node whose claim wins runs it.
//!
//! Claims are per occurrence, so no node holds a job: when the node that ran the last
//! occurrence stops or dies, the next occurrence is claimed by one of the others, with no
//! lease to wait for. A node still running the previous occurrence does not claim the next
//! one (a job does not overlap itself on a node); another node may claim and run it.
//!
//! Two places to keep claims:
//! - [`RedisJobClaims`]: `SET <prefix>:job:<plugin>:<job>:<tick ms> <node> NX PX <lease>`;
//!   the key lives [`CLAIM_LEASE`], longer than any clock difference between nodes.
//! - [`StoreJobClaims`]: a row of `gk_job_claims` in the store's database (SQLite, PostgreSQL,
//!   MariaDB) whose key is the occurrence; the insert that fails on the key lost. Rows older
//!   than [`CLAIM_RETENTION`] are pruned (by each node, at most every 10 minutes).
//!
//! Failures: when a claim cannot be made (Redis or the database down or timing out), the
//! occurrence is **skipped** on that node — a job runs at most once per occurrence, never on
//! every node at once — counted in the job's stats (`claim_errors`), logged at WARN once per
//! outage and at INFO when claims work again. With the backend down on every node, jobs do
//! not run until it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::{
    Builder, ClientLike, Config, Error as RedisError, KeysInterface, Pool, ReconnectPolicy,
};
use fred::types::{Expiration, SetOptions};

use crate::{CoreError, CoreResult, Store, StoreError};

/// How long a claim key stays in Redis (far longer than nodes' clocks differ).
pub const CLAIM_LEASE: Duration = Duration::from_secs(600);
/// How long claim rows stay in the store.
pub const CLAIM_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a claim in Redis may take.
const REDIS_CLAIM_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node prunes old claim rows.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// Why a claim could not be made; the occurrence is skipped on this node.
#[derive(Debug, thiserror::Error)]
pub enum JobClaimError {
    /// Redis failed or did not answer.
    #[error("job claims in Redis: {0}")]
    Redis(String),
    /// The store's database failed.
    #[error("job claims in the store: {0}")]
    Store(#[from] StoreError),
    /// The claim took too long.
    #[error("job claim: no answer within {} ms", after.as_millis())]
    Timeout {
        /// How long it was given.
        after: Duration,
    },
}

/// Where the nodes of a cluster claim job occurrences. Set on a node's scheduler with
/// [`Scheduler::set_claims`](crate::Scheduler::set_claims).
#[async_trait]
pub trait JobClaims: Send + Sync + std::fmt::Debug {
    /// Claims occurrence `tick` of `plugin`'s job `job` for this node: `true` when this node
    /// won it and runs it, `false` when another node has it.
    async fn claim(
        &self,
        plugin: &str,
        job: &str,
        tick: DateTime<Utc>,
    ) -> Result<bool, JobClaimError>;

    /// This node's id, as the claims record it.
    fn node(&self) -> &str;
}

/// The error of a Redis for job claims that cannot be opened (its password left out).
fn open_error(redis_url: &str, error: &RedisError) -> CoreError {
    CoreError::Config(format!(
        "job claims in Redis {}: {error}",
        super::limits::redacted(redis_url)
    ))
}

/// Claims in Redis: one key per occurrence, set only if absent.
pub struct RedisJobClaims {
    pool: Pool,
    prefix: String,
    node: String,
}

impl std::fmt::Debug for RedisJobClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobClaims")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl RedisJobClaims {
    /// Connects to `redis_url`; keys start with `key_prefix` (the same on every node), claims
    /// are made as `node`. Fails when the URL is not one or the server does not answer; once
    /// connected, connections lost are re-established in the background.
    pub async fn connect(redis_url: &str, key_prefix: &str, node: &str) -> CoreResult<Arc<Self>> {
        let claims = Self::build(redis_url, key_prefix, node)?;
        if let Err(error) = claims.pool.init().await {
            let _ = claims.pool.quit().await;
            return Err(open_error(redis_url, &error));
        }
        Ok(Arc::new(claims))
    }

    /// Like [`RedisJobClaims::connect`], but connects in the background: a node starts while
    /// Redis is down, and its claims fail (so occurrences are skipped, never run everywhere)
    /// until Redis answers. Fails only when `redis_url` is not a Redis URL.
    pub fn connect_lazy(redis_url: &str, key_prefix: &str, node: &str) -> CoreResult<Arc<Self>> {
        let claims = Self::build(redis_url, key_prefix, node)?;
        super::limits::connect_until_up(
            &claims.pool,
            "job claims",
            super::limits::redacted(redis_url),
        );
        Ok(Arc::new(claims))
    }

    fn build(redis_url: &str, key_prefix: &str, node: &str) -> CoreResult<Self> {
        let config = Config::from_url(redis_url).map_err(|e| open_error(redis_url, &e))?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = REDIS_CLAIM_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_pool(1)
            .map_err(|e| open_error(redis_url, &e))?;
        Ok(Self {
            pool,
            prefix: key_prefix.to_owned(),
            node: node.to_owned(),
        })
    }

    /// The key of one occurrence.
    pub fn key(&self, plugin: &str, job: &str, tick: DateTime<Utc>) -> String {
        format!(
            "{}:job:{plugin}:{job}:{}",
            self.prefix,
            tick.timestamp_millis()
        )
    }

    /// Closes the connections (they are not re-established).
    pub async fn close(&self) {
        let _ = self.pool.quit().await;
    }
}

#[async_trait]
impl JobClaims for RedisJobClaims {
    async fn claim(
        &self,
        plugin: &str,
        job: &str,
        tick: DateTime<Utc>,
    ) -> Result<bool, JobClaimError> {
        let lease = i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX);
        let set: Option<String> = self
            .pool
            .set(
                self.key(plugin, job, tick),
                self.node.as_str(),
                Some(Expiration::PX(lease)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| JobClaimError::Redis(e.to_string()))?;
        // `SET … NX` answers OK when it set the key, nil when the key exists.
        Ok(set.is_some())
    }

    fn node(&self) -> &str {
        &self.node
    }
}

/// Claims in the store's database (`gk_job_claims`); for clusters without Redis.
pub struct StoreJobClaims {
    store: Store,
    node: String,
    /// When this node last pruned old rows (seconds since the epoch).
    pruned_at: AtomicI64,
}

impl std::fmt::Debug for StoreJobClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreJobClaims")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl StoreJobClaims {
    /// Claims in `store` (its database, shared by the nodes) as `node`.
    pub fn new(store: Store, node: &str) -> Arc<Self> {
        Arc::new(Self {
            store,
            node: node.to_owned(),
            pruned_at: AtomicI64::new(0),
        })
    }

    /// Prunes rows older than [`CLAIM_RETENTION`] unless this node did so lately.
    async fn prune_now_and_then(&self) {
        let now = Utc::now();
        let last = self.pruned_at.load(Ordering::Relaxed);
        let due = now.timestamp() - last >= PRUNE_INTERVAL.as_secs() as i64;
        if !due
            || self
                .pruned_at
                .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let retention = chrono::Duration::from_std(CLAIM_RETENTION).unwrap_or_default();
        match self.store.prune_job_claims(now - retention).await {
            Ok(rows) if rows > 0 => tracing::debug!(rows, "old job claims pruned"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "old job claims not pruned"),
        }
    }
}

#[async_trait]
impl JobClaims for StoreJobClaims {
    async fn claim(
        &self,
        plugin: &str,
        job: &str,
        tick: DateTime<Utc>,
    ) -> Result<bool, JobClaimError> {
        let won = self.store.claim_job(plugin, job, tick, &self.node).await?;
        if won {
            self.prune_now_and_then().await;
        }
        Ok(won)
    }

    fn node(&self) -> &str {
        &self.node
    }
}

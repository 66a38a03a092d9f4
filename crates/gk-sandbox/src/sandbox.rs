//! [`SandboxedHostApi`]: the host as one plugin sees it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use gk_sdk::{
    CallContext, Email, HostApi, HostCallName, HostError, HostResult, HttpRequest, HttpResponse,
    LogLevel, MAX_CALL_DEPTH, ResourcePolicy, Row, TableScope, TranslateArgs,
};
use serde_json::{Map, Value};
use tracing::{Level, instrument};

use crate::limits::OwnLimit;
use crate::policy::{CheckedSql, CompiledPolicy, SqlCall};
use crate::stats::{SandboxCounters, StatsSnapshot};
use crate::{PolicyError, SandboxConfig};

/// The host API of one plugin, with its [`ResourcePolicy`] enforced on every call.
///
/// Each call loads the current policy version once and is judged by it alone; a call refused
/// by the policy or a rate limit never reaches the inner host. Calls reach the inner host with
/// the context's `plugin` set to this sandbox's plugin, whatever the caller put there.
///
/// Status: `blocked` refuses every host call except `log` (so an admin can still see what the
/// plugin tries); `pending_review` is enforced as [`ResourcePolicy::default_for`] until an admin
/// approves or restricts it.
pub struct SandboxedHostApi {
    plugin: String,
    inner: Arc<dyn HostApi>,
    config: Arc<SandboxConfig>,
    policy: ArcSwap<CompiledPolicy>,
    next_version: AtomicU64,
    counters: Arc<SandboxCounters>,
}

impl std::fmt::Debug for SandboxedHostApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxedHostApi")
            .field("plugin", &self.plugin)
            .field("policy_version", &self.policy.load().version)
            .finish_non_exhaustive()
    }
}

impl SandboxedHostApi {
    /// A sandbox for `plugin` around `inner`, enforcing `policy`, with default settings.
    pub fn new(
        plugin: impl Into<String>,
        inner: Arc<dyn HostApi>,
        policy: ResourcePolicy,
    ) -> Result<Self, PolicyError> {
        Self::with_config(plugin, inner, policy, Arc::new(SandboxConfig::default()))
    }

    /// The same with explicit sandbox settings (SQL dialects, cache limits).
    pub fn with_config(
        plugin: impl Into<String>,
        inner: Arc<dyn HostApi>,
        policy: ResourcePolicy,
        config: Arc<SandboxConfig>,
    ) -> Result<Self, PolicyError> {
        let plugin = plugin.into();
        let compiled = CompiledPolicy::compile(&plugin, policy, 1, None)?;
        Ok(Self {
            plugin,
            inner,
            config,
            policy: ArcSwap::from_pointee(compiled),
            next_version: AtomicU64::new(2),
            counters: Arc::new(SandboxCounters::default()),
        })
    }

    /// The plugin this sandbox belongs to.
    pub fn plugin_name(&self) -> &str {
        &self.plugin
    }

    /// Replaces the policy. The new version is compiled off to the side and swapped in whole:
    /// a call sees either the old or the new policy, never a mix. On error the old policy stays.
    pub fn update_policy(&self, policy: ResourcePolicy) -> Result<u64, PolicyError> {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let current = self.policy.load();
        let compiled = CompiledPolicy::compile(&self.plugin, policy, version, Some(&current))?;
        self.policy.store(Arc::new(compiled));
        tracing::info!(plugin = %self.plugin, version, "policy updated");
        Ok(version)
    }

    /// The policy as last set.
    pub fn policy(&self) -> ResourcePolicy {
        self.policy.load().stored.clone()
    }

    /// The policy enforced now (the default one while the plugin is pending review).
    pub fn effective_policy(&self) -> ResourcePolicy {
        self.policy.load().effective.clone()
    }

    /// The version of the policy in force; it grows with every update.
    pub fn policy_version(&self) -> u64 {
        self.policy.load().version
    }

    /// The plugin's usage counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.counters.snapshot()
    }

    /// A context stamped with this sandbox's plugin name.
    fn stamp(&self, ctx: &CallContext) -> CallContext {
        CallContext {
            plugin: self.plugin.clone(),
            ..ctx.clone()
        }
    }

    /// Judges a call: blocked status, then `check`, then the per-second limit and the call's
    /// `own` limit (in the shared limiter when one is set, in one round trip; else, or when it
    /// does not answer, in this node's limiters). Refusals are counted and logged once here.
    async fn admit(
        &self,
        policy: &CompiledPolicy,
        function: HostCallName,
        check: impl FnOnce() -> HostResult<()>,
        own: OwnLimit,
    ) -> HostResult<()> {
        self.counters.touch();
        let verdict = if policy.is_blocked() && function != HostCallName::Log {
            Err(HostError::denied(
                "status",
                "the plugin is blocked by an admin",
            ))
        } else {
            match (check(), self.config.shared_limits()) {
                (Err(error), _) => Err(error),
                (Ok(()), None) => policy.limits.check_local(own),
                (Ok(()), Some(shared)) => {
                    let (specs, len) = policy.limits.specs(own);
                    shared
                        .admit(&self.plugin, &specs[..len], &self.counters, || {
                            policy.limits.check_local(own)
                        })
                        .await
                }
            }
        };
        if let Err(error) = &verdict {
            let counter = match error {
                HostError::RateLimited { .. } => &self.counters.rate_limited,
                HostError::PermissionDenied { .. } | HostError::CallDepthExceeded { .. } => {
                    &self.counters.denied
                }
                _ => &self.counters.errors,
            };
            SandboxCounters::bump(counter);
            tracing::info!(plugin = %self.plugin, function = %function, policy_version = policy.version, %error, "host call refused");
        }
        verdict
    }

    /// What `db_query` does, but for logging its error.
    async fn query(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<Vec<Row>> {
        let (checked, scope) = self
            .admit_statement(HostCallName::DbQuery, SqlCall::Query, query, args)
            .await?;
        let result = self
            .inner
            .db_query_scoped(&self.stamp(ctx), &scope, &checked.sql, args)
            .await;
        self.account(result, &self.counters.db_queries)
    }

    /// Judges a statement (the policy, the SQL guard, the limits: see `admit`): the checked
    /// statement and the scope the engine is to enforce too.
    async fn admit_statement(
        &self,
        function: HostCallName,
        call: SqlCall,
        query: &str,
        args: &[Value],
    ) -> HostResult<(CheckedSql, Arc<dyn TableScope>)> {
        let policy = self.policy.load_full();
        let mut checked = None;
        self.admit(
            &policy,
            function,
            || {
                checked = Some(check_statement(&policy, &self.config, call, query, args)?);
                Ok(())
            },
            OwnLimit::Db,
        )
        .await?;
        let Some(checked) = checked else {
            return Err(HostError::Backend("the SQL guard gave no decision".into()));
        };
        Ok((checked, policy.table_scope()))
    }

    /// Counts the outcome of a call that reached the inner host (an inline attempt the host
    /// refused is no outcome: the call is made again).
    fn account<T>(&self, result: HostResult<T>, counter: &AtomicU64) -> HostResult<T> {
        if result.is_err() && gk_sdk::inline::is_refused() {
            return result;
        }
        SandboxCounters::bump(if result.is_ok() {
            counter
        } else {
            &self.counters.errors
        });
        result
    }
}

/// Judges a statement and its arguments: the guard's decision, then one argument per `?`.
fn check_statement(
    policy: &CompiledPolicy,
    config: &SandboxConfig,
    call: SqlCall,
    query: &str,
    args: &[Value],
) -> HostResult<CheckedSql> {
    let checked = policy.check_sql(config, call, query)?;
    if checked.placeholders != args.len() {
        return Err(HostError::InvalidInput(format!(
            "the query has {} `?` placeholders but {} arguments were given",
            checked.placeholders,
            args.len()
        )));
    }
    Ok(checked)
}

#[async_trait]
impl HostApi for SandboxedHostApi {
    /// An inline attempt the host refused (`gk_sdk::inline`) is neither logged nor counted as
    /// an error: the call runs again where it may wait.
    #[instrument(name = "gk.host.db.query", skip_all, fields(plugin = %self.plugin))]
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        let result = self.query(ctx, query, args).await;
        if let Err(error) = &result
            && !gk_sdk::inline::is_refused()
        {
            tracing::error!(error = %error);
        }
        result
    }

    #[instrument(name = "gk.host.db.exec", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn db_exec(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64> {
        let (checked, scope) = self
            .admit_statement(HostCallName::DbExec, SqlCall::Exec, query, args)
            .await?;
        let result = self
            .inner
            .db_exec_scoped(&self.stamp(ctx), &scope, &checked.sql, args)
            .await;
        self.account(result, &self.counters.db_execs)
    }

    #[instrument(name = "gk.host.cache.get", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        let policy = self.policy.load_full();
        self.admit(
            &policy,
            HostCallName::CacheGet,
            || policy.check_cache(&self.config, key, false),
            OwnLimit::None,
        )
        .await?;
        let result = self
            .inner
            .cache_get(&self.stamp(ctx), &namespaced(&self.plugin, key))
            .await;
        self.account(result, &self.counters.cache_ops)
    }

    #[instrument(name = "gk.host.cache.set", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        let policy = self.policy.load_full();
        let check = || {
            policy.check_cache(&self.config, key, true)?;
            if value.len() > self.config.max_cache_value_bytes {
                return Err(HostError::InvalidInput(format!(
                    "cache values are at most {} bytes; this one has {}",
                    self.config.max_cache_value_bytes,
                    value.len()
                )));
            }
            if ttl > self.config.max_cache_ttl {
                return Err(HostError::InvalidInput(format!(
                    "a cache ttl is at most {} s; this one is {} s",
                    self.config.max_cache_ttl.as_secs(),
                    ttl.as_secs()
                )));
            }
            Ok(())
        };
        self.admit(&policy, HostCallName::CacheSet, check, OwnLimit::None)
            .await?;
        let result = self
            .inner
            .cache_set(&self.stamp(ctx), &namespaced(&self.plugin, key), value, ttl)
            .await;
        self.account(result, &self.counters.cache_ops)
    }

    #[instrument(name = "gk.host.cache.delete", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        let policy = self.policy.load_full();
        self.admit(
            &policy,
            HostCallName::CacheDelete,
            || policy.check_cache(&self.config, key, true),
            OwnLimit::None,
        )
        .await?;
        let result = self
            .inner
            .cache_delete(&self.stamp(ctx), &namespaced(&self.plugin, key))
            .await;
        self.account(result, &self.counters.cache_ops)
    }

    #[instrument(name = "gk.host.http.request", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        let policy = self.policy.load_full();
        let mut request = request;
        let mut named_exactly = false;
        self.admit(
            &policy,
            HostCallName::HttpRequest,
            || {
                named_exactly = policy.check_http(&request.url)?;
                Ok(())
            },
            OwnLimit::Http,
        )
        .await?;
        // Whatever the plugin said: only a host its scope names exactly reaches inside.
        request.internal_allowed = named_exactly;
        let result = self.inner.http_request(&self.stamp(ctx), request).await;
        self.account(result, &self.counters.http_requests)
    }

    #[instrument(name = "gk.host.email.send", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        let policy = self.policy.load_full();
        self.admit(
            &policy,
            HostCallName::SendEmail,
            || policy.check_email(&email.to),
            OwnLimit::Email,
        )
        .await?;
        let result = self.inner.send_email(&self.stamp(ctx), email).await;
        self.account(result, &self.counters.emails)
    }

    #[instrument(name = "gk.host.log", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        let policy = self.policy.load_full();
        self.admit(&policy, HostCallName::Log, || Ok(()), OwnLimit::None)
            .await?;
        let result = self
            .inner
            .log(&self.stamp(ctx), level, message, fields)
            .await;
        self.account(result, &self.counters.logs)
    }

    #[instrument(name = "gk.host.config.get", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String> {
        let policy = self.policy.load_full();
        self.admit(
            &policy,
            HostCallName::ConfigGet,
            || policy.check_config(&self.plugin, key),
            OwnLimit::None,
        )
        .await?;
        let result = self.inner.config_get(&self.stamp(ctx), key).await;
        self.account(result, &self.counters.config_reads)
    }

    #[instrument(name = "gk.host.i18n.translate", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        let policy = self.policy.load_full();
        self.admit(&policy, HostCallName::Translate, || Ok(()), OwnLimit::None)
            .await?;
        let result = self.inner.translate(&self.stamp(ctx), key, args).await;
        self.account(result, &self.counters.translations)
    }

    #[instrument(name = "gk.host.plugin.call", skip_all, fields(plugin = %self.plugin), err(level = Level::ERROR))]
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        let policy = self.policy.load_full();
        let mut target_ctx = None;
        let check = || {
            policy.check_plugin_call(plugin)?;
            // The caller is this sandbox's plugin, never a name the plugin supplied.
            target_ctx = Some(self.stamp(ctx).nested_call(plugin).ok_or(
                HostError::CallDepthExceeded {
                    max: MAX_CALL_DEPTH,
                },
            )?);
            Ok(())
        };
        self.admit(&policy, HostCallName::PluginCall, check, OwnLimit::None)
            .await?;
        let Some(target_ctx) = target_ctx else {
            return Err(HostError::CallDepthExceeded {
                max: MAX_CALL_DEPTH,
            });
        };
        let result = self
            .inner
            .call_plugin(&target_ctx, plugin, function, args)
            .await;
        self.account(result, &self.counters.plugin_calls)
    }

    /// Read queries, when the inner host takes them and the rate limits are this node's own
    /// (a shared limiter is a round trip to another server): the policy, the SQL guard and
    /// the local limits decide on the spot, as for any call.
    fn answers_inline(&self, function: HostCallName) -> bool {
        function == HostCallName::DbQuery
            && self.config.shared_limits().is_none()
            && self.inner.answers_inline(function)
    }
}

/// The backend key of a plugin's cache key. Plugin names cannot contain `:`, so no key of one
/// plugin can equal a key of another, whatever bytes it holds.
fn namespaced(plugin: &str, key: &str) -> String {
    format!("plugin:{plugin}:{key}")
}

//! The production host services that a plugin's sandbox wraps: [`ProductionHost`] implements
//! [`gk_sdk::HostApi`] over the real backends.

pub mod cache;
mod config;
mod db;
mod email;
mod http;
mod i18n;
mod logs;
mod placeholders;
mod rows;
mod smtp;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, Email, HostApi, HostError, HostResult, HttpRequest, HttpResponse, LogLevel, Row,
    TableScope, TranslateArgs,
};
use serde_json::{Map, Value};

pub use crate::store::OutboxMessage;
pub use cache::{Cache, DEFAULT_CACHE_QUOTA_BYTES, MemoryCache, RedisCache};
pub use config::{ConfigValues, PLUGIN_VARIABLE_PREFIX, PluginNames};
pub use db::{
    CONNECT_TIMEOUT, DEFAULT_MAX_CONCURRENT_QUERIES, DEFAULT_MAX_RESULT_BYTES, DEFAULT_MAX_ROWS,
    DEFAULT_QUERY_TIMEOUT, DatabaseConfig, Databases, redacted as redacted_url,
};
pub use email::{Mailer, Outbox, validate as validate_email};
pub use http::{
    DEFAULT_MAX_RESPONSE_BYTES, HttpClient, HttpConfig, PrivateNetwork, PrivateNetworkError,
    is_internal,
};
pub use i18n::{FALLBACK_LANGUAGE, Translations};
pub use logs::{
    DEFAULT_LOG_ENTRIES, DEFAULT_LOG_LINE_BYTES, DEFAULT_LOG_RING_BYTES, LogEntry, LogLimits,
    PluginLogs, truncate_message,
};
pub use smtp::{SmtpConfig, SmtpMailer, SmtpSecurity};

fn unscoped() -> HostError {
    HostError::denied(
        "db",
        "database statements reach the host only through the plugin's sandbox (db_query_scoped)",
    )
}

/// Where `call_plugin` goes: the manager provides it.
#[async_trait]
pub trait PluginCaller: Send + Sync {
    /// Calls `function` of `plugin`; `ctx` is the target's context (caller and depth set).
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>>;
}

/// The backends a [`ProductionHost`] is built from.
#[derive(Debug)]
pub struct HostServices {
    /// Named databases.
    pub databases: Databases,
    /// The cache (memory or Redis).
    pub cache: Arc<dyn Cache>,
    /// Plugin log rings.
    pub logs: Arc<PluginLogs>,
    /// Configuration values plugins may read.
    pub config: ConfigValues,
    /// Translation catalogs.
    pub translations: Arc<Translations>,
    /// Email delivery (the outbox, or SMTP).
    pub mailer: Arc<dyn Mailer>,
    /// Outbound HTTP.
    pub http: HttpClient,
}

/// The real host services. One instance serves every plugin; the context's `plugin` (stamped
/// by the sandbox) says whose log, settings and translations a call uses.
pub struct ProductionHost {
    services: HostServices,
    caller: OnceLock<Arc<dyn PluginCaller>>,
}

impl std::fmt::Debug for ProductionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductionHost")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl ProductionHost {
    /// A host over these backends.
    pub fn new(services: HostServices) -> Self {
        Self {
            services,
            caller: OnceLock::new(),
        }
    }

    /// Connects `call_plugin` to the manager (once).
    pub fn set_plugin_caller(&self, caller: Arc<dyn PluginCaller>) -> Result<(), HostError> {
        self.caller
            .set(caller)
            .map_err(|_| HostError::Unavailable("the plugin caller is set already".into()))
    }

    /// The backends, for the platform's own use (store, log viewer, outbox).
    pub fn services(&self) -> &HostServices {
        &self.services
    }
}

#[async_trait]
impl HostApi for ProductionHost {
    /// Refused: plugin statements reach the database only through their sandbox, with the
    /// scope the engine enforces ([`HostApi::db_query_scoped`]). The platform's own SQL uses
    /// [`Databases`] directly.
    async fn db_query(
        &self,
        _ctx: &CallContext,
        _query: &str,
        _args: &[Value],
    ) -> HostResult<Vec<Row>> {
        Err(unscoped())
    }

    /// Refused, as [`db_query`](Self::db_query).
    async fn db_exec(&self, _ctx: &CallContext, _query: &str, _args: &[Value]) -> HostResult<u64> {
        Err(unscoped())
    }

    async fn db_query_scoped(
        &self,
        ctx: &CallContext,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.services
            .databases
            .query_scoped(&ctx.plugin, scope, query, args)
            .await
    }

    async fn db_exec_scoped(
        &self,
        ctx: &CallContext,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<u64> {
        self.services
            .databases
            .exec_scoped(&ctx.plugin, scope, query, args)
            .await
    }

    async fn cache_get(&self, _ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.services.cache.get(key).await
    }

    async fn cache_set(
        &self,
        _ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        self.services.cache.set(key, value, ttl).await
    }

    async fn cache_delete(&self, _ctx: &CallContext, key: &str) -> HostResult<()> {
        self.services.cache.delete(key).await
    }

    /// Sends the request with the SSRF-hardened client ([`HttpClient`]): addresses checked
    /// after resolution, redirects returned, the body capped.
    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        let method = request.method.clone();
        let result = self.services.http.send(request).await;
        match &result {
            Ok(response) => {
                tracing::debug!(plugin = %ctx.plugin, %method, status = response.status, "outbound HTTP")
            }
            Err(error) => {
                tracing::info!(plugin = %ctx.plugin, %method, %error, "outbound HTTP refused or failed")
            }
        }
        result
    }

    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        email::validate(&email)?;
        self.services.mailer.send(&ctx.plugin, &email).await
    }

    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        self.services
            .logs
            .write(&ctx.plugin, level, message, fields);
        Ok(())
    }

    async fn config_get(&self, _ctx: &CallContext, key: &str) -> HostResult<String> {
        self.services.config.get(key)
    }

    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        Ok(self
            .services
            .translations
            .translate(&ctx.plugin, ctx.language.as_deref(), key, args))
    }

    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        let caller = self
            .caller
            .get()
            .ok_or_else(|| HostError::Unavailable("plugin calls are not connected yet".into()))?;
        caller.call_plugin(ctx, plugin, function, args).await
    }

    /// Read queries: on a SQLite database a read-only statement runs on the spot (on a free
    /// connection, within a short budget, never waiting for a lock); anything else is refused
    /// (see [`Databases::query_scoped`]).
    fn answers_inline(&self, function: gk_sdk::HostCallName) -> bool {
        function == gk_sdk::HostCallName::DbQuery
    }
}

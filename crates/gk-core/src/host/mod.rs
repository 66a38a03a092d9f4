//! The production host services that a plugin's sandbox wraps: [`ProductionHost`] implements
//! [`gk_sdk::HostApi`] over the real backends.

pub mod cache;
mod config;
mod db;
mod email;
mod i18n;
mod logs;
mod placeholders;
mod rows;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, Email, HostApi, HostError, HostResult, HttpRequest, HttpResponse, LogLevel, Row,
    TranslateArgs,
};
use serde_json::{Map, Value};

pub use cache::{Cache, MemoryCache};
pub use config::ConfigValues;
pub use db::{CONNECT_TIMEOUT, DEFAULT_MAX_ROWS, DEFAULT_QUERY_TIMEOUT, DatabaseConfig, Databases};
pub use email::{Mailer, Outbox, OutboxMessage, validate as validate_email};
pub use i18n::{FALLBACK_LANGUAGE, Translations};
pub use logs::{DEFAULT_LOG_ENTRIES, LogEntry, PluginLogs};

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

/// The real host services. One instance serves every plugin; the context's `plugin` (stamped
/// by the sandbox) says whose log, settings and translations a call uses.
pub struct ProductionHost {
    databases: Databases,
    cache: Arc<dyn Cache>,
    logs: Arc<PluginLogs>,
    config: ConfigValues,
    translations: Arc<Translations>,
    mailer: Arc<dyn Mailer>,
    caller: OnceLock<Arc<dyn PluginCaller>>,
}

impl std::fmt::Debug for ProductionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductionHost")
            .field("cache", &self.cache)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

impl ProductionHost {
    /// A host over these backends.
    pub fn new(
        databases: Databases,
        cache: Arc<dyn Cache>,
        logs: Arc<PluginLogs>,
        config: ConfigValues,
        translations: Arc<Translations>,
        mailer: Arc<dyn Mailer>,
    ) -> Self {
        Self {
            databases,
            cache,
            logs,
            config,
            translations,
            mailer,
            caller: OnceLock::new(),
        }
    }

    /// Connects `call_plugin` to the manager (once).
    pub fn set_plugin_caller(&self, caller: Arc<dyn PluginCaller>) -> Result<(), HostError> {
        self.caller
            .set(caller)
            .map_err(|_| HostError::Unavailable("the plugin caller is set already".into()))
    }

    /// The databases, for the platform's own use.
    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    /// The plugin logs.
    pub fn logs(&self) -> &Arc<PluginLogs> {
        &self.logs
    }

    /// The translations.
    pub fn translations(&self) -> &Arc<Translations> {
        &self.translations
    }
}

#[async_trait]
impl HostApi for ProductionHost {
    async fn db_query(
        &self,
        _ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.databases.query(query, args).await
    }

    async fn db_exec(&self, _ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64> {
        self.databases.exec(query, args).await
    }

    async fn cache_get(&self, _ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.cache.get(key).await
    }

    async fn cache_set(
        &self,
        _ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        self.cache.set(key, value, ttl).await
    }

    async fn cache_delete(&self, _ctx: &CallContext, key: &str) -> HostResult<()> {
        self.cache.delete(key).await
    }

    async fn http_request(
        &self,
        _ctx: &CallContext,
        _request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        Err(HostError::Unavailable(
            "outbound HTTP is not available in this version of the host".into(),
        ))
    }

    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        email::validate(&email)?;
        self.mailer.send(&ctx.plugin, &email).await
    }

    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        self.logs.write(&ctx.plugin, level, message, fields);
        Ok(())
    }

    async fn config_get(&self, _ctx: &CallContext, key: &str) -> HostResult<String> {
        self.config.get(key)
    }

    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        Ok(self
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
}

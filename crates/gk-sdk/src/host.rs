//! The host functions a plugin may use, and the values they take and return.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{CallContext, HostResult, TableScope};

/// One database row: column name to JSON value.
pub type Row = Map<String, Value>;

/// The services the host offers a plugin.
///
/// The platform gives every plugin an `Arc<dyn HostApi>` that is its sandbox: each call is checked
/// against the plugin's policy, rate-limited and counted before it reaches a real backend. The
/// context names the plugin making the call; the sandbox overwrites it with its own plugin name,
/// so a plugin cannot speak for another.
#[async_trait]
pub trait HostApi: Send + Sync {
    /// Runs a read query with `?` placeholders and returns its rows. A query starting with
    /// `@name:` runs on the named database instead of `default`.
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>>;

    /// Runs a write statement with `?` placeholders and returns the number of affected rows.
    async fn db_exec(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64>;

    /// Runs a read query that a plugin's sandbox has checked, printed back from the checked
    /// syntax tree, with `scope` for the database engine to enforce as well (defence in depth).
    ///
    /// Hosts that cannot enforce a scope in the engine run the query as [`db_query`]
    /// (the default).
    ///
    /// [`db_query`]: Self::db_query
    async fn db_query_scoped(
        &self,
        ctx: &CallContext,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        let _ = scope;
        self.db_query(ctx, query, args).await
    }

    /// Runs a write statement that a plugin's sandbox has checked, with `scope` for the
    /// engine to enforce as well; see [`db_query_scoped`](Self::db_query_scoped).
    async fn db_exec_scoped(
        &self,
        ctx: &CallContext,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<u64> {
        let _ = scope;
        self.db_exec(ctx, query, args).await
    }

    /// Reads a cache entry of this plugin; `None` when absent or expired.
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>>;

    /// Writes a cache entry of this plugin; a zero `ttl` means no expiry.
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()>;

    /// Deletes a cache entry of this plugin (deleting an absent key succeeds).
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()>;

    /// Makes an outbound HTTP request. Redirects are returned, not followed.
    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse>;

    /// Sends an email.
    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()>;

    /// Writes to the plugin's log.
    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()>;

    /// Reads a configuration value by dotted key (`app.name`, `plugins.<name>.<key>`).
    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String>;

    /// Translates a key into the context's language, with positional or named arguments.
    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String>;

    /// Calls a function of another plugin with JSON arguments and returns its JSON result.
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>>;

    /// Whether this host takes inline attempts of `function` (see [`inline`](crate::inline)):
    /// while [`inline::is_attempt`](crate::inline::is_attempt) is true it then answers at once
    /// without an effect, or refuses with [`inline::refuse`](crate::inline::refuse). A host
    /// that says `false` (the default) is never tried inline.
    fn answers_inline(&self, function: crate::HostCallName) -> bool {
        let _ = function;
        false
    }
}

/// Lets an `Arc<dyn HostApi>` (or any shared host) be used where a `HostApi` is expected.
#[async_trait]
impl<T: HostApi + ?Sized> HostApi for Arc<T> {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        (**self).db_query(ctx, query, args).await
    }
    async fn db_exec(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64> {
        (**self).db_exec(ctx, query, args).await
    }
    async fn db_query_scoped(
        &self,
        ctx: &CallContext,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        (**self).db_query_scoped(ctx, scope, query, args).await
    }
    async fn db_exec_scoped(
        &self,
        ctx: &CallContext,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<u64> {
        (**self).db_exec_scoped(ctx, scope, query, args).await
    }
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        (**self).cache_get(ctx, key).await
    }
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        (**self).cache_set(ctx, key, value, ttl).await
    }
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        (**self).cache_delete(ctx, key).await
    }
    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        (**self).http_request(ctx, request).await
    }
    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        (**self).send_email(ctx, email).await
    }
    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        (**self).log(ctx, level, message, fields).await
    }
    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String> {
        (**self).config_get(ctx, key).await
    }
    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        (**self).translate(ctx, key, args).await
    }
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        (**self).call_plugin(ctx, plugin, function, args).await
    }
    fn answers_inline(&self, function: crate::HostCallName) -> bool {
        (**self).answers_inline(function)
    }
}

/// An outbound HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, …; empty means `GET`.
    pub method: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Vec<u8>,
    /// Whether the host may connect to an internal network the operator opened
    /// (`[http] allow_private`). Set by the plugin's sandbox, never by the plugin (whatever it
    /// sends is replaced): only a host named exactly in the plugin's `http` scope gets it, so
    /// `*` or `*.example.com` never reach inside through a name that resolves there.
    pub internal_allowed: bool,
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (a repeated header's values joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// Response body.
    pub body: Vec<u8>,
}

/// An email to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    /// One recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Body text, HTML when [`html`](Self::html) is set.
    pub body: String,
    /// Whether the body is HTML.
    pub html: bool,
}

/// Severity of a plugin log entry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The level of a WASM `log` import call: 0 debug, 1 info, 2 warn, 3 error, anything else info.
    pub fn from_abi(level: i32) -> Self {
        match level {
            0 => Self::Debug,
            2 => Self::Warn,
            3 => Self::Error,
            _ => Self::Info,
        }
    }

    /// The level named in a host call (`debug`, `info`, `warn`/`warning`, `error`, any case);
    /// anything else is `info`, as the Go host did.
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Self::Debug,
            "warn" | "warning" => Self::Warn,
            "error" | "fatal" => Self::Error,
            _ => Self::Info,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Arguments of a translation: positional (`{0}`, `{1}`) or named (`{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TranslateArgs {
    /// No arguments.
    #[default]
    None,
    /// Values for `{0}`, `{1}`, ….
    Positional(Vec<Value>),
    /// Values for `{name}` placeholders.
    Named(Map<String, Value>),
}

impl TranslateArgs {
    /// Reads arguments from JSON: an array is positional, an object named, `null` none.
    /// Any other single value is the one positional argument, as the Go host's variadic call did.
    pub fn from_json(value: Value) -> Self {
        match value {
            Value::Null => Self::None,
            Value::Array(values) if values.is_empty() => Self::None,
            Value::Array(values) => Self::Positional(values),
            Value::Object(map) => Self::Named(map),
            other => Self::Positional(vec![other]),
        }
    }

    /// The JSON form: `null`, an array or an object.
    pub fn to_json(&self) -> Value {
        match self {
            Self::None => Value::Null,
            Self::Positional(values) => Value::Array(values.clone()),
            Self::Named(map) => Value::Object(map.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_levels_follow_the_abi_and_names() {
        assert_eq!(
            (0..5).map(LogLevel::from_abi).collect::<Vec<_>>(),
            [
                LogLevel::Debug,
                LogLevel::Info,
                LogLevel::Warn,
                LogLevel::Error,
                LogLevel::Info
            ]
        );
        assert_eq!(LogLevel::from_abi(-1), LogLevel::Info);
        assert_eq!(LogLevel::from_name("WARNING"), LogLevel::Warn);
        assert_eq!(LogLevel::from_name("loud"), LogLevel::Info);
    }

    #[test]
    fn translate_args_from_json() {
        assert_eq!(TranslateArgs::from_json(json!(null)), TranslateArgs::None);
        assert_eq!(TranslateArgs::from_json(json!([])), TranslateArgs::None);
        assert_eq!(
            TranslateArgs::from_json(json!(["a", 1])),
            TranslateArgs::Positional(vec![json!("a"), json!(1)])
        );
        assert_eq!(
            TranslateArgs::from_json(json!(5)),
            TranslateArgs::Positional(vec![json!(5)])
        );
        let named = TranslateArgs::from_json(json!({"name": "Ann"}));
        assert_eq!(named.to_json(), json!({"name": "Ann"}));
    }
}

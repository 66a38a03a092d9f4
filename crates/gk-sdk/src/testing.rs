//! Hosts for tests (feature `testing`), grown from [`NoopHost`]:
//!
//! - [`MemoryHost`] keeps what a plugin stores and logs, and answers the database with an echo;
//! - [`RecordingHost`] records every call that reaches it, then answers as the host it wraps
//!   ([`NoopHost`] unless told otherwise);
//! - [`service_url`] and [`free_port`], what test suites that run real services need.
//!
//! A test suite that needs a host uses one of these (or wraps its own answers in a
//! [`RecordingHost`]) instead of writing the eleven [`HostApi`] methods again.
//!
//! ```
//! use std::sync::Arc;
//! use gk_sdk::testing::{MemoryHost, RecordingHost};
//! use gk_sdk::{CallContext, HostApi};
//!
//! # tokio_test_block_on(async {
//! let memory = Arc::new(MemoryHost::default());
//! let host = RecordingHost::wrapping(memory.clone());
//! let ctx = CallContext::for_plugin("stats");
//! host.cache_set(&ctx, "k", b"v", std::time::Duration::ZERO).await.unwrap();
//! assert_eq!(memory.cache_entry("k"), Some(b"v".to_vec()));
//! assert_eq!(host.last().unwrap().subject, "k");
//! # });
//! # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::{
    CallContext, Email, HostApi, HostError, HostResult, HttpRequest, HttpResponse, LogLevel,
    NoopHost, Row, TranslateArgs,
};

/// Locks a test host's record, whether or not another test thread panicked holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A host that keeps what a plugin stores and logs, and answers what a test gave it:
///
/// - the cache is a map of the keys as the caller gave them (entries never expire);
/// - every log line is kept as `(plugin, level, message)`;
/// - the context of every database and cache call is kept, in order;
/// - `db_query` answers one row echoing the statement (`{"query": …, "args": […]}`), `db_exec`
///   answers as many rows affected as it was given arguments;
/// - `http_request` answers the response given for the URL's host
///   ([`with_http_answer`](Self::with_http_answer)); any other host is denied
///   (`host `…` is not in the http scope`);
/// - `config_get` answers the values given ([`with_config`](Self::with_config)) and finds
///   nothing else;
/// - `call_plugin` answers the bytes given for `plugin.function`
///   ([`with_plugin_answer`](Self::with_plugin_answer)), nothing otherwise;
/// - `translate` returns the key, `send_email` succeeds with nothing.
#[derive(Debug, Default)]
pub struct MemoryHost {
    /// The cache entries, by key.
    pub cache: Mutex<HashMap<String, Vec<u8>>>,
    /// The log lines: plugin, level, message.
    pub logs: Mutex<Vec<(String, LogLevel, String)>>,
    /// The contexts of the database and cache calls, in order.
    pub contexts: Mutex<Vec<CallContext>>,
    config: HashMap<String, String>,
    http_answers: HashMap<String, HttpResponse>,
    plugin_answers: HashMap<String, Vec<u8>>,
}

impl MemoryHost {
    /// Answers `config_get(key)` with `value`.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Answers every `http_request` to `host` with `response` (the host is in scope).
    pub fn with_http_answer(mut self, host: impl Into<String>, response: HttpResponse) -> Self {
        self.http_answers.insert(host.into(), response);
        self
    }

    /// Answers `call_plugin(plugin, function, …)` with `answer`; `target` is `plugin.function`.
    pub fn with_plugin_answer(mut self, target: impl Into<String>, answer: &[u8]) -> Self {
        self.plugin_answers.insert(target.into(), answer.to_vec());
        self
    }

    /// The cache entry under `key`.
    pub fn cache_entry(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.cache).get(key).cloned()
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<(String, LogLevel, String)> {
        lock(&self.logs).clone()
    }

    fn seen(&self, ctx: &CallContext) {
        lock(&self.contexts).push(ctx.clone());
    }
}

/// The host part of a URL (`https://user@host:port/path` gives `host`), for messages.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.split(':').next().unwrap_or_default()
}

#[async_trait]
impl HostApi for MemoryHost {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.seen(ctx);
        let mut row = Map::new();
        row.insert("query".into(), json!(query));
        row.insert("args".into(), json!(args));
        Ok(vec![row])
    }
    async fn db_exec(&self, ctx: &CallContext, _: &str, args: &[Value]) -> HostResult<u64> {
        self.seen(ctx);
        Ok(args.len() as u64)
    }
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.seen(ctx);
        Ok(self.cache_entry(key))
    }
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        _: Duration,
    ) -> HostResult<()> {
        self.seen(ctx);
        lock(&self.cache).insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        self.seen(ctx);
        lock(&self.cache).remove(key);
        Ok(())
    }
    async fn http_request(
        &self,
        _: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        let host = url_host(&request.url);
        self.http_answers.get(host).cloned().ok_or_else(|| {
            HostError::denied("http", format!("host `{host}` is not in the http scope"))
        })
    }
    async fn send_email(&self, _: &CallContext, _: Email) -> HostResult<()> {
        Ok(())
    }
    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        _: &Map<String, Value>,
    ) -> HostResult<()> {
        lock(&self.logs).push((ctx.plugin.clone(), level, message.to_owned()));
        Ok(())
    }
    async fn config_get(&self, _: &CallContext, key: &str) -> HostResult<String> {
        self.config
            .get(key)
            .cloned()
            .ok_or_else(|| HostError::NotFound(format!("config key `{key}`")))
    }
    async fn translate(&self, _: &CallContext, key: &str, _: &TranslateArgs) -> HostResult<String> {
        Ok(key.to_owned())
    }
    async fn call_plugin(
        &self,
        _: &CallContext,
        plugin: &str,
        function: &str,
        _: &[u8],
    ) -> HostResult<Vec<u8>> {
        let target = format!("{plugin}.{function}");
        Ok(self
            .plugin_answers
            .get(&target)
            .cloned()
            .unwrap_or_default())
    }
}

/// One call that reached a [`RecordingHost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    /// The [`HostApi`] method (`db_query`, `cache_set`, `call_plugin`…).
    pub function: &'static str,
    /// The context it came with.
    pub ctx: CallContext,
    /// What it was about, as the host saw it: the statement, cache key, URL, recipient, log
    /// message, config key, translation key, or `plugin.function`.
    pub subject: String,
    /// Every argument it came with (but the context), as a JSON object named as the method's
    /// parameters; bytes (a cache value, a body, a plugin call's arguments) as lossy UTF-8 text,
    /// a TTL as `ttl_secs`, a log level by its name.
    pub args: Value,
    /// Whether it came as an inline attempt ([`crate::inline`]).
    pub inline: bool,
}

/// Bytes as text, for a [`Reached`] record.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A host that records every call reaching it, then answers as the host it wraps.
pub struct RecordingHost {
    inner: Arc<dyn HostApi>,
    reached: Mutex<Vec<Reached>>,
    /// A cache key whose `cache_get` never answers (see [`RecordingHost::holding_cache_key`]).
    held_key: Option<String>,
    /// How many held calls were given up (their futures dropped).
    given_up: Arc<AtomicUsize>,
    /// How it treats inline attempts of `db_query` (see [`RecordingHost::inline_db_query`]).
    inline_db_query: InlineAnswer,
}

/// How a [`RecordingHost`] treats an inline attempt of `db_query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InlineAnswer {
    /// It does not take inline attempts (the default, as [`HostApi::answers_inline`]'s).
    #[default]
    NotTaken,
    /// It answers them as any other call.
    Answered,
    /// It refuses them, with [`Refusal::lasting`](crate::inline::Refusal::lasting) as given.
    Refused {
        /// Whether the refusal says the same call would be refused again.
        lasting: bool,
    },
}

impl std::fmt::Debug for RecordingHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingHost")
            .field("reached", &self.reached)
            .finish_non_exhaustive()
    }
}

impl Default for RecordingHost {
    /// Records, and answers as [`NoopHost`].
    fn default() -> Self {
        Self::wrapping(Arc::new(NoopHost))
    }
}

impl RecordingHost {
    /// Records, and answers as `inner`.
    pub fn wrapping(inner: Arc<dyn HostApi>) -> Self {
        Self {
            inner,
            reached: Mutex::new(Vec::new()),
            held_key: None,
            given_up: Arc::default(),
            inline_db_query: InlineAnswer::NotTaken,
        }
    }

    /// Takes inline attempts of `db_query` and treats them as `answer` says (each attempt is
    /// recorded, refused or not).
    pub fn inline_db_query(mut self, answer: InlineAnswer) -> Self {
        self.inline_db_query = answer;
        self
    }

    /// A `cache_get` of `key` is recorded and then never answers, until its caller gives it up
    /// (drops its future), which [`given_up`](Self::given_up) counts: for tests of cancelled
    /// and abandoned host calls.
    pub fn holding_cache_key(mut self, key: impl Into<String>) -> Self {
        self.held_key = Some(key.into());
        self
    }

    /// How many held calls were given up.
    pub fn given_up(&self) -> usize {
        self.given_up.load(Ordering::SeqCst)
    }

    /// Every call so far, in order.
    pub fn reached(&self) -> Vec<Reached> {
        lock(&self.reached).clone()
    }

    /// How many calls reached it.
    pub fn count(&self) -> usize {
        lock(&self.reached).len()
    }

    /// The last call.
    pub fn last(&self) -> Option<Reached> {
        lock(&self.reached).last().cloned()
    }

    fn record(
        &self,
        function: &'static str,
        ctx: &CallContext,
        subject: impl Into<String>,
        args: Value,
    ) {
        lock(&self.reached).push(Reached {
            function,
            ctx: ctx.clone(),
            subject: subject.into(),
            args,
            inline: crate::inline::is_attempt(),
        });
    }
}

#[async_trait]
impl HostApi for RecordingHost {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.record(
            "db_query",
            ctx,
            query,
            json!({"query": query, "args": args}),
        );
        if let InlineAnswer::Refused { lasting } = self.inline_db_query
            && crate::inline::is_attempt()
        {
            return Err(crate::inline::refuse("the test host refuses", lasting));
        }
        self.inner.db_query(ctx, query, args).await
    }
    async fn db_exec(&self, ctx: &CallContext, query: &str, args: &[Value]) -> HostResult<u64> {
        self.record("db_exec", ctx, query, json!({"query": query, "args": args}));
        self.inner.db_exec(ctx, query, args).await
    }
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.record("cache_get", ctx, key, json!({"key": key}));
        if self.held_key.as_deref() == Some(key) {
            /// Counts the held call as given up when its future is dropped.
            struct GivenUp(Arc<AtomicUsize>);
            impl Drop for GivenUp {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let _given_up = GivenUp(self.given_up.clone());
            std::future::pending::<()>().await;
        }
        self.inner.cache_get(ctx, key).await
    }
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> HostResult<()> {
        self.record(
            "cache_set",
            ctx,
            key,
            json!({"key": key, "value": text(value), "ttl_secs": ttl.as_secs()}),
        );
        self.inner.cache_set(ctx, key, value, ttl).await
    }
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        self.record("cache_delete", ctx, key, json!({"key": key}));
        self.inner.cache_delete(ctx, key).await
    }
    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        self.record(
            "http_request",
            ctx,
            request.url.clone(),
            json!({
                "method": request.method,
                "url": request.url,
                "headers": request.headers,
                "body": text(&request.body),
            }),
        );
        self.inner.http_request(ctx, request).await
    }
    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        self.record(
            "send_email",
            ctx,
            email.to.clone(),
            json!({"to": email.to, "subject": email.subject, "body": email.body, "html": email.html}),
        );
        self.inner.send_email(ctx, email).await
    }
    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        fields: &Map<String, Value>,
    ) -> HostResult<()> {
        self.record(
            "log",
            ctx,
            message,
            json!({"level": level.to_string(), "message": message, "fields": fields}),
        );
        self.inner.log(ctx, level, message, fields).await
    }
    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String> {
        self.record("config_get", ctx, key, json!({"key": key}));
        self.inner.config_get(ctx, key).await
    }
    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        args: &TranslateArgs,
    ) -> HostResult<String> {
        self.record(
            "translate",
            ctx,
            key,
            json!({"key": key, "args": args.to_json()}),
        );
        self.inner.translate(ctx, key, args).await
    }
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        self.record(
            "call_plugin",
            ctx,
            format!("{plugin}.{function}"),
            json!({"plugin": plugin, "function": function, "args": text(args)}),
        );
        self.inner.call_plugin(ctx, plugin, function, args).await
    }
    fn answers_inline(&self, function: crate::HostCallName) -> bool {
        function == crate::HostCallName::DbQuery && self.inline_db_query != InlineAnswer::NotTaken
    }
}

/// The URL of a test service (a database, a cache) from the environment variable `variable`:
/// `None`, said on stderr, when it is not set (the test skips that part), and a failure under CI
/// (`CI` set), which must not pass a test whose service is missing.
///
/// # Panics
///
/// When `CI` is set and `variable` is not.
pub fn service_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{variable} is not set: .ci/run exports it for CI")
        }
        _ => {
            eprintln!("{variable} is not set: this part is skipped");
            None
        }
    }
}

/// A local TCP port nothing listens on right now.
///
/// # Panics
///
/// When the machine gives no port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("no free local port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_a_url() {
        for (url, host) in [
            ("https://example.com/a", "example.com"),
            ("http://u:p@example.com:8080?q", "example.com"),
            ("example.com", "example.com"),
            ("", ""),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }
}

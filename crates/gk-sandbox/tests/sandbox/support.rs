//! A host double that records what reaches it, and policy helpers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gk_sandbox::SandboxedHostApi;
use gk_sdk::{
    Access, CallContext, Email, HostApi, HostResult, HttpRequest, HttpResponse, LogLevel,
    Permission, PermissionType, PolicyStatus, ResourcePolicy, Row, TranslateArgs,
};
use serde_json::{Map, Value};

/// One call that reached the inner host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    pub function: &'static str,
    pub ctx: CallContext,
    /// The query, key, URL, recipient or target as the inner host saw it.
    pub subject: String,
}

#[derive(Debug, Default)]
pub struct RecordingHost {
    pub reached: Mutex<Vec<Reached>>,
}

impl RecordingHost {
    fn record(&self, function: &'static str, ctx: &CallContext, subject: impl Into<String>) {
        self.reached.lock().unwrap().push(Reached {
            function,
            ctx: ctx.clone(),
            subject: subject.into(),
        });
    }

    pub fn count(&self) -> usize {
        self.reached.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Reached> {
        self.reached.lock().unwrap().last().cloned()
    }
}

#[async_trait]
impl HostApi for RecordingHost {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        _args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.record("db_query", ctx, query);
        Ok(Vec::new())
    }
    async fn db_exec(&self, ctx: &CallContext, query: &str, _args: &[Value]) -> HostResult<u64> {
        self.record("db_exec", ctx, query);
        Ok(1)
    }
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.record("cache_get", ctx, key);
        Ok(None)
    }
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        _value: &[u8],
        _ttl: Duration,
    ) -> HostResult<()> {
        self.record("cache_set", ctx, key);
        Ok(())
    }
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        self.record("cache_delete", ctx, key);
        Ok(())
    }
    async fn http_request(
        &self,
        ctx: &CallContext,
        request: HttpRequest,
    ) -> HostResult<HttpResponse> {
        self.record("http_request", ctx, request.url);
        Ok(HttpResponse {
            status: 200,
            ..HttpResponse::default()
        })
    }
    async fn send_email(&self, ctx: &CallContext, email: Email) -> HostResult<()> {
        self.record("send_email", ctx, email.to);
        Ok(())
    }
    async fn log(
        &self,
        ctx: &CallContext,
        _level: LogLevel,
        message: &str,
        _fields: &Map<String, Value>,
    ) -> HostResult<()> {
        self.record("log", ctx, message);
        Ok(())
    }
    async fn config_get(&self, ctx: &CallContext, key: &str) -> HostResult<String> {
        self.record("config_get", ctx, key);
        Ok("value".into())
    }
    async fn translate(
        &self,
        ctx: &CallContext,
        key: &str,
        _args: &TranslateArgs,
    ) -> HostResult<String> {
        self.record("translate", ctx, key);
        Ok(key.to_owned())
    }
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        _args: &[u8],
    ) -> HostResult<Vec<u8>> {
        self.record("call_plugin", ctx, format!("{plugin}.{function}"));
        Ok(b"{}".to_vec())
    }
}

/// An approved policy for `me` with exactly these permissions and no rate limits.
pub fn approved(permissions: Vec<Permission>) -> ResourcePolicy {
    let mut policy = ResourcePolicy::default_for("me");
    policy.status = PolicyStatus::Approved;
    policy.permissions = permissions;
    policy.max_calls_per_second = 0;
    policy.max_db_queries_per_min = 0;
    policy.max_http_req_per_min = 0;
    policy.max_emails_per_min = 0;
    policy
}

pub fn perm(kind: PermissionType, access: Access, scope: &[&str]) -> Permission {
    Permission::new(kind, access).with_scope(scope.iter().copied())
}

pub fn sandbox(policy: ResourcePolicy) -> (Arc<SandboxedHostApi>, Arc<RecordingHost>) {
    let host = Arc::new(RecordingHost::default());
    let sandbox = SandboxedHostApi::new("me", host.clone(), policy).expect("policy compiles");
    (Arc::new(sandbox), host)
}

pub fn ctx() -> CallContext {
    CallContext::for_plugin("me")
}

/// Runs `(input, expected)` cases through `call`; `None` means allowed, `Some(text)` means
/// refused with an error containing `text`.
pub async fn judge<F, Fut>(
    what: &str,
    cases: &[(&str, Option<&str>)],
    host_count: impl Fn() -> usize,
    call: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), gk_sdk::HostError>>,
{
    let mut failures = Vec::new();
    for (input, expected) in cases {
        let before = host_count();
        let result = call((*input).to_owned()).await;
        let reached = host_count() > before;
        match (expected, &result) {
            (None, Ok(())) if reached => {}
            (Some(text), Err(error)) if error.to_string().contains(text) && !reached => {}
            _ => failures.push(format!(
                "{what} {input:?}: expected {expected:?}, got {result:?} (reached host: {reached})"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

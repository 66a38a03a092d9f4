//! Policy helpers, and the host double (gk-sdk's `RecordingHost`) that records what reaches it.

use std::sync::Arc;

use gk_sandbox::SandboxedHostApi;
pub(crate) use gk_sdk::testing::RecordingHost;
use gk_sdk::{Access, CallContext, Permission, PermissionType, PolicyStatus, ResourcePolicy};

/// An approved policy for `me` with exactly these permissions and no rate limits.
pub(crate) fn approved(permissions: Vec<Permission>) -> ResourcePolicy {
    let mut policy = ResourcePolicy::default_for("me");
    policy.status = PolicyStatus::Approved;
    policy.permissions = permissions;
    policy.max_calls_per_second = 0;
    policy.max_db_queries_per_min = 0;
    policy.max_http_req_per_min = 0;
    policy.max_emails_per_min = 0;
    policy
}

pub(crate) fn perm(kind: PermissionType, access: Access, scope: &[&str]) -> Permission {
    Permission::new(kind, access).with_scope(scope.iter().copied())
}

pub(crate) fn sandbox(policy: ResourcePolicy) -> (Arc<SandboxedHostApi>, Arc<RecordingHost>) {
    let host = Arc::new(RecordingHost::default());
    let sandbox = SandboxedHostApi::new("me", host.clone(), policy).expect("policy compiles");
    (Arc::new(sandbox), host)
}

pub(crate) fn ctx() -> CallContext {
    CallContext::for_plugin("me")
}

/// Runs `(input, expected)` cases through `call`; `None` means allowed, `Some(text)` means
/// refused with an error containing `text`.
pub(crate) async fn judge<F, Fut>(
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

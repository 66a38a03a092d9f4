//! Inline attempts (`gk_sdk::inline`) through the sandbox: only reads, only when the host behind
//! takes them and the rate limits are this node's; an attempt is judged as any call.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gk_sandbox::{
    Admission, LimitSpec, SandboxConfig, SandboxedHostApi, SharedLimitError, SharedLimiter,
};
use gk_sdk::testing::InlineAnswer;
use gk_sdk::{Access, HostApi, HostCallName, HostError, PermissionType};

use crate::support::{RecordingHost, approved, ctx, perm};

/// A shared limiter that admits everything.
#[derive(Debug)]
struct AdmitsAll;

#[async_trait]
impl SharedLimiter for AdmitsAll {
    async fn admit(&self, _: &str, _: &[LimitSpec]) -> Result<Admission, SharedLimitError> {
        Ok(Admission::Admitted)
    }
}

fn reads_tickets() -> gk_sdk::ResourcePolicy {
    approved(vec![perm(PermissionType::Db, Access::Read, &["tickets"])])
}

fn sandbox_over(
    host: RecordingHost,
    config: SandboxConfig,
) -> (SandboxedHostApi, Arc<RecordingHost>) {
    let host = Arc::new(host);
    let sandbox =
        SandboxedHostApi::with_config("me", host.clone(), reads_tickets(), Arc::new(config))
            .expect("policy compiles");
    (sandbox, host)
}

#[test]
fn only_reads_are_taken_inline_and_only_when_the_host_and_the_limits_allow() {
    let answered = || RecordingHost::default().inline_db_query(InlineAnswer::Answered);
    let (local, _) = sandbox_over(answered(), SandboxConfig::default());
    assert!(local.answers_inline(HostCallName::DbQuery));
    for other in [
        HostCallName::DbExec,
        HostCallName::CacheGet,
        HostCallName::HttpRequest,
        HostCallName::Log,
        HostCallName::PluginCall,
    ] {
        assert!(!local.answers_inline(other), "{other}");
    }
    let (not_taken, _) = sandbox_over(RecordingHost::default(), SandboxConfig::default());
    assert!(!not_taken.answers_inline(HostCallName::DbQuery));
    let shared = SandboxConfig::default().with_shared_limiter(Arc::new(AdmitsAll));
    let (shared, _) = sandbox_over(answered(), shared);
    assert!(
        !shared.answers_inline(HostCallName::DbQuery),
        "a shared limiter is a round trip"
    );
}

#[test]
fn an_attempt_is_judged_as_any_call() {
    let host = RecordingHost::default().inline_db_query(InlineAnswer::Answered);
    let (sandbox, host) = sandbox_over(host, SandboxConfig::default());
    let ctx = ctx();
    let poll = |sql: &str| {
        let mut query = std::pin::pin!(sandbox.db_query(&ctx, sql, &[]));
        let mut context = Context::from_waker(Waker::noop());
        gk_sdk::inline::attempt(Instant::now() + Duration::from_millis(1), || {
            query.as_mut().poll(&mut context)
        })
    };
    let (allowed, refusal) = poll("SELECT id FROM tickets");
    assert!(matches!(allowed, Poll::Ready(Ok(_))), "{allowed:?}");
    assert_eq!(refusal, None);
    let (denied, refusal) = poll("SELECT pw FROM users");
    assert!(
        matches!(denied, Poll::Ready(Err(HostError::PermissionDenied { .. }))),
        "{denied:?}"
    );
    assert_eq!(refusal, None, "a denial is an answer, not a refusal");
    let reached = host.reached();
    assert_eq!(reached.len(), 1, "{reached:?}");
    assert!(reached[0].inline);
}

#[test]
fn a_refused_attempt_is_counted_neither_as_a_query_nor_as_an_error() {
    let host = RecordingHost::default().inline_db_query(InlineAnswer::Refused { lasting: false });
    let (sandbox, host) = sandbox_over(host, SandboxConfig::default());
    let ctx = ctx();
    let mut query = std::pin::pin!(sandbox.db_query(&ctx, "SELECT id FROM tickets", &[]));
    let mut context = Context::from_waker(Waker::noop());
    let (polled, refusal) =
        gk_sdk::inline::attempt(Instant::now() + Duration::from_millis(1), || {
            query.as_mut().poll(&mut context)
        });
    assert!(refusal.is_some(), "{polled:?}");
    assert_eq!(host.count(), 1, "the attempt reached the host");
    let stats = sandbox.stats();
    assert_eq!((stats.db_queries, stats.errors), (0, 0), "{stats:?}");
}

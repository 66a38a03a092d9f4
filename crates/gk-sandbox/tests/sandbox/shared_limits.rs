//! A shared rate limiter: one question per call with all its limits, its answer enforced, and
//! the local limits deciding (counted, never unlimited) while it fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gk_sandbox::{
    Admission, LimitSpec, SHARED_RETRY_INTERVAL, SandboxConfig, SandboxedHostApi, SharedLimitError,
    SharedLimitStats, SharedLimiter,
};
use gk_sdk::{Access, HostApi, HostError, PermissionType, PolicyStatus, ResourcePolicy};

use crate::support::{RecordingHost, approved, ctx, perm};

/// A shared limiter double: records each question; refuses a limit by name; fails when down.
#[derive(Debug, Default)]
struct FakeShared {
    asked: Mutex<Vec<Vec<LimitSpec>>>,
    refuse: Mutex<Option<&'static str>>,
    down: AtomicBool,
}

#[async_trait]
impl SharedLimiter for FakeShared {
    async fn admit(
        &self,
        plugin: &str,
        limits: &[LimitSpec],
    ) -> Result<Admission, SharedLimitError> {
        assert_eq!(plugin, "me", "the sandbox names its own plugin");
        if self.down.load(Ordering::SeqCst) {
            return Err(SharedLimitError::Unavailable("connection refused".into()));
        }
        self.asked.lock().unwrap().push(limits.to_vec());
        Ok(match *self.refuse.lock().unwrap() {
            Some(name) if limits.iter().any(|l| l.name == name) => Admission::Refused {
                limit: name.to_owned(),
                retry_after: Duration::from_millis(250),
            },
            _ => Admission::Admitted,
        })
    }
}

fn shared_sandbox(
    policy: ResourcePolicy,
) -> (
    SandboxedHostApi,
    Arc<FakeShared>,
    Arc<RecordingHost>,
    Arc<SandboxConfig>,
) {
    let shared = Arc::new(FakeShared::default());
    let config = Arc::new(SandboxConfig::default().with_shared_limiter(shared.clone()));
    let host = Arc::new(RecordingHost::default());
    let sandbox = SandboxedHostApi::with_config("me", host.clone(), policy, config.clone())
        .expect("policy compiles");
    (sandbox, shared, host, config)
}

fn limited_policy() -> ResourcePolicy {
    let mut policy = approved(vec![
        perm(PermissionType::Db, Access::Read, &["t"]),
        perm(PermissionType::Cache, Access::ReadWrite, &[]),
    ]);
    policy.max_calls_per_second = 3;
    policy.max_db_queries_per_min = 20;
    policy
}

#[tokio::test]
async fn every_limit_of_a_call_goes_in_one_question() {
    let (sb, shared, host, config) = shared_sandbox(limited_policy());
    sb.db_query(&ctx(), "SELECT a FROM t", &[]).await.unwrap();
    sb.cache_get(&ctx(), "k").await.unwrap();
    let asked = shared.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![
            vec![
                LimitSpec {
                    name: "max_calls_per_second",
                    amount: 3,
                    period: Duration::from_secs(1)
                },
                LimitSpec {
                    name: "max_db_queries_per_min",
                    amount: 20,
                    period: Duration::from_secs(60)
                },
            ],
            vec![LimitSpec {
                name: "max_calls_per_second",
                amount: 3,
                period: Duration::from_secs(1)
            }],
        ]
    );
    assert_eq!(host.count(), 2);
    // The shared limiter decides: 10 calls pass where the local limit (3/s) would stop 7.
    for _ in 0..10 {
        sb.cache_get(&ctx(), "k").await.unwrap();
    }
    assert_eq!(
        config.shared_limit_stats(),
        Some(SharedLimitStats {
            shared_checks: 12,
            fallback_checks: 0,
            outages: 0,
            degraded: false
        })
    );
    assert_eq!(sb.stats().limit_fallbacks, 0);
}

#[tokio::test]
async fn a_refusal_names_the_limit_and_is_counted() {
    let (sb, shared, host, _) = shared_sandbox(limited_policy());
    *shared.refuse.lock().unwrap() = Some("max_db_queries_per_min");
    let error = sb
        .db_query(&ctx(), "SELECT a FROM t", &[])
        .await
        .unwrap_err();
    assert_eq!(
        error,
        HostError::RateLimited {
            limit: "max_db_queries_per_min".into(),
            retry_after: Duration::from_millis(250)
        }
    );
    assert_eq!(host.count(), 0, "a refused call never reaches the host");
    assert_eq!(sb.stats().rate_limited, 1);
    sb.cache_get(&ctx(), "k").await.unwrap();
}

#[tokio::test]
async fn refused_by_policy_or_blocked_never_asks_and_no_limits_never_asks() {
    let mut policy = limited_policy();
    policy.status = PolicyStatus::Blocked;
    let (sb, shared, _, _) = shared_sandbox(policy);
    assert!(matches!(
        sb.cache_get(&ctx(), "k").await,
        Err(HostError::PermissionDenied { .. })
    ));
    let (sb, shared_2, _, _) = shared_sandbox(limited_policy());
    assert!(matches!(
        sb.db_query(&ctx(), "SELECT a FROM other", &[]).await,
        Err(HostError::PermissionDenied { .. })
    ));
    let (sb, shared_3, _, _) = shared_sandbox(approved(vec![perm(
        PermissionType::Cache,
        Access::ReadWrite,
        &[],
    )]));
    sb.cache_get(&ctx(), "k").await.unwrap();
    for fake in [shared, shared_2, shared_3] {
        assert!(fake.asked.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn while_it_fails_the_local_limits_decide_and_say_so() {
    let (sb, shared, _, config) = shared_sandbox(limited_policy());
    shared.down.store(true, Ordering::SeqCst);
    let call_ctx = ctx();
    let outcomes: Vec<_> = futures::future::join_all((0..6).map(|_| sb.cache_get(&call_ctx, "k")))
        .await
        .into_iter()
        .map(|r| r.map(|_| ()))
        .collect();
    let passed = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        (3..=4).contains(&passed),
        "the local 3/s decides, never unlimited: {outcomes:?}"
    );
    let stats = config.shared_limit_stats().unwrap();
    assert_eq!(
        (stats.fallback_checks, stats.outages, stats.degraded),
        (6, 1, true)
    );
    assert_eq!(sb.stats().limit_fallbacks, 6);

    // Back: after the retry interval the next call asks the shared limiter again.
    shared.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(SHARED_RETRY_INTERVAL + Duration::from_millis(50)).await;
    sb.cache_get(&ctx(), "k").await.unwrap();
    let stats = config.shared_limit_stats().unwrap();
    assert_eq!(
        (stats.shared_checks, stats.outages, stats.degraded),
        (1, 1, false)
    );
    assert_eq!(shared.asked.lock().unwrap().len(), 1);
}

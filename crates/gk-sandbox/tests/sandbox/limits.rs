//! Rate limits: sequential, concurrent, recovery, and a limit changed live.

use std::time::{Duration, Instant};

use gk_sdk::{Access, HostApi, HostError, PermissionType};

use crate::support::{approved, ctx, perm, sandbox};

fn limited(error: &HostError) -> Option<(&str, Duration)> {
    match error {
        HostError::RateLimited { limit, retry_after } => Some((limit.as_str(), *retry_after)),
        _ => None,
    }
}

#[tokio::test]
async fn calls_per_second_sequential() {
    let mut policy = approved(vec![]);
    policy.max_calls_per_second = 5;
    let (sb, host) = sandbox(policy);
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        outcomes.push(
            sb.translate(&ctx(), "k", &gk_sdk::TranslateArgs::None)
                .await,
        );
    }
    let passed = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        (5..=6).contains(&passed),
        "a burst of 5 (plus at most one refill): {passed}"
    );
    let refused = outcomes
        .iter()
        .find_map(|o| o.as_ref().err())
        .expect("some calls were limited");
    let (limit, retry_after) = limited(refused).expect("a RateLimited error");
    assert_eq!(limit, "max_calls_per_second");
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
        "{retry_after:?}"
    );
    assert_eq!(host.count(), passed, "limited calls never reach the host");
    assert_eq!(sb.stats().rate_limited as usize, 8 - passed);
    assert_eq!(
        refused.to_string(),
        format!(
            "rate limited: max_calls_per_second exceeded, retry in {} ms",
            retry_after.as_millis()
        )
    );
}

#[tokio::test]
async fn db_queries_per_minute_concurrent() {
    let mut policy = approved(vec![perm(PermissionType::Db, Access::Read, &["t"])]);
    policy.max_db_queries_per_min = 10;
    let (sb, host) = sandbox(policy);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let sb = sb.clone();
            tokio::spawn(async move { sb.db_query(&ctx(), "SELECT * FROM t", &[]).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(error) => assert_eq!(
                limited(&error).map(|l| l.0),
                Some("max_db_queries_per_min"),
                "{error}"
            ),
        }
    }
    assert_eq!(
        ok, 10,
        "exactly the burst passes: one more needs six seconds"
    );
    assert_eq!(host.count(), 10);
    assert_eq!(sb.stats().rate_limited, 54);
    assert_eq!(sb.stats().db_queries, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_recover_after_the_window() {
    let mut policy = approved(vec![]);
    policy.max_calls_per_second = 4;
    let (sb, _) = sandbox(policy);
    let start = Instant::now();
    let mut retry_after = None;
    for _ in 0..20 {
        if let Err(error) = sb
            .translate(&ctx(), "k", &gk_sdk::TranslateArgs::None)
            .await
        {
            retry_after = limited(&error).map(|l| l.1);
            break;
        }
    }
    let retry_after = retry_after.expect("the limit was reached");
    tokio::time::sleep(retry_after).await;
    sb.translate(&ctx(), "k", &gk_sdk::TranslateArgs::None)
        .await
        .expect("a call passes again after retry_after");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http_and_email_limits_are_separate() {
    let mut policy = approved(vec![
        perm(PermissionType::Http, Access::Read, &["a.com"]),
        perm(PermissionType::Email, Access::Read, &["*"]),
    ]);
    policy.max_http_req_per_min = 2;
    policy.max_emails_per_min = 1;
    let (sb, _) = sandbox(policy);
    let http = || gk_sdk::HttpRequest {
        url: "https://a.com/".into(),
        ..Default::default()
    };
    let email = || gk_sdk::Email {
        to: "a@b.com".into(),
        ..Default::default()
    };
    sb.http_request(&ctx(), http()).await.unwrap();
    sb.http_request(&ctx(), http()).await.unwrap();
    assert_eq!(
        limited(&sb.http_request(&ctx(), http()).await.unwrap_err()).map(|l| l.0),
        Some("max_http_req_per_min")
    );
    sb.send_email(&ctx(), email()).await.unwrap();
    assert_eq!(
        limited(&sb.send_email(&ctx(), email()).await.unwrap_err()).map(|l| l.0),
        Some("max_emails_per_min")
    );
}

#[tokio::test]
async fn a_limit_changed_live_applies_to_the_next_call() {
    let mut policy = approved(vec![perm(PermissionType::Db, Access::Read, &["t"])]);
    policy.max_db_queries_per_min = 2;
    let (sb, _) = sandbox(policy.clone());
    sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.unwrap();
    sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.unwrap();
    assert!(sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.is_err());

    // An unrelated change keeps the bucket: still limited.
    let mut unrelated = policy.clone();
    unrelated.max_http_req_per_min = 99;
    sb.update_policy(unrelated).unwrap();
    assert!(
        sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.is_err(),
        "same limit, same state"
    );

    // Raising the limit applies at once.
    let mut raised = policy.clone();
    raised.max_db_queries_per_min = 100;
    sb.update_policy(raised).unwrap();
    for _ in 0..50 {
        sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.unwrap();
    }

    // Lowering it too; 0 means unlimited.
    let mut lowered = policy.clone();
    lowered.max_db_queries_per_min = 1;
    sb.update_policy(lowered).unwrap();
    sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.unwrap();
    assert!(sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.is_err());
    let mut unlimited = policy;
    unlimited.max_db_queries_per_min = 0;
    sb.update_policy(unlimited).unwrap();
    for _ in 0..200 {
        sb.db_query(&ctx(), "SELECT * FROM t", &[]).await.unwrap();
    }
}

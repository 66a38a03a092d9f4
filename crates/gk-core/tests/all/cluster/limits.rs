//! `RedisLimiter`: one limit for three nodes, independence of plugins and limits, and the
//! local limits deciding (and saying so) while Redis is stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gk_core::cluster::RedisLimiter;
use gk_sandbox::{
    Admission, LimitSpec, SandboxConfig, SandboxedHostApi, SharedLimitStats, SharedLimiter,
};
use gk_sdk::{
    CallContext, HostApi, HostError, NoopHost, PolicyStatus, ResourcePolicy, TranslateArgs,
};

use super::unique;
use crate::common::{OwnRedis, free_port, service_url};

fn per_second(amount: u32) -> LimitSpec {
    LimitSpec {
        name: "max_calls_per_second",
        amount,
        period: Duration::from_secs(1),
    }
}

fn per_minute(name: &'static str, amount: u32) -> LimitSpec {
    LimitSpec {
        name,
        amount,
        period: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_admit_one_limit_together() {
    let Some(url) = service_url("GK_TEST_REDIS_URL") else {
        return;
    };
    let prefix = unique("gk-test-rl");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            RedisLimiter::connect(&url, &prefix)
                .await
                .unwrap_or_else(|e| panic!("GK_TEST_REDIS_URL is set but: {e}")),
        );
    }
    let start = Instant::now();
    let run_for = Duration::from_millis(3_500);
    let admitted = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            let (node, admitted) = (node.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                let mut asked = 0u64;
                while start.elapsed() < run_for {
                    let answer = node.admit("busy", &[per_second(50)]).await;
                    asked += 1;
                    match answer.unwrap_or_else(|e| panic!("Redis is up: {e}")) {
                        Admission::Admitted => admitted.lock().unwrap().push(start.elapsed()),
                        Admission::Refused { limit, retry_after } => {
                            assert_eq!(limit, "max_calls_per_second");
                            assert!(retry_after <= Duration::from_millis(21), "{retry_after:?}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                asked
            }));
        }
    }
    let mut asked = 0;
    for task in tasks {
        asked += task.await.unwrap();
    }
    let admitted = admitted.lock().unwrap().clone();
    super::forget_keys(&url, &prefix).await;
    let in_second = |from: u64| {
        admitted
            .iter()
            .filter(|t| {
                **t >= Duration::from_millis(from) && **t < Duration::from_millis(from + 1000)
            })
            .count()
    };
    let seconds: Vec<usize> = [500, 1_500, 2_500].into_iter().map(in_second).collect();
    println!(
        "three nodes, one limit of 50/s: {asked} calls asked in {} ms, {} admitted; burst in the first 100 ms {}; per second after it {seconds:?}",
        run_for.as_millis(),
        admitted.len(),
        admitted
            .iter()
            .filter(|t| **t < Duration::from_millis(100))
            .count()
    );
    assert!(
        asked > 1_000,
        "the nodes asked far more than the limit: {asked}"
    );
    for count in &seconds {
        assert!(
            (45..=55).contains(count),
            "50 ± 10 % per second: {seconds:?}"
        );
    }
    // The whole run: a burst of 50, then 50 per second.
    let expected = 50.0 + 50.0 * run_for.as_secs_f64();
    let total = admitted.len() as f64;
    assert!(
        (total - expected).abs() <= expected * 0.1,
        "{total} admitted, {expected} expected"
    );
}

#[tokio::test]
async fn limits_are_apart_per_plugin_and_per_limit_and_a_call_counts_in_all_or_none() {
    let Some(url) = service_url("GK_TEST_REDIS_URL") else {
        return;
    };
    let limiter = RedisLimiter::connect(&url, &unique("gk-test-rl"))
        .await
        .unwrap_or_else(|e| panic!("GK_TEST_REDIS_URL is set but: {e}"));
    let emails = per_minute("max_emails_per_min", 5);
    for _ in 0..5 {
        assert_eq!(
            limiter.admit("a", &[emails]).await.unwrap(),
            Admission::Admitted
        );
    }
    let Admission::Refused { limit, retry_after } = limiter.admit("a", &[emails]).await.unwrap()
    else {
        panic!("the sixth email in a minute is refused");
    };
    assert_eq!(limit, "max_emails_per_min");
    assert!(
        retry_after > Duration::from_secs(11) && retry_after <= Duration::from_secs(12),
        "one more every 12 s: {retry_after:?}"
    );
    assert_eq!(
        limiter.admit("b", &[emails]).await.unwrap(),
        Admission::Admitted,
        "another plugin has its own limit"
    );
    let http = per_minute("max_http_req_per_min", 5);
    assert_eq!(
        limiter.admit("a", &[http]).await.unwrap(),
        Admission::Admitted,
        "another limit of the same plugin is apart"
    );

    // All or none: a call refused by its second limit is not counted by its first.
    let (first, second) = (
        per_minute("max_db_queries_per_min", 2),
        per_minute("max_emails_per_min", 1),
    );
    assert_eq!(
        limiter.admit("c", &[first, second]).await.unwrap(),
        Admission::Admitted
    );
    assert!(matches!(
        limiter.admit("c", &[first, second]).await.unwrap(),
        Admission::Refused { limit, .. } if limit == "max_emails_per_min"
    ));
    assert_eq!(
        limiter.admit("c", &[first]).await.unwrap(),
        Admission::Admitted,
        "the refused call left room in the first limit"
    );
    assert!(matches!(
        limiter.admit("c", &[first]).await.unwrap(),
        Admission::Refused { limit, .. } if limit == "max_db_queries_per_min"
    ));
    assert!(
        limiter
            .key("a", "max_emails_per_min")
            .ends_with(":rl:a:max_emails_per_min")
    );
    limiter.close().await;
}

fn policy(calls_per_second: u32) -> ResourcePolicy {
    let mut policy = ResourcePolicy::default_for("limited");
    policy.status = PolicyStatus::Approved;
    policy.max_calls_per_second = calls_per_second;
    policy
}

fn sandboxed(
    limiter: Arc<RedisLimiter>,
    calls_per_second: u32,
) -> (SandboxedHostApi, Arc<SandboxConfig>) {
    let config = Arc::new(SandboxConfig::default().with_shared_limiter(limiter));
    let sandbox = SandboxedHostApi::with_config(
        "limited",
        Arc::new(NoopHost),
        policy(calls_per_second),
        config.clone(),
    )
    .unwrap();
    (sandbox, config)
}

/// Makes `n` calls; answers how many passed and the slowest call. Only rate limits refuse.
async fn calls(sandbox: &SandboxedHostApi, n: usize) -> (usize, Duration) {
    let ctx = CallContext::for_plugin("limited");
    let mut passed = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        match sandbox.translate(&ctx, "k", &TranslateArgs::None).await {
            Ok(_) => passed += 1,
            Err(HostError::RateLimited { .. }) => {}
            Err(other) => panic!("only rate limits refuse: {other:?}"),
        }
        slowest = slowest.max(start.elapsed());
    }
    (passed, slowest)
}

#[tokio::test]
async fn a_stopped_redis_leaves_the_local_limits_deciding_and_it_is_said() {
    if service_url("GK_TEST_REDIS_URL").is_none() {
        return;
    }
    let url = format!("redis://127.0.0.1:{}", free_port());
    let err = RedisLimiter::connect(&url, "gk-test")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("configuration: rate limiter {url}")),
        "{err}"
    );

    let limiter = RedisLimiter::connect_lazy(&url, "gk-test").unwrap();
    let (sandbox, config) = sandboxed(limiter, 5);
    let (passed, slowest) = calls(&sandbox, 10).await;
    assert!((5..=6).contains(&passed), "the local 5/s decides: {passed}");
    assert!(
        slowest < Duration::from_millis(150),
        "no wait on a dead Redis: {slowest:?}"
    );
    assert_eq!(
        config.shared_limit_stats(),
        Some(SharedLimitStats {
            shared_checks: 0,
            fallback_checks: 10,
            outages: 1,
            degraded: true,
        })
    );
    assert_eq!(sandbox.stats().limit_fallbacks, 10);
    assert_eq!(sandbox.stats().rate_limited as usize, 10 - passed);

    // Redis starts after the node: the limiter connects to it without a restart.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let _redis = OwnRedis::start(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while config.shared_limit_stats().unwrap().shared_checks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the limiter never reached Redis: {:?}",
            config.shared_limit_stats()
        );
        calls(&sandbox, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!config.shared_limit_stats().unwrap().degraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_load() {
    if service_url("GK_TEST_REDIS_URL").is_none() {
        return;
    }
    let mut redis = OwnRedis::start(free_port());
    let prefix = unique("gk-test-rl");
    let limiter = RedisLimiter::connect(&redis.url(), &prefix).await.unwrap();
    let (sandbox, config) = sandboxed(limiter, 20);
    // A second node on the same Redis, so the limit is visibly shared.
    let other_limiter = RedisLimiter::connect(&redis.url(), &prefix).await.unwrap();
    let (other_node, other_config) = sandboxed(other_limiter, 20);

    // Shared: two nodes together get 20 at once.
    let (a, _) = calls(&sandbox, 15).await;
    let (b, _) = calls(&other_node, 15).await;
    assert!((20..=21).contains(&(a + b)), "shared: {a} + {b}");
    let before = config.shared_limit_stats().unwrap();
    assert_eq!((before.shared_checks, before.degraded), (15, false));

    redis.stop();
    let mut passed = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (p, s) = calls(&sandbox, 10).await;
        passed += p;
        slowest = slowest.max(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = config.shared_limit_stats().unwrap();
    println!(
        "Redis down for 1 s: {passed} of 100 calls passed (local 20/s), slowest {slowest:?}, {during:?}"
    );
    assert!(during.degraded && during.outages == 1, "{during:?}");
    assert!(during.fallback_checks >= 90, "{during:?}");
    assert!(
        slowest < Duration::from_millis(200),
        "calls keep being answered: {slowest:?}"
    );
    assert!(
        (15..=50).contains(&passed),
        "the node's own 20/s decides (never unlimited): {passed}"
    );

    let _redis = OwnRedis::start(redis.port);
    let back = Instant::now();
    loop {
        calls(&sandbox, 1).await;
        calls(&other_node, 1).await;
        let stats = config.shared_limit_stats().unwrap();
        let other = other_config.shared_limit_stats().unwrap();
        if !stats.degraded && stats.shared_checks > during.shared_checks && !other.degraded {
            println!(
                "shared again {} ms after Redis restarted",
                back.elapsed().as_millis()
            );
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "back to shared within 10 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shared again (the restarted Redis did not know the script: EVAL after NOSCRIPT).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (a, _) = calls(&sandbox, 15).await;
    let (b, _) = calls(&other_node, 15).await;
    assert!((20..=21).contains(&(a + b)), "shared again: {a} + {b}");
}

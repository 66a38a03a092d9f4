//! Redis stopped and restarted under load: nodes keep serving, fall back as documented and
//! converge after.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::harness::*;
use crate::common::{KillOnDrop, send, service_url, set_calls_per_second, upload};

/// A `redis-server` of the test's own, on `port`; killed when dropped.
async fn own_redis(port: u16) -> KillOnDrop {
    let process = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/install-deps.sh installs it)");
    until(
        "the test's Redis to listen",
        Duration::from_secs(10),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        },
    )
    .await;
    KillOnDrop(process)
}

/// A metric's value in a node's `/metrics`.
async fn metric(node: &Node, token: &str, name: &str) -> Option<f64> {
    let reply =
        crate::common::send_text(node.addr, "GET", "/metrics", Some(token), &[], Vec::new()).await;
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_serving_while_redis_is_down_and_converge_after() {
    let dir = tempfile::tempdir().unwrap();
    // Only the services' presence is read here: the Redis is the test's own.
    if service_url("GK_TEST_REDIS_URL").is_none() {
        return;
    }
    let port = free_port();
    let redis = own_redis(port).await;
    let Some(cluster) = Cluster::new(dir.path(), Some(format!("redis://127.0.0.1:{port}"))).await
    else {
        return;
    };
    let result = redis_outage(&cluster, redis, port).await;
    cluster.finish(result).await;
}

async fn redis_outage(cluster: &Cluster, redis: KillOnDrop, port: u16) -> Result<(), String> {
    let token = cluster.token.as_str();
    let a = cluster.start("a").await;
    let b = cluster.start("b").await;
    let (status, reply) = upload(
        a.addr,
        Some(token),
        &[("plugin", "probe.wasm", &probe("1.0.0"))],
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    set_calls_per_second(a.addr, token, "probe", 1000).await;
    until("the plugin on b", Duration::from_secs(5), async || {
        listed_version(&b, token, "probe").await.map(|_| ())
    })
    .await;

    // Redis stops under load: both nodes keep answering.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = steady_load(
        vec![a.addr, b.addr],
        token.to_owned(),
        stop.clone(),
        answered.clone(),
        failed.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(redis);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A change made while Redis is down arrives by reconciliation (every 3 s here).
    let (status, reply) = send(
        a.addr,
        "POST",
        "/api/v1/plugins/probe/disable",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let start = Instant::now();
    until(
        "the disable to reach b without Redis",
        Duration::from_secs(8),
        async || (!listed_enabled(&b, token).await).then_some(()),
    )
    .await;
    println!(
        "without Redis, a disable reached the other node after {} ms",
        ms(start)
    );
    let (status, reply) = send(
        a.addr,
        "POST",
        "/api/v1/plugins/probe/enable",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    until(
        "the enable to reach b without Redis",
        Duration::from_secs(8),
        async || listed_enabled(&b, token).await.then_some(()),
    )
    .await;
    // The limits fell back to each node's own, and the node says so.
    let degraded = metric(&a, token, "goatkit_shared_limit_degraded").await;
    let fallbacks = metric(&a, token, "goatkit_shared_limit_fallback_checks_total").await;
    if degraded != Some(1.0) || fallbacks.unwrap_or(0.0) < 1.0 {
        return Err(format!(
            "during the outage: degraded {degraded:?}, fallback checks {fallbacks:?}\n{}",
            cluster.log_of(&a)
        ));
    }
    let outage_answered = answered.load(Ordering::SeqCst);

    // Redis is back: messages flow again and the limits are shared again.
    let _redis = own_redis(port).await;
    until(
        "the shared limiter to answer again",
        Duration::from_secs(10),
        async || {
            (metric(&a, token, "goatkit_shared_limit_degraded").await == Some(0.0)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, reply) = send(
        b.addr,
        "POST",
        "/api/v1/plugins/probe/disable",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let start = Instant::now();
    until(
        "a disable to reach a over Redis again",
        Duration::from_secs(1),
        async || (!listed_enabled(&a, token).await).then_some(()),
    )
    .await;
    println!(
        "with Redis back, a disable reached the other node after {} ms",
        ms(start)
    );
    stop.store(true, Ordering::SeqCst);
    let failures = load.await.unwrap();
    // The only refusals are the plugin's own disabled windows.
    let unexpected: Vec<&String> = failures
        .iter()
        .filter(|f| !f.contains("plugin_disabled"))
        .collect();
    println!(
        "load through the outage: {} answered ({outage_answered} before Redis came back), {} refused while disabled",
        answered.load(Ordering::SeqCst),
        failures.len()
    );
    if !unexpected.is_empty() {
        return Err(format!("requests failed during the outage: {unexpected:?}"));
    }
    Ok(())
}

/// Whether a node lists `probe` as enabled.
async fn listed_enabled(node: &Node, token: &str) -> bool {
    let (status, listed) = send(node.addr, "GET", "/api/v1/plugins", Some(token), "").await;
    assert_eq!(status, 200, "{listed}");
    listed
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "probe"))
        .is_some_and(|p| p["enabled"] == true)
}

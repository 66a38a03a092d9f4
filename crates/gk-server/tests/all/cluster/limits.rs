//! Rate limits held for the cluster and each job occurrence run once, also when a node dies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::harness::*;
use crate::common::{send, set_calls_per_second, upload};

/// Sends `log` calls to `addr` for `window` (after `warm_up`), two at a time; counts the calls
/// the sandbox admitted within the window.
async fn admitted_calls(
    addr: SocketAddr,
    token: String,
    warm_up: Duration,
    window: Duration,
) -> u64 {
    let start = Instant::now();
    let counted = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (token, counted) = (token.clone(), counted.clone());
        workers.push(tokio::spawn(async move {
            while start.elapsed() < warm_up + window {
                let (status, reply) = send(
                    addr,
                    "POST",
                    "/api/v1/plugins/probe/call/log",
                    Some(&token),
                    r#"{"level":"info","message":"limit"}"#,
                )
                .await;
                let admitted = status == 200 && reply.get("kind").is_none();
                if admitted && start.elapsed() >= warm_up && start.elapsed() < warm_up + window {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    counted.load(Ordering::SeqCst)
}

/// The calls of `probe` a node has counted.
async fn probe_calls(node: &Node, token: &str) -> u64 {
    let (status, stats) = send(
        node.addr,
        "GET",
        "/api/v1/plugins/probe/stats",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    stats["calls"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_jobs_hold_for_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::new(dir.path(), None).await else {
        return;
    };
    let result = limits_and_jobs(&cluster).await;
    cluster.finish(result).await;
}

async fn limits_and_jobs(cluster: &Cluster) -> Result<(), String> {
    let token = cluster.token.as_str();
    let a = cluster.start("a").await;
    let b = cluster.start("b").await;
    let c = cluster.start("c").await;

    // 50 host calls per second for the plugin, with load on all three nodes.
    let (status, reply) = upload(
        a.addr,
        Some(token),
        &[("plugin", "probe.wasm", &probe("1.0.0"))],
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = send(
        a.addr,
        "POST",
        "/api/v1/plugins/probe/approve",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    set_calls_per_second(a.addr, token, "probe", 50).await;
    for node in [&b, &c] {
        until(
            "the plugin on every node",
            Duration::from_secs(5),
            async || listed_version(node, token, "probe").await.map(|_| ()),
        )
        .await;
    }
    // The first second spends the burst; the next three are counted.
    let (warm_up, window) = (Duration::from_secs(1), Duration::from_secs(3));
    let counts = futures_join(
        [&a, &b, &c].map(|node| admitted_calls(node.addr, token.to_owned(), warm_up, window)),
    )
    .await;
    let per_second = counts.iter().sum::<u64>() as f64 / window.as_secs_f64();
    println!(
        "50/s policy over three nodes: {per_second:.1} admitted per second ({counts:?} per node)"
    );
    if !(45.0..=55.0).contains(&per_second) {
        return Err(format!(
            "a 50/s policy admitted {per_second:.1}/s over three nodes ({counts:?})"
        ));
    }

    // A job every second runs once per second across the cluster.
    let job = r#","jobs":[{"id":"tick","handler":"log","schedule":"* * * * * *","enabled":true}]"#;
    let (status, reply) = upload(
        b.addr,
        Some(token),
        &[("plugin", "probe.wasm", &probe_with("2.0.0", job))],
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    for node in [&a, &c] {
        until(
            "the job's version on every node",
            Duration::from_secs(5),
            async || {
                (listed_version(node, token, "probe").await.as_deref() == Some("2.0.0"))
                    .then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let nodes = [&a, &b, &c];
    let mut before = Vec::new();
    for node in nodes {
        before.push(probe_calls(node, token).await);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut ran = Vec::new();
    for (node, before) in nodes.iter().zip(&before) {
        ran.push(probe_calls(node, token).await - before);
    }
    let total: u64 = ran.iter().sum();
    println!("a job every second over 10 s on three nodes: {total} runs ({ran:?} per node)");
    if !(9..=11).contains(&total) {
        return Err(format!(
            "a job every second ran {total} times in 10 s ({ran:?})"
        ));
    }

    // The node that ran it most dies; the others keep running it.
    let busiest = ran
        .iter()
        .enumerate()
        .max_by_key(|(_, runs)| **runs)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let mut survivors: Vec<Node> = Vec::new();
    for (i, node) in [a, b, c].into_iter().enumerate() {
        if i != busiest {
            survivors.push(node);
        }
    }
    let mut before = Vec::new();
    for node in &survivors {
        before.push(probe_calls(node, token).await);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut after = 0;
    for (node, before) in survivors.iter().zip(&before) {
        after += probe_calls(node, token).await - before;
    }
    println!("after the busiest node was killed: {after} runs in 5 s");
    if !(4..=6).contains(&after) {
        return Err(format!(
            "after a node died the job ran {after} times in 5 s"
        ));
    }
    Ok(())
}

/// Runs the futures together and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = u64> + Send + 'static>(
    futures: [F; 3],
) -> Vec<u64> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

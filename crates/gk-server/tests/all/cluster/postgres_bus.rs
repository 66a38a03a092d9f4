//! Without Redis, changes travel by PostgreSQL `LISTEN`/`NOTIFY`; a node id used twice is said.

use std::time::{Duration, Instant};

use super::harness::*;
use crate::common::{send, upload};

/// Without Redis, changes travel by PostgreSQL `LISTEN`/`NOTIFY`: with reconciliation too slow
/// to matter (60 s), an upload through one node is served by the other, and a disable through
/// it refused there, within the times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_changes_travel_by_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = Cluster::new(dir.path(), None).await else {
        return;
    };
    cluster.redis_url = None;
    cluster.reconcile_every = "60s";
    let result = changes_travel_by_postgres(&cluster).await;
    cluster.finish(result).await;
}

async fn changes_travel_by_postgres(cluster: &Cluster) -> Result<(), String> {
    let token = cluster.token.as_str();
    let a = cluster.start("a").await;
    let b = cluster.start("b").await;
    let failing = |node: &Node, what: &str| {
        format!("{what}\n--- log of {}:\n{}", node.id, cluster.log_of(node))
    };
    // Both nodes listening is not both subscribed: wait for b's heartbeat (written after it
    // joined, so after its LISTEN).
    until("b to join", Duration::from_secs(10), async || {
        let (_, view) = send(a.addr, "GET", "/api/v1/cluster", Some(token), "").await;
        (view["nodes"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let (_, view) = send(a.addr, "GET", "/api/v1/cluster", Some(token), "").await;
    assert_eq!(view["bus"], "postgres", "{view}");

    let (status, reply) = upload(
        a.addr,
        Some(token),
        &[("plugin", "probe.wasm", &probe("1.0.0"))],
    )
    .await;
    if status != 201 {
        return Err(failing(&a, &format!("upload through a: {status} {reply}")));
    }
    let start = Instant::now();
    until(
        "the upload to reach b by NOTIFY",
        Duration::from_secs(2),
        async || {
            (listed_version(&b, token, "probe").await.as_deref() == Some("1.0.0")).then_some(())
        },
    )
    .await;
    println!(
        "install through a seen by b after {} ms (postgres bus)",
        ms(start)
    );

    let start = disable_probe(&a, token).await;
    refused_as_disabled(&b, token, "the disable to reach b by NOTIFY").await;
    println!(
        "disable through a refused by b after {} ms (postgres bus)",
        ms(start)
    );

    // A second process started with a's id: the two see each other's heartbeats and say so.
    let twin = cluster.start_as("a-twin", "a").await;
    let said = |node: &Node| {
        cluster
            .log_of(node)
            .contains("another node uses this node's id")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(said(&a) || said(&twin)) {
        if Instant::now() > deadline {
            return Err(format!(
                "no duplicate node id reported\n--- a:\n{}\n--- twin:\n{}",
                cluster.log_of(&a),
                cluster.log_of(&twin)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

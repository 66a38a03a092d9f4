//! Changes made through one node reach the others: upload, approval, upgrade under load,
//! policy, disable; a node started later; one view of nodes and logs; a forged package refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use super::harness::*;
use crate::common::proxy::proxy_module_registering;
use crate::common::{send, send_text, upload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_act_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::new(dir.path(), None).await else {
        return;
    };
    let result = changes_reach_every_node(&cluster).await;
    cluster.finish(result).await;
}

async fn changes_reach_every_node(cluster: &Cluster) -> Result<(), String> {
    let token = cluster.token.as_str();
    let a = cluster.start("a").await;
    let b = cluster.start("b").await;
    let c = cluster.start("c").await;
    let nodes = [&a, &b, &c];
    let failing = |node: &Node, what: &str| {
        format!("{what}\n--- log of {}:\n{}", node.id, cluster.log_of(node))
    };

    // Installed through B: A and C install it from the store.
    let (status, reply) = upload(
        b.addr,
        Some(token),
        &[("plugin", "probe.wasm", &probe("1.0.0"))],
    )
    .await;
    if status != 201 {
        return Err(failing(&b, &format!("upload through b: {status} {reply}")));
    }
    let start = Instant::now();
    for node in [&a, &c] {
        until(
            "the upload to reach every node",
            Duration::from_secs(5),
            async || {
                (listed_version(node, token, "probe").await.as_deref() == Some("1.0.0"))
                    .then_some(())
            },
        )
        .await;
    }
    println!("install through b seen by a and c after {} ms", ms(start));

    // Approved through A: every node runs its queries.
    let (status, reply) = send(
        a.addr,
        "POST",
        "/api/v1/plugins/probe/approve",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let start = Instant::now();
    // The first query also loads and compiles the probe on each node, which with the four
    // cluster tests' processes on two cores once took over 2 s; the 1 s bound of the issue is
    // asserted on the policy change below, on loaded plugins.
    for node in nodes {
        until(
            "the approval to reach every node",
            Duration::from_secs(5),
            async || probe_query(node, token).await.ok(),
        )
        .await;
    }
    println!(
        "approval through a applied everywhere after {} ms",
        ms(start)
    );

    // Upgraded through B under a steady load over the three nodes: A and C answer with the new
    // version within 2 s, and no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = steady_load(
        nodes.iter().map(|n| n.addr).collect(),
        token.to_owned(),
        stop.clone(),
        answered.clone(),
        failed.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, reply) = upload(
        b.addr,
        Some(token),
        &[("plugin", "probe.wasm", &probe("2.0.0"))],
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let start = Instant::now();
    for node in [&a, &c] {
        until(
            "the upgrade to reach every node",
            Duration::from_secs(2),
            async || {
                (listed_version(node, token, "probe").await.as_deref() == Some("2.0.0"))
                    .then_some(())
            },
        )
        .await;
    }
    println!("upgrade through b served by a and c after {} ms", ms(start));
    // The load runs on past the upgrade until it has answered enough requests to mean
    // something (a count, not a time: a busy machine answers fewer per second).
    until(
        "the steady load to answer 50 requests",
        Duration::from_secs(20),
        async || (answered.load(Ordering::SeqCst) > 50).then_some(()),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let failures = load.await.unwrap();
    println!(
        "steady load during the upgrade: {} answered, {} failed",
        answered.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    assert!(answered.load(Ordering::SeqCst) > 50, "the load ran");
    assert!(
        failures.is_empty(),
        "requests failed during the upgrade: {failures:?}"
    );

    // A policy changed through C (blocked) is enforced by A and B within 1 s.
    let (status, mut policy) = send(
        c.addr,
        "GET",
        "/api/v1/plugins/probe/policy",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    policy["status"] = json!("blocked");
    let (status, reply) = send(
        c.addr,
        "PUT",
        "/api/v1/plugins/probe/policy",
        Some(token),
        &policy.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let start = Instant::now();
    for node in [&a, &b] {
        let refused = until(
            "the block to reach every node",
            Duration::from_secs(1),
            async || probe_query(node, token).await.err(),
        )
        .await;
        assert!(refused.1.to_string().contains("blocked"), "{refused:?}");
    }
    println!(
        "policy change through c enforced by a and b after {} ms",
        ms(start)
    );

    // Disabled through A: B and C refuse it within 1 s.
    let start = disable_probe(&a, token).await;
    for node in [&b, &c] {
        refused_as_disabled(node, token, "the disable to reach every node").await;
    }
    println!(
        "disable through a refused by b and c after {} ms",
        ms(start)
    );
    let (status, reply) = send(
        b.addr,
        "POST",
        "/api/v1/plugins/probe/enable",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // A node started later, with an empty plugins directory, serves what is installed.
    let d = cluster.start("d").await;
    let version = listed_version(&d, token, "probe").await;
    if version.as_deref() != Some("2.0.0") {
        return Err(failing(
            &d,
            &format!("the late node lists probe as {version:?}"),
        ));
    }
    until(
        "the late node to serve the enabled probe",
        Duration::from_secs(2),
        async || {
            let (status, _) = send(
                d.addr,
                "POST",
                "/api/v1/plugins/probe/call/log",
                Some(token),
                r#"{"message":"x"}"#,
            )
            .await;
            (status == 200).then_some(())
        },
    )
    .await;

    // A row no node sealed (written into the database by something else) is code no node
    // runs: every node reports it refused, none lists it.
    let forged = proxy_module_registering(
        r#"{"name":"forged","version":"6.6.6","description":"written straight into the store"}"#,
    );
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &forged));
    let store = sea_orm::Database::connect(&cluster.database.url)
        .await
        .unwrap();
    store
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "INSERT INTO gk_packages (name, file_name, sha256, content, installed, change_time, \
             change_by, seal) VALUES ('forged', 'forged.wasm', $1, $2, true, now(), 'intruder', $3)",
            [sha256.into(), forged.into(), "00".repeat(32).into()],
        ))
        .await
        .unwrap();
    let refusals = until(
        "every node to refuse the forged row",
        Duration::from_secs(15),
        async || {
            let (_, view) = send(c.addr, "GET", "/api/v1/cluster", Some(token), "").await;
            let live: Vec<&Value> = view["nodes"]
                .as_array()?
                .iter()
                .filter(|node| node["alive"] == true)
                .collect();
            let refusals: Vec<String> = live
                .iter()
                .filter_map(|node| node["plugins"]["forged"]["install_error"]["error"].as_str())
                .map(str::to_owned)
                .collect();
            (refusals.len() == live.len() && live.len() >= 3).then_some(refusals)
        },
    )
    .await;
    assert!(
        refusals.iter().all(|error| error.contains("not sealed")),
        "{refusals:?}"
    );
    for node in [&a, &b, &c] {
        assert_eq!(listed_version(node, token, "forged").await, None);
    }
    store
        .execute_unprepared("DELETE FROM gk_packages WHERE name = 'forged'")
        .await
        .unwrap();
    // Gone from the store, gone from the nodes' reports at their next reconciliation.
    until(
        "the refusals of a deleted row to be forgotten",
        Duration::from_secs(10),
        async || {
            let (_, view) = send(c.addr, "GET", "/api/v1/cluster", Some(token), "").await;
            view["nodes"]
                .as_array()?
                .iter()
                .all(|node| node["plugins"]["forged"].is_null())
                .then_some(())
        },
    )
    .await;

    // One view: every node, alive, from any node.
    let (status, view) = send(c.addr, "GET", "/api/v1/cluster", Some(token), "").await;
    assert_eq!(status, 200, "{view}");
    let ids: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(view["node_id"], "c");
    assert_eq!(view["bus"], "redis");
    for id in ["a", "b", "c", "d"] {
        assert!(ids.contains(&id), "{view}");
    }
    assert!(
        view["plugins"]["probe"]["calls"].as_u64().unwrap_or(0) > 50,
        "{view}"
    );
    // The logs of the load's calls, merged from the three nodes that took them.
    let (status, logs) = send(
        a.addr,
        "GET",
        "/api/v1/plugins/logs?plugin=probe&limit=1000",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{logs}");
    let mut writers: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["node"].as_str())
        .collect();
    writers.sort_unstable();
    writers.dedup();
    for node in ["a", "b", "c"] {
        assert!(
            writers.contains(&node),
            "merged logs come from every node that took load: {writers:?}"
        );
    }
    // The admin pages show the same: every node, and the merged logs with their node.
    let cookie = format!("gk_admin={token}");
    let page = send_text(
        b.addr,
        "GET",
        "/admin/plugins",
        None,
        &[("cookie", &cookie)],
        Vec::new(),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    for id in ["a", "b", "c", "d"] {
        assert!(
            page.body
                .contains(&format!("data-node=\"{id}\" data-alive=\"true\"")),
            "node {id} on the admin page: {}",
            page.body
        );
    }
    assert!(page.body.contains("(this node)"), "{}", page.body);
    let page = send_text(
        a.addr,
        "GET",
        "/admin/plugins/logs?plugin=probe",
        None,
        &[("cookie", &cookie)],
        Vec::new(),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    for node in ["a", "b", "c"] {
        assert!(
            page.body
                .contains(&format!("<td>{node}</td><td>probe</td>")),
            "entries of {node} on the log page: {}",
            page.body
        );
    }
    let (status, local) = send(
        a.addr,
        "GET",
        "/api/v1/plugins/logs?plugin=probe&node=local",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{local}");
    assert!(
        local
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("node").is_none()),
        "{local}"
    );
    // Nodes read each other's logs with a proof signed for that one request, never with a
    // user's token: an admin token alone does not open the node endpoint.
    let (status, reply) = send(a.addr, "GET", "/api/v1/cluster/logs", Some(token), "").await;
    assert_eq!(status, 401, "{reply}");

    // Removed through D: every node stops serving it.
    let (status, reply) = send(d.addr, "DELETE", "/api/v1/plugins/probe", Some(token), "").await;
    assert_eq!(status, 204, "{reply}");
    for node in nodes {
        until(
            "the removal to reach every node",
            Duration::from_secs(2),
            async || {
                listed_version(node, token, "probe")
                    .await
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }
    assert!(!Path::new(&cluster.dir.join("a/plugins/probe.wasm")).exists());
    Ok(())
}

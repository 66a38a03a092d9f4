//! Several `gk serve` processes sharing one PostgreSQL store and one Redis act as one platform:
//! a plugin uploaded through one node is served by all (a node started later with an empty
//! plugins directory included), and a policy change or a disable made through one node is
//! enforced by the others within a second, under a steady load that never sees a failed
//! request during an upgrade. The propagation times are printed.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::proxy::proxy_module_registering;
use common::{send, send_text, service_url, upload};
use gk_server::auth::{Role, TokenKeys};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const SECRET: &str = "cluster-test-secret-0123456789-abcdefghij";

/// A `gk serve` process; killed when dropped.
struct Node {
    /// Its directory under the cluster's (its node id, unless started by `start_as`).
    id: String,
    addr: SocketAddr,
    process: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A fresh PostgreSQL database for one cluster, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin_url: &str) -> Self {
        let name = format!(
            "gk_cluster_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let admin = sea_orm::Database::connect(admin_url).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    async fn drop_now(&self) {
        let admin = sea_orm::Database::connect(&self.admin_url).await.unwrap();
        let _ = admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// What every node of one cluster shares.
struct Cluster {
    dir: PathBuf,
    database: Database,
    /// `None`: control messages by PostgreSQL `LISTEN`/`NOTIFY`, no shared limits.
    redis_url: Option<String>,
    prefix: String,
    token: String,
    /// `GOATKIT_CLUSTER_RECONCILE_EVERY` of the nodes.
    reconcile_every: &'static str,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts node `id` with its own (empty) plugins and data directories.
    async fn start(&self, id: &str) -> Node {
        self.start_as(id, id).await
    }

    /// Starts a node in the directory `dir_name` (its [`Node::id`] here) that says it is
    /// `id`.
    async fn start_as(&self, dir_name: &str, id: &str) -> Node {
        let home = self.dir.join(dir_name);
        std::fs::create_dir_all(&home).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gk"));
        for (name, _) in std::env::vars() {
            if name.starts_with("GOATKIT_") || name.starts_with("GOATFLOW_") {
                command.env_remove(name);
            }
        }
        if let Some(url) = &self.redis_url {
            command.env("GOATKIT_REDIS_URL", url);
        }
        let log = std::fs::File::create(home.join("serve.log")).unwrap();
        let process = command
            .current_dir(&home)
            .args(["serve", "--listen", &addr.to_string(), "--node-id", id])
            .env("GOATKIT_DATABASE_URL", &self.database.url)
            .env("GOATKIT_CLUSTER_ENABLED", "true")
            .env("GOATKIT_CLUSTER_PREFIX", &self.prefix)
            .env("GOATKIT_CLUSTER_RECONCILE_EVERY", self.reconcile_every)
            .env("GOATKIT_CLUSTER_HEARTBEAT_EVERY", "500ms")
            .env("GOATKIT_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = Node {
            id: dir_name.to_owned(),
            addr,
            process,
        };
        until(
            &format!("node {id} to listen"),
            Duration::from_secs(60),
            async || tokio::net::TcpStream::connect(addr).await.ok(),
        )
        .await;
        node
    }

    fn log_of(&self, node: &Node) -> String {
        std::fs::read_to_string(self.dir.join(&node.id).join("serve.log")).unwrap_or_default()
    }
}

async fn until<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The version of `plugin` a node lists, if it lists it.
async fn listed_version(node: &Node, token: &str, plugin: &str) -> Option<String> {
    let (status, listed) = send(node.addr, "GET", "/api/v1/plugins", Some(token), "").await;
    assert_eq!(status, 200, "{listed}");
    listed
        .as_array()?
        .iter()
        .find(|p| p["name"] == plugin)
        .and_then(|p| p["version"].as_str().map(str::to_owned))
}

/// Calls the probe's `db_query` (the host function) on `node`: `Ok(rows)`, or the error.
async fn probe_query(node: &Node, token: &str) -> Result<Value, (u16, Value)> {
    let (status, reply) = send(
        node.addr,
        "POST",
        "/api/v1/plugins/probe/call/db_query",
        Some(token),
        &json!({ "query": "SELECT 1 AS one", "args": [] }).to_string(),
    )
    .await;
    if status == 200 && reply.get("kind").is_none() {
        Ok(reply)
    } else {
        Err((status, reply))
    }
}

fn probe(version: &str) -> Vec<u8> {
    probe_with(version, "")
}

/// The probe with more registration fields (`,"jobs":[…]`).
fn probe_with(version: &str, more: &str) -> Vec<u8> {
    proxy_module_registering(&format!(
        r#"{{"name":"probe","version":"{version}","description":"cluster probe","resources":{{"permissions":[{{"type":"db","access":"read"}}]}}{more}}}"#
    ))
}

/// Sends `log` calls to the nodes in turn until stopped; counts the answers and the failures.
fn steady_load(
    nodes: Vec<SocketAddr>,
    token: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut turn = 0;
        while !stop.load(Ordering::SeqCst) {
            let addr = nodes[turn % nodes.len()];
            turn += 1;
            let (status, reply) = send(
                addr,
                "POST",
                "/api/v1/plugins/probe/call/log",
                Some(&token),
                r#"{"level":"info","message":"load"}"#,
            )
            .await;
            if status == 200 {
                answered.fetch_add(1, Ordering::SeqCst);
            } else {
                failed.fetch_add(1, Ordering::SeqCst);
                failures.push(format!("{addr}: {status} {reply}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failures
    })
}

/// Disables the probe through `node`; when it answered.
async fn disable_probe(node: &Node, token: &str) -> Instant {
    let (status, reply) = send(
        node.addr,
        "POST",
        "/api/v1/plugins/probe/disable",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    Instant::now()
}

/// Waits (at most 1 s) until `node` refuses the probe's calls as disabled.
async fn refused_as_disabled(node: &Node, token: &str, what: &str) {
    let (status, reply) = until(what, Duration::from_secs(1), async || {
        let (status, reply) = send(
            node.addr,
            "POST",
            "/api/v1/plugins/probe/call/log",
            Some(token),
            r#"{"message":"x"}"#,
        )
        .await;
        (status != 200).then_some((status, reply))
    })
    .await;
    assert_eq!(
        reply["error"]["code"], "plugin_disabled",
        "{status} {reply}"
    );
}

/// Milliseconds since `start`.
fn ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

impl Cluster {
    /// A cluster over a fresh database and `redis_url` (the machine's Redis unless given);
    /// `None` when the services are not configured (outside CI).
    async fn new(dir: &Path, redis_url: Option<String>) -> Option<Self> {
        let postgres = service_url("GK_TEST_POSTGRES_URL")?;
        let redis_url = match redis_url {
            Some(url) => url,
            None => service_url("GK_TEST_REDIS_URL")?,
        };
        let database = Database::create(&postgres).await;
        Some(Self {
            dir: dir.to_owned(),
            prefix: format!("gk-test-{}", database.name),
            database,
            redis_url: Some(redis_url),
            reconcile_every: "3s",
            token: TokenKeys::from_secret(SECRET.as_bytes())
                .unwrap()
                .mint("ada", Role::Admin, Duration::from_secs(3600))
                .unwrap(),
        })
    }

    /// Drops the database, then fails with `result`'s error.
    async fn finish(self, result: Result<(), String>) {
        self.database.drop_now().await;
        if let Err(message) = result {
            panic!("{message}");
        }
    }
}

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
    for node in nodes {
        until(
            "the approval to reach every node",
            Duration::from_secs(2),
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
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let (status, mut policy) = send(
        a.addr,
        "GET",
        "/api/v1/plugins/probe/policy",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    policy["max_calls_per_second"] = 50.into();
    let (status, reply) = send(
        a.addr,
        "PUT",
        "/api/v1/plugins/probe/policy",
        Some(token),
        &policy.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
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

/// A `redis-server` of the test's own, on `port`; killed when dropped.
struct OwnRedis(Child);

impl OwnRedis {
    async fn start(port: u16) -> Self {
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
        Self(process)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A metric's value in a node's `/metrics`.
async fn metric(node: &Node, token: &str, name: &str) -> Option<f64> {
    let reply = common::send_text(node.addr, "GET", "/metrics", Some(token), &[], Vec::new()).await;
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
    let redis = OwnRedis::start(port).await;
    let Some(cluster) = Cluster::new(dir.path(), Some(format!("redis://127.0.0.1:{port}"))).await
    else {
        return;
    };
    let result = redis_outage(&cluster, redis, port).await;
    cluster.finish(result).await;
}

async fn redis_outage(cluster: &Cluster, redis: OwnRedis, port: u16) -> Result<(), String> {
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
    let (status, mut policy) = send(
        a.addr,
        "GET",
        "/api/v1/plugins/probe/policy",
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    policy["max_calls_per_second"] = 1000.into();
    let (status, reply) = send(
        a.addr,
        "PUT",
        "/api/v1/plugins/probe/policy",
        Some(token),
        &policy.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
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
    let _redis = OwnRedis::start(port).await;
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

/// Without Redis, changes travel by PostgreSQL `LISTEN`/`NOTIFY`: with reconciliation too slow
/// to matter (60 s), an upload through one node is served by the other, and a disable through
/// it refused there, within the issue's times.
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

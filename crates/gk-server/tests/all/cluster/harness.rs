//! What the cluster tests share: a fresh database, `gk serve` nodes over it, the probe plugin,
//! a steady load, and waiting for a condition.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::proxy::proxy_module_registering;
use crate::common::{KillOnDrop, gk_command, send, service_url};
pub(crate) use crate::common::{free_port, until};
use gk_server::auth::{Role, TokenKeys};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

pub(crate) const SECRET: &str = "cluster-test-secret-0123456789-abcdefghij";

/// A `gk serve` process; killed when dropped.
pub(crate) struct Node {
    /// Its directory under the cluster's (its node id, unless started by `start_as`).
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    /// The process, killed when the node is dropped.
    pub(crate) _process: KillOnDrop,
}

/// A fresh PostgreSQL database for one cluster, dropped at the end.
pub(crate) struct Database {
    pub(crate) admin_url: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl Database {
    pub(crate) async fn create(admin_url: &str) -> Self {
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

    pub(crate) async fn drop_now(&self) {
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
pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    pub(crate) database: Database,
    /// `None`: control messages by PostgreSQL `LISTEN`/`NOTIFY`, no shared limits.
    pub(crate) redis_url: Option<String>,
    pub(crate) prefix: String,
    pub(crate) token: String,
    /// `GOATKIT_CLUSTER_RECONCILE_EVERY` of the nodes.
    pub(crate) reconcile_every: &'static str,
}

impl Cluster {
    /// Starts node `id` with its own (empty) plugins and data directories.
    pub(crate) async fn start(&self, id: &str) -> Node {
        self.start_as(id, id).await
    }

    /// Starts a node in the directory `dir_name` (its [`Node::id`] here) that says it is
    /// `id`.
    pub(crate) async fn start_as(&self, dir_name: &str, id: &str) -> Node {
        let home = self.dir.join(dir_name);
        std::fs::create_dir_all(&home).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = gk_command();
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
            _process: KillOnDrop(process),
        };
        until(
            &format!("node {id} to listen"),
            Duration::from_secs(60),
            async || tokio::net::TcpStream::connect(addr).await.ok(),
        )
        .await;
        node
    }

    pub(crate) fn log_of(&self, node: &Node) -> String {
        std::fs::read_to_string(self.dir.join(&node.id).join("serve.log")).unwrap_or_default()
    }
}

/// The version of `plugin` a node lists, if it lists it.
pub(crate) async fn listed_version(node: &Node, token: &str, plugin: &str) -> Option<String> {
    let (status, listed) = send(node.addr, "GET", "/api/v1/plugins", Some(token), "").await;
    assert_eq!(status, 200, "{listed}");
    listed
        .as_array()?
        .iter()
        .find(|p| p["name"] == plugin)
        .and_then(|p| p["version"].as_str().map(str::to_owned))
}

/// Calls the probe's `db_query` (the host function) on `node`: `Ok(rows)`, or the error.
pub(crate) async fn probe_query(node: &Node, token: &str) -> Result<Value, (u16, Value)> {
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

pub(crate) fn probe(version: &str) -> Vec<u8> {
    probe_with(version, "")
}

/// The probe with more registration fields (`,"jobs":[…]`).
pub(crate) fn probe_with(version: &str, more: &str) -> Vec<u8> {
    proxy_module_registering(&format!(
        r#"{{"name":"probe","version":"{version}","description":"cluster probe","resources":{{"permissions":[{{"type":"db","access":"read"}}]}}{more}}}"#
    ))
}

/// Sends `log` calls to the nodes in turn until stopped; counts the answers and the failures.
pub(crate) fn steady_load(
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
pub(crate) async fn disable_probe(node: &Node, token: &str) -> Instant {
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
pub(crate) async fn refused_as_disabled(node: &Node, token: &str, what: &str) {
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
pub(crate) fn ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

impl Cluster {
    /// A cluster over a fresh database and `redis_url` (the machine's Redis unless given);
    /// `None` when the services are not configured (outside CI).
    pub(crate) async fn new(dir: &Path, redis_url: Option<String>) -> Option<Self> {
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
    pub(crate) async fn finish(self, result: Result<(), String>) {
        self.database.drop_now().await;
        if let Err(message) = result {
            panic!("{message}");
        }
    }
}

//! Job occurrences claimed across three nodes: each runs exactly once, in Redis and in the
//! store's database, and keeps running when a node goes away.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use gk_core::Scheduler;
use gk_core::cluster::{JobClaimError, JobClaims, RedisJobClaims, StoreJobClaims};
use gk_core::host::{DatabaseConfig, Databases};
use gk_core::{Manager, Store};

use super::unique;
use crate::common::{TestPlugin, fixture, service_url};

/// One claim as a node made it.
#[derive(Debug, Clone)]
struct Claim {
    node: usize,
    tick: DateTime<Utc>,
    won: bool,
}

/// Claims of one node, recorded on the way through.
#[derive(Debug)]
struct Recorded {
    node: usize,
    inner: Arc<dyn JobClaims>,
    log: Arc<Mutex<Vec<Claim>>>,
}

#[async_trait]
impl JobClaims for Recorded {
    async fn claim(
        &self,
        plugin: &str,
        job: &str,
        tick: DateTime<Utc>,
    ) -> Result<bool, JobClaimError> {
        let won = self.inner.claim(plugin, job, tick).await?;
        self.log.lock().unwrap().push(Claim {
            node: self.node,
            tick,
            won,
        });
        Ok(won)
    }

    fn node(&self) -> &str {
        self.inner.node()
    }
}

struct Node {
    scheduler: Scheduler,
    ticks: Arc<std::sync::atomic::AtomicUsize>,
    _fixture: crate::common::Fixture,
}

async fn node(plugin: &str, job: &str, claims: Arc<dyn JobClaims>) -> Node {
    let f = fixture().await;
    let mut test_plugin = TestPlugin::new(plugin, "1");
    test_plugin.jobs = vec![gk_sdk::JobSpec {
        id: job.into(),
        handler: "tick".into(),
        schedule: "* * * * * *".into(),
        enabled: true,
        ..Default::default()
    }];
    let ticks = test_plugin.ticks.clone();
    let manager: &Manager = &f.manager;
    manager.register(Arc::new(test_plugin)).await.unwrap();
    let scheduler = Scheduler::new(manager.clone());
    scheduler.set_claims(claims);
    assert_eq!(scheduler.schedule_plugin(plugin).unwrap(), 1);
    Node {
        scheduler,
        ticks,
        _fixture: f,
    }
}

/// Sleeps until `offset` past the next whole second.
async fn into_next_second(offset: Duration) {
    let now = Utc::now();
    let next = Utc.timestamp_opt(now.timestamp() + 1, 0).single().unwrap();
    let wait = (next - now).to_std().unwrap_or_default() + offset;
    tokio::time::sleep(wait).await;
}

/// Three nodes claiming in `backends` (one per node, the same place) for ~5 s, then one node
/// gone for ~3 s: each occurrence ran exactly once, none was missed, the others kept going.
async fn three_nodes(what: &str, plugin: &str, job: &str, backends: Vec<Arc<dyn JobClaims>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut nodes = Vec::new();
    for (i, inner) in backends.into_iter().enumerate() {
        let claims = Arc::new(Recorded {
            node: i,
            inner,
            log: log.clone(),
        });
        nodes.push(Some(node(plugin, job, claims).await));
    }
    into_next_second(Duration::from_millis(400)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dropped_at = Utc::now();
    let first_ticks = nodes[0].as_ref().unwrap().ticks.load(Ordering::SeqCst);
    let stats_0 = nodes[0]
        .as_ref()
        .unwrap()
        .scheduler
        .job_stats(plugin, job)
        .unwrap();
    nodes[0] = None; // node 0 stops (its scheduler dropped, its tasks aborted)
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in nodes.iter().flatten() {
        node.scheduler.unschedule_plugin(plugin);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the last runs finish

    let log = log.lock().unwrap().clone();
    let mut by_tick: BTreeMap<DateTime<Utc>, Vec<Claim>> = BTreeMap::new();
    for claim in log {
        by_tick.entry(claim.tick).or_default().push(claim);
    }
    let winners: Vec<(DateTime<Utc>, usize)> = by_tick
        .iter()
        .map(|(tick, claims)| {
            let won: Vec<usize> = claims.iter().filter(|c| c.won).map(|c| c.node).collect();
            assert_eq!(
                won.len(),
                1,
                "{what}: occurrence {tick} won by exactly one node: {claims:?}"
            );
            (*tick, won[0])
        })
        .collect();
    let runs: usize = nodes
        .iter()
        .flatten()
        .map(|n| n.ticks.load(Ordering::SeqCst))
        .sum::<usize>()
        + first_ticks;
    println!(
        "{what}: {} occurrences, won by nodes {:?}; runs {runs}; node 0 before it stopped: {stats_0:?}",
        winners.len(),
        winners.iter().map(|(_, n)| *n).collect::<Vec<_>>()
    );
    assert_eq!(
        runs,
        winners.len(),
        "{what}: each won occurrence ran once, in total"
    );
    for pair in winners.windows(2) {
        assert_eq!(
            (pair[1].0 - pair[0].0).num_seconds(),
            1,
            "{what}: no second was missed: {winners:?}"
        );
    }
    assert!(
        winners.len() >= 7,
        "{what}: about 8 s of occurrences: {winners:?}"
    );
    let after: Vec<usize> = winners
        .iter()
        .filter(|(tick, _)| *tick > dropped_at)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        after.len() >= 2,
        "{what}: occurrences after node 0 stopped: {winners:?}"
    );
    assert!(!after.contains(&0), "{what}: node 0 is gone: {winners:?}");
    assert_eq!(stats_0.runs as usize, first_ticks, "{what}: {stats_0:?}");
    assert!(
        stats_0.runs + stats_0.claimed_elsewhere >= 5 && stats_0.claim_errors == 0,
        "{what}: node 0 claimed every occurrence while it ran: {stats_0:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_redis_run_each_occurrence_once() {
    let Some(url) = service_url("GK_TEST_REDIS_URL") else {
        return;
    };
    let prefix = unique("gk-test-jobs");
    let mut backends: Vec<Arc<dyn JobClaims>> = Vec::new();
    for i in 0..3 {
        let claims = RedisJobClaims::connect(&url, &prefix, &format!("node-{i}"))
            .await
            .unwrap_or_else(|e| panic!("GK_TEST_REDIS_URL is set but: {e}"));
        backends.push(claims);
    }
    three_nodes("redis", "clustered", "every-second", backends).await;
    super::forget_keys(&url, &prefix).await;
}

/// Where a store can be opened: a SQLite file under `dir`, and the machine's PostgreSQL and
/// MariaDB when their URLs are set.
pub(crate) fn store_places(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let sqlite = format!("sqlite://{}?mode=rwc", dir.join("store.db").display());
    let mut places = vec![("sqlite", sqlite)];
    for (what, variable) in [
        ("postgres", "GK_TEST_POSTGRES_URL"),
        ("mariadb", "GK_TEST_MYSQL_URL"),
    ] {
        if let Some(url) = service_url(variable) {
            places.push((what, url));
        }
    }
    places
}

pub(crate) async fn store_on(url: &str) -> (Store, Databases) {
    let databases = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let store = Store::open(databases.connection("default").unwrap().clone())
        .await
        .unwrap();
    (store, databases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgres_run_each_occurrence_once() {
    let Some(url) = service_url("GK_TEST_POSTGRES_URL") else {
        return;
    };
    let plugin = unique("clustered");
    let mut backends: Vec<Arc<dyn JobClaims>> = Vec::new();
    let mut connections = Vec::new();
    for i in 0..3 {
        let (store, databases) = store_on(&url).await;
        backends.push(StoreJobClaims::new(store, &format!("node-{i}")));
        connections.push(databases);
    }
    three_nodes("postgres", &plugin, "every-second", backends).await;
    connections[0]
        .exec(
            &format!("DELETE FROM gk_job_claims WHERE plugin = '{plugin}'"),
            &[],
        )
        .await
        .unwrap();
}

/// Claims in one place by two nodes: the first wins, the second loses, another occurrence is
/// another claim; long ids are kept; pruning does not touch newer claims.
async fn claims_behave(
    what: &str,
    plugin: &str,
    first: Arc<dyn JobClaims>,
    second: Arc<dyn JobClaims>,
) {
    let plugin = plugin.to_owned();
    let tick = Utc
        .timestamp_opt(Utc::now().timestamp(), 0)
        .single()
        .unwrap();
    let later = tick + chrono::Duration::seconds(1);
    assert!(first.claim(&plugin, "job", tick).await.unwrap(), "{what}");
    assert!(!second.claim(&plugin, "job", tick).await.unwrap(), "{what}");
    assert!(
        !first.claim(&plugin, "job", tick).await.unwrap(),
        "{what}: once only"
    );
    assert!(second.claim(&plugin, "job", later).await.unwrap(), "{what}");
    assert!(
        second.claim(&plugin, "other-job", tick).await.unwrap(),
        "{what}"
    );
    let long = "j".repeat(500);
    assert!(first.claim(&plugin, &long, tick).await.unwrap(), "{what}");
    assert!(!second.claim(&plugin, &long, tick).await.unwrap(), "{what}");
    assert_eq!((first.node(), second.node()), ("node-a", "node-b"));
}

#[tokio::test]
async fn claims_in_each_store_and_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let places = store_places(dir.path());
    for (what, url) in places {
        let (store, databases) = store_on(&url).await;
        let (other, _) = store_on(&url).await;
        assert!(
            Store::TABLES.contains(&"gk_job_claims"),
            "reserved from plugins"
        );
        let plugin = unique("claims");
        claims_behave(
            what,
            &plugin,
            StoreJobClaims::new(store, "node-a"),
            StoreJobClaims::new(other, "node-b"),
        )
        .await;
        databases
            .exec(
                &format!("DELETE FROM gk_job_claims WHERE plugin = '{plugin}'"),
                &[],
            )
            .await
            .unwrap();
    }
    if let Some(url) = service_url("GK_TEST_REDIS_URL") {
        let prefix = unique("gk-test-jobs");
        let a = RedisJobClaims::connect(&url, &prefix, "node-a")
            .await
            .unwrap();
        let b = RedisJobClaims::connect(&url, &prefix, "node-b")
            .await
            .unwrap();
        claims_behave("redis", "claims", a, b).await;
        super::forget_keys(&url, &prefix).await;
    }
}

/// Claims that always fail, as with their backend down.
#[derive(Debug)]
struct Down;

#[async_trait]
impl JobClaims for Down {
    async fn claim(&self, _: &str, _: &str, _: DateTime<Utc>) -> Result<bool, JobClaimError> {
        Err(JobClaimError::Redis("connection refused".into()))
    }

    fn node(&self) -> &str {
        "node-down"
    }
}

#[tokio::test]
async fn when_no_claim_can_be_made_the_occurrence_is_skipped_and_counted() {
    let node = node("unclaimed", "every-second", Arc::new(Down)).await;
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let stats = node
        .scheduler
        .job_stats("unclaimed", "every-second")
        .unwrap();
    assert_eq!(node.ticks.load(Ordering::SeqCst), 0, "never run unclaimed");
    assert!(
        stats.runs == 0 && stats.claim_errors >= 2,
        "each occurrence skipped and counted: {stats:?}"
    );

    if service_url("GK_TEST_REDIS_URL").is_some() {
        let mut redis = crate::common::OwnRedis::start(crate::common::free_port());
        let claims = RedisJobClaims::connect(&redis.url(), "gk-test", "node-a")
            .await
            .unwrap();
        redis.stop();
        let error = claims
            .claim("p", "j", Utc::now())
            .await
            .expect_err("Redis is stopped");
        assert!(matches!(error, JobClaimError::Redis(_)), "{error:?}");

        // A node that starts while Redis is down starts; its claims fail until Redis is up,
        // then succeed without a restart.
        let port = crate::common::free_port();
        let lazy =
            RedisJobClaims::connect_lazy(&format!("redis://127.0.0.1:{port}"), "gk-test", "node-b")
                .expect("a Redis URL");
        let error = lazy
            .claim("p", "j", Utc::now())
            .await
            .expect_err("no Redis yet");
        assert!(matches!(error, JobClaimError::Redis(_)), "{error:?}");
        let _redis = crate::common::OwnRedis::start(port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match lazy.claim("p", "j", Utc::now()).await {
                Ok(won) => {
                    assert!(won, "the first claim of an occurrence wins");
                    break;
                }
                Err(error) if std::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "Redis not answering yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("claims never worked after Redis started: {error}"),
            }
        }
    }
}

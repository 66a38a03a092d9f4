//! This node's membership of a cluster of `gk serve` nodes sharing one store database
//! (PostgreSQL or MariaDB) and, optionally, Redis.
//!
//! - **One source of truth.** The store holds everything a node needs: enabled states,
//!   policies and approvals (as before), and the packages installed through the platform, with
//!   their signatures ([`crate::StoredPackage`]). A node that starts with an empty plugins
//!   directory installs what the store holds before it serves.
//! - **Changes reach every node.** Every change a node makes to a plugin's stored state is
//!   published on the control bus (Redis pub/sub, else PostgreSQL `LISTEN`/`NOTIFY`); every
//!   other node then reads that plugin from the store and applies it: live policy, enabled
//!   state, blue-green install or removal. A node that missed messages (restart, blip)
//!   reconciles everything when its subscription comes back, and every
//!   [`ClusterConfig::reconcile_every`] anyway, so the nodes converge without messages.
//! - **One view.** Each node writes a heartbeat with its report to `gk_nodes`
//!   ([`Cluster::nodes`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::bus::{self, BusKind, ControlMessage, Signal};
use super::reconcile::Reconciler;
use crate::manager::{ChangeListener, StateChange};
use crate::{CoreError, Loader, Manager, NodeRecord, StoreError};

/// How long a node that stopped writing heartbeats stays in the view.
const NODE_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Old nodes are pruned on the first heartbeat and every this many after.
const PRUNE_EVERY_BEATS: u64 = 300;
/// How often a duplicate node id is said again while it lasts.
const DUPLICATE_REPEAT: Duration = Duration::from_secs(60);

/// How a node takes part in a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// The prefix of the cluster's channel (`<prefix>:control`) and Redis keys; nodes with the
    /// same store and prefix form one cluster.
    pub prefix: String,
    /// Redis for the control messages; `None` uses PostgreSQL `LISTEN`/`NOTIFY` when the store
    /// is on PostgreSQL, else no messages.
    pub redis_url: Option<String>,
    /// The store's URL (for its `LISTEN` connection).
    pub store_url: String,
    /// How often every plugin is reconciled with the store, messages or not.
    pub reconcile_every: Duration,
    /// How often the node writes its heartbeat.
    pub heartbeat_every: Duration,
    /// The GoatKit version this node runs.
    pub version: String,
    /// Where this node serves HTTP.
    pub address: String,
    /// Keys the seals of the stored packages ([`super::PackageSeal`]): the same on every node,
    /// never in the database (gk-server passes its `token_secret`).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("reconcile_every", &self.reconcile_every)
            .field("heartbeat_every", &self.heartbeat_every)
            .field("version", &self.version)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The default reconciliation period.
    pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
    /// The default heartbeat period.
    pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store is SQLite: a file no other node shares.
    #[error(
        "a cluster needs a store every node shares (PostgreSQL or MariaDB); this store is SQLite"
    )]
    LocalStore,
    /// The control bus could not connect.
    #[error(transparent)]
    Bus(#[from] CoreError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sends this node's changes to the publisher task.
#[derive(Debug)]
struct Announcer {
    node: String,
    outgoing: mpsc::UnboundedSender<ControlMessage>,
}

impl ChangeListener for Announcer {
    fn changed(&self, plugin: &str, change: StateChange) {
        let message = ControlMessage {
            node: self.node.clone(),
            plugin: plugin.to_owned(),
            change,
        };
        if self.outgoing.send(message).is_err() {
            tracing::warn!(%plugin, "cluster: the publisher has stopped; the change reaches the other nodes when they reconcile");
        }
    }
}

/// This node's membership of a cluster: its background tasks run until [`Cluster::leave`] or
/// drop.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    manager: Manager,
    bus: BusKind,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Joins the cluster: connects the control bus, installs and applies what the store holds
    /// (so the node serves the cluster's plugins from its first request), announces this
    /// node's changes from now on, and starts the subscriber, the periodic reconciliation and
    /// the heartbeat.
    pub async fn join(
        config: ClusterConfig,
        manager: Manager,
        loader: Arc<Loader>,
    ) -> Result<Self, ClusterError> {
        let store = manager.store().clone();
        if store.backend() == sea_orm::DatabaseBackend::Sqlite {
            return Err(ClusterError::LocalStore);
        }
        let channel = format!("{}:control", config.prefix);
        let (signals_tx, mut signals) = mpsc::unbounded_channel();
        let (bus, subscriber) = bus::connect(
            config.redis_url.as_deref(),
            &store,
            &config.store_url,
            channel.clone(),
            config.node_id.clone(),
            signals_tx,
        )
        .await?;
        let bus_kind = bus.kind();
        loader.set_package_seal(super::PackageSeal::from_secret(&config.secret));
        let reconciler = Arc::new(Reconciler::new(manager.clone(), loader));
        reconciler.all().await;

        let (outgoing_tx, mut outgoing) = mpsc::unbounded_channel::<ControlMessage>();
        manager.set_change_listener(Arc::new(Announcer {
            node: config.node_id.clone(),
            outgoing: outgoing_tx,
        }));
        let publisher = tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                bus.publish(&channel, &message).await;
            }
        });

        let worker = {
            let reconciler = Arc::clone(&reconciler);
            let every = config.reconcile_every;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first tick is now: just reconciled
                loop {
                    tokio::select! {
                        signal = signals.recv() => match signal {
                            Some(Signal::Changed(message)) => {
                                tracing::debug!(plugin = %message.plugin, from = %message.node, change = ?message.change, "cluster: change announced");
                                reconciler.plugin(&message.plugin, message.change).await;
                            }
                            Some(Signal::Resync) => reconciler.all().await,
                            None => return,
                        },
                        _ = tick.tick() => reconciler.all().await,
                    }
                }
            })
        };

        // Whole seconds: what every store keeps of a time, so the row can be recognised.
        let started = Utc::now().trunc_subsecs(0);
        let heartbeat = {
            let manager = manager.clone();
            let config = config.clone();
            let reconciler = Arc::clone(&reconciler);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(config.heartbeat_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut beats: u64 = 0;
                let mut duplicate_said: Option<std::time::Instant> = None;
                loop {
                    tick.tick().await;
                    let store = manager.store();
                    // After this node's first beat, a row of its id with another start time
                    // was written by another process using the same id.
                    if beats > 0
                        && let Ok(Some(row)) = store.node(&config.node_id).await
                        && row.started != started
                        && duplicate_said.is_none_or(|at| at.elapsed() >= DUPLICATE_REPEAT)
                    {
                        tracing::error!(node = %config.node_id, other_address = %row.address, other_started = %row.started, "cluster: another node uses this node's id; give each node its own --node-id");
                        duplicate_said = Some(std::time::Instant::now());
                    }
                    let record = node_record(&config, &manager, &reconciler, started);
                    if let Err(error) = store.heartbeat(&record).await {
                        tracing::warn!(%error, "cluster: cannot write this node's heartbeat");
                    }
                    if beats.is_multiple_of(PRUNE_EVERY_BEATS) {
                        let before = Utc::now()
                            - chrono::Duration::from_std(NODE_RETENTION).unwrap_or_default();
                        match store.prune_nodes(before).await {
                            Ok(0) => {}
                            Ok(rows) => {
                                tracing::info!(rows, "cluster: nodes gone for a day forgotten")
                            }
                            Err(error) => tracing::warn!(%error, "cluster: cannot prune old nodes"),
                        }
                    }
                    beats += 1;
                }
            })
        };
        tracing::info!(node = %config.node_id, bus = ?bus_kind, "joined the cluster");
        Ok(Self {
            config,
            manager,
            bus: bus_kind,
            tasks: vec![subscriber, publisher, worker, heartbeat],
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The transport of the control messages.
    pub fn bus(&self) -> BusKind {
        self.bus
    }

    /// Every node that wrote a heartbeat, this one first, and whether each is alive (seen within
    /// three heartbeat periods).
    pub async fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let alive_after = Utc::now()
            - chrono::Duration::from_std(self.config.heartbeat_every * 3)
                .unwrap_or(chrono::Duration::seconds(6));
        let mut nodes: Vec<NodeView> = self
            .manager
            .store()
            .nodes()
            .await?
            .into_iter()
            .map(|record| NodeView {
                alive: record.last_seen >= alive_after,
                this_node: record.id == self.config.node_id,
                record,
            })
            .collect();
        nodes.sort_by(|a, b| {
            b.this_node
                .cmp(&a.this_node)
                .then_with(|| a.record.id.cmp(&b.record.id))
        });
        Ok(nodes)
    }

    /// Leaves the cluster: stops the background tasks and removes this node's heartbeat.
    pub async fn leave(&self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(error) = self.manager.store().forget_node(&self.config.node_id).await {
            tracing::warn!(%error, "cluster: cannot remove this node's heartbeat");
        }
        tracing::info!(node = %self.config.node_id, "left the cluster");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A node as the admin sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    /// What it last wrote.
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Seen within three heartbeat periods.
    pub alive: bool,
    /// The node answering.
    pub this_node: bool,
}

/// This node's heartbeat: its counts and, for each plugin, its calls on this node, the version
/// loaded here, and why the stored package does not install here.
fn node_record(
    config: &ClusterConfig,
    manager: &Manager,
    reconciler: &Reconciler,
    started: DateTime<Utc>,
) -> NodeRecord {
    let mut report = serde_json::Map::new();
    let mut loaded = 0_u32;
    let failures = reconciler.failures();
    for name in manager.names() {
        let mut entry = serde_json::Map::new();
        if let Ok(registration) = manager.registration(&name) {
            loaded += 1;
            entry.insert("version".into(), registration.version.into());
        }
        if let Ok(stats) = manager.stats(&name) {
            entry.insert("calls".into(), stats.calls.into());
            entry.insert("errors".into(), stats.errors.into());
        }
        report.insert(name, entry.into());
    }
    for (name, (sha256, error)) in failures {
        let entry = report
            .entry(name)
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(entry) = entry.as_object_mut() {
            entry.insert(
                "install_error".into(),
                serde_json::json!({ "sha256": sha256, "error": error }),
            );
        }
    }
    NodeRecord {
        id: config.node_id.clone(),
        version: config.version.clone(),
        address: config.address.clone(),
        started,
        last_seen: Utc::now(),
        plugins_loaded: loaded,
        report: serde_json::Value::Object(report).to_string(),
    }
}

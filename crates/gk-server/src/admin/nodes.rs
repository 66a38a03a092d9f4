//! The cluster section of the plugin list: every node of this node's cluster
//! ([`crate::cluster_view::cluster_view`]) and each plugin's calls over the live ones.

use serde::Serialize;

use crate::cluster_view::{ClusterReply, cluster_view};

/// The cluster as the plugin list shows it.
#[derive(Debug, Serialize)]
pub(super) struct ClusterSection {
    /// This node's id.
    node_id: String,
    /// How changes travel between the nodes.
    bus: String,
    /// Why the nodes cannot be shown (the store does not answer).
    error: Option<String>,
    /// Every node that wrote a heartbeat, this one first.
    nodes: Vec<NodeRow>,
    /// Each plugin's calls summed over the live nodes, by name.
    plugins: Vec<PluginTotal>,
}

/// One node.
#[derive(Debug, Serialize)]
struct NodeRow {
    id: String,
    address: String,
    version: String,
    started: String,
    last_seen: String,
    alive: bool,
    this_node: bool,
    plugins_loaded: u32,
    calls: u64,
    errors: u64,
    /// `plugin: reason` for each stored package that does not install on the node.
    install_errors: Vec<String>,
}

/// One plugin's calls over the live nodes.
#[derive(Debug, Serialize)]
struct PluginTotal {
    name: String,
    calls: u64,
    errors: u64,
}

impl ClusterSection {
    /// Reads the nodes from the store; a store that does not answer is shown, not hidden.
    pub(super) async fn read(cluster: &gk_core::cluster::Cluster) -> Self {
        let (nodes, plugins, error) = match cluster_view(cluster).await {
            Ok(view) => {
                let (nodes, plugins) = rows(view);
                (nodes, plugins, None)
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the cluster's nodes");
                (
                    Vec::new(),
                    Vec::new(),
                    Some("the store cannot be read: the nodes are not known".to_owned()),
                )
            }
        };
        ClusterSection {
            node_id: cluster.node_id().to_owned(),
            bus: serde_json::to_value(cluster.bus())
                .ok()
                .and_then(|bus| bus.as_str().map(str::to_owned))
                .unwrap_or_default(),
            error,
            nodes,
            plugins,
        }
    }
}

fn rows(view: ClusterReply) -> (Vec<NodeRow>, Vec<PluginTotal>) {
    let time = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let nodes = view
        .nodes
        .into_iter()
        .map(|node| {
            let record = node.node.record;
            let install_errors = node
                .plugins
                .iter()
                .filter_map(|(name, stats)| {
                    let reason = stats.install_error.as_ref()?;
                    let reason = reason
                        .get("error")
                        .and_then(serde_json::Value::as_str)
                        .map_or_else(|| reason.to_string(), str::to_owned);
                    Some(format!("{name}: {reason}"))
                })
                .collect();
            NodeRow {
                calls: node.plugins.values().map(|stats| stats.calls).sum(),
                errors: node.plugins.values().map(|stats| stats.errors).sum(),
                id: record.id,
                address: record.address,
                version: record.version,
                started: time(record.started),
                last_seen: time(record.last_seen),
                alive: node.node.alive,
                this_node: node.node.this_node,
                plugins_loaded: record.plugins_loaded,
                install_errors,
            }
        })
        .collect();
    let plugins = view
        .plugins
        .into_iter()
        .map(|(name, stats)| PluginTotal {
            name,
            calls: stats.calls,
            errors: stats.errors,
        })
        .collect();
    (nodes, plugins)
}

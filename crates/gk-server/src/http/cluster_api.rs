//! `GET /api/v1/cluster`: the nodes of this node's cluster, and the plugins' call counts
//! summed over the live ones.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::{Admin, ApiError, AppState};

/// One plugin's calls on the live nodes together.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(crate) struct ClusterPluginStats {
    /// Calls on every live node.
    pub(crate) calls: u64,
    /// Failed calls on every live node.
    pub(crate) errors: u64,
}

/// A node with its report read.
#[derive(Debug, Serialize)]
pub(crate) struct NodeReply {
    #[serde(flatten)]
    node: gk_core::cluster::NodeView,
    /// Each plugin's calls on that node.
    plugins: BTreeMap<String, ClusterPluginStats>,
}

/// What `GET /api/v1/cluster` answers.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterReply {
    /// Whether this node is part of a cluster.
    enabled: bool,
    /// This node's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// How changes travel between nodes (`redis`, `postgres`, `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    bus: Option<gk_core::cluster::BusKind>,
    /// Every node that wrote a heartbeat, this one first.
    nodes: Vec<NodeReply>,
    /// Each plugin's calls summed over the live nodes.
    plugins: BTreeMap<String, ClusterPluginStats>,
}

/// A node's report (`{"<plugin>": {"calls": n, "errors": n}}`); what cannot be read counts as
/// nothing.
fn read_report(report: &str) -> BTreeMap<String, ClusterPluginStats> {
    let Ok(serde_json::Value::Object(plugins)) = serde_json::from_str(report) else {
        return BTreeMap::new();
    };
    plugins
        .into_iter()
        .map(|(name, stats)| {
            let count = |key: &str| stats.get(key).and_then(serde_json::Value::as_u64);
            (
                name,
                ClusterPluginStats {
                    calls: count("calls").unwrap_or(0),
                    errors: count("errors").unwrap_or(0),
                },
            )
        })
        .collect()
}

/// `GET /api/v1/cluster`.
pub(super) async fn cluster(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ClusterReply>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Json(ClusterReply {
            enabled: false,
            node_id: None,
            bus: None,
            nodes: Vec::new(),
            plugins: BTreeMap::new(),
        }));
    };
    let nodes = cluster.nodes().await.map_err(|error| {
        tracing::error!(%error, "cannot read the cluster's nodes");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot be read",
        )
    })?;
    let mut totals: BTreeMap<String, ClusterPluginStats> = BTreeMap::new();
    let nodes = nodes
        .into_iter()
        .map(|node| {
            let plugins = read_report(&node.record.report);
            if node.alive {
                for (name, stats) in &plugins {
                    let total = totals.entry(name.clone()).or_default();
                    total.calls += stats.calls;
                    total.errors += stats.errors;
                }
            }
            NodeReply { node, plugins }
        })
        .collect();
    Ok(Json(ClusterReply {
        enabled: true,
        node_id: Some(cluster.node_id().to_owned()),
        bus: Some(cluster.bus()),
        nodes,
        plugins: totals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_leniently() {
        let report = read_report(r#"{"stats":{"calls":5,"errors":1},"odd":"x"}"#);
        assert_eq!(
            report.get("stats"),
            Some(&ClusterPluginStats {
                calls: 5,
                errors: 1
            })
        );
        assert_eq!(report.get("odd"), Some(&ClusterPluginStats::default()));
        assert!(read_report("not json").is_empty());
    }
}

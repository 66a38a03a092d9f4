//! The nodes of this node's cluster with their reports read, each plugin's calls summed over
//! the live ones, and the log entries of every live node merged: what `GET /api/v1/cluster`,
//! `GET /api/v1/plugins/logs` and the admin page all show. A leaf: it answers values, not HTTP.

use std::collections::BTreeMap;

use serde::Serialize;

/// One plugin's calls on one node, or on the live nodes together.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(crate) struct ClusterPluginStats {
    /// Calls.
    pub(crate) calls: u64,
    /// Failed calls.
    pub(crate) errors: u64,
    /// The version loaded on the node (per node only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    /// Why the stored package does not install on the node (per node only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) install_error: Option<serde_json::Value>,
}

/// A node with its report read.
#[derive(Debug, Serialize)]
pub(crate) struct NodeReply {
    /// The node as the store has it.
    #[serde(flatten)]
    pub(crate) node: gk_core::cluster::NodeView,
    /// Each plugin's calls on that node.
    pub(crate) plugins: BTreeMap<String, ClusterPluginStats>,
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
    pub(crate) nodes: Vec<NodeReply>,
    /// Each plugin's calls summed over the live nodes.
    pub(crate) plugins: BTreeMap<String, ClusterPluginStats>,
}

impl ClusterReply {
    /// The answer of a node that is not part of a cluster.
    pub(crate) fn disabled() -> Self {
        Self {
            enabled: false,
            node_id: None,
            bus: None,
            nodes: Vec::new(),
            plugins: BTreeMap::new(),
        }
    }
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
                    version: stats
                        .get("version")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                    install_error: stats.get("install_error").cloned(),
                },
            )
        })
        .collect()
}

/// The nodes of `cluster` with their reports read, and each plugin's calls summed over the
/// live ones (what `GET /api/v1/cluster` answers and the admin page shows).
pub(crate) async fn cluster_view(
    cluster: &gk_core::cluster::Cluster,
) -> Result<ClusterReply, gk_core::StoreError> {
    let nodes = cluster.nodes().await?;
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
    Ok(ClusterReply {
        enabled: true,
        node_id: Some(cluster.node_id().to_owned()),
        bus: Some(cluster.bus()),
        nodes,
        plugins: totals,
    })
}

/// How long a node waits for another node's logs.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The header carrying a node's signed request ([`crate::auth::TokenKeys::node_proof`]).
pub(crate) const NODE_PROOF: &str = "x-goatkit-node-proof";
/// The path one node reads another's logs at.
pub(crate) const NODE_LOGS: &str = "/api/v1/cluster/logs";

/// Another live node's own log entries for `query`, asked with a proof signed for that one
/// request (never with the admin's token, which the node's address, read from the store,
/// must not receive).
async fn peer_logs(
    address: &str,
    proof: &str,
    path_and_query: &str,
) -> Result<Vec<serde_json::Value>, String> {
    use http_body_util::BodyExt;
    let uri = format!("http://{address}{path_and_query}");
    let request = hyper::Request::get(&uri)
        .header(NODE_PROOF, proof)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::time::timeout(PEER_TIMEOUT, client.request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = tokio::time::timeout(PEER_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Log entries of every live node of a cluster, newest first.
pub(crate) struct ClusterLogs {
    /// The entries (as `GET /api/v1/plugins/logs` answers them), each with its `node`.
    pub(crate) entries: Vec<serde_json::Value>,
    /// The live nodes whose entries could not be read.
    pub(crate) missing: Vec<String>,
}

/// This node's `local` entries and every other live node's entries for the same `plugin` and
/// `level`, each marked with its `node`, newest first, at most `limit`.
pub(crate) async fn cluster_logs(
    cluster: &gk_core::cluster::Cluster,
    tokens: &crate::auth::TokenKeys,
    filter: LogFilter<'_>,
    local: Vec<gk_core::host::LogEntry>,
    limit: usize,
) -> ClusterLogs {
    let mark = |mut entry: serde_json::Value, node: &str| {
        if let Some(fields) = entry.as_object_mut() {
            fields.insert("node".to_owned(), node.into());
        }
        entry
    };
    let mut entries: Vec<serde_json::Value> = local
        .iter()
        .filter_map(|entry| serde_json::to_value(entry).ok())
        .map(|entry| mark(entry, cluster.node_id()))
        .collect();
    let mut missing = Vec::new();
    let nodes = match cluster.nodes().await {
        Ok(nodes) => nodes,
        Err(error) => {
            tracing::warn!(%error, "cannot read the cluster's nodes; showing this node's logs");
            Vec::new()
        }
    };
    let path_and_query = format!("{NODE_LOGS}?{}", peer_query(filter, limit));
    let proof = tokens.node_proof(cluster.node_id(), &format!("GET {path_and_query}"));
    let mut peers = tokio::task::JoinSet::new();
    for node in nodes
        .into_iter()
        .filter(|node| node.alive && !node.this_node)
    {
        let (path_and_query, proof) = (path_and_query.clone(), proof.clone());
        peers.spawn(async move {
            let result = peer_logs(&node.record.address, &proof, &path_and_query).await;
            (node.record.id, result)
        });
    }
    while let Some(joined) = peers.join_next().await {
        let Ok((node, result)) = joined else { continue };
        match result {
            Ok(peer) => entries.extend(peer.into_iter().map(|entry| mark(entry, &node))),
            Err(error) => {
                tracing::warn!(%node, %error, "cannot read another node's logs");
                missing.push(node);
            }
        }
    }
    let time = |entry: &serde_json::Value| entry["time_ms"].as_u64().unwrap_or(0);
    entries.sort_by_key(|entry| std::cmp::Reverse(time(entry)));
    entries.truncate(limit);
    missing.sort();
    ClusterLogs { entries, missing }
}

/// Which log entries to read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogFilter<'a> {
    /// One plugin's, or every plugin's.
    pub(crate) plugin: Option<&'a str>,
    /// The lowest level, as the query names it.
    pub(crate) level: Option<&'a str>,
}

/// The query another node is asked: the same filters, its own entries only.
fn peer_query(filter: LogFilter<'_>, limit: usize) -> String {
    let mut pairs = url::form_urlencoded::Serializer::new(String::new());
    if let Some(plugin) = filter.plugin {
        pairs.append_pair("plugin", plugin);
    }
    if let Some(level) = filter.level {
        pairs.append_pair("level", level);
    }
    pairs.append_pair("limit", &limit.to_string());
    pairs.finish()
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
                errors: 1,
                ..ClusterPluginStats::default()
            })
        );
        assert_eq!(report.get("odd"), Some(&ClusterPluginStats::default()));
        assert!(read_report("not json").is_empty());
    }
}

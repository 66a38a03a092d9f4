//! `GET /api/v1/cluster`: the nodes of this node's cluster, and the plugins' call counts
//! summed over the live ones; the merged logs of `GET /api/v1/plugins/logs`; and
//! `GET /api/v1/cluster/logs`, where one node reads another's. What they answer is read in
//! [`crate::cluster_view`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::Admin;
use crate::cluster_view::{
    ClusterLogs, ClusterReply, LogFilter, NODE_PROOF, cluster_logs, cluster_view,
};
use crate::error::ApiError;
use crate::state::AppState;

/// The header naming the live nodes whose logs could not be read.
const MISSING_NODES: &str = "x-goatkit-missing-nodes";

/// `GET /api/v1/cluster`.
pub(super) async fn cluster(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ClusterReply>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Json(ClusterReply::disabled()));
    };
    cluster_view(cluster).await.map(Json).map_err(|error| {
        tracing::error!(%error, "cannot read the cluster's nodes");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot be read",
        )
    })
}

/// [`cluster_logs`] as `GET /api/v1/plugins/logs` answers them: a live node that cannot be
/// read is named in the `x-goatkit-missing-nodes` header.
pub(super) async fn merged_logs(
    cluster: &gk_core::cluster::Cluster,
    tokens: &crate::auth::TokenKeys,
    query: &super::admin_api::LogQuery,
    local: Vec<gk_core::host::LogEntry>,
    limit: usize,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let filter = LogFilter {
        plugin: query.plugin.as_deref(),
        level: query.level.as_deref(),
    };
    let ClusterLogs { entries, missing } =
        cluster_logs(cluster, tokens, filter, local, limit).await;
    let mut response = Json(entries).into_response();
    if !missing.is_empty()
        && let Ok(value) = axum::http::HeaderValue::from_str(&missing.join(","))
    {
        response.headers_mut().insert(MISSING_NODES, value);
    }
    response
}

/// `GET /api/v1/cluster/logs`: this node's own log entries, for another node of the cluster
/// (authenticated by its proof for this very request, not by a user's token).
pub(super) async fn node_logs(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    axum::extract::Query(query): axum::extract::Query<super::admin_api::LogQuery>,
) -> Result<Json<Vec<gk_core::host::LogEntry>>, ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a node of this cluster's signed request is needed",
        )
    };
    if state.cluster.is_none() {
        return Err(refused());
    }
    let proof = headers
        .get(NODE_PROOF)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(refused)?;
    let request = format!(
        "GET {}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let node = state
        .tokens
        .check_node_proof(proof, &request)
        .map_err(|error| {
            tracing::warn!(%error, "a node request was refused");
            refused()
        })?;
    tracing::debug!(%node, "logs read by another node");
    let level = crate::log_level::parse_level(query.level.as_deref())?;
    let limit = query
        .limit
        .unwrap_or(super::admin_api::LOG_LIMIT.0)
        .min(super::admin_api::LOG_LIMIT.1);
    Ok(Json(state.logs.read(query.plugin.as_deref(), level, limit)))
}

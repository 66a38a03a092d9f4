//! Admin endpoints that change what is installed, and the plugin logs.

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use gk_core::host::LogEntry;
use gk_sdk::GkRegistration;
use serde::{Deserialize, Serialize};

use super::{Admin, map_error};
use crate::error::{ApiError, install_error};
use crate::log_level::parse_level;
use crate::state::AppState;
use crate::upload::read_upload;

/// The default and largest number of log entries one request returns.
pub(super) const LOG_LIMIT: (usize, usize) = (100, 1000);

/// `DELETE /api/v1/plugins/{name}`: unloads the plugin and removes its files.
pub(super) async fn uninstall(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.manager.names().contains(&name) {
        return Err(map_error(&state, gk_core::ManagerError::NotFound(name)));
    }
    state
        .loader
        .uninstall(&name, &admin.sub)
        .await
        .map_err(|e| install_error(&state.manager, e))?;
    tracing::info!(plugin = %name, by = %admin.sub, "plugin uninstalled");
    Ok(StatusCode::NO_CONTENT)
}

/// What [`uninstall_named`] answers.
type UninstallReply = std::pin::Pin<Box<dyn Future<Output = Result<StatusCode, ApiError>> + Send>>;

/// `DELETE` on a fixed path that is also a plugin's name (`/api/v1/plugins/stats`).
pub(super) fn uninstall_named(
    name: &'static str,
) -> impl Fn(State<AppState>, Admin) -> UninstallReply + Clone + Send + Sync + 'static {
    move |state, admin| Box::pin(uninstall(state, admin, Path(name.to_owned())))
}

/// What an upload answers.
#[derive(Debug, Serialize)]
pub(super) struct Installed {
    name: String,
    version: String,
    routes: usize,
    widgets: usize,
}

impl From<GkRegistration> for Installed {
    fn from(registration: GkRegistration) -> Self {
        Self {
            routes: registration.routes.len(),
            widgets: registration.widgets.len(),
            name: registration.name,
            version: registration.version,
        }
    }
}

/// `POST /api/v1/plugins/upload`: multipart field `plugin` (a `.wasm` module or `.zip`
/// package, by its file name) and, optionally, `signature` (the contents of its `.sig` file).
pub(super) async fn upload(
    State(state): State<AppState>,
    Admin(admin): Admin,
    multipart: Multipart,
) -> Result<(StatusCode, Json<Installed>), ApiError> {
    let upload = read_upload(multipart, false).await?;
    let (file_name, content) = (upload.file_name, upload.content);
    let signature = upload.signature;
    let registration = state
        .loader
        .install(&file_name, &content, signature.as_deref(), &admin.sub)
        .await
        .map_err(|e| install_error(&state.manager, e))?;
    tracing::info!(plugin = %registration.name, file = %file_name, by = %admin.sub, "plugin uploaded");
    Ok((StatusCode::CREATED, Json(registration.into())))
}

/// The query of `GET /api/v1/plugins/logs`.
#[derive(Debug, Deserialize)]
pub(super) struct LogQuery {
    pub(super) plugin: Option<String>,
    pub(super) level: Option<String>,
    pub(super) limit: Option<usize>,
    /// `local`: this node's entries only; by default a node of a cluster merges every live
    /// node's.
    pub(super) node: Option<String>,
}

/// `GET /api/v1/plugins/logs?plugin=&level=&limit=[&node=local]`: newest first. On a node of
/// a cluster, every live node's entries merged (each with its `node`), unless `node=local`.
pub(super) async fn read_logs(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<LogQuery>,
) -> Result<axum::response::Response, ApiError> {
    let level = parse_level(query.level.as_deref())?;
    let limit = query.limit.unwrap_or(LOG_LIMIT.0).min(LOG_LIMIT.1);
    let local: Vec<LogEntry> = state.logs.read(query.plugin.as_deref(), level, limit);
    match &state.cluster {
        Some(cluster) if query.node.as_deref() != Some("local") => {
            Ok(super::cluster_api::merged_logs(cluster, &state.tokens, &query, local, limit).await)
        }
        _ => Ok(Json(local).into_response()),
    }
}

/// The query of `DELETE /api/v1/plugins/logs`.
#[derive(Debug, Deserialize)]
pub(super) struct ClearQuery {
    plugin: Option<String>,
}

/// `DELETE /api/v1/plugins/logs[?plugin=]`.
pub(super) async fn clear_logs(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(query): Query<ClearQuery>,
) -> StatusCode {
    state.logs.clear(query.plugin.as_deref());
    tracing::info!(plugin = ?query.plugin, by = %admin.sub, "plugin logs cleared");
    StatusCode::NO_CONTENT
}

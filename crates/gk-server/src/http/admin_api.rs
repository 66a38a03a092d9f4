//! Admin endpoints that change what is installed, and the plugin logs.

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use gk_core::InstallError;
use gk_core::host::LogEntry;
use gk_sdk::{GkRegistration, LogLevel};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{Admin, AppState, map_error};

/// The default and largest number of log entries one request returns.
pub(super) const LOG_LIMIT: (usize, usize) = (100, 1000);

fn install_error(state: &AppState, error: InstallError) -> ApiError {
    use StatusCode as S;
    match error {
        InstallError::FileName(_) | InstallError::Refused(_) => {
            ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_plugin", error)
        }
        InstallError::Conflict { .. } => ApiError::new(S::CONFLICT, "conflict", error),
        InstallError::NotInstalled(_) => ApiError::new(S::CONFLICT, "not_installed", error),
        InstallError::Load(error) => {
            let mut api = map_error(state, error);
            if api.status == S::NOT_FOUND || api.status == S::BAD_REQUEST {
                api.status = S::UNPROCESSABLE_ENTITY;
            }
            api
        }
        InstallError::Store { .. } | InstallError::Io { .. } => ApiError::internal(error),
    }
}

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
        .map_err(|e| install_error(&state, e))?;
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

/// A multipart body that cannot be read: `413 too_large` past the limit, else `invalid_upload`.
fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    let status = error.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "invalid_upload"
    };
    ApiError::new(status, code, error.body_text())
}

fn bad_upload(message: impl ToString) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_upload", message)
}

/// A plugin file sent as multipart form data.
pub(crate) struct Upload {
    /// The file name of the `plugin` field (`<name>.wasm`, `<name>.zip`).
    pub(crate) file_name: String,
    /// Its content.
    pub(crate) content: Vec<u8>,
    /// The `signature` field, when one was sent and is not empty.
    pub(crate) signature: Option<Vec<u8>>,
    /// The `csrf` field (the admin page's form sends one).
    pub(crate) csrf: Option<String>,
}

/// Reads fields `plugin` (a file) and optionally `signature` (and `csrf` when `form` is set:
/// the admin page's form); any other field, or none called `plugin`, is refused.
pub(crate) async fn read_upload(mut multipart: Multipart, form: bool) -> Result<Upload, ApiError> {
    let mut plugin: Option<(String, Vec<u8>)> = None;
    let (mut signature, mut csrf) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            "plugin" => {
                let file_name = file_name.filter(|n| !n.is_empty()).ok_or_else(|| {
                    bad_upload(
                        "the `plugin` field has no file name (`<name>.wasm` or `<name>.zip`)",
                    )
                })?;
                plugin = Some((file_name, bytes.to_vec()));
            }
            "signature" => signature = Some(bytes.to_vec()).filter(|s| !s.is_empty()),
            "csrf" if form => csrf = Some(String::from_utf8_lossy(&bytes).into_owned()),
            other => {
                return Err(bad_upload(format!(
                    "unexpected field `{other}`: send `plugin` (the file) and optionally `signature`"
                )));
            }
        }
    }
    let (file_name, content) = plugin.ok_or_else(|| {
        bad_upload("no `plugin` field: send the file as multipart field `plugin`")
    })?;
    Ok(Upload {
        file_name,
        content,
        signature,
        csrf,
    })
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
        .map_err(|e| install_error(&state, e))?;
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

pub(crate) fn parse_level(level: Option<&str>) -> Result<LogLevel, ApiError> {
    match level.unwrap_or("debug") {
        "debug" | "" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_level",
            format!("level `{other}` is not one of debug, info, warn, error"),
        )),
    }
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

//! The HTTP surface: health, the plugin API under `/api/v1` (calls and widgets for any valid
//! token; enable/disable, policies, stats, install and logs for admins), and the plugins' own
//! routes. Errors are JSON `{"error": {"code", "message"}}` ([`crate::error`]).
//!
//! This module knows nothing of the admin pages: [`crate::router`] mounts `routes()`, the admin
//! pages and the plugin routes' fallback ([`plugin_routes::serve`]) together.

mod admin_api;
mod auth;
mod cluster_api;
pub mod headers;
pub mod metrics;
pub mod plugin_routes;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;

use gk_core::{Manager, PluginItem, PluginStats};
use gk_sdk::{ResourcePolicy, WidgetSpec};
use serde::{Deserialize, Serialize};

pub use self::auth::{Admin, User};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest plugin upload.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// The JSON API's routes, the dashboard and the stylesheet.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/cluster", get(cluster_api::cluster))
        .route("/api/v1/cluster/logs", get(cluster_api::node_logs))
        .route("/api/v1/plugins/{name}/call/{function}", post(call_plugin))
        .route("/api/v1/plugins/{name}/enable", post(enable_plugin))
        .route("/api/v1/plugins/{name}/disable", post(disable_plugin))
        .route("/api/v1/plugins/{name}/approve", post(approve_plugin))
        // A plugin may be named like a fixed path below (GoatFlow's Stats plugin is `stats`):
        // `DELETE` on those paths removes the plugin of that name.
        .route(
            "/api/v1/plugins/widgets",
            get(list_widgets).delete(admin_api::uninstall_named("widgets")),
        )
        .route("/api/v1/plugins/{name}/widgets/{id}", get(render_widget))
        .route(
            "/api/v1/plugins/menu",
            get(list_menu).delete(admin_api::uninstall_named("menu")),
        )
        .route("/api/v1/plugins/{name}", delete(admin_api::uninstall))
        .route(
            "/api/v1/plugins/upload",
            post(admin_api::upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
                .delete(admin_api::uninstall_named("upload")),
        )
        .route(
            "/api/v1/plugins/logs",
            get(admin_api::read_logs).delete(admin_api::clear_logs),
        )
        .route("/static/goatkit.css", get(stylesheet))
        .route("/dashboard", get(dashboard))
        .route(
            "/api/v1/plugins/stats",
            get(all_stats).delete(admin_api::uninstall_named("stats")),
        )
        .route("/api/v1/plugins/{name}/stats", get(plugin_stats))
        .route(
            "/api/v1/plugins/{name}/policy",
            get(get_policy).put(put_policy),
        )
}

/// `GET /dashboard`: every enabled plugin's dashboard widget, rendered through `use` (each in
/// a sandboxed frame).
async fn dashboard(
    State(state): State<AppState>,
    User(user): User,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    // Widgets are declared by loaded plugins: load the discovered ones first.
    state.manager.load_all().await;
    let texts = crate::pages::Translator::new(&state.manager, &headers);
    let widgets = texts.widgets(state.manager.widgets(Some("dashboard")));
    let page = state
        .templates
        .render(
            "dashboard.html",
            serde_json::json!({
                "title": "Dashboard", "widgets": widgets, "user": user.sub,
                "menu": texts.menu(plugin_routes::menu(&state)), "language": texts.language(),
            }),
        )
        .await
        .map_err(|e| ApiError::internal_as("render", e))?;
    let response = axum::response::Html(page).into_response();
    // A plugin's override is plugin content: served in an opaque origin like its pages.
    Ok(match state.templates.overridden_by("dashboard.html") {
        Some(_) => headers::plugin_content(response),
        None => headers::host_page(response),
    })
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::pages::STYLESHEET,
    )
}

fn map_error(state: &AppState, error: gk_core::ManagerError) -> ApiError {
    crate::error::for_manager(&state.manager, error)
}

async fn call_plugin(
    State(state): State<AppState>,
    User(user): User,
    Path((name, function)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let args: &[u8] = if body.is_empty() { b"{}" } else { &body };
    // Checked, not built: the guest gets the bytes as sent.
    if serde_json::from_slice::<serde::de::IgnoredAny>(args).is_err() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
            "the request body must be JSON (the call's arguments)",
        ));
    }
    tracing::debug!(plugin = %name, %function, user = %user.sub, "plugin call over HTTP");
    let reply = state
        .manager
        .call(&name, &function, args)
        .await
        .map_err(|e| map_error(&state, e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], reply))
}

async fn set_enabled(
    state: &AppState,
    admin: &Admin,
    name: &str,
    enabled: bool,
) -> Result<Json<PluginSummary>, ApiError> {
    state
        .manager
        .set_enabled(name, enabled, &admin.0.sub)
        .await
        .map_err(|e| map_error(state, e))?;
    tracing::info!(plugin = %name, enabled, by = %admin.0.sub, "plugin state changed");
    Ok(Json(summary(&state.manager, name.to_owned())))
}

async fn enable_plugin(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<PluginSummary>, ApiError> {
    set_enabled(&state, &admin, &name, true).await
}

async fn disable_plugin(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<PluginSummary>, ApiError> {
    set_enabled(&state, &admin, &name, false).await
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    plugins: usize,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        plugins: state.manager.names().len(),
    })
}

/// One plugin as `GET /api/v1/plugins` lists it.
#[derive(Debug, Serialize)]
pub struct PluginSummary {
    /// Its name.
    pub name: String,
    /// Whether calls reach it.
    pub enabled: bool,
    /// Whether it is loaded (discovered plugins load on first use).
    pub loaded: bool,
    /// Its version, once loaded.
    pub version: Option<String>,
}

fn summary(manager: &Manager, name: String) -> PluginSummary {
    PluginSummary {
        enabled: manager.is_enabled(&name).unwrap_or(false),
        loaded: manager.is_loaded(&name).unwrap_or(false),
        version: manager.registration(&name).ok().map(|r| r.version),
        name,
    }
}

async fn list_plugins(State(state): State<AppState>, _user: User) -> Json<Vec<PluginSummary>> {
    let manager = &state.manager;
    Json(
        manager
            .names()
            .into_iter()
            .map(|name| summary(manager, name))
            .collect(),
    )
}

/// The query of `GET /api/v1/plugins/widgets`.
#[derive(Debug, Deserialize)]
pub struct WidgetQuery {
    /// Only widgets for this location (`dashboard`, `sidebar`…).
    pub location: Option<String>,
}

/// The widgets, titles translated for the request's `Accept-Language`.
async fn list_widgets(
    State(state): State<AppState>,
    _user: User,
    headers: axum::http::HeaderMap,
    Query(query): Query<WidgetQuery>,
) -> Json<Vec<PluginItem<WidgetSpec>>> {
    let texts = crate::pages::Translator::new(&state.manager, &headers);
    Json(texts.widgets(state.manager.widgets(query.location.as_deref())))
}

/// The query of `GET /api/v1/plugins/menu`.
#[derive(Debug, Deserialize)]
pub struct MenuQuery {
    /// `admin`, `agent` (the default) or `customer`.
    pub location: Option<String>,
}

/// One location's menu as a tree, labels translated for the request's `Accept-Language`: what
/// the host application (GoatFlow's agent and customer pages) renders.
async fn list_menu(
    State(state): State<AppState>,
    User(user): User,
    headers: axum::http::HeaderMap,
    Query(query): Query<MenuQuery>,
) -> Result<Json<Vec<crate::pages::MenuEntry>>, ApiError> {
    let location = query
        .location
        .as_deref()
        .unwrap_or(crate::pages::menu::DEFAULT_LOCATION);
    if location == "admin" && user.role != crate::auth::Role::Admin {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the admin menu needs an admin token",
        ));
    }
    let texts = crate::pages::Translator::new(&state.manager, &headers);
    Ok(Json(
        texts.menu(crate::pages::menu::build(&state.manager, location)),
    ))
}

/// The query of `GET /api/v1/plugins/{name}/widgets/{id}`.
#[derive(Debug, Deserialize)]
pub struct WidgetRenderQuery {
    /// Wrap the widget's HTML in its frame (title, size, ids).
    #[serde(default)]
    pub wrap: bool,
}

async fn render_widget(
    State(state): State<AppState>,
    User(user): User,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<WidgetRenderQuery>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let mut args = serde_json::Map::new();
    plugin_routes::query_fields(&mut args, &uri);
    args.remove("wrap");
    plugin_routes::caller_fields(&mut args, &method, uri.path(), Some(&user));
    let mut ctx = gk_sdk::CallContext::for_plugin(name.clone());
    ctx.language = plugin_routes::language(&headers);
    let arguments = serde_json::Value::Object(args).to_string();
    let html = state
        .manager
        .render_widget(&ctx, &id, arguments.as_bytes())
        .await
        .map_err(|e| map_error(&state, e))?;
    let widget = state
        .manager
        .widget(&name, &id)
        .map_err(|e| map_error(&state, e))?;
    if !query.wrap {
        return Ok(headers::plugin_content(
            axum::response::Html(html).into_response(),
        ));
    }
    let escape = crate::pages::escape_html;
    let title = crate::pages::Translator::new(&state.manager, &headers).text(&name, &widget.title);
    Ok(headers::plugin_content(axum::response::Html(format!(
        "<section class=\"gk-widget gk-widget-{size}\" data-plugin=\"{plugin}\" data-widget=\"{id}\"><h3>{title}</h3>{html}</section>",
        size = escape(&widget.size),
        plugin = escape(&name),
        id = escape(&widget.id),
        title = escape(&title),
    )).into_response()))
}

async fn plugin_stats(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<PluginStats>, ApiError> {
    state
        .manager
        .stats(&name)
        .map(Json)
        .map_err(|e| map_error(&state, e))
}

async fn all_stats(
    State(state): State<AppState>,
    _admin: Admin,
) -> Json<BTreeMap<String, PluginStats>> {
    let manager = &state.manager;
    Json(
        manager
            .names()
            .into_iter()
            .filter_map(|name| manager.stats(&name).ok().map(|stats| (name, stats)))
            .collect(),
    )
}

async fn get_policy(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<ResourcePolicy>, ApiError> {
    if !state.manager.names().contains(&name) {
        return Err(map_error(&state, gk_core::ManagerError::NotFound(name)));
    }
    state
        .manager
        .policy(&name)
        .await
        .map(Json)
        .map_err(|e| map_error(&state, e))
}

/// `POST /api/v1/plugins/{name}/approve`: grants what the plugin requests.
async fn approve_plugin(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<ResourcePolicy>, ApiError> {
    let policy = state
        .manager
        .approve_requested(&name, &admin.sub)
        .await
        .map_err(|e| map_error(&state, e))?;
    Ok(Json(policy))
}

/// The answer to a policy change: the policy, and what applying it took.
#[derive(Debug, Serialize)]
pub struct PolicyAnswer {
    /// The policy now stored.
    #[serde(flatten)]
    pub policy: ResourcePolicy,
    /// Whether the memory cap, call timeout or network changed, and whether the loaded plugin
    /// was reloaded for them or they apply at its next load.
    pub applied: gk_core::PolicyApplied,
}

async fn put_policy(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PolicyAnswer>, ApiError> {
    let policy: ResourcePolicy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            format!("the body is not a policy: {e}"),
        )
    })?;
    if policy.plugin_name != name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            format!(
                "the policy is for `{}` but was sent to `{name}`",
                policy.plugin_name
            ),
        ));
    }
    if !state.manager.names().contains(&name) {
        return Err(map_error(&state, gk_core::ManagerError::NotFound(name)));
    }
    let applied = state
        .manager
        .set_policy(policy.clone(), &admin.sub)
        .await
        .map_err(|e| map_error(&state, e))?;
    tracing::info!(plugin = %name, by = %admin.sub, ?applied, "policy changed");
    Ok(Json(PolicyAnswer { policy, applied }))
}

//! The HTTP surface: health and the read-only plugin list. Calls, plugin routes, widgets and
//! the admin API come with JWT authentication (see the README's status table).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use gk_core::Manager;
use serde::Serialize;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The plugins.
    pub manager: Manager,
}

/// The router of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/api/v1/plugins", get(list_plugins))
        .with_state(state)
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

async fn list_plugins(State(state): State<AppState>) -> Json<Vec<PluginSummary>> {
    let manager = &state.manager;
    let plugins = manager
        .names()
        .into_iter()
        .map(|name| PluginSummary {
            enabled: manager.is_enabled(&name).unwrap_or(false),
            loaded: manager.is_loaded(&name).unwrap_or(false),
            version: manager.registration(&name).ok().map(|r| r.version),
            name,
        })
        .collect();
    Json(plugins)
}

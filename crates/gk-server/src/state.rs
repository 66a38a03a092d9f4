//! [`AppState`]: what every HTTP handler and admin page can reach, and what builds it.

use std::sync::Arc;

use gk_core::host::PluginLogs;
use gk_core::{Loader, Manager};

use crate::auth::TokenKeys;
use crate::pages::{Pages, PluginTemplates};
use crate::route_table::Routes;

/// What every handler can reach. Axum clones the state for every extractor of every request:
/// a clone is one reference count, whatever the state holds.
#[derive(Debug, Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// The state of a server.
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct SharedState {
    /// The plugins.
    pub manager: Manager,
    /// Checks bearer tokens.
    pub tokens: Arc<TokenKeys>,
    /// How long a request may take.
    pub request_timeout: std::time::Duration,
    /// A token that reads `/metrics` besides admin tokens (for scrapers).
    pub metrics_token: Option<String>,
    /// Installs and removes plugin files.
    pub loader: Arc<Loader>,
    /// The plugins' logs.
    pub logs: Arc<PluginLogs>,
    /// The HTML templates.
    pub pages: Arc<Pages>,
    /// The templates with the plugins' overrides and `use`.
    pub templates: PluginTemplates,
    /// The plugins' routes.
    pub routes: Arc<Routes>,
    /// This node's cluster, when it is part of one.
    pub cluster: Option<Arc<gk_core::cluster::Cluster>>,
}

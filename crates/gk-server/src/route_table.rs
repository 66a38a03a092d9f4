//! The plugin routes' table: the routes plugins declare, by method, in a matchit router per
//! method, rebuilt when the manager's catalog changes. A leaf: [`crate::state::AppState`] holds
//! it and `http::plugin_routes` serves from it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::Method;
use serde_json::{Map, Value};

/// A declared route, resolved.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    /// The plugin that declared it.
    pub(crate) plugin: String,
    /// The plugin's handler function.
    pub(crate) handler: String,
    /// Whether a valid token is needed (middleware `auth` or `admin`).
    pub(crate) needs_token: bool,
    /// Whether an admin token is needed (middleware `admin`).
    pub(crate) needs_admin: bool,
}

/// The plugin routes, by method, as of one catalog version.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: u64,
    /// The catalog version at which the discovered plugins were last loaded for a lookup.
    loaded_at: Option<u64>,
    by_method: HashMap<String, matchit::Router<Arc<RouteEntry>>>,
}

/// `:name` and `*rest` segments (the Go host's forms) in matchit's `{name}` / `{*rest}` form.
fn matchit_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if let Some(name) = segment.strip_prefix(':') {
                format!("{{{name}}}")
            } else if let Some(name) = segment.strip_prefix('*') {
                format!("{{*{name}}}")
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl RouteTable {
    fn build(manager: &gk_core::Manager, loaded_at: Option<u64>) -> Self {
        let version = manager.catalog_version();
        let mut by_method: HashMap<String, matchit::Router<Arc<RouteEntry>>> = HashMap::new();
        for route in manager.all_routes() {
            let entry = Arc::new(RouteEntry {
                needs_token: route
                    .item
                    .middleware
                    .iter()
                    .any(|m| m == "auth" || m == "admin"),
                needs_admin: route.item.middleware.iter().any(|m| m == "admin"),
                plugin: route.plugin.clone(),
                handler: route.item.handler.clone(),
            });
            let path = matchit_path(&route.item.path);
            let router = by_method
                .entry(route.item.method.to_ascii_uppercase())
                .or_default();
            if let Err(error) = router.insert(&path, entry) {
                tracing::warn!(plugin = %route.plugin, path = %route.item.path, %error, "route not served: it overlaps another");
            }
        }
        Self {
            version,
            loaded_at,
            by_method,
        }
    }

    fn lookup(&self, method: &Method, path: &str) -> Option<(Arc<RouteEntry>, Map<String, Value>)> {
        let matched = self.by_method.get(method.as_str())?.at(path).ok()?;
        let params = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        Some((matched.value.clone(), params))
    }
}

/// The route table, kept current with the manager's catalog.
#[derive(Debug, Default)]
pub struct Routes {
    table: ArcSwap<RouteTable>,
}

impl Routes {
    fn current(&self, manager: &gk_core::Manager) -> Arc<RouteTable> {
        let table = self.table.load_full();
        if table.version == manager.catalog_version() {
            return table;
        }
        let fresh = Arc::new(RouteTable::build(manager, table.loaded_at));
        self.table.store(fresh.clone());
        fresh
    }

    /// Finds the route for a request, loading discovered plugins when the path is unknown.
    pub(crate) async fn find(
        &self,
        manager: &gk_core::Manager,
        method: &Method,
        path: &str,
    ) -> Option<(Arc<RouteEntry>, Map<String, Value>)> {
        let table = self.current(manager);
        if let Some(found) = table.lookup(method, path) {
            return Some(found);
        }
        if table.loaded_at == Some(manager.catalog_version()) || !manager.has_unloaded() {
            return None;
        }
        tracing::debug!(%path, "unknown path: loading the discovered plugins to learn their routes");
        manager.load_all().await;
        let table = Arc::new(RouteTable::build(manager, Some(manager.catalog_version())));
        self.table.store(table.clone());
        table.lookup(method, path)
    }
}

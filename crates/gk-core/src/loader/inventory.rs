//! What the admin list shows: every plugin the loader and the manager know of, in whatever
//! state it is — loaded, discovered and not loaded yet, failed to load, refused at discovery —
//! with its runtime, version, review status, signature state and call statistics.

use std::path::{Path, PathBuf};

use gk_sdk::PolicyStatus;
use serde::Serialize;

use super::Loader;
use crate::PluginStats;
use crate::signing::SignatureState;

/// Where a plugin stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Loaded: it takes calls when it is enabled.
    Loaded,
    /// Discovered; loaded on first use (or at once with eager loading).
    NotLoaded,
    /// Discovered, but its last load failed: see [`PluginOverview::problem`].
    Failed,
    /// Discovery refused its file (a bad manifest, a signature that does not verify when
    /// signatures are required): see [`PluginOverview::problem`].
    Refused,
}

/// One plugin as the admin list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginOverview {
    /// Its name (for a refused file, the file's name without its extension).
    pub name: String,
    /// How it runs (`wasm`, `grpc`); `None` when registered in the process.
    pub runtime: Option<String>,
    /// Its version: the registration's once loaded, else the manifest's.
    pub version: Option<String>,
    /// What it says it does (registration, else manifest; may be empty).
    pub description: String,
    /// Loaded, not loaded yet, failed or refused.
    pub lifecycle: Lifecycle,
    /// Why it failed or was refused; for a running plugin, why its changed file was refused.
    pub problem: Option<String>,
    /// Whether it is enabled (a refused file is not).
    pub enabled: bool,
    /// Its review status (`None` for a refused file, which has no policy).
    pub review: Option<PolicyStatus>,
    /// Its file's signature.
    pub signature: SignatureState,
    /// Its calls so far (`None` for a refused file).
    pub stats: Option<PluginStats>,
}

impl Loader {
    /// Every known plugin and every refused file of the plugins directory, sorted by name.
    /// Reads the store (review status) and hashes plugin files (signatures); loads nothing.
    pub async fn inventory(&self) -> Vec<PluginOverview> {
        let manager = &self.manager;
        let refused: Vec<(PathBuf, String)> = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(path, problem)| (path.clone(), problem.clone()))
            .collect();
        let mut refused: Vec<(String, String)> = refused
            .into_iter()
            .map(|(path, problem)| (entry_name(&path), problem))
            .collect();
        let mut files = Vec::new();
        let mut plugins = Vec::new();
        for name in manager.names() {
            let Ok(enabled) = manager.is_enabled(&name) else {
                continue; // unregistered meanwhile
            };
            let registration = manager.registration(&name).ok();
            let source = manager.source(&name).ok().flatten();
            let manifest = source.as_ref().and_then(|s| s.manifest.as_ref());
            let load_error = manager.load_error(&name).ok().flatten();
            let lifecycle = match (&registration, &load_error) {
                (Some(_), _) => Lifecycle::Loaded,
                (None, Some(_)) => Lifecycle::Failed,
                (None, None) => Lifecycle::NotLoaded,
            };
            let refusal = refused
                .iter()
                .position(|(n, _)| *n == name)
                .map(|i| refused.remove(i).1);
            files.push(self.signed_file(&name, source.as_ref().map(|s| s.entry.as_path())));
            plugins.push(PluginOverview {
                runtime: source.as_ref().map(|s| s.runtime.to_string()),
                version: registration
                    .as_ref()
                    .map(|r| r.version.clone())
                    .or_else(|| manifest.map(|m| m.version.clone()))
                    .filter(|v| !v.is_empty()),
                description: registration
                    .as_ref()
                    .map(|r| r.description.clone())
                    .or_else(|| manifest.map(|m| m.description.clone()))
                    .unwrap_or_default(),
                lifecycle,
                problem: load_error.or(refusal),
                enabled,
                review: manager.review_status(&name).await.ok(),
                signature: SignatureState::Embedded,
                stats: manager.stats(&name).ok(),
                name,
            });
        }
        for (name, problem) in refused {
            files.push(None);
            plugins.push(PluginOverview {
                name,
                runtime: None,
                version: None,
                description: String::new(),
                lifecycle: Lifecycle::Refused,
                problem: Some(problem),
                enabled: false,
                review: None,
                signature: SignatureState::Embedded,
                stats: None,
            });
        }
        let signatures = self.signatures.clone();
        let checked = files.iter().map(Option::is_some).collect::<Vec<_>>();
        let states = tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|file| file.as_deref().map(|f| signatures.state(f)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|error| {
            // The hashing task panicked or was cancelled: say so on each file instead.
            let why = SignatureState::Invalid(format!("not checked: {error}"));
            checked.iter().map(|&c| c.then(|| why.clone())).collect()
        });
        for (plugin, state) in plugins.iter_mut().zip(states) {
            if let Some(state) = state {
                plugin.signature = state;
            }
        }
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        plugins
    }

    /// The file a plugin's signature covers: a top-level `.wasm` or `.zip`, or the entry of a
    /// plugin directory; `None` for a plugin registered in the process.
    fn signed_file(&self, name: &str, entry: Option<&Path>) -> Option<PathBuf> {
        let top_level = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(path, _)| path.clone());
        match top_level {
            Some(path) if path.is_file() => Some(path),
            _ => entry.map(Path::to_owned),
        }
    }
}

/// A refused entry's name: the file's name without its extension, or the directory's.
fn entry_name(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

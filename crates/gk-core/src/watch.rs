//! The loader: scans the plugins directory, and watches it so that plugins come, change and go
//! without a restart.
//!
//! Changes are debounced for [`DEBOUNCE`] per top-level entry (a file still being written is
//! not looked at until it has been quiet that long). A new module, package or plugin directory is
//! made known (loaded lazily, on first use); a changed one is loaded again and replaces the old
//! one blue-green — if the new one fails (bad module, bad signature) the old one keeps running
//! and the reason is logged; a removed one is unloaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

mod install;
mod inventory;
pub use install::InstallError;
pub(crate) use install::sha256_hex;
pub use inventory::{Lifecycle, PluginOverview};

use crate::discovery::{DiscoveryError, discover, inspect};
use crate::signing::SignaturePolicy;
use crate::{Manager, ManagerError};

/// How long an entry must be quiet before it is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Scans and watches a plugins directory for a [`Manager`].
pub struct Loader {
    manager: Manager,
    plugins_dir: PathBuf,
    managed_dir: PathBuf,
    signatures: SignaturePolicy,
    /// Which plugin each top-level entry provided.
    sources: Mutex<HashMap<PathBuf, String>>,
    /// The top-level entries discovery refused, with why (until they change and are taken).
    refused: Mutex<HashMap<PathBuf, String>>,
    /// Held by each install or removal through the platform (an upload, a removal, the
    /// cluster's reconciliation) from its first file operation to its record in the store.
    installs: tokio::sync::Mutex<()>,
    /// The cluster's package seal, set when the node joins a cluster.
    package_seal: std::sync::OnceLock<crate::cluster::PackageSeal>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("plugins_dir", &self.plugins_dir)
            .finish_non_exhaustive()
    }
}

/// Keeps the watch running; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Loader {
    /// A loader of `plugins_dir`; packages are unpacked under `managed_dir`.
    pub fn new(
        manager: Manager,
        plugins_dir: PathBuf,
        managed_dir: PathBuf,
        signatures: SignaturePolicy,
    ) -> Arc<Self> {
        manager.set_signature_policy(signatures.clone());
        Arc::new(Self {
            manager,
            plugins_dir,
            managed_dir,
            signatures,
            sources: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            installs: tokio::sync::Mutex::new(()),
            package_seal: std::sync::OnceLock::new(),
        })
    }

    /// The top-level entry of the plugins directory a path belongs to.
    fn top_level(&self, path: &Path) -> Option<PathBuf> {
        let relative = path.strip_prefix(&self.plugins_dir).ok()?;
        let first = relative.components().next()?;
        let entry = self.plugins_dir.join(first);
        let hidden = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        (!hidden && !entry.starts_with(&self.managed_dir)).then_some(entry)
    }

    /// Remembers (`Some(problem)`) or forgets (`None`) that discovery refused the top-level
    /// entry `path` belongs to, for [`Loader::inventory`].
    fn note_refused(&self, path: &Path, problem: Option<&str>) {
        let Some(entry) = self.top_level(path) else {
            return;
        };
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(problem) => refused.insert(entry, problem.to_owned()),
            None => refused.remove(&entry),
        };
    }

    /// Makes every plugin of the directory known (lazily loaded); returns what was refused.
    pub async fn scan(&self) -> Vec<DiscoveryError> {
        let (found, errors) =
            discover(&self.plugins_dir, &self.managed_dir, &self.signatures).await;
        for plugin in found {
            let entry = self
                .top_level(&plugin.entry)
                .or_else(|| self.top_level(&plugin.dir));
            let name = plugin.name.clone();
            match self.manager.add_discovered(plugin).await {
                Ok(()) => {
                    if let Some(entry) = entry {
                        self.sources
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(entry, name);
                    }
                }
                Err(error) => tracing::warn!(plugin = %name, %error, "cannot add the plugin"),
            }
        }
        for error in &errors {
            tracing::warn!(%error, "not loaded");
            self.note_refused(Path::new(&error.path), Some(&error.problem));
        }
        errors
    }

    /// Looks at one top-level entry again after it changed.
    pub async fn refresh(&self, entry: &Path) -> Result<(), ManagerError> {
        self.note_refused(entry, None);
        if !entry.exists() {
            let name = self
                .sources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(entry);
            if let Some(name) = name {
                tracing::info!(plugin = %name, path = %entry.display(), "plugin removed; unloading it");
                return self.manager.unregister(&name).await;
            }
            return Ok(());
        }
        let found = match inspect(entry, &self.managed_dir, &self.signatures).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(()),
            Err(error) => {
                tracing::warn!(%error, "the changed plugin is refused; the running version (if any) stays");
                self.note_refused(Path::new(&error.path), Some(&error.problem));
                return Err(ManagerError::Invalid {
                    plugin: entry.display().to_string(),
                    problem: error.problem,
                });
            }
        };
        let name = found.name.clone();
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.to_owned(), name.clone());
        if self.manager.names().contains(&name) && self.manager.is_loaded(&name)? {
            match self.manager.reload(found).await {
                Ok(_) => {
                    tracing::info!(plugin = %name, "plugin reloaded");
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(plugin = %name, %error, "reload failed; the old version keeps running");
                    Err(error)
                }
            }
        } else {
            self.manager.add_discovered_or_replace_source(found).await
        }
    }

    /// Watches the plugins directory until the handle is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, notify::Error> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading a plugin (to verify or load it) is an access event too: following
                // those would make every look at a file trigger the next one.
                if let Ok(event) = event
                    && !matches!(
                        event.kind,
                        notify::EventKind::Access(_)
                            | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(
                                notify::event::MetadataKind::AccessTime
                            ))
                    )
                {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })?;
        watcher.watch(&self.plugins_dir, RecursiveMode::Recursive)?;
        let loader = Arc::clone(self);
        let task = tokio::spawn(async move {
            let pending: Arc<Mutex<HashMap<PathBuf, u64>>> = Arc::default();
            let mut generation: u64 = 0;
            while let Some(path) = rx.recv().await {
                let Some(entry) = loader.top_level(&path) else {
                    continue;
                };
                generation += 1;
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(entry.clone(), generation);
                let (loader, pending) = (loader.clone(), pending.clone());
                let mine = generation;
                tokio::spawn(async move {
                    tokio::time::sleep(DEBOUNCE).await;
                    let latest = pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&entry)
                        .copied();
                    if latest != Some(mine) {
                        return;
                    }
                    pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&entry);
                    let _ = loader.refresh(&entry).await;
                });
            }
        });
        Ok(WatchHandle {
            _watcher: watcher,
            task,
        })
    }
}

//! Watching the plugins directory with `notify`: changes are debounced for [`DEBOUNCE`] per
//! top-level entry, then the entry is [refreshed](Loader::refresh).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Loader;

/// How long an entry must be quiet before it is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

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

/// Why the plugins directory cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir}: {source}")]
pub struct WatchError {
    /// The plugins directory.
    pub dir: PathBuf,
    /// What the file-system notification backend said.
    #[source]
    pub source: notify::Error,
}

impl Loader {
    /// Watches the plugins directory until the handle is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, WatchError> {
        let failed = |source| WatchError {
            dir: self.plugins_dir.clone(),
            source,
        };
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
            })
            .map_err(failed)?;
        watcher
            .watch(&self.plugins_dir, RecursiveMode::Recursive)
            .map_err(failed)?;
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

//! Scanning: making what the plugins directory holds known to the manager, all of it at start
//! ([`Loader::scan`]) or one top-level entry after it changed ([`Loader::refresh`]).

use std::path::Path;

use super::Loader;
use crate::ManagerError;
use crate::discovery::{DiscoveryError, discover, inspect};

impl Loader {
    /// Makes every plugin of the directory known (lazily loaded); returns what was refused.
    pub async fn scan(&self) -> Vec<DiscoveryError> {
        let (found, errors) =
            discover(&self.plugins_dir, &self.managed_dir, &self.signatures).await;
        let names: Vec<String> = found.iter().map(|plugin| plugin.name.clone()).collect();
        let entries: Vec<_> = found
            .iter()
            .map(|plugin| {
                self.top_level(&plugin.entry)
                    .or_else(|| self.top_level(&plugin.dir))
            })
            .collect();
        match self.manager.add_discovered_all(found).await {
            Ok(()) => {
                let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
                for (name, entry) in names.into_iter().zip(entries) {
                    if let Some(entry) = entry {
                        sources.insert(entry, name);
                    }
                }
            }
            Err(error) => tracing::warn!(plugins = ?names, %error, "cannot add the plugins"),
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
}

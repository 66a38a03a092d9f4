//! Loading a discovered plugin from checked bytes, and the registration cache: what each
//! plugin declared the last time its exact bytes were loaded, kept in the store under
//! `Plugin::<name>::Registration` with the sha256 of its module or executable. At discovery a
//! plugin whose file still has that content is known to the catalog (routes, widgets, menu
//! items, jobs, translations) without being loaded; its first request or first due job loads
//! it. A changed file has another sha256, so its entry no longer applies.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use gk_sdk::{GkRegistration, Plugin};
use serde::{Deserialize, Serialize};

use super::{Manager, ManagerError, Slot};
use crate::discovery::{Discovered, VerifiedEntry};

/// One cached registration, as stored.
#[derive(Serialize, Deserialize)]
struct CachedRegistration {
    sha256: String,
    registration: GkRegistration,
}

fn cache_key(plugin: &str) -> String {
    format!("Plugin::{plugin}::Registration")
}

/// The sha256 of a regular file (not a FIFO or a device, which could block), read in chunks.
fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
    }
    Ok(hex::encode(context.finish().as_ref()))
}

impl Manager {
    /// Loads `found` through its runtime from its bytes, read once and checked against the
    /// signature policy ([`VerifiedEntry`]); the plugin, and the sha256 of what it was made from.
    pub(super) async fn load_with_runtime(
        &self,
        found: &Discovered,
    ) -> Result<(Arc<dyn Plugin>, String), ManagerError> {
        let runtime = self
            .inner
            .runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| r.accepts(found))
            .cloned()
            .ok_or_else(|| ManagerError::Invalid {
                plugin: found.name.clone(),
                problem: format!("no runtime runs `{}` plugins", found.runtime),
            })?;
        let signatures = self
            .inner
            .signatures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let to_read = found.clone();
        let entry = tokio::task::spawn_blocking(move || VerifiedEntry::read(&to_read, &signatures))
            .await
            .map_err(|e| ManagerError::Invalid {
                plugin: found.name.clone(),
                problem: format!("reading the plugin failed: {e}"),
            })?
            .map_err(|e| ManagerError::Invalid {
                plugin: found.name.clone(),
                problem: e.to_string(),
            })?;
        // The package's own texts (`i18n/`), read before anything starts.
        let texts = match &found.manifest {
            Some(_) => {
                let dir = found.dir.clone();
                tokio::task::spawn_blocking(move || super::package_texts::read(&dir))
                    .await
                    .map_err(|e| ManagerError::Invalid {
                        plugin: found.name.clone(),
                        problem: format!("reading its i18n folder failed: {e}"),
                    })?
                    .map_err(|problem| ManagerError::Invalid {
                        plugin: found.name.clone(),
                        problem,
                    })?
            }
            None => Default::default(),
        };
        let policy = self.policy_for(&found.name).await?;
        let plugin = runtime
            .load(found, &entry, &policy)
            .await
            .map_err(|problem| ManagerError::Invalid {
                plugin: found.name.clone(),
                problem: problem.to_string(),
            })?;
        let plugin: Arc<dyn Plugin> = if texts.is_empty() {
            plugin
        } else {
            Arc::new(super::package_texts::WithPackageTexts {
                inner: plugin,
                texts,
            })
        };
        Ok((plugin, entry.sha256))
    }

    /// Keeps `registration` as what `plugin` declares when made from the bytes `sha256`. A
    /// store that cannot write it is logged: the cache only saves a load.
    pub(super) async fn remember_registration(
        &self,
        plugin: &str,
        sha256: &str,
        registration: &GkRegistration,
    ) {
        let cached = CachedRegistration {
            sha256: sha256.to_owned(),
            registration: registration.clone(),
        };
        let Ok(json) = serde_json::to_string(&cached) else {
            return;
        };
        if let Err(error) = self
            .inner
            .store
            .set_setting(&cache_key(plugin), &json, "registration cache")
            .await
        {
            tracing::warn!(%plugin, %error, "the registration cache cannot be written");
        }
    }

    /// Sets `slot`'s known registration from the cache when its source file still has the
    /// content that was registered; clears it otherwise.
    pub(super) async fn recall_into(&self, slot: &Arc<Slot>) {
        let known = match slot.source.load_full() {
            Some(found) => self.recall_registration(&found).await,
            None => None,
        };
        slot.known.store(known.map(Arc::new));
    }

    async fn recall_registration(&self, found: &Discovered) -> Option<GkRegistration> {
        let stored = match self.inner.store.setting(&cache_key(&found.name)).await {
            Ok(stored) => stored?,
            Err(error) => {
                tracing::warn!(plugin = %found.name, %error, "the registration cache cannot be read");
                return None;
            }
        };
        let cached: CachedRegistration = serde_json::from_str(&stored).ok()?;
        let path = found.entry.clone();
        let sha256 = tokio::task::spawn_blocking(move || file_sha256(&path))
            .await
            .ok()?
            .ok()?;
        self.cached_if_current(found, cached, &sha256)
    }

    /// Makes every plugin in `found` known without loading it, as [`Manager::add_discovered`]
    /// does one: their enabled states and cached registrations are read from the store in a
    /// few queries and their files hashed on one blocking thread, where one at a time took
    /// several store round trips each (a start with 200 plugins spent ~300 ms on them). A store
    /// that cannot be read adds none of them.
    pub async fn add_discovered_all(&self, found: Vec<Discovered>) -> Result<(), ManagerError> {
        let names: Vec<String> = found.iter().map(|found| found.name.clone()).collect();
        let keys: Vec<String> = names.iter().map(|name| cache_key(name)).collect();
        let enabled = self.inner.store.plugins_enabled(&names).await?;
        let mut stored = match self.inner.store.settings(&keys).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "the registration cache cannot be read");
                HashMap::new()
            }
        };
        // What the cache holds for each plugin, and the sha256 of the files of those that have
        // an entry.
        let cached: Vec<Option<CachedRegistration>> = keys
            .iter()
            .map(|key| serde_json::from_str(&stored.remove(key)?).ok())
            .collect();
        let paths: Vec<Option<PathBuf>> = found
            .iter()
            .zip(&cached)
            .map(|(found, cached)| cached.as_ref().map(|_| found.entry.clone()))
            .collect();
        let count = paths.len();
        let hashes = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|path| file_sha256(path.as_deref()?).ok())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|_| vec![None; count]);
        for ((found, cached), sha256) in found.into_iter().zip(cached).zip(hashes) {
            let known = match (cached, sha256) {
                (Some(cached), Some(sha256)) => self.cached_if_current(&found, cached, &sha256),
                _ => None,
            };
            let enabled = enabled.get(&found.name).copied().unwrap_or(true);
            match self.insert_discovered(found, enabled) {
                (slot, true) => slot.known.store(known.map(Arc::new)),
                // A slot already there (another entry of the same name, a plugin registered in
                // the process) keeps its own source: what is known comes from that.
                (slot, false) => self.recall_into(&slot).await,
            }
        }
        self.catalog_changed();
        Ok(())
    }

    /// The cached registration of `found`, when it was made from the bytes `sha256` (its file
    /// now), under its name, and still fits among the loaded plugins.
    fn cached_if_current(
        &self,
        found: &Discovered,
        cached: CachedRegistration,
        sha256: &str,
    ) -> Option<GkRegistration> {
        if cached.sha256 != sha256 || cached.registration.name != found.name {
            return None;
        }
        // Checked as a registration at load is (routes against the loaded plugins', template
        // overrides, schedules): a cached entry that no longer fits is not used.
        match self.validate(&cached.registration) {
            Ok(()) => Some(cached.registration),
            Err(error) => {
                tracing::info!(plugin = %found.name, %error, "the cached registration is not used");
                None
            }
        }
    }
}

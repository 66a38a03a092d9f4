//! Reconciliation: making this node's plugins match the store.
//!
//! For each stored package, the node's plugins directory must hold exactly those bytes under
//! the uploaded file name, installed through the loader (so the signature and every loader
//! check apply as for an upload). Only files the platform put there are replaced or removed: a
//! marker under the packages directory (`.cluster/<plugin>`) records the SHA-256 of what this
//! node installed from the store or an upload, and a file of that name placed by hand (no
//! marker, or other bytes than the marker says) is left alone and reported as a conflict. A
//! tombstone removes the plugin where the node's file is the one it installed. For each known
//! plugin, the enabled state and the loaded sandbox's policy follow the store
//! ([`Manager::apply_stored_state`]). Everything is idempotent.
//!
//! A package that fails to install is tried again with a growing pause (5 s, doubling, at most
//! five minutes); its error is in the node's heartbeat report until it installs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::loader::sha256_hex;
use crate::manager::StateChange;
use crate::{Loader, Manager, StoredPackage};

/// The first pause before a failed install is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest pause before a failed install is tried again.
const LAST_RETRY: Duration = Duration::from_secs(300);

/// What this node knows of a file it checked: its length and modification time when it was
/// hashed, and the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileDigest {
    len: u64,
    modified: Option<SystemTime>,
    sha256: String,
}

/// A package that did not install here.
#[derive(Debug, Clone)]
struct Failure {
    sha256: String,
    error: String,
    attempts: u32,
    next_try: Instant,
}

/// Makes this node's plugins match the store.
#[derive(Debug)]
pub(crate) struct Reconciler {
    manager: Manager,
    loader: Arc<Loader>,
    /// The digests of the plugin files this node checked, by path.
    digests: Mutex<HashMap<PathBuf, FileDigest>>,
    /// The packages that failed to install here, by plugin.
    failed: Mutex<HashMap<String, Failure>>,
}

impl Reconciler {
    pub(crate) fn new(manager: Manager, loader: Arc<Loader>) -> Self {
        Self {
            manager,
            loader,
            digests: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// The packages that do not install on this node: plugin → (SHA-256, error).
    pub(crate) fn failures(&self) -> HashMap<String, (String, String)> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, f)| (name.clone(), (f.sha256.clone(), f.error.clone())))
            .collect()
    }

    /// The SHA-256 of the file at `path`, hashed again (off the async threads) only when its
    /// length or modification time changed; `None` when there is no readable file.
    async fn digest(&self, path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        if let Some(known) = self
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            && known.len == len
            && known.modified == modified
        {
            return Some(known.sha256.clone());
        }
        let file = path.to_owned();
        let sha256 =
            tokio::task::spawn_blocking(move || std::fs::read(file).map(|b| sha256_hex(&b)))
                .await
                .ok()?
                .ok()?;
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                path.to_owned(),
                FileDigest {
                    len,
                    modified,
                    sha256: sha256.clone(),
                },
            );
        Some(sha256)
    }

    /// Everything: every stored package, every known plugin's state, and the plugins with jobs
    /// loaded (a job runs only on nodes that have its plugin loaded; any of them may be the one
    /// that claims an occurrence).
    pub(crate) async fn all(&self) {
        match self.manager.store().package_index().await {
            Ok(index) => {
                // A failure of a row that is gone (deleted from the store) is no longer one.
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|name, _| index.iter().any(|entry| &entry.name == name));
                for entry in index {
                    self.package(&entry).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cluster: cannot read the stored packages"),
        }
        for name in self.manager.names() {
            self.state(&name).await;
        }
        let mut with_jobs: Vec<String> = self
            .manager
            .jobs()
            .into_iter()
            .map(|item| item.plugin)
            .collect();
        with_jobs.dedup();
        for name in with_jobs {
            if !self.manager.is_loaded(&name).unwrap_or(true)
                && let Err(error) = self.manager.load(&name).await
            {
                tracing::warn!(plugin = %name, %error, "cluster: cannot load a plugin with jobs");
            }
        }
    }

    /// One plugin, as another node's message says it changed.
    pub(crate) async fn plugin(&self, name: &str, change: StateChange) {
        if change == StateChange::Package {
            match self.manager.store().package_entry(name).await {
                Ok(Some(entry)) => self.package(&entry).await,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(plugin = %name, %error, "cluster: cannot read the stored package");
                }
            }
        }
        self.state(name).await;
    }

    async fn state(&self, name: &str) {
        match self.manager.apply_stored_state(name).await {
            Ok(_) | Err(crate::ManagerError::NotFound(_)) => {}
            Err(error) => {
                tracing::warn!(plugin = %name, %error, "cluster: cannot apply the stored state");
            }
        }
    }

    /// Makes the plugins directory hold what `entry` (an index entry, without bytes) says.
    async fn package(&self, entry: &StoredPackage) {
        // A row no node of this cluster sealed is not acted on: it would run its bytes here.
        if !self
            .loader
            .package_seal()
            .is_some_and(|seal| seal.verify(entry))
        {
            self.fail(
                entry,
                "the stored row is not sealed by a node of this cluster (written by something \
                 else, or by nodes with another token_secret): refused"
                    .to_owned(),
            );
            return;
        }
        let _installs = self.loader.lock_installs().await;
        let target = self.loader.plugins_dir().join(&entry.file_name);
        let local = self.digest(&target).await;
        let marker = self.loader.read_marker(&entry.name);
        // The file is the platform's when this node's marker says it put exactly these bytes.
        let ours = local.is_some() && local == marker;
        if !entry.installed {
            if ours {
                match self.loader.uninstall_file(&entry.name).await {
                    Ok(()) => {
                        self.loader.remove_marker(&entry.name);
                        tracing::info!(plugin = %entry.name, by = %entry.changed_by, "cluster: plugin removed as the store says");
                    }
                    Err(error) => {
                        tracing::warn!(plugin = %entry.name, %error, "cluster: cannot remove the plugin");
                    }
                }
            }
            return;
        }
        if local.as_deref() == Some(entry.sha256.as_str()) {
            if marker.as_deref() != Some(entry.sha256.as_str()) {
                self.loader.write_marker(&entry.name, &entry.sha256);
            }
            self.forget_failure(&entry.name);
            return;
        }
        if local.is_some() && !ours {
            self.fail(
                entry,
                format!(
                    "{} was not put there by the platform (placed by hand or changed): left alone",
                    target.display()
                ),
            );
            return;
        }
        if !self.may_try(entry) {
            return;
        }
        let stored = match self.manager.store().package(&entry.name).await {
            Ok(Some(stored)) if stored.installed => stored,
            Ok(_) => return, // removed meanwhile; the next look removes it here
            Err(error) => {
                tracing::warn!(plugin = %entry.name, %error, "cluster: cannot read the stored package");
                return;
            }
        };
        // Read again with its bytes: the row may have changed since the index was read.
        if !self
            .loader
            .package_seal()
            .is_some_and(|seal| seal.verify(&stored))
        {
            self.fail(
                &stored,
                "the stored row is not sealed by a node of this cluster: refused".to_owned(),
            );
            return;
        }
        if sha256_hex(&stored.content) != stored.sha256 {
            self.fail(
                &stored,
                "the stored bytes do not match their SHA-256".to_owned(),
            );
            return;
        }
        match self
            .loader
            .install_file(
                &stored.file_name,
                &stored.content,
                stored.signature.as_deref(),
            )
            .await
        {
            Ok(registration) => {
                self.loader.write_marker(&stored.name, &stored.sha256);
                self.forget_failure(&stored.name);
                tracing::info!(plugin = %stored.name, version = %registration.version, sha256 = %stored.sha256, by = %stored.changed_by, "cluster: plugin installed from the store");
            }
            Err(error) => self.fail(&stored, error.to_string()),
        }
    }

    /// Whether a failed package may be tried again now (or has not failed).
    fn may_try(&self, entry: &StoredPackage) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&entry.name)
            .is_none_or(|f| f.sha256 != entry.sha256 || Instant::now() >= f.next_try)
    }

    fn fail(&self, entry: &StoredPackage, error: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = failed
            .get(&entry.name)
            .filter(|f| f.sha256 == entry.sha256)
            .map_or(0, |f| f.attempts)
            + 1;
        if attempts == 1 || failed.get(&entry.name).is_none_or(|f| f.error != error) {
            tracing::warn!(plugin = %entry.name, sha256 = %entry.sha256, %error, "cluster: the stored package does not install on this node; trying again later");
        }
        let pause = FIRST_RETRY
            .saturating_mul(1 << attempts.min(6).saturating_sub(1))
            .min(LAST_RETRY);
        failed.insert(
            entry.name.clone(),
            Failure {
                sha256: entry.sha256.clone(),
                error,
                attempts,
                next_try: Instant::now() + pause,
            },
        );
    }

    fn forget_failure(&self, name: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

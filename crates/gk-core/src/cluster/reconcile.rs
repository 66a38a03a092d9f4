//! Reconciliation: making this node's plugins match the store.
//!
//! For each stored package, the node's plugins directory must hold exactly those bytes under
//! the uploaded file name (installed through the loader, so the signature and every loader
//! check apply as for an upload); a tombstone removes the plugin if this node has it from that
//! file. For each known plugin, the enabled state and the loaded sandbox's policy follow the
//! store ([`Manager::apply_stored_state`]). Everything is idempotent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::watch::sha256_hex;
use crate::{Loader, Manager, StoredPackage};

/// What this node knows of a file it checked: its length and modification time when it was
/// hashed, and the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileDigest {
    len: u64,
    modified: Option<SystemTime>,
    sha256: String,
}

/// Makes this node's plugins match the store.
#[derive(Debug)]
pub(crate) struct Reconciler {
    manager: Manager,
    loader: Arc<Loader>,
    /// The digests of the plugin files this node checked, by path.
    digests: Mutex<HashMap<PathBuf, FileDigest>>,
    /// The packages that failed to install here, with the hash that failed: not tried again
    /// until the store holds other bytes.
    failed: Mutex<HashMap<String, String>>,
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

    /// The SHA-256 of the file at `path`, hashed again only when its length or modification
    /// time changed; `None` when there is no readable file.
    fn digest(&self, path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        let mut digests = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = digests.get(path)
            && known.len == len
            && known.modified == modified
        {
            return Some(known.sha256.clone());
        }
        let sha256 = sha256_hex(&std::fs::read(path).ok()?);
        digests.insert(
            path.to_owned(),
            FileDigest {
                len,
                modified,
                sha256: sha256.clone(),
            },
        );
        Some(sha256)
    }

    /// Everything: every stored package, then every known plugin's state.
    pub(crate) async fn all(&self) {
        match self.manager.store().package_index().await {
            Ok(index) => {
                for entry in index {
                    self.package(&entry).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cluster: cannot read the stored packages"),
        }
        for name in self.manager.names() {
            self.state(&name).await;
        }
    }

    /// One plugin: its package, then its state.
    pub(crate) async fn plugin(&self, name: &str) {
        match self.manager.store().package(name).await {
            Ok(Some(stored)) => self.package(&stored).await,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(plugin = %name, %error, "cluster: cannot read the stored package");
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

    /// Makes the plugins directory hold `entry` (whose bytes are read from the store only
    /// when this node lacks them).
    async fn package(&self, entry: &StoredPackage) {
        let target = self.loader.plugins_dir().join(&entry.file_name);
        let here = self.loader.entry_of(&entry.name);
        if !entry.installed {
            if here.as_deref() == Some(target.as_path()) {
                match self.loader.uninstall_file(&entry.name).await {
                    Ok(()) => {
                        tracing::info!(plugin = %entry.name, by = %entry.changed_by, "cluster: plugin removed as the store says");
                    }
                    Err(error) => {
                        tracing::warn!(plugin = %entry.name, %error, "cluster: cannot remove the plugin");
                    }
                }
            }
            return;
        }
        if here.as_deref() == Some(target.as_path())
            && self.digest(&target).as_deref() == Some(entry.sha256.as_str())
        {
            return;
        }
        if self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&entry.name)
            == Some(&entry.sha256)
        {
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
        if sha256_hex(&stored.content) != stored.sha256 {
            tracing::error!(plugin = %stored.name, "cluster: the stored package does not match its SHA-256; not installed");
            self.remember_failure(&stored);
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
                tracing::info!(plugin = %stored.name, version = %registration.version, sha256 = %stored.sha256, by = %stored.changed_by, "cluster: plugin installed from the store");
            }
            Err(error) => {
                tracing::warn!(plugin = %stored.name, sha256 = %stored.sha256, %error, "cluster: the stored package does not install on this node; not tried again until it changes");
                self.remember_failure(&stored);
            }
        }
    }

    fn remember_failure(&self, stored: &StoredPackage) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stored.name.clone(), stored.sha256.clone());
    }
}

//! Installing a plugin file into the plugins directory (an upload) and removing one.
//!
//! An upload is staged in a hidden directory of the plugins directory (the watcher ignores
//! hidden entries), checked exactly as the loader checks what it finds (signature, package,
//! manifest), moved into place and loaded. When loading fails, the file it replaced is put
//! back: an upload never loses the plugin that was there.
//!
//! Nothing outside the staging directory is written before the name conflict check: a package
//! is unpacked for inspection inside the staging directory, and into the packages directory
//! only once it is installed. An upload refused as a conflict leaves every file as it was.
//!
//! A marker under the packages directory (`.cluster/<plugin>`) records the SHA-256 of each file
//! the platform put in place (an upload, or the cluster's store), so that reconciliation
//! replaces or removes only those; the rows stored for the cluster carry a [`PackageSeal`].

use std::path::{Path, PathBuf};

use gk_sdk::GkRegistration;

use super::{Loader, PackageSeal};
use crate::StoredPackage;
use crate::discovery::inspect;
use crate::manager::StateChange;
use crate::signing::signature_path;
use crate::{ManagerError, packaging};

/// Why an upload or removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The file name is not `<plugin>.wasm` or `<name>.zip`.
    #[error(
        "`{0}` is not a plugin file name: upload a `<name>.wasm` module or a `<name>.zip` package"
    )]
    FileName(String),
    /// The file was checked like the loader checks and refused.
    #[error("the plugin is refused: {0}")]
    Refused(String),
    /// Another file already provides a plugin of that name.
    #[error("plugin `{plugin}` is already installed from {existing}; remove it first")]
    Conflict {
        /// The plugin.
        plugin: String,
        /// Where the installed one comes from.
        existing: String,
    },
    /// The plugin was not installed from the plugins directory.
    #[error("plugin `{0}` was not installed from the plugins directory")]
    NotInstalled(String),
    /// Loading the plugin failed (the previous version, if any, was put back).
    #[error(transparent)]
    Load(#[from] ManagerError),
    /// The change was made on this node but could not be stored for the other nodes.
    #[error(
        "plugin `{plugin}` changed on this node, but the store could not record it for the cluster: {source}"
    )]
    Store {
        /// The plugin.
        plugin: String,
        /// Why.
        #[source]
        source: crate::StoreError,
    },
    /// A file could not be written, moved or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Removes a file or a directory, whichever `path` is; a missing one is fine.
fn remove_entry(path: &Path) -> Result<(), InstallError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Moves `from` (and its signature, when there is one) to `to`.
fn move_with_signature(from: &Path, to: &Path) -> Result<(), InstallError> {
    std::fs::rename(from, to).map_err(io(to))?;
    let signature = signature_path(from);
    if signature.exists() {
        let target = signature_path(to);
        std::fs::rename(&signature, &target).map_err(io(&target))?;
    } else {
        remove_entry(&signature_path(to))?;
    }
    Ok(())
}

impl Loader {
    /// Installs an uploaded plugin file (`<name>.wasm` or `<name>.zip`, with its signature when
    /// there is one), checked as the loader checks, loaded, and returns its registration. A
    /// plugin of the same name installed from the same file name is upgraded (blue-green); one
    /// installed from another file is a conflict. On a node of a cluster, the file is then
    /// stored, and the other nodes install it from the store.
    pub async fn install(
        &self,
        file_name: &str,
        content: &[u8],
        signature: Option<&[u8]>,
        by: &str,
    ) -> Result<GkRegistration, InstallError> {
        let _installs = self.installs.lock().await;
        let registration = self.install_file(file_name, content, signature).await?;
        if self.manager.announces() {
            let sha256 = sha256_hex(content);
            let seal = self.seal_of(&registration.name, file_name, &sha256, true);
            let package = StoredPackage {
                name: registration.name.clone(),
                file_name: file_name.to_owned(),
                sha256: sha256.clone(),
                content: content.to_vec(),
                signature: signature.map(<[u8]>::to_vec),
                installed: true,
                changed: chrono::Utc::now(),
                changed_by: by.to_owned(),
                seal,
            };
            self.manager
                .store()
                .put_package(&package)
                .await
                .map_err(|source| InstallError::Store {
                    plugin: registration.name.clone(),
                    source,
                })?;
            self.write_marker(&registration.name, &sha256);
            self.manager
                .announce(&registration.name, StateChange::Package);
        }
        Ok(registration)
    }

    /// Sets the cluster's package seal (once, when the node joins a cluster).
    pub(crate) fn set_package_seal(&self, seal: PackageSeal) {
        if self.package_seal.set(seal).is_err() {
            tracing::warn!("the loader already has a package seal; ignoring another");
        }
    }

    /// The cluster's package seal, once the node joined a cluster.
    pub(crate) fn package_seal(&self) -> Option<&PackageSeal> {
        self.package_seal.get()
    }

    /// Where the marker of a plugin installed by the platform on this node is kept.
    pub(crate) fn marker_path(&self, plugin: &str) -> PathBuf {
        self.managed_dir.join(".cluster").join(plugin)
    }

    /// Records that this node's file of `plugin` holds the bytes with `sha256`, put there by
    /// the platform (an upload or the store).
    pub(crate) fn write_marker(&self, plugin: &str, sha256: &str) {
        let path = self.marker_path(plugin);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, sha256));
        if let Err(error) = written {
            tracing::warn!(%plugin, path = %path.display(), %error, "cluster: cannot record the installed package");
        }
    }

    /// The SHA-256 the marker of `plugin` records, if the platform installed it here.
    pub(crate) fn read_marker(&self, plugin: &str) -> Option<String> {
        std::fs::read_to_string(self.marker_path(plugin))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Forgets the marker of `plugin` (it was removed).
    pub(crate) fn remove_marker(&self, plugin: &str) {
        let _ = std::fs::remove_file(self.marker_path(plugin));
    }

    /// The seal of a row with these fields; empty (refused by every node) when no seal is
    /// set, which a node that announces changes always has.
    fn seal_of(&self, name: &str, file_name: &str, sha256: &str, installed: bool) -> String {
        match self.package_seal() {
            Some(seal) => seal.seal(name, file_name, sha256, installed),
            None => {
                tracing::error!(plugin = %name, "no package seal: the other nodes will refuse this change");
                String::new()
            }
        }
    }

    /// Installs a plugin file on this node only (what [`Loader::install`] does before it
    /// stores the file for the cluster).
    pub(crate) async fn install_file(
        &self,
        file_name: &str,
        content: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<GkRegistration, InstallError> {
        let path = Path::new(file_name);
        let plain = path.file_name().is_some_and(|n| n == path.as_os_str());
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !plain || file_name.starts_with('.') || !matches!(extension, "wasm" | "zip") {
            return Err(InstallError::FileName(file_name.to_owned()));
        }
        let staging = self.plugins_dir.join(format!(
            ".upload-{}-{}",
            std::process::id(),
            packaging::unique()
        ));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let result = self
            .install_staged(&staging, file_name, content, signature)
            .await;
        if let Err(error) = remove_entry(&staging) {
            tracing::warn!(%error, "cannot remove the upload's staging directory");
        }
        result
    }

    async fn install_staged(
        &self,
        staging: &Path,
        file_name: &str,
        content: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<GkRegistration, InstallError> {
        let staged = staging.join(file_name);
        std::fs::write(&staged, content).map_err(io(&staged))?;
        if let Some(signature) = signature {
            let path = signature_path(&staged);
            std::fs::write(&path, signature).map_err(io(&path))?;
        }
        // Unpacked here to learn its name; the packages directory (where another plugin of that
        // name may be unpacked) is not touched before the conflict check.
        let unpacked = staging.join("unpacked");
        let found = inspect(&staged, &unpacked, &self.signatures)
            .await
            // The staging directory means nothing to the uploader: name the file alone.
            .map_err(|e| {
                let staged_prefix = format!("{}/", staging.display());
                InstallError::Refused(e.problem.replace(&staged_prefix, ""))
            })?
            .ok_or_else(|| InstallError::FileName(file_name.to_owned()))?;
        let name = found.name.clone();
        let target = self.plugins_dir.join(file_name);
        if let Some(existing) = self.entry_of(&name)
            && existing != target
        {
            return Err(InstallError::Conflict {
                plugin: name,
                existing: existing.display().to_string(),
            });
        }

        let backup = staging.join(format!("previous-{file_name}"));
        let had_previous = target.exists();
        if had_previous {
            move_with_signature(&target, &backup)?;
        }
        move_with_signature(&staged, &target)?;
        match self.load_installed(&target, &name).await {
            Ok(registration) => {
                tracing::info!(plugin = %name, file = %target.display(), "plugin installed");
                Ok(registration)
            }
            Err(error) => {
                tracing::warn!(plugin = %name, %error, "the uploaded plugin does not load; putting the previous file back");
                remove_entry(&target)?;
                remove_entry(&signature_path(&target))?;
                if had_previous {
                    move_with_signature(&backup, &target)?;
                    // The running version was kept; this points its source back at the file.
                    let _ = self.refresh(&target).await;
                } else if self.manager.names().contains(&name) {
                    let _ = self.forget(&target, &name).await;
                }
                Err(error)
            }
        }
    }

    async fn load_installed(
        &self,
        target: &Path,
        name: &str,
    ) -> Result<GkRegistration, InstallError> {
        self.refresh(target).await?;
        Ok(self.manager.load(name).await?)
    }

    /// The plugins directory.
    pub(crate) fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// Waits for the installs and removals in progress, and holds off the next until the guard
    /// is dropped.
    pub(crate) async fn lock_installs(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.installs.lock().await
    }

    /// The top-level entry a plugin was found in.
    pub(crate) fn entry_of(&self, name: &str) -> Option<PathBuf> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, plugin)| plugin.as_str() == name)
            .map(|(entry, _)| entry.clone())
    }

    async fn forget(&self, entry: &Path, name: &str) -> Result<(), ManagerError> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(entry);
        self.manager.unregister(name).await
    }

    /// Uninstalls a plugin: unloads it and removes its file or directory (and signature) from
    /// the plugins directory, and its unpacked package. Its policy and enabled state stay in the
    /// store, so installing it again restores them. On a node of a cluster, every node removes
    /// it.
    pub async fn uninstall(&self, name: &str, by: &str) -> Result<(), InstallError> {
        let _installs = self.installs.lock().await;
        if !self.manager.announces() {
            return self.uninstall_file(name).await;
        }
        // On a cluster node, a plugin stored for the cluster is removed everywhere even when
        // this node does not have it (it refused it, say).
        let store = self.manager.store();
        let stored = store
            .package_entry(name)
            .await
            .map_err(|source| InstallError::Store {
                plugin: name.to_owned(),
                source,
            })?
            .filter(|entry| entry.installed);
        match self.uninstall_file(name).await {
            Err(InstallError::NotInstalled(_)) if stored.is_some() => {}
            result => result?,
        }
        self.remove_marker(name);
        if let Some(stored) = stored {
            let seal = self.seal_of(name, &stored.file_name, &stored.sha256, false);
            store
                .remove_package(name, by, &seal)
                .await
                .map_err(|source| InstallError::Store {
                    plugin: name.to_owned(),
                    source,
                })?;
            self.manager.announce(name, StateChange::Package);
        }
        Ok(())
    }

    /// Uninstalls a plugin from this node only.
    pub(crate) async fn uninstall_file(&self, name: &str) -> Result<(), InstallError> {
        let entry = self
            .entry_of(name)
            .ok_or_else(|| InstallError::NotInstalled(name.to_owned()))?;
        self.forget(&entry, name).await?;
        remove_entry(&entry)?;
        remove_entry(&signature_path(&entry))?;
        if entry.extension().is_some_and(|e| e == "zip") {
            remove_entry(&self.managed_dir.join(name))?;
        }
        tracing::info!(plugin = %name, path = %entry.display(), "plugin uninstalled");
        Ok(())
    }
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

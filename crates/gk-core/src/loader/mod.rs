//! The loader: everything between the plugins directory and the [`Manager`].
//!
//! - scanning ([`scan`](Loader::scan), [`refresh`](Loader::refresh), in `scan.rs`): what the
//!   directory holds is made known to the manager (loaded lazily, on first use); a changed entry
//!   is loaded again and replaces the old one blue-green — if the new one fails (bad module, bad
//!   signature) the old one keeps running and the reason is logged; a removed one is unloaded;
//! - watching ([`watch`](Loader::watch), in `watch.rs`): `notify` events, debounced for
//!   [`DEBOUNCE`] per top-level entry (a file still being written is not looked at until it has
//!   been quiet that long), then refreshed;
//! - installing and uninstalling through the platform ([`install`](Loader::install),
//!   [`uninstall`](Loader::uninstall), in `install.rs`), with the markers that say which files
//!   the platform put there and the [`PackageSeal`] of the rows it stores for the cluster;
//! - the admin list ([`inventory`](Loader::inventory), in `inventory.rs`).
//!
//! What a plugin file is (discovery, signatures, packages) is [`crate::discovery`]'s; the
//! cluster drives the loader, the loader knows nothing of the cluster.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod install;
mod inventory;
mod scan;
mod seal;
mod watch;

pub use install::InstallError;
pub(crate) use install::sha256_hex;
pub use inventory::{Lifecycle, PluginOverview};
pub use seal::PackageSeal;
pub use watch::{DEBOUNCE, WatchError, WatchHandle};

use crate::Manager;
use crate::signing::SignaturePolicy;

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
    package_seal: std::sync::OnceLock<PackageSeal>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("plugins_dir", &self.plugins_dir)
            .finish_non_exhaustive()
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
}

//! Discovery: what the plugins directory holds, and the runtimes that can load it.
//!
//! - `*.wasm` files: WASM plugins named after the file (`stats.wasm` is `stats`);
//! - sub-directories with a `plugin.yaml` (or `manifest.yaml`): either runtime, named by it;
//! - `*.zip` packages: extracted (see the `packaging` module) into the managed directory
//!   and then treated as a directory.
//!
//! Every plugin file is checked against the [`SignaturePolicy`] when it is discovered, and again
//! when it is loaded: [`VerifiedEntry::read`] reads the bytes once, checks them, and the runtime
//! loads those same bytes (at first load, reload and restart), so a file swapped after discovery
//! is refused, never run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use gk_sdk::{Plugin, PluginManifest, ResourcePolicy, Runtime};

use crate::packaging;
use crate::signing::SignaturePolicy;

/// A plugin found on disk, not loaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The plugin's name.
    pub name: String,
    /// How it runs.
    pub runtime: Runtime,
    /// Its directory (working directory of a process plugin).
    pub dir: PathBuf,
    /// Its module or executable.
    pub entry: PathBuf,
    /// Its manifest, when it has one.
    pub manifest: Option<PluginManifest>,
    /// Whether it came out of a package whose signature was checked as a whole (its files
    /// then have no signature of their own, and live where only the server writes).
    pub from_package: bool,
}

/// The largest module or executable loaded (512 MiB).
pub const MAX_ENTRY_BYTES: u64 = 512 << 20;

/// A plugin's module or executable as it was read once and checked against the signature
/// policy: what the runtime loads (a WASM module from these bytes, a native executable from a
/// private copy of them).
#[derive(Clone)]
pub struct VerifiedEntry {
    /// Where the bytes were read.
    pub path: PathBuf,
    /// The content.
    pub bytes: Arc<[u8]>,
    /// Its SHA-256, hex.
    pub sha256: String,
}

impl std::fmt::Debug for VerifiedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedEntry")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl VerifiedEntry {
    /// Reads `found`'s entry once and checks it against `signatures` (unless it came out of a
    /// checked package).
    pub fn read(found: &Discovered, signatures: &SignaturePolicy) -> Result<Self, DiscoveryError> {
        let path = &found.entry;
        // A regular file of sane size: a FIFO or a device would block, a huge file fill memory.
        let metadata = std::fs::metadata(path).map_err(|e| refused(path, e))?;
        if !metadata.is_file() {
            return Err(refused(path, "not a regular file"));
        }
        if metadata.len() > MAX_ENTRY_BYTES {
            return Err(refused(
                path,
                format!("larger than {MAX_ENTRY_BYTES} bytes"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| refused(path, e))?;
        if !found.from_package {
            signatures
                .check_bytes(path, &bytes)
                .map_err(|e| refused(path, e))?;
        }
        let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        Ok(Self {
            path: path.clone(),
            bytes: bytes.into(),
            sha256,
        })
    }
}

/// A way of running plugins (WASM, gRPC), as the manager sees it.
#[async_trait]
pub trait PluginRuntime: Send + Sync {
    /// Whether this runtime runs `found`.
    fn accepts(&self, found: &Discovered) -> bool;
    /// Loads `found` under `policy` (not initialised yet), from `entry`: the bytes of its
    /// module or executable as read and checked, never the file again.
    async fn load(
        &self,
        found: &Discovered,
        entry: &VerifiedEntry,
        policy: &ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, LoadError>;
}

/// Why a runtime could not load a plugin: the runtime's own error, kept whole (gk-core knows
/// runtimes only through [`PluginRuntime`], so it cannot name their error types).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LoadError(Box<dyn std::error::Error + Send + Sync>);

impl LoadError {
    /// The error of a runtime (any error type, or a message).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Why something in the plugins directory was not taken.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct DiscoveryError {
    /// The file or directory.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

fn refused(path: &Path, problem: impl ToString) -> DiscoveryError {
    DiscoveryError {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Looks at one path of the plugins directory. `Ok(None)` for things that are not plugins.
pub async fn inspect(
    path: &Path,
    managed_dir: &Path,
    signatures: &SignaturePolicy,
) -> Result<Option<Discovered>, DiscoveryError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if path.is_file() && extension == "wasm" {
        signatures.check(path).map_err(|e| refused(path, e))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        gk_sdk::validate_plugin_name(&name)
            .map_err(|e| refused(path, format!("the file name is not a plugin name: {e}")))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(Some(Discovered {
            name,
            runtime: Runtime::Wasm,
            dir,
            entry: path.to_owned(),
            manifest: None,
            from_package: false,
        }));
    }
    if path.is_file() && extension == "zip" {
        signatures.check(path).map_err(|e| refused(path, e))?;
        let (dir, _) = packaging::extract(path, managed_dir)
            .await
            .map_err(|e| refused(path, e))?;
        // The package's signature covers everything in it.
        return from_dir(&dir, None).map(|mut found| {
            found.from_package = true;
            Some(found)
        });
    }
    if path.is_dir()
        && gk_sdk::MANIFEST_FILE_NAMES
            .iter()
            .any(|name| path.join(name).is_file())
    {
        return from_dir(path, Some(signatures)).map(Some);
    }
    Ok(None)
}

/// A plugin directory; its module or binary is checked against `signatures` unless it came
/// out of a package whose own signature was checked (`None`).
fn from_dir(
    dir: &Path,
    signatures: Option<&SignaturePolicy>,
) -> Result<Discovered, DiscoveryError> {
    let manifest = PluginManifest::from_dir(dir).map_err(|e| refused(dir, e))?;
    let entry = manifest.resolve_entry(dir).map_err(|e| refused(dir, e))?;
    if let Some(signatures) = signatures {
        signatures.check(&entry).map_err(|e| refused(&entry, e))?;
    }
    Ok(Discovered {
        name: manifest.name.clone(),
        runtime: manifest.runtime,
        dir: dir.to_owned(),
        entry,
        manifest: Some(manifest),
        from_package: false,
    })
}

/// Everything the plugins directory holds, sorted by name; what cannot be taken is returned as
/// errors beside it.
pub async fn discover(
    plugins_dir: &Path,
    managed_dir: &Path,
    signatures: &SignaturePolicy,
) -> (Vec<Discovered>, Vec<DiscoveryError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(plugins_dir) else {
        errors.push(refused(plugins_dir, "cannot read the plugins directory"));
        return (found, errors);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.starts_with(managed_dir))
        .collect();
    paths.sort();
    for path in paths {
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        match inspect(&path, managed_dir, signatures).await {
            Ok(Some(plugin)) => found.push(plugin),
            Ok(None) => {}
            Err(error) => errors.push(error),
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    (found, errors)
}

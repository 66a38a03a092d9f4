//! The two runtimes, adapted to gk-core's [`PluginRuntime`] trait: gk-core knows runtimes only
//! through that trait, and this crate is the one that sees both sides.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gk_core::discovery::{Discovered, LoadError, PluginRuntime, VerifiedEntry};
use gk_grpc::{GrpcLimits, GrpcRuntime, IsolationConfig};
use gk_sdk::{Plugin, ResourcePolicy, Runtime};
use gk_wasm::{WasmLimits, WasmRuntime};

/// Loads `.wasm` plugins in-process with wasmer, under the limits of their policy.
#[derive(Debug, Clone)]
pub struct WasmAdapter {
    runtime: Arc<WasmRuntime>,
}

impl WasmAdapter {
    /// An adapter over `runtime` (which owns the compiled-module cache).
    pub fn new(runtime: Arc<WasmRuntime>) -> Self {
        Self { runtime }
    }
}

#[async_trait]
impl PluginRuntime for WasmAdapter {
    fn accepts(&self, found: &Discovered) -> bool {
        found.runtime == Runtime::Wasm
    }

    async fn load(
        &self,
        _found: &Discovered,
        entry: &VerifiedEntry,
        policy: &ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, LoadError> {
        let plugin = self
            .runtime
            .load(entry.bytes.to_vec(), WasmLimits::from_policy(policy))
            .await
            .map_err(LoadError::new)?;
        Ok(Arc::new(plugin))
    }
}

/// Starts gRPC plugins as supervised processes, under the limits of their policy.
///
/// A native executable runs from a private, read-only copy of the bytes that were checked
/// (under the run directory, where plugins cannot write): a binary swapped in the plugins
/// directory after the check is never started, at first load, reload or restart. Scripts (a
/// `#!` first line) run from their own path, because their interpreter opens them by name: the
/// check then covers the file as it was read just before the start.
#[derive(Debug)]
pub struct GrpcAdapter {
    runtime: GrpcRuntime,
    verified_dir: PathBuf,
}

impl GrpcAdapter {
    /// An adapter whose plugin sockets live under `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        let run_dir = run_dir.into();
        Self {
            verified_dir: run_dir.join("verified"),
            runtime: GrpcRuntime::new(run_dir),
        }
    }

    /// An adapter whose plugin sockets live under `run_dir`, isolating plugins as `isolation`
    /// says (whether unisolated plugins may run where isolation is not available, say).
    pub fn with_isolation(run_dir: impl Into<PathBuf>, isolation: IsolationConfig) -> Self {
        let run_dir = run_dir.into();
        Self {
            verified_dir: run_dir.join("verified"),
            runtime: GrpcRuntime::new(run_dir).with_isolation(isolation),
        }
    }

    /// The executable to start: a private copy of `entry`'s checked bytes (written once per
    /// content, read-only, readable by the plugin's user), or the entry itself for a script.
    fn executable_for(&self, name: &str, entry: &VerifiedEntry) -> Result<PathBuf, String> {
        if entry.bytes.starts_with(b"#!") {
            return Ok(entry.path.clone());
        }
        let file_name = entry
            .path
            .file_name()
            .ok_or_else(|| format!("{}: no file name", entry.path.display()))?;
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Named by the whole digest: a copy is only ever the bytes of that digest.
        let dir = self.verified_dir.join(format!("{name}-{}", entry.sha256));
        let copy = dir.join(file_name);
        let failed = |e: std::io::Error| format!("{}: {e}", dir.display());
        // A copy made before is used only when it is a regular file (no link) with these bytes.
        if std::fs::symlink_metadata(&copy).is_ok_and(|m| m.file_type().is_file())
            && std::fs::read(&copy).is_ok_and(|bytes| bytes[..] == entry.bytes[..])
        {
            return Ok(copy);
        }
        std::fs::create_dir_all(&dir).map_err(failed)?;
        for private in [&self.verified_dir, &dir] {
            std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o711))
                .map_err(failed)?;
        }
        // A fresh file of a name of its own: two loads at once, or a crash, leave nothing in
        // the way.
        let partial = dir.join(format!(
            ".partial-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&partial)
            .map_err(failed)?;
        file.write_all(&entry.bytes).map_err(failed)?;
        drop(file);
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
            .map_err(failed)?;
        std::fs::rename(&partial, &copy).map_err(failed)?;
        Ok(copy)
    }
}

#[async_trait]
impl PluginRuntime for GrpcAdapter {
    fn accepts(&self, found: &Discovered) -> bool {
        found.runtime == Runtime::Grpc
    }

    async fn load(
        &self,
        found: &Discovered,
        entry: &VerifiedEntry,
        policy: &ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, LoadError> {
        let executable = self
            .executable_for(&found.name, entry)
            .map_err(LoadError::new)?;
        let plugin = self
            .runtime
            .start(
                &found.name,
                &executable,
                &found.dir,
                GrpcLimits::from_policy(policy),
            )
            .await
            .map_err(LoadError::new)?;
        Ok(Arc::new(plugin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as the manager hands it over (the digest only names the copy here).
    fn entry(path: &std::path::Path, bytes: &[u8]) -> VerifiedEntry {
        VerifiedEntry {
            path: path.to_owned(),
            bytes: bytes.into(),
            sha256: format!("{:016x}", bytes.len()),
        }
    }

    #[test]
    fn a_native_binary_runs_from_a_checked_private_copy() {
        let dir = tempfile::tempdir().unwrap();
        let adapter = GrpcAdapter::new(dir.path().join("run"));
        let original = dir.path().join("plugin/bin");
        let checked = entry(&original, b"\x7fELF checked bytes");
        let copy = adapter.executable_for("p", &checked).unwrap();
        assert_ne!(copy, original);
        assert_eq!(std::fs::read(&copy).unwrap(), b"\x7fELF checked bytes");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o555
        );

        // Something else planted at the copy's place (a file, then a link) is replaced.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&copy, b"planted").unwrap();
        assert_eq!(adapter.executable_for("p", &checked).unwrap(), copy);
        assert_eq!(std::fs::read(&copy).unwrap(), b"\x7fELF checked bytes");
        std::fs::remove_file(&copy).unwrap();
        std::os::unix::fs::symlink("/bin/sh", &copy).unwrap();
        adapter.executable_for("p", &checked).unwrap();
        assert!(
            !std::fs::symlink_metadata(&copy)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // A script runs from its own path (its interpreter opens it by name).
        let script = entry(&original, b"#!/bin/sh\necho hi\n");
        assert_eq!(adapter.executable_for("p", &script).unwrap(), original);
    }
}

//! The two runtimes, adapted to gk-core's [`PluginRuntime`] trait: gk-core knows runtimes only
//! through that trait, and this crate is the one that sees both sides.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gk_core::discovery::{Discovered, PluginRuntime, VerifiedEntry};
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
    ) -> Result<Arc<dyn Plugin>, String> {
        let plugin = self
            .runtime
            .load(entry.bytes.to_vec(), WasmLimits::from_policy(policy))
            .await
            .map_err(|error| error.to_string())?;
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
        let dir = self.verified_dir.join(format!(
            "{name}-{}",
            &entry.sha256[..16.min(entry.sha256.len())]
        ));
        let copy = dir.join(file_name);
        if copy.is_file() {
            return Ok(copy);
        }
        let failed = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let partial = dir.join(".partial");
        std::fs::write(&partial, &entry.bytes).map_err(failed)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
            .map_err(failed)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
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
    ) -> Result<Arc<dyn Plugin>, String> {
        let executable = self.executable_for(&found.name, entry)?;
        let plugin = self
            .runtime
            .start(
                &found.name,
                &executable,
                &found.dir,
                GrpcLimits::from_policy(policy),
            )
            .await
            .map_err(|error| error.to_string())?;
        Ok(Arc::new(plugin))
    }
}

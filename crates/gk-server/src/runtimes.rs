//! The two runtimes, adapted to gk-core's [`PluginRuntime`] trait: gk-core knows runtimes only
//! through that trait, and this crate is the one that sees both sides.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gk_core::discovery::{Discovered, PluginRuntime};
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
        found: &Discovered,
        policy: &ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, String> {
        let plugin = self
            .runtime
            .load_file(&found.entry, WasmLimits::from_policy(policy))
            .await
            .map_err(|error| error.to_string())?;
        Ok(Arc::new(plugin))
    }
}

/// Starts gRPC plugins as supervised processes, under the limits of their policy.
#[derive(Debug)]
pub struct GrpcAdapter {
    runtime: GrpcRuntime,
}

impl GrpcAdapter {
    /// An adapter whose plugin sockets live under `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            runtime: GrpcRuntime::new(run_dir),
        }
    }

    /// An adapter whose plugin sockets live under `run_dir`, isolating plugins as `isolation`
    /// says (whether unisolated plugins may run where isolation is not available, say).
    pub fn with_isolation(run_dir: impl Into<PathBuf>, isolation: IsolationConfig) -> Self {
        Self {
            runtime: GrpcRuntime::new(run_dir).with_isolation(isolation),
        }
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
        policy: &ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, String> {
        let plugin = self
            .runtime
            .start(
                &found.name,
                &found.entry,
                &found.dir,
                GrpcLimits::from_policy(policy),
            )
            .await
            .map_err(|error| error.to_string())?;
        Ok(Arc::new(plugin))
    }
}

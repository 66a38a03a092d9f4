//! The one trait every plugin implements, whichever runtime carries it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{CallContext, GkRegistration, HostApi, PluginError, ResourcePolicy};

/// A loaded plugin, as the platform sees it.
///
/// The WASM runtime (gk-wasm) and the gRPC runtime (gk-grpc) each turn a module or a process
/// into a `Box<dyn Plugin>`; the manager (gk-core) knows plugins only through this trait.
///
/// The life of a plugin: [`register`](Self::register) once, [`init`](Self::init) once with its
/// sandboxed host, any number of concurrent [`call`](Self::call)s, then
/// [`shutdown`](Self::shutdown). Arguments and results are JSON documents as bytes, exactly as
/// they cross the WASM ABI and the gRPC wire.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// What the plugin provides: routes, widgets, jobs, translations, requested resources.
    async fn register(&self) -> Result<GkRegistration, PluginError>;

    /// Prepares the plugin to take calls; `host` is the plugin's sandboxed view of the host.
    async fn init(&self, ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError>;

    /// Runs `function` with JSON `args` (empty means none) and returns its JSON result
    /// (empty means no result). May be called from many tasks at once.
    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError>;

    /// Lets the plugin finish its work; no call follows.
    async fn shutdown(&self, ctx: &CallContext) -> Result<(), PluginError>;

    /// Whether the plugin is able to take calls. The default says yes.
    async fn health(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Applies the runtime limits of a changed policy (`memory_mb`, `call_timeout`,
    /// `init_timeout`) to the plugin's next call, or to its next instance, without a call
    /// failing. Returns whether it did; the default does not, and the manager reloads the plugin
    /// to apply them.
    fn apply_limits(&self, _policy: &ResourcePolicy) -> bool {
        false
    }

    /// How many calls each limit stopped since the plugin was loaded. The default counts none
    /// (a runtime that enforces no such limit itself).
    fn limit_stops(&self) -> LimitStops {
        LimitStops::default()
    }
}

/// Calls of one plugin stopped by each of its limits, as its runtime counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStops {
    /// Stopped at their deadline (`call_timeout`).
    pub deadline: u64,
    /// Stopped when their fuel (the CPU budget behind the deadline) ran out.
    pub fuel: u64,
    /// Stopped because the guest's memory reached `memory_mb`.
    pub memory: u64,
}

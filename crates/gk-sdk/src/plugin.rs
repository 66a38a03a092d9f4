//! The one trait every plugin implements, whichever runtime carries it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{CallContext, GkRegistration, HostApi, PluginError};

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
}

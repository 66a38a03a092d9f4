//! Calls into plugins: the host's entry ([`Manager::call`], [`Manager::call_with`]) and
//! plugin-to-plugin calls ([`PluginCaller`]), each under one `gk.plugin.call` span.
//!
//! The span is opened here and not in the runtimes, so that a call has one span whatever runtime
//! runs it: fields `plugin`, `function`, `caller` and `depth`, and `runtime` (`wasm`, `grpc`;
//! absent for a plugin registered in the process). A runtime records its own fields on it (gk-wasm
//! `wasm.inline`, gk-grpc `grpc.pid`). A failed call is recorded at error level. Nothing is
//! formatted or allocated for the span when it is disabled.

use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use gk_sdk::{CallContext, HostError, HostResult};
use tracing::{Level, instrument};

use super::{Manager, ManagerError};
use crate::host::PluginCaller;

impl Manager {
    /// Calls `function` of plugin `name` from the host (depth 0).
    pub async fn call(
        &self,
        name: &str,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, ManagerError> {
        self.call_with(&CallContext::for_plugin(name), function, args)
            .await
    }

    /// Calls `function` of the plugin `ctx.plugin` with the given context (caller and depth).
    #[instrument(
        name = "gk.plugin.call",
        skip_all,
        fields(
            plugin = ctx.plugin.as_str(),
            function = function,
            caller = ctx.caller.as_deref(),
            depth = ctx.depth,
            runtime = tracing::field::Empty,
            wasm.inline = tracing::field::Empty,
            grpc.pid = tracing::field::Empty,
        ),
        err(level = Level::ERROR)
    )]
    pub async fn call_with(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, ManagerError> {
        let slot = self.slot(&ctx.plugin)?;
        if !slot.enabled.load(Ordering::SeqCst) {
            return Err(ManagerError::Disabled(ctx.plugin.clone()));
        }
        let loaded = match slot.loaded.load_full() {
            Some(loaded) => loaded,
            // Loading is rare and its future is kilobytes: boxed, so that every call's future
            // (moved by each layer of the HTTP stack above it) stays small.
            None => Box::pin(self.ensure_loaded(&slot)).await?,
        };
        let span = tracing::Span::current();
        if !span.is_disabled()
            && let Some(source) = slot.source.load().as_ref()
        {
            span.record("runtime", source.runtime.as_str());
        }
        let start = Instant::now();
        let result = loaded.plugin.call(ctx, function, args).await;
        slot.counters.record(start.elapsed(), result.is_ok());
        result.map_err(|source| ManagerError::Plugin {
            plugin: ctx.plugin.clone(),
            source,
        })
    }
}

#[async_trait]
impl PluginCaller for Manager {
    /// Plugin-to-plugin calls: the caller's sandbox has checked the scope and the depth and set
    /// the caller; the target runs with that context.
    async fn call_plugin(
        &self,
        ctx: &CallContext,
        plugin: &str,
        function: &str,
        args: &[u8],
    ) -> HostResult<Vec<u8>> {
        let target = CallContext {
            plugin: plugin.to_owned(),
            ..ctx.clone()
        };
        self.call_with(&target, function, args)
            .await
            .map_err(|error| match error {
                ManagerError::NotFound(name) => HostError::NotFound(format!("plugin `{name}`")),
                ManagerError::Disabled(name) => {
                    HostError::Unavailable(format!("plugin `{name}` is disabled"))
                }
                other => HostError::PluginFailed(other.to_string()),
            })
    }
}

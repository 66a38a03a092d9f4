//! Loaders for the fixtures; the host that records what reaches them is gk-sdk's `MemoryHost`.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gk_sdk::CallContext;
pub(crate) use gk_sdk::testing::MemoryHost;
use gk_wasm::{WasmConfig, WasmError, WasmLimits, WasmPlugin, WasmRuntime};

/// One runtime for the whole test binary (the fuel rate is measured once).
pub(crate) fn runtime() -> &'static WasmRuntime {
    static RUNTIME: OnceLock<WasmRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        WasmRuntime::new(WasmConfig {
            pool_size: 4,
            ..WasmConfig::default()
        })
        .expect("runtime")
    })
}

/// A runtime of its own with one worker per plugin (so that a call holding it shows), fuel at
/// the shared runtime's calibrated rate.
pub(crate) fn single_worker_runtime() -> WasmRuntime {
    WasmRuntime::new(WasmConfig {
        pool_size: 1,
        points_per_second: Some(runtime().points_per_second()),
        ..WasmConfig::default()
    })
    .expect("runtime")
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn limits(timeout_ms: u64, memory_mb: u64) -> WasmLimits {
    WasmLimits {
        memory_bytes: memory_mb << 20,
        call_timeout: Duration::from_millis(timeout_ms),
        init_timeout: Duration::from_millis(timeout_ms),
    }
}

pub(crate) async fn try_load(name: &str, limits: WasmLimits) -> Result<WasmPlugin, WasmError> {
    runtime().load(fixture(name), limits).await
}

/// Loads a fixture and initialises it with a fresh [`MemoryHost`].
pub(crate) async fn load(name: &str, limits: WasmLimits) -> (WasmPlugin, Arc<MemoryHost>) {
    use gk_sdk::Plugin;
    let plugin = try_load(name, limits)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let host = Arc::new(MemoryHost::default());
    plugin
        .init(&CallContext::for_plugin(name), host.clone())
        .await
        .unwrap();
    (plugin, host)
}

pub(crate) fn ctx() -> CallContext {
    CallContext::for_plugin("tester")
}

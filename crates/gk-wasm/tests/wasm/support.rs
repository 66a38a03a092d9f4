//! A host that records what reaches it, and loaders for the fixtures.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, Email, HostApi, HostError, HostResult, HttpRequest, HttpResponse, LogLevel, Row,
    TranslateArgs,
};
use gk_wasm::{WasmConfig, WasmError, WasmLimits, WasmPlugin, WasmRuntime};
use serde_json::{Map, Value, json};

#[derive(Debug, Default)]
pub struct MemoryHost {
    pub cache: Mutex<HashMap<String, Vec<u8>>>,
    pub logs: Mutex<Vec<(String, LogLevel, String)>>,
    pub contexts: Mutex<Vec<CallContext>>,
}

impl MemoryHost {
    fn seen(&self, ctx: &CallContext) {
        self.contexts.lock().unwrap().push(ctx.clone());
    }
}

#[async_trait]
impl HostApi for MemoryHost {
    async fn db_query(
        &self,
        ctx: &CallContext,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.seen(ctx);
        let mut row = Map::new();
        row.insert("query".into(), json!(query));
        row.insert("args".into(), json!(args));
        Ok(vec![row])
    }
    async fn db_exec(&self, ctx: &CallContext, _: &str, _: &[Value]) -> HostResult<u64> {
        self.seen(ctx);
        Ok(3)
    }
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.seen(ctx);
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        _: Duration,
    ) -> HostResult<()> {
        self.seen(ctx);
        self.cache
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn cache_delete(&self, ctx: &CallContext, key: &str) -> HostResult<()> {
        self.seen(ctx);
        self.cache.lock().unwrap().remove(key);
        Ok(())
    }
    async fn http_request(&self, _: &CallContext, _: HttpRequest) -> HostResult<HttpResponse> {
        Err(HostError::denied("http", "no http in tests"))
    }
    async fn send_email(&self, _: &CallContext, _: Email) -> HostResult<()> {
        Ok(())
    }
    async fn log(
        &self,
        ctx: &CallContext,
        level: LogLevel,
        message: &str,
        _: &Map<String, Value>,
    ) -> HostResult<()> {
        self.logs
            .lock()
            .unwrap()
            .push((ctx.plugin.clone(), level, message.to_owned()));
        Ok(())
    }
    async fn config_get(&self, _: &CallContext, key: &str) -> HostResult<String> {
        Err(HostError::NotFound(format!("config key `{key}`")))
    }
    async fn translate(&self, _: &CallContext, key: &str, _: &TranslateArgs) -> HostResult<String> {
        Ok(key.to_owned())
    }
    async fn call_plugin(
        &self,
        _: &CallContext,
        _: &str,
        _: &str,
        _: &[u8],
    ) -> HostResult<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// One runtime for the whole test binary (the fuel rate is measured once).
pub fn runtime() -> &'static WasmRuntime {
    static RUNTIME: OnceLock<WasmRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        WasmRuntime::new(WasmConfig {
            pool_size: 4,
            ..WasmConfig::default()
        })
        .expect("runtime")
    })
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn limits(timeout_ms: u64, memory_mb: u64) -> WasmLimits {
    WasmLimits {
        memory_bytes: memory_mb << 20,
        call_timeout: Duration::from_millis(timeout_ms),
        init_timeout: Duration::from_millis(timeout_ms),
    }
}

pub async fn try_load(name: &str, limits: WasmLimits) -> Result<WasmPlugin, WasmError> {
    runtime().load(fixture(name), limits).await
}

/// Loads a fixture and initialises it with a fresh [`MemoryHost`].
pub async fn load(name: &str, limits: WasmLimits) -> (WasmPlugin, Arc<MemoryHost>) {
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

pub fn ctx() -> CallContext {
    CallContext::for_plugin("tester")
}

//! The host the gRPC tests give their plugins: a memory cache and a log record; the database
//! answers nothing and HTTP is always refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, Email, HostApi, HostError, HostResult, HttpRequest, HttpResponse, LogLevel, Row,
    TranslateArgs,
};
use serde_json::{Map, Value};

/// Records the plugin's cache entries and log lines.
#[derive(Debug, Default)]
pub struct MemoryHost {
    pub cache: Mutex<HashMap<String, Vec<u8>>>,
    pub logs: Mutex<Vec<(String, LogLevel, String)>>,
}

#[async_trait]
impl HostApi for MemoryHost {
    async fn db_query(&self, _: &CallContext, _: &str, _: &[Value]) -> HostResult<Vec<Row>> {
        Ok(Vec::new())
    }
    async fn db_exec(&self, _: &CallContext, _: &str, _: &[Value]) -> HostResult<u64> {
        Ok(0)
    }
    async fn cache_get(&self, ctx: &CallContext, key: &str) -> HostResult<Option<Vec<u8>>> {
        Ok(self
            .cache
            .lock()
            .unwrap()
            .get(&format!("{}:{key}", ctx.plugin))
            .cloned())
    }
    async fn cache_set(
        &self,
        ctx: &CallContext,
        key: &str,
        value: &[u8],
        _: Duration,
    ) -> HostResult<()> {
        self.cache
            .lock()
            .unwrap()
            .insert(format!("{}:{key}", ctx.plugin), value.to_vec());
        Ok(())
    }
    async fn cache_delete(&self, _: &CallContext, _: &str) -> HostResult<()> {
        Ok(())
    }
    async fn http_request(&self, _: &CallContext, _: HttpRequest) -> HostResult<HttpResponse> {
        Err(HostError::denied(
            "http",
            "host `example.com` is not in the http scope",
        ))
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
        Err(HostError::NotFound(key.to_owned()))
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

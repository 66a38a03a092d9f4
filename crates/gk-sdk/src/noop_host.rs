//! [`NoopHost`]: a host that does nothing, for benchmarks and plugin unit tests.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::{
    CallContext, Email, HostApi, HostResult, HttpRequest, HttpResponse, LogLevel, Row,
    TranslateArgs,
};

/// A host whose every function succeeds at once with an empty answer (no rows, no cache entry,
/// an empty HTTP response and config value; `translate` returns the key). What it costs is
/// what the caller's own path costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHost;

#[async_trait]
impl HostApi for NoopHost {
    async fn db_query(&self, _: &CallContext, _: &str, _: &[Value]) -> HostResult<Vec<Row>> {
        Ok(Vec::new())
    }
    async fn db_exec(&self, _: &CallContext, _: &str, _: &[Value]) -> HostResult<u64> {
        Ok(0)
    }
    async fn cache_get(&self, _: &CallContext, _: &str) -> HostResult<Option<Vec<u8>>> {
        Ok(None)
    }
    async fn cache_set(&self, _: &CallContext, _: &str, _: &[u8], _: Duration) -> HostResult<()> {
        Ok(())
    }
    async fn cache_delete(&self, _: &CallContext, _: &str) -> HostResult<()> {
        Ok(())
    }
    async fn http_request(&self, _: &CallContext, _: HttpRequest) -> HostResult<HttpResponse> {
        Ok(HttpResponse::default())
    }
    async fn send_email(&self, _: &CallContext, _: Email) -> HostResult<()> {
        Ok(())
    }
    async fn log(
        &self,
        _: &CallContext,
        _: LogLevel,
        _: &str,
        _: &Map<String, Value>,
    ) -> HostResult<()> {
        Ok(())
    }
    async fn config_get(&self, _: &CallContext, _: &str) -> HostResult<String> {
        Ok(String::new())
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

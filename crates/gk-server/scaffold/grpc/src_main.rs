//! The {{name}} plugin: a process the GoatKit host starts and talks to over gRPC. It serves
//! a route and counts its greetings in the host's cache.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{CallContext, GkRegistration, HostApi, Plugin, PluginError, RouteSpec};
use serde_json::{Value, json};

#[derive(Default)]
struct Hello {
    host: OnceLock<Arc<dyn HostApi>>,
}

impl Hello {
    fn host(&self) -> Result<&Arc<dyn HostApi>, PluginError> {
        self.host
            .get()
            .ok_or_else(|| PluginError::Unavailable("not initialised".into()))
    }
}

#[async_trait]
impl Plugin for Hello {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(GkRegistration {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            description: "The {{name}} plugin".into(),
            routes: vec![RouteSpec {
                method: "GET".into(),
                path: "/api/plugins/{{name}}/hello".into(),
                handler: "hello".into(),
                middleware: vec!["auth".into()],
                description: "Greets and counts the greetings".into(),
            }],
            ..Default::default()
        })
    }

    async fn init(&self, _ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.host
            .set(host)
            .map_err(|_| PluginError::Unavailable("initialised twice".into()))
    }

    async fn call(&self, ctx: &CallContext, function: &str, args: &[u8]) -> Result<Vec<u8>, PluginError> {
        let args: Value = serde_json::from_slice(args).unwrap_or_default();
        let reply = match function {
            "hello" => {
                let name = args["name"].as_str().unwrap_or("world");
                let host = self.host()?;
                let count = host
                    .cache_get(ctx, "greetings")
                    .await?
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .and_then(|text| text.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                host.cache_set(ctx, "greetings", count.to_string().as_bytes(), Duration::ZERO)
                    .await?;
                json!({"message": format!("Hello, {name}!"), "greetings": count})
            }
            other => return Err(PluginError::UnknownFunction(other.into())),
        };
        serde_json::to_vec(&reply).map_err(|e| PluginError::failed("encode", e.to_string()))
    }

    async fn shutdown(&self, _ctx: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), gk_sdk::ServeError> {
    gk_sdk::serve(Hello::default()).await
}

//! hello-grpc: the example gRPC plugin. It registers two routes and a dashboard widget, counts
//! greetings in the cache and logs through the host.
//!
//! It is built with the workspace (`cargo build -p hello-grpc`) and started by the host; run by
//! hand, it says so and exits.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{
    CallContext, GkRegistration, HostApi, LogLevel, Plugin, PluginError, RouteSpec, WidgetSpec,
};
use serde_json::{Map, Value, json};

#[derive(Default)]
struct Hello {
    host: OnceLock<Arc<dyn HostApi>>,
    /// Set by `unhealthy`: health checks fail from then on (for the supervision tests).
    unhealthy: std::sync::atomic::AtomicBool,
}

impl Hello {
    fn host(&self) -> Result<&Arc<dyn HostApi>, PluginError> {
        self.host
            .get()
            .ok_or_else(|| PluginError::Unavailable("not initialised".into()))
    }

    async fn greet(&self, ctx: &CallContext, args: &[u8]) -> Result<Value, PluginError> {
        let args: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(args)
                .map_err(|e| PluginError::failed("bad_arguments", e.to_string()))?
        };
        let name = args
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("world")
            .to_owned();
        let host = self.host()?;
        let count = host
            .cache_get(ctx, "greetings")
            .await?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        host.cache_set(
            ctx,
            "greetings",
            count.to_string().as_bytes(),
            Duration::ZERO,
        )
        .await?;
        let mut fields = Map::new();
        fields.insert("name".into(), json!(name));
        host.log(ctx, LogLevel::Info, "greeted", &fields).await?;
        Ok(json!({"message": format!("Hello, {name}!"), "greetings": count}))
    }
}

#[async_trait]
impl Plugin for Hello {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        let route = |path: &str, handler: &str| RouteSpec {
            method: "GET".into(),
            path: format!("/api/plugins/hello-grpc/{path}"),
            handler: handler.into(),
            middleware: vec!["auth".into()],
            description: String::new(),
        };
        Ok(GkRegistration {
            name: "hello-grpc".into(),
            version: "0.1.0".into(),
            description: "The example gRPC plugin of GoatKit".into(),
            license: "Apache-2.0".into(),
            routes: vec![
                route("hello", "greet"),
                route("env", "environment"),
                route("tickets", "tickets"),
                route("page", "page"),
            ],
            widgets: vec![WidgetSpec {
                id: "hello_widget".into(),
                title: "Hello".into(),
                handler: "widget".into(),
                location: "dashboard".into(),
                size: "small".into(),
                refreshable: true,
                refresh_sec: 5,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn init(&self, _ctx: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        self.host
            .set(host)
            .map_err(|_| PluginError::Unavailable("initialised twice".into()))
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let result = match function {
            "greet" => self.greet(ctx, args).await?,
            // An HTML page: wrapped in the server's layout, or sent as it is with `?raw=true`.
            "page" => {
                let args: Value = serde_json::from_slice(args).unwrap_or_default();
                let user = args["_user_login"]
                    .as_str()
                    .unwrap_or("stranger")
                    .replace('<', "&lt;");
                json!({
                    "html": format!("<h1 class=\"hello-page\">Hello, {user}!</h1>"),
                    "title": "Hello page",
                    "raw": args["raw"] == "true",
                })
            }
            // A plugin-to-plugin call: the Stats plugin's overview, through the host (and this
            // plugin's sandbox: it needs `plugin_call` on `stats`).
            "tickets" => {
                let overview = self
                    .host()?
                    .call_plugin(ctx, "stats", "overview", br#"{"range":"all"}"#)
                    .await?;
                let overview: Value = serde_json::from_slice(&overview)
                    .map_err(|e| PluginError::failed("bad_reply", e.to_string()))?;
                json!({"from": "stats", "overview": overview})
            }
            "widget" => {
                let greeting = self.greet(ctx, br#"{"name":"dashboard"}"#).await?;
                // Refreshable: the dashboard asks again every `refresh_sec`, the count grows.
                json!({"html": format!(
                    "<p class=\"hello\">{}</p><p class=\"count\">{} greetings</p>",
                    greeting["message"].as_str().unwrap_or_default(),
                    greeting["greetings"].as_u64().unwrap_or_default()
                )})
            }
            // What the process can see of its environment: for the isolation tests.
            "environment" => json!({
                "variables": std::env::vars().map(|(k, _)| k).collect::<Vec<_>>(),
                "pid": std::process::id(),
                "visible_processes": std::fs::read_dir("/proc")
                    .map(|entries| entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit())).count())
                    .unwrap_or(0),
            }),
            // Whether a TCP connection can be opened: for the network isolation tests.
            "tcp" => {
                let args: Value = serde_json::from_slice(args).unwrap_or_default();
                let address = args
                    .get("address")
                    .and_then(Value::as_str)
                    .unwrap_or("127.0.0.1:1")
                    .to_owned();
                let outcome = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(&address),
                )
                .await;
                json!({"connected": matches!(outcome, Ok(Ok(_)))})
            }
            // Outbound HTTP through the host (and this plugin's `http` scope): `{"url": …}`.
            "fetch" => {
                let args: Value = serde_json::from_slice(args)
                    .map_err(|e| PluginError::failed("bad_arguments", e.to_string()))?;
                let url = args["url"].as_str().unwrap_or_default().to_owned();
                let response = self
                    .host()?
                    .http_request(
                        ctx,
                        gk_sdk::HttpRequest {
                            method: "GET".into(),
                            url,
                            ..Default::default()
                        },
                    )
                    .await?;
                json!({
                    "status": response.status,
                    "body": String::from_utf8_lossy(&response.body),
                })
            }
            // For benchmarks: no host call, and exactly one.
            "echo" => return Ok(args.to_vec()),
            "ping" => {
                json!({"app": self.host()?.config_get(ctx, "app.name").await.unwrap_or_default()})
            }
            // Tries to speak for another plugin: the host stamps the real name anyway.
            "impersonate" => {
                let admin = CallContext::for_plugin("admin");
                self.host()?
                    .cache_set(&admin, "owned", b"yes", Duration::ZERO)
                    .await?;
                json!({})
            }
            "crash" => std::process::exit(3),
            "unhealthy" => {
                self.unhealthy
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                json!({})
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                json!({})
            }
            other => {
                return Err(PluginError::failed(
                    "unknown_function",
                    format!("no function `{other}`"),
                ));
            }
        };
        Ok(serde_json::to_vec(&result).unwrap_or_default())
    }

    async fn shutdown(&self, _ctx: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }

    async fn health(&self) -> Result<(), PluginError> {
        if self.unhealthy.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PluginError::Unavailable("asked to be unhealthy".into()));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), gk_sdk::ServeError> {
    gk_sdk::serve(Hello::default()).await
}

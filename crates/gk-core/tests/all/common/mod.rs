//! What the tests share: the manager fixture (a manager on the real production host, SQLite file
//! and memory cache, in a temporary directory), the test services' URLs, and a redis-server of a
//! test's own.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{CallContext, GkRegistration, HostApi, Plugin, PluginError, RouteSpec};
use serde_json::{Value, json};

use gk_core::host::{
    ConfigValues, DatabaseConfig, Databases, HostServices, HttpClient, HttpConfig, MemoryCache,
    Outbox, PluginLogs, ProductionHost, Translations,
};
use gk_core::{Manager, Store};
use gk_sandbox::SandboxConfig;

pub(crate) struct Fixture {
    pub manager: Manager,
    pub store: Store,
    pub translations: Arc<Translations>,
    pub _dir: tempfile::TempDir,
    pub url: String,
}

pub(crate) async fn fixture_at(dir: tempfile::TempDir) -> Fixture {
    let url = format!("sqlite://{}", dir.path().join("gk.db").display());
    let databases = Databases::connect(&DatabaseConfig::single(url.clone()))
        .await
        .unwrap();
    let store = Store::open(databases.connection("default").unwrap().clone())
        .await
        .unwrap();
    let translations = Arc::new(Translations::default());
    let host = Arc::new(ProductionHost::new(HostServices {
        databases,
        cache: Arc::new(MemoryCache::default()),
        logs: Arc::new(PluginLogs::default()),
        config: ConfigValues::default(),
        translations: translations.clone(),
        mailer: Arc::new(Outbox::new(store.clone())),
        http: HttpClient::new(HttpConfig::default()),
    }));
    let manager = Manager::for_production_host(
        host.clone(),
        store.clone(),
        Arc::new(SandboxConfig::default()),
    )
    .unwrap();
    assert!(
        matches!(
            Manager::for_production_host(host, store.clone(), Arc::new(SandboxConfig::default())),
            Err(gk_core::ManagerError::HostInUse)
        ),
        "a host serves one manager"
    );
    Fixture {
        manager,
        store,
        translations,
        _dir: dir,
        url,
    }
}

pub(crate) async fn fixture() -> Fixture {
    fixture_at(tempfile::tempdir().unwrap()).await
}

/// A plugin for the tests: its behaviour per function name.
pub(crate) struct TestPlugin {
    pub name: String,
    pub version: String,
    pub route: Option<String>,
    pub host: OnceLock<Arc<dyn HostApi>>,
    pub slow_init: bool,
    pub shutdowns: Arc<AtomicUsize>,
    pub jobs: Vec<gk_sdk::JobSpec>,
    pub ticks: Arc<AtomicUsize>,
}

impl TestPlugin {
    pub(crate) fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            route: None,
            host: OnceLock::new(),
            slow_init: false,
            shutdowns: Arc::default(),
            jobs: Vec::new(),
            ticks: Arc::default(),
        }
    }
}

#[async_trait]
impl Plugin for TestPlugin {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(GkRegistration {
            name: self.name.clone(),
            version: self.version.clone(),
            routes: self
                .route
                .iter()
                .map(|p| RouteSpec {
                    method: "GET".into(),
                    path: p.clone(),
                    handler: "echo".into(),
                    ..Default::default()
                })
                .collect(),
            jobs: self.jobs.clone(),
            ..Default::default()
        })
    }

    async fn init(&self, _: &CallContext, host: Arc<dyn HostApi>) -> Result<(), PluginError> {
        if self.slow_init {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let _ = self.host.set(host);
        Ok(())
    }

    async fn call(
        &self,
        ctx: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let host = self
            .host
            .get()
            .ok_or_else(|| PluginError::Unavailable("no host".into()))?;
        let args: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(args).unwrap_or_default()
        };
        let result = match function {
            "who" => {
                json!({"plugin": ctx.plugin, "caller": ctx.caller, "depth": ctx.depth, "version": self.version})
            }
            "tick" => {
                self.ticks.fetch_add(1, Ordering::SeqCst);
                json!({})
            }
            "long" => {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                json!({})
            }
            "slow" => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                json!({"version": self.version})
            }
            "cache" => {
                host.cache_set(ctx, "k", b"v", Duration::ZERO).await?;
                json!({"ok": true})
            }
            "call" => {
                let target = args["target"].as_str().unwrap_or_default();
                let function = args["function"].as_str().unwrap_or("who");
                let reply = host
                    .call_plugin(ctx, target, function, args["args"].to_string().as_bytes())
                    .await?;
                serde_json::from_slice(&reply).unwrap_or_default()
            }
            "recurse" => {
                let reply = host.call_plugin(ctx, &self.name, "recurse", b"{}").await?;
                serde_json::from_slice(&reply).unwrap_or_default()
            }
            other => return Err(PluginError::failed("unknown_function", other)),
        };
        Ok(serde_json::to_vec(&result).unwrap_or_default())
    }

    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The `who` reply of a plugin: its name, caller, depth and version.
pub(crate) async fn who(manager: &Manager, name: &str) -> Value {
    serde_json::from_slice(&manager.call(name, "who", b"").await.unwrap()).unwrap()
}

/// The version a plugin reports, or `None` when it does not answer.
pub(crate) async fn version(manager: &Manager, name: &str) -> Option<String> {
    let reply = manager.call(name, "who", b"").await.ok()?;
    let value: Value = serde_json::from_slice(&reply).ok()?;
    value["version"].as_str().map(str::to_owned)
}

pub(crate) use gk_sdk::testing::{free_port, service_url};

/// A redis-server of the test's own, on its own port, so stopping it disturbs nobody.
#[derive(Debug)]
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    child: Child,
}

impl OwnRedis {
    pub(crate) fn start(port: u16) -> Self {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test (Debian package redis-server)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { port, child };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on port {port} did not start");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

//! The manager with test plugins on the real production host (SQLite, memory cache).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gk_core::{Manager, ManagerError};
use gk_sdk::{
    Access, CallContext, GkRegistration, HostApi, HostError, Permission, PermissionType, Plugin,
    PluginError, PolicyStatus, RouteSpec,
};
use serde_json::{Value, json};

mod common;
use common::{fixture, fixture_at};

/// A plugin for the tests: its behaviour per function name.
struct TestPlugin {
    name: String,
    version: String,
    route: Option<String>,
    host: OnceLock<Arc<dyn HostApi>>,
    slow_init: bool,
    shutdowns: Arc<AtomicUsize>,
    jobs: Vec<gk_sdk::JobSpec>,
    ticks: Arc<AtomicUsize>,
}

impl TestPlugin {
    fn new(name: &str, version: &str) -> Self {
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

fn approved(name: &str, permissions: Vec<Permission>) -> gk_sdk::ResourcePolicy {
    let mut policy = gk_sdk::ResourcePolicy::default_for(name);
    policy.status = PolicyStatus::Approved;
    policy.permissions = permissions;
    policy
}

async fn who(manager: &Manager, name: &str) -> Value {
    serde_json::from_slice(&manager.call(name, "who", b"").await.unwrap()).unwrap()
}

#[tokio::test]
async fn register_call_and_the_default_policy_is_stored() {
    let f = fixture().await;
    let reg = f
        .manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    assert_eq!(reg.name, "alpha");
    assert_eq!(
        who(&f.manager, "alpha").await,
        json!({"plugin": "alpha", "caller": null, "depth": 0, "version": "1"})
    );
    assert_eq!(
        f.store.plugin_policy("alpha").await.unwrap(),
        Some(gk_sdk::ResourcePolicy::default_for("alpha"))
    );
    let stats = f.manager.stats("alpha").unwrap();
    assert_eq!((stats.calls, stats.errors), (1, 0));
    assert!(matches!(
        f.manager.call("nobody", "who", b"").await,
        Err(ManagerError::NotFound(_))
    ));
    f.manager.call("alpha", "nope", b"").await.unwrap_err();
    assert_eq!(f.manager.stats("alpha").unwrap().errors, 1);
}

#[tokio::test]
async fn disabled_state_is_persisted_and_survives_a_restart() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .set_enabled("alpha", false, "admin")
        .await
        .unwrap();
    assert!(matches!(
        f.manager.call("alpha", "who", b"").await,
        Err(ManagerError::Disabled(_))
    ));
    // A new manager on the same database: a restart.
    let again = fixture_at(f._dir).await;
    again
        .manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    assert!(!again.manager.is_enabled("alpha").unwrap());
    again
        .manager
        .set_enabled("alpha", true, "admin")
        .await
        .unwrap();
    assert_eq!(who(&again.manager, "alpha").await["version"], "1");
    let _ = again.url;
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_host_call() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager.call("alpha", "cache", b"").await.unwrap();
    f.manager
        .set_policy(approved("alpha", vec![]), "admin")
        .await
        .unwrap();
    let err = f.manager.call("alpha", "cache", b"").await.unwrap_err();
    assert!(err.to_string().contains("cache:write"), "{err}");
    assert_eq!(
        f.manager.policy("alpha").await.unwrap().status,
        PolicyStatus::Approved
    );
    f.manager
        .set_policy(
            approved(
                "alpha",
                vec![Permission::new(PermissionType::Cache, Access::ReadWrite)],
            ),
            "admin",
        )
        .await
        .unwrap();
    f.manager.call("alpha", "cache", b"").await.unwrap();
    assert_eq!(f.manager.stats("alpha").unwrap().host.denied, 1);
}

#[tokio::test]
async fn plugin_calls_go_through_the_callers_sandbox() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .register(Arc::new(TestPlugin::new("beta", "1")))
        .await
        .unwrap();
    let call_beta = br#"{"target": "beta", "function": "who", "args": {}}"#;
    let err = f
        .manager
        .call("alpha", "call", call_beta)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("plugin `beta` is not in the plugin_call scope"),
        "{err}"
    );
    f.manager
        .set_policy(
            approved(
                "alpha",
                vec![
                    Permission::new(PermissionType::PluginCall, Access::Read).with_scope(["beta"]),
                ],
            ),
            "admin",
        )
        .await
        .unwrap();
    let reply: Value =
        serde_json::from_slice(&f.manager.call("alpha", "call", call_beta).await.unwrap()).unwrap();
    assert_eq!(
        reply,
        json!({"plugin": "beta", "caller": "alpha", "depth": 1, "version": "1"})
    );
}

#[tokio::test]
async fn a_plugin_calling_itself_does_not_deadlock_and_stops_at_the_depth_limit() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .set_policy(
            approved(
                "alpha",
                vec![
                    Permission::new(PermissionType::PluginCall, Access::Read).with_scope(["alpha"]),
                ],
            ),
            "admin",
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        f.manager.call("alpha", "recurse", b""),
    )
    .await
    .expect("no deadlock");
    let err = outcome.unwrap_err().to_string();
    assert!(
        err.contains("plugin call depth exceeded: at most 10 nested plugin calls"),
        "{err}"
    );
}

#[tokio::test]
async fn replace_under_load_fails_no_call() {
    let f = fixture().await;
    let old = TestPlugin::new("alpha", "1");
    let old_shutdowns = old.shutdowns.clone();
    f.manager.register(Arc::new(old)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (manager, stop, calls, failures) = (
                f.manager.clone(),
                stop.clone(),
                calls.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match manager.call("alpha", "slow", b"").await {
                        Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.manager
        .set_enabled("alpha", false, "admin")
        .await
        .unwrap();
    f.manager.set_enabled("alpha", true, "admin").await.unwrap();
    let before = failures.load(Ordering::Relaxed);
    f.manager
        .replace(Arc::new(TestPlugin::new("alpha", "2")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        before,
        "no call failed during the swap"
    );
    assert!(calls.load(Ordering::Relaxed) > 20);
    assert_eq!(who(&f.manager, "alpha").await["version"], "2");
    assert_eq!(
        old_shutdowns.load(Ordering::SeqCst),
        1,
        "the old instance was shut down once, after its calls"
    );
}

#[tokio::test]
async fn a_disabled_plugin_can_be_replaced_and_stays_disabled() {
    let f = fixture().await;
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    f.manager
        .set_enabled("alpha", false, "admin")
        .await
        .unwrap();
    f.manager
        .replace(Arc::new(TestPlugin::new("alpha", "2")))
        .await
        .unwrap();
    assert!(!f.manager.is_enabled("alpha").unwrap());
    assert_eq!(f.manager.registration("alpha").unwrap().version, "2");
}

#[tokio::test]
async fn bad_registrations_are_refused() {
    let f = fixture().await;
    let mut first = TestPlugin::new("alpha", "1");
    first.route = Some("/api/plugins/shared".into());
    f.manager.register(Arc::new(first)).await.unwrap();
    let mut second = TestPlugin::new("beta", "1");
    second.route = Some("/api/plugins/shared".into());
    let err = f
        .manager
        .register(Arc::new(second))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "plugin `beta` cannot be registered: route GET /api/plugins/shared is already declared by plugin `alpha`"
    );
    let err = f
        .manager
        .register(Arc::new(TestPlugin::new("Bad Name", "1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a valid plugin name"), "{err}");
}

#[tokio::test]
async fn a_slow_init_times_out_without_blocking_other_plugins() {
    let f = fixture().await;
    let mut slow = TestPlugin::new("slow", "1");
    slow.slow_init = true;
    let mut policy = gk_sdk::ResourcePolicy::default_for("slow");
    policy.init_timeout = Duration::from_millis(200);
    f.store.set_plugin_policy(&policy, "admin").await.unwrap();
    f.manager
        .register(Arc::new(TestPlugin::new("alpha", "1")))
        .await
        .unwrap();
    let manager = f.manager.clone();
    let pending = tokio::spawn(async move { manager.register(Arc::new(slow)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        who(&f.manager, "alpha").await["version"],
        "1",
        "calls to others go on during a slow init"
    );
    let err = pending.await.unwrap().unwrap_err().to_string();
    assert_eq!(err, "plugin `slow`: init timed out after 200 ms");
    let _ = HostError::NotFound(String::new());
}

fn job(id: &str, handler: &str, timeout_ms: Option<u64>) -> gk_sdk::JobSpec {
    gk_sdk::JobSpec {
        id: id.into(),
        handler: handler.into(),
        schedule: "* * * * * *".into(),
        enabled: true,
        timeout: timeout_ms.map(Duration::from_millis),
        ..Default::default()
    }
}

#[tokio::test]
async fn scheduled_jobs_run_time_out_do_not_overlap_and_stop_when_disabled() {
    let f = fixture().await;
    let mut plugin = TestPlugin::new("cron", "1");
    plugin.jobs = vec![
        job("every-second", "tick", None),
        job("too-slow", "long", Some(300)),
        job("long-runner", "long", Some(10_000)),
        gk_sdk::JobSpec {
            enabled: false,
            ..job("off", "tick", None)
        },
    ];
    let ticks = plugin.ticks.clone();
    f.manager.register(Arc::new(plugin)).await.unwrap();
    let scheduler = gk_core::Scheduler::new(f.manager.clone());
    assert_eq!(
        scheduler.schedule_plugin("cron").unwrap(),
        3,
        "the disabled job is not scheduled"
    );
    tokio::time::sleep(Duration::from_millis(3_600)).await;

    let every = scheduler.job_stats("cron", "every-second").unwrap();
    assert!(every.runs >= 2 && every.failures == 0, "{every:?}");
    assert_eq!(ticks.load(Ordering::SeqCst) as u64, every.runs);
    let slow = scheduler.job_stats("cron", "too-slow").unwrap();
    assert!(
        slow.runs >= 2 && slow.failures == slow.runs,
        "each run timed out after 300 ms: {slow:?}"
    );
    let long = scheduler.job_stats("cron", "long-runner").unwrap();
    assert!(
        long.skipped >= 1,
        "a run of 1.5 s on a 1 s schedule skips occurrences: {long:?}"
    );
    assert!(scheduler.job_stats("cron", "off").is_none());

    f.manager.set_enabled("cron", false, "admin").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        before,
        "a disabled plugin's jobs do not run"
    );
    scheduler.unschedule_plugin("cron");
    assert!(scheduler.job_stats("cron", "every-second").is_none());
}

#[tokio::test]
async fn bad_cron_schedules_are_refused_at_registration() {
    let f = fixture().await;
    let mut plugin = TestPlugin::new("cron", "1");
    plugin.jobs = vec![gk_sdk::JobSpec {
        schedule: "every tuesday".into(),
        ..job("bad", "tick", None)
    }];
    let err = f
        .manager
        .register(Arc::new(plugin))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("plugin `cron` cannot be registered: job `bad`: schedule `every tuesday` is not a cron expression"), "{err}");
    assert!(gk_core::parse_schedule("0 8 * * 1").is_ok(), "five fields");
    assert!(
        gk_core::parse_schedule("*/10 * * * * *").is_ok(),
        "six fields"
    );
}

/// A runtime that makes test plugins, counting its loads.
struct FakeRuntime {
    loads: Arc<AtomicUsize>,
}

#[async_trait]
impl gk_core::discovery::PluginRuntime for FakeRuntime {
    fn accepts(&self, found: &gk_core::discovery::Discovered) -> bool {
        found.runtime == gk_sdk::Runtime::Wasm
    }

    async fn load(
        &self,
        found: &gk_core::discovery::Discovered,
        _: &gk_sdk::ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let name = if found.name == "renamed" {
            "other-name"
        } else {
            found.name.as_str()
        };
        Ok(Arc::new(TestPlugin::new(name, "lazy")))
    }
}

fn discovered(name: &str, runtime: gk_sdk::Runtime) -> gk_core::discovery::Discovered {
    gk_core::discovery::Discovered {
        name: name.into(),
        runtime,
        dir: "/nowhere".into(),
        entry: format!("/nowhere/{name}.wasm").into(),
        manifest: None,
    }
}

#[tokio::test]
async fn discovered_plugins_load_once_on_first_use() {
    let f = fixture().await;
    let loads = Arc::new(AtomicUsize::new(0));
    f.manager.add_runtime(Arc::new(FakeRuntime {
        loads: loads.clone(),
    }));
    f.manager
        .add_discovered(discovered("lazy", gk_sdk::Runtime::Wasm))
        .await
        .unwrap();
    assert!(!f.manager.is_loaded("lazy").unwrap());
    assert_eq!(
        loads.load(Ordering::SeqCst),
        0,
        "nothing is loaded before it is used"
    );
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let manager = f.manager.clone();
            tokio::spawn(async move { manager.call("lazy", "who", b"").await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "concurrent first calls load once"
    );
    assert!(f.manager.is_loaded("lazy").unwrap());

    f.manager
        .add_discovered(discovered("renamed", gk_sdk::Runtime::Wasm))
        .await
        .unwrap();
    let err = f
        .manager
        .call("renamed", "who", b"")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "plugin `renamed` cannot be registered: it registers as `other-name`; name the file or manifest after it"
    );
    f.manager
        .add_discovered(discovered("native", gk_sdk::Runtime::Grpc))
        .await
        .unwrap();
    let err = f
        .manager
        .call("native", "who", b"")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "plugin `native` cannot be registered: no runtime runs `grpc` plugins"
    );
}

#[tokio::test]
async fn eager_loading_loads_every_enabled_discovered_plugin() {
    let f = fixture().await;
    let loads = Arc::new(AtomicUsize::new(0));
    f.manager.add_runtime(Arc::new(FakeRuntime {
        loads: loads.clone(),
    }));
    for name in ["first", "second", "off", "renamed"] {
        f.manager
            .add_discovered(discovered(name, gk_sdk::Runtime::Wasm))
            .await
            .unwrap();
    }
    f.manager.set_enabled("off", false, "admin").await.unwrap();
    let failures = f.manager.load_all().await;
    assert_eq!(
        failures.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "plugin `renamed` cannot be registered: it registers as `other-name`; name the file or manifest after it"
        ]
    );
    assert!(f.manager.is_loaded("first").unwrap());
    assert!(f.manager.is_loaded("second").unwrap());
    assert!(
        !f.manager.is_loaded("off").unwrap(),
        "disabled plugins stay unloaded"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 3);
    assert!(
        f.manager.load_all().await.len() == 1,
        "loaded plugins are not loaded again"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        4,
        "only the broken one is retried"
    );
}

#[tokio::test]
async fn discovery_finds_modules_directories_and_packages() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(plugins.join("hello/bin")).unwrap();
    std::fs::write(plugins.join("stats.wasm"), b"\0asm").unwrap();
    std::fs::write(
        plugins.join("hello/plugin.yaml"),
        "name: hello\nruntime: grpc\nbinary: bin/hello\n",
    )
    .unwrap();
    std::fs::write(plugins.join("hello/bin/hello"), b"#!/bin/sh\n").unwrap();
    std::fs::write(plugins.join("Bad Name.wasm"), b"\0asm").unwrap();
    std::fs::write(plugins.join("README.md"), b"not a plugin").unwrap();
    let source = dir.path().join("zipped");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(
        source.join("plugin.yaml"),
        "name: zipped\nwasm: zipped.wasm\n",
    )
    .unwrap();
    std::fs::write(source.join("zipped.wasm"), b"\0asm").unwrap();
    gk_core::packaging::build(&source, &plugins.join("zipped.zip"))
        .await
        .unwrap();
    let managed = plugins.join(".managed");
    let (found, errors) = gk_core::discovery::discover(
        &plugins,
        &managed,
        &gk_core::signing::SignaturePolicy::default(),
    )
    .await;
    let names: Vec<(&str, gk_sdk::Runtime)> =
        found.iter().map(|d| (d.name.as_str(), d.runtime)).collect();
    assert_eq!(
        names,
        [
            ("hello", gk_sdk::Runtime::Grpc),
            ("stats", gk_sdk::Runtime::Wasm),
            ("zipped", gk_sdk::Runtime::Wasm)
        ]
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .contains("the file name is not a plugin name"),
        "{}",
        errors[0]
    );
    assert!(
        managed.join("zipped/zipped.wasm").is_file(),
        "packages are unpacked into the managed directory"
    );

    // With signatures required, unsigned plugins are refused.
    let (_, public) = gk_core::signing::generate_keypair().unwrap();
    let required = gk_core::signing::SignaturePolicy {
        required: true,
        trusted: gk_core::signing::TrustedKeys::from_hex([public.as_str()]).unwrap(),
    };
    let (found, errors) = gk_core::discovery::discover(&plugins, &managed, &required).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.to_string().contains("is not signed")
                || e.to_string().contains("not a plugin name")),
        "{errors:?}"
    );
}

/// A runtime whose "modules" are text files holding a version (or `broken`).
struct FileRuntime;

#[async_trait]
impl gk_core::discovery::PluginRuntime for FileRuntime {
    fn accepts(&self, _: &gk_core::discovery::Discovered) -> bool {
        true
    }

    async fn load(
        &self,
        found: &gk_core::discovery::Discovered,
        _: &gk_sdk::ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, String> {
        let text = std::fs::read_to_string(&found.entry).map_err(|e| e.to_string())?;
        let version = text.trim();
        if version.is_empty() || version == "broken" {
            return Err(format!("`{}` is not a module", found.entry.display()));
        }
        Ok(Arc::new(TestPlugin::new(&found.name, version)))
    }
}

async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn version(manager: &Manager, name: &str) -> Option<String> {
    let reply = manager.call(name, "who", b"").await.ok()?;
    let value: Value = serde_json::from_slice(&reply).ok()?;
    value["version"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn the_loader_follows_the_plugins_directory() {
    let f = fixture().await;
    f.manager.add_runtime(Arc::new(FileRuntime));
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("early.wasm"), "1").unwrap();
    let loader = gk_core::Loader::new(
        f.manager.clone(),
        plugins.clone(),
        plugins.join(".managed"),
        gk_core::signing::SignaturePolicy::default(),
    );
    assert!(loader.scan().await.is_empty());
    assert_eq!(version(&f.manager, "early").await.as_deref(), Some("1"));
    let _watch = loader.watch().unwrap();

    // A new module appears, written in two steps: it is looked at once it is quiet.
    std::fs::write(plugins.join("fresh.wasm"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(plugins.join("fresh.wasm"), "1").unwrap();
    let manager = f.manager.clone();
    eventually("fresh is known", || {
        manager.names().contains(&"fresh".to_owned())
    })
    .await;
    assert_eq!(version(&f.manager, "fresh").await.as_deref(), Some("1"));

    // A change replaces it; a broken change keeps the running version.
    std::fs::write(plugins.join("fresh.wasm"), "2").unwrap();
    let start = std::time::Instant::now();
    while version(&f.manager, "fresh").await.as_deref() != Some("2") {
        assert!(start.elapsed() < Duration::from_secs(10), "reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(plugins.join("fresh.wasm"), "broken").unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        version(&f.manager, "fresh").await.as_deref(),
        Some("2"),
        "a bad file keeps the old version"
    );

    // A plugin directory with a manifest, and a package.
    std::fs::create_dir_all(plugins.join("native")).unwrap();
    std::fs::write(plugins.join("native/run"), "7").unwrap();
    std::fs::write(
        plugins.join("native/plugin.yaml"),
        "name: native\nruntime: grpc\nbinary: run\n",
    )
    .unwrap();
    let source = dir.path().join("zipped");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(
        source.join("plugin.yaml"),
        "name: zipped\nwasm: zipped.wasm\n",
    )
    .unwrap();
    std::fs::write(source.join("zipped.wasm"), "3").unwrap();
    gk_core::packaging::build(&source, &dir.path().join("zipped.zip"))
        .await
        .unwrap();
    std::fs::rename(dir.path().join("zipped.zip"), plugins.join("zipped.zip")).unwrap();
    let manager = f.manager.clone();
    eventually("native and zipped are known", || {
        let names = manager.names();
        names.contains(&"native".to_owned()) && names.contains(&"zipped".to_owned())
    })
    .await;
    assert_eq!(version(&f.manager, "native").await.as_deref(), Some("7"));
    assert_eq!(version(&f.manager, "zipped").await.as_deref(), Some("3"));

    // A changed manifest reloads the directory's plugin.
    std::fs::write(plugins.join("native/run2"), "8").unwrap();
    std::fs::write(
        plugins.join("native/plugin.yaml"),
        "name: native\nruntime: grpc\nbinary: run2\n",
    )
    .unwrap();
    let start = std::time::Instant::now();
    while version(&f.manager, "native").await.as_deref() != Some("8") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "manifest change reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Removing a package or a module unloads it.
    std::fs::remove_file(plugins.join("zipped.zip")).unwrap();
    std::fs::remove_file(plugins.join("fresh.wasm")).unwrap();
    let manager = f.manager.clone();
    eventually("fresh and zipped are gone", || {
        let names = manager.names();
        !names.contains(&"fresh".to_owned()) && !names.contains(&"zipped".to_owned())
    })
    .await;
    assert!(matches!(
        f.manager.call("fresh", "who", b"").await,
        Err(ManagerError::NotFound(_))
    ));
}

#[tokio::test]
async fn every_reload_re_verifies_the_signature() {
    use gk_core::signing::{SignaturePolicy, TrustedKeys, generate_keypair, sign_file};
    let f = fixture().await;
    f.manager.add_runtime(Arc::new(FileRuntime));
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (private, public) = generate_keypair().unwrap();
    let module = plugins.join("signed.wasm");
    std::fs::write(&module, "1").unwrap();
    sign_file(&module, &private).unwrap();
    std::fs::write(plugins.join("unsigned.wasm"), "1").unwrap();
    let loader = gk_core::Loader::new(
        f.manager.clone(),
        plugins.clone(),
        plugins.join(".managed"),
        SignaturePolicy {
            required: true,
            trusted: TrustedKeys::from_hex([public.as_str()]).unwrap(),
        },
    );
    let refused = loader.scan().await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].path.ends_with("unsigned.wasm"), "{refused:?}");
    assert_eq!(f.manager.names(), ["signed"]);
    assert_eq!(version(&f.manager, "signed").await.as_deref(), Some("1"));

    // Changed without a new signature: refused, and the signed version keeps running.
    std::fs::write(&module, "2").unwrap();
    let error = loader.refresh(&module).await.unwrap_err().to_string();
    assert!(error.contains("signature"), "{error}");
    assert_eq!(version(&f.manager, "signed").await.as_deref(), Some("1"));

    // Signed again: the reload goes through.
    sign_file(&module, &private).unwrap();
    loader.refresh(&module).await.unwrap();
    assert_eq!(version(&f.manager, "signed").await.as_deref(), Some("2"));
}

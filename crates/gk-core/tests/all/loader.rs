//! Discovery, lazy and eager loading, and the loader that follows the plugins directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gk_core::ManagerError;
use gk_sdk::Plugin;

use crate::common::{TestPlugin, fixture, version};

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
        _: &gk_core::discovery::VerifiedEntry,
        _: &gk_sdk::ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, gk_core::discovery::LoadError> {
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
        // Any small readable file: the fake runtime makes its plugin without looking at the
        // bytes (not the test binary, which is larger than an entry may be).
        dir: std::env::temp_dir(),
        entry: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
        manifest: None,
        from_package: false,
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
        entry: &gk_core::discovery::VerifiedEntry,
        _: &gk_sdk::ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, gk_core::discovery::LoadError> {
        // The bytes the manager read and checked, not the file again.
        let text = String::from_utf8_lossy(&entry.bytes);
        let version = text.trim();
        if version.is_empty() || version == "broken" {
            return Err(gk_core::discovery::LoadError::new(format!(
                "`{}` is not a module",
                found.entry.display()
            )));
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
    let signed = Signed::new("signed").await;
    let (f, module, loader) = (&signed.fixture, &signed.module, &signed.loader);
    std::fs::write(module.with_file_name("unsigned.wasm"), "1").unwrap();
    let refused = loader.scan().await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].path.ends_with("unsigned.wasm"), "{refused:?}");
    assert_eq!(f.manager.names(), ["signed"]);
    assert_eq!(version(&f.manager, "signed").await.as_deref(), Some("1"));

    // Changed without a new signature: refused, and the signed version keeps running.
    std::fs::write(module, "2").unwrap();
    let error = loader.refresh(module).await.unwrap_err().to_string();
    assert!(error.contains("signature"), "{error}");
    assert_eq!(version(&f.manager, "signed").await.as_deref(), Some("1"));

    // Signed again: the reload goes through.
    signed.sign();
    loader.refresh(module).await.unwrap();
    assert_eq!(version(&f.manager, "signed").await.as_deref(), Some("2"));
}

/// A plugins directory whose signatures are required, holding `<name>.wasm` ("1"), signed.
struct Signed {
    fixture: crate::common::Fixture,
    module: std::path::PathBuf,
    loader: Arc<gk_core::Loader>,
    private: String,
    _dir: tempfile::TempDir,
}

impl Signed {
    async fn new(name: &str) -> Self {
        use gk_core::signing::{SignaturePolicy, TrustedKeys, generate_keypair};
        let fixture = fixture().await;
        fixture.manager.add_runtime(Arc::new(FileRuntime));
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let (private, public) = generate_keypair().unwrap();
        let module = plugins.join(format!("{name}.wasm"));
        std::fs::write(&module, "1").unwrap();
        let loader = gk_core::Loader::new(
            fixture.manager.clone(),
            plugins.clone(),
            plugins.join(".managed"),
            SignaturePolicy {
                required: true,
                trusted: TrustedKeys::from_hex([public.as_str()]).unwrap(),
            },
        );
        let signed = Self {
            fixture,
            module,
            loader,
            private,
            _dir: dir,
        };
        signed.sign();
        signed
    }

    /// Signs the module as it is now.
    fn sign(&self) {
        gk_core::signing::sign_file(&self.module, &self.private).unwrap();
    }
}

/// Signatures are checked on the bytes that are loaded: a file swapped after discovery, before
/// its lazy first load, is refused there, and nothing of it runs.
#[tokio::test]
async fn a_file_swapped_after_discovery_is_refused_at_its_first_load() {
    let signed = Signed::new("lazy").await;
    let (f, module, loader) = (&signed.fixture, &signed.module, &signed.loader);
    assert!(loader.scan().await.is_empty());
    assert_eq!(f.manager.names(), ["lazy"], "discovered, not loaded yet");

    std::fs::write(module, "666").unwrap();
    let error = f.manager.load("lazy").await.unwrap_err().to_string();
    assert!(error.contains("signature does not match"), "{error}");
    assert_eq!(
        version(&f.manager, "lazy").await,
        None,
        "nothing of it runs"
    );

    // The signed content back: the next use loads it.
    std::fs::write(module, "1").unwrap();
    assert_eq!(version(&f.manager, "lazy").await.as_deref(), Some("1"));
}

/// A runtime whose plugins declare one route, counting its loads.
struct RouteRuntime {
    loads: Arc<AtomicUsize>,
}

#[async_trait]
impl gk_core::discovery::PluginRuntime for RouteRuntime {
    fn accepts(&self, _: &gk_core::discovery::Discovered) -> bool {
        true
    }

    async fn load(
        &self,
        found: &gk_core::discovery::Discovered,
        entry: &gk_core::discovery::VerifiedEntry,
        _: &gk_sdk::ResourcePolicy,
    ) -> Result<Arc<dyn Plugin>, gk_core::discovery::LoadError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let mut plugin = TestPlugin::new(&found.name, String::from_utf8_lossy(&entry.bytes).trim());
        plugin.route = Some(format!("/api/plugins/{}/v", found.name));
        Ok(Arc::new(plugin))
    }
}

/// A plugins directory, a manager loading its plugins with [`RouteRuntime`], and restarts:
/// new managers over the same store.
struct CacheFixture {
    f: crate::common::Fixture,
    loads: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    plugins: std::path::PathBuf,
}

impl CacheFixture {
    async fn new() -> Self {
        let f = fixture().await;
        let loads = Arc::new(AtomicUsize::new(0));
        f.manager.add_runtime(Arc::new(RouteRuntime {
            loads: loads.clone(),
        }));
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        Self {
            f,
            loads,
            _dir: dir,
            plugins,
        }
    }

    fn loader(&self, manager: gk_core::Manager) -> Arc<gk_core::Loader> {
        gk_core::Loader::new(
            manager,
            self.plugins.clone(),
            self.plugins.join(".managed"),
            gk_core::signing::SignaturePolicy::default(),
        )
    }

    /// Another manager over the same store, as after a restart.
    fn restarted(&self) -> gk_core::Manager {
        let restarted = gk_core::Manager::new(
            Arc::new(gk_sdk::NoopHost),
            self.f.store.clone(),
            Arc::new(gk_sandbox::SandboxConfig::default()),
        );
        restarted.add_runtime(Arc::new(RouteRuntime {
            loads: self.loads.clone(),
        }));
        restarted
    }
}

/// What a plugin declared is kept with the sha256 of its bytes: after a restart the catalog
/// knows its routes without loading it; a changed file is unknown again until it loads.
#[tokio::test]
async fn the_registration_cache_makes_a_plugin_known_before_it_loads() {
    let c = CacheFixture::new().await;
    let (f, loads) = (&c.f, &c.loads);
    let module = c.plugins.join("cached.wasm");
    std::fs::write(&module, "1").unwrap();
    assert!(c.loader(f.manager.clone()).scan().await.is_empty());
    assert!(f.manager.routes().is_empty(), "nothing cached yet");
    assert!(f.manager.has_unloaded());
    f.manager.load("cached").await.unwrap();
    assert_eq!(f.manager.routes().len(), 1);

    let restarted = c.restarted();
    let second = c.loader(restarted.clone());
    assert!(second.scan().await.is_empty());
    let routes = restarted.routes();
    assert_eq!(routes.len(), 1, "known from the cache");
    assert_eq!(routes[0].item.path, "/api/plugins/cached/v");
    assert!(!restarted.is_loaded("cached").unwrap(), "and not loaded");
    assert!(!restarted.has_unloaded());
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // Other bytes: the entry no longer applies.
    std::fs::write(&module, "2").unwrap();
    second.refresh(&module).await.unwrap();
    assert!(restarted.routes().is_empty(), "a changed file is unknown");
    assert!(restarted.has_unloaded());
}

/// A scan of many plugins reads their stored state at once (`add_discovered_all`): after a
/// restart each plugin has its own enabled state and, where its bytes are unchanged, its own
/// cached registration, and no plugin is loaded to learn it.
#[tokio::test]
async fn a_scan_of_many_plugins_restores_each_ones_enabled_state_and_cached_registration() {
    let c = CacheFixture::new().await;
    let (f, loads, plugins) = (&c.f, &c.loads, &c.plugins);
    let name = |i: usize| format!("many-{i:02}");
    for i in 0..40 {
        std::fs::write(plugins.join(format!("{}.wasm", name(i))), format!("{i}")).unwrap();
    }
    assert!(c.loader(f.manager.clone()).scan().await.is_empty());
    assert_eq!(f.manager.names().len(), 40);
    // Loaded once (so cached): 0, 1, 2 and 3; disabled: 2 (loaded) and 5 (never loaded).
    for i in 0..4 {
        f.manager.load(&name(i)).await.unwrap();
    }
    for i in [2, 5] {
        f.manager
            .set_enabled(&name(i), false, "admin")
            .await
            .unwrap();
    }
    // Plugin 3's file changes while the server is down.
    std::fs::write(plugins.join(format!("{}.wasm", name(3))), "changed").unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 4);

    let restarted = c.restarted();
    assert!(c.loader(restarted.clone()).scan().await.is_empty());
    assert_eq!(restarted.names().len(), 40);
    for i in 0..40 {
        assert_eq!(
            restarted.is_enabled(&name(i)).unwrap(),
            i != 2 && i != 5,
            "{}'s enabled state",
            name(i)
        );
        assert!(!restarted.is_loaded(&name(i)).unwrap());
    }
    let mut known: Vec<String> = restarted
        .routes()
        .into_iter()
        .map(|route| route.item.path)
        .collect();
    known.sort();
    assert_eq!(
        known,
        ["/api/plugins/many-00/v", "/api/plugins/many-01/v"],
        "cached and unchanged: known without a load (a disabled plugin's routes are not served; \
         a changed file is unknown)"
    );
    let all: Vec<String> = restarted
        .all_routes()
        .into_iter()
        .map(|route| route.plugin)
        .collect();
    assert_eq!(
        all,
        ["many-00", "many-01", "many-02"],
        "the disabled one is known too"
    );

    // Another entry of a known name (other bytes) does not take over the slot's knowledge.
    let other = gk_core::discovery::Discovered {
        entry: plugins.join("elsewhere.wasm"),
        ..discovered(&name(1), gk_sdk::Runtime::Wasm)
    };
    std::fs::write(&other.entry, "other bytes").unwrap();
    restarted.add_discovered_all(vec![other]).await.unwrap();
    assert_eq!(
        restarted.routes().len(),
        2,
        "many-01 still known from its own file"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        4,
        "nothing loaded to learn it"
    );
}

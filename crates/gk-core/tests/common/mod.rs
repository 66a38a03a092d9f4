//! The fixture the manager tests share: a manager on the real production host (SQLite file,
//! memory cache) in a temporary directory.

#![allow(dead_code)]

use std::sync::Arc;

use gk_core::host::{
    ConfigValues, DatabaseConfig, Databases, HostServices, HttpClient, HttpConfig, MemoryCache,
    Outbox, PluginLogs, ProductionHost, Translations,
};
use gk_core::{Manager, Store};
use gk_sandbox::SandboxConfig;

pub struct Fixture {
    pub manager: Manager,
    pub store: Store,
    pub translations: Arc<Translations>,
    pub _dir: tempfile::TempDir,
    pub url: String,
}

pub async fn fixture_at(dir: tempfile::TempDir) -> Fixture {
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
    let manager = Manager::new(
        host.clone(),
        store.clone(),
        Arc::new(SandboxConfig::default()),
    );
    host.set_plugin_caller(Arc::new(manager.clone())).unwrap();
    manager.use_translations(translations.clone());
    Fixture {
        manager,
        store,
        translations,
        _dir: dir,
        url,
    }
}

pub async fn fixture() -> Fixture {
    fixture_at(tempfile::tempdir().unwrap()).await
}

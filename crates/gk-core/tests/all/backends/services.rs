//! Cache, logs, config, translations and email of the production host, through its `HostApi`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gk_core::host::{
    Cache, ConfigValues, DatabaseConfig, Databases, HostServices, HttpClient, HttpConfig,
    MemoryCache, Outbox, PluginLogs, ProductionHost, Translations,
};
use gk_sdk::{CallContext, Email, HostApi, HostError, I18nSpec, LogLevel, TranslateArgs};
use serde_json::{Map, json};

async fn host() -> (ProductionHost, Arc<Outbox>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let databases = Databases::connect(&DatabaseConfig::single(format!(
        "sqlite://{}",
        dir.path().join("h.db").display()
    )))
    .await
    .unwrap();
    let mut config = ConfigValues::default();
    config.set("app.name", "GoatFlow");
    config.set_plugin_setting("stats", "COLOUR", "green");
    let translations = Arc::new(Translations::default());
    translations.set_plugin(
        "stats",
        &I18nSpec {
            translations: BTreeMap::from([(
                "de".into(),
                BTreeMap::from([("title".into(), "Statistiken".into())]),
            )]),
            ..Default::default()
        },
    );
    let store = gk_core::Store::open(databases.connection("default").unwrap().clone())
        .await
        .unwrap();
    let outbox = Arc::new(Outbox::new(store));
    let host = ProductionHost::new(HostServices {
        databases,
        cache: Arc::new(MemoryCache::new(100)),
        logs: Arc::new(PluginLogs::new(3)),
        config,
        translations,
        mailer: outbox.clone(),
        http: HttpClient::new(HttpConfig::default()),
    });
    (host, outbox, dir)
}

#[tokio::test]
async fn memory_cache_ttl_and_no_expiry() {
    let cache = MemoryCache::new(10);
    cache
        .set("a", b"1", Duration::from_millis(50))
        .await
        .unwrap();
    cache.set("b", b"2", Duration::ZERO).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), Some(b"1".to_vec()));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(cache.get("a").await.unwrap(), None, "expired");
    assert_eq!(
        cache.get("b").await.unwrap(),
        Some(b"2".to_vec()),
        "ttl 0 never expires"
    );
    cache.delete("b").await.unwrap();
    cache.delete("never-there").await.unwrap();
    assert_eq!(cache.get("b").await.unwrap(), None);
}

#[tokio::test]
async fn memory_cache_is_bounded_and_evicts_least_recently_used() {
    let cache = MemoryCache::new(20);
    for i in 0..20 {
        cache
            .set(&format!("k{i}"), b"v", Duration::ZERO)
            .await
            .unwrap();
    }
    cache.get("k0").await.unwrap();
    for i in 20..40 {
        cache
            .set(&format!("k{i}"), b"v", Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(cache.len() <= 20, "{}", cache.len());
    assert_eq!(
        cache.get("k39").await.unwrap(),
        Some(b"v".to_vec()),
        "the newest stays"
    );
    assert_eq!(
        cache.get("k1").await.unwrap(),
        None,
        "an old, unused entry went first"
    );
}

#[tokio::test]
async fn logs_are_rings_per_plugin() {
    let (host, _, _dir) = host().await;
    let stats = CallContext::for_plugin("stats");
    for i in 0..5 {
        host.log(
            &stats,
            if i % 2 == 0 {
                LogLevel::Info
            } else {
                LogLevel::Error
            },
            &format!("m{i}"),
            &Map::new(),
        )
        .await
        .unwrap();
    }
    host.log(
        &CallContext::for_plugin("other"),
        LogLevel::Warn,
        "o",
        &Map::new(),
    )
    .await
    .unwrap();
    let entries = host
        .services()
        .logs
        .read(Some("stats"), LogLevel::Debug, 100);
    assert_eq!(
        entries
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["m4", "m3", "m2"],
        "ring of 3, newest first"
    );
    let errors = host.services().logs.read(None, LogLevel::Error, 100);
    assert_eq!(
        errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["m3"]
    );
    assert_eq!(
        host.services().logs.read(None, LogLevel::Debug, 2).len(),
        2,
        "limit"
    );
    host.services().logs.clear(Some("stats"));
    assert_eq!(
        host.services()
            .logs
            .read(None, LogLevel::Debug, 100)
            .iter()
            .map(|e| e.plugin.as_str())
            .collect::<Vec<_>>(),
        ["other"]
    );
}

#[tokio::test]
async fn config_translate_and_cache_through_the_host_api() {
    let (host, _, _dir) = host().await;
    let ctx = CallContext::for_plugin("stats").with_language("de-AT");
    assert_eq!(host.config_get(&ctx, "app.name").await.unwrap(), "GoatFlow");
    assert_eq!(
        host.config_get(&ctx, "plugins.stats.colour").await.unwrap(),
        "green"
    );
    assert_eq!(
        host.config_get(&ctx, "app.nope").await.unwrap_err(),
        HostError::NotFound("config key `app.nope` is not set".into())
    );
    assert_eq!(
        host.translate(&ctx, "title", &TranslateArgs::None)
            .await
            .unwrap(),
        "Statistiken"
    );
    host.cache_set(&ctx, "plugin:stats:k", b"v", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        host.cache_get(&ctx, "plugin:stats:k").await.unwrap(),
        Some(b"v".to_vec())
    );
    let err = host
        .call_plugin(&ctx, "other", "f", b"{}")
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::Unavailable(_)), "{err:?}");
    let err = host
        .db_query(&ctx, "SELECT ? AS echo", &[json!("x")])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only through the plugin's sandbox"),
        "{err}"
    );
    let scope: Arc<dyn gk_sdk::TableScope> =
        Arc::new(super::database_wall::TablesScope::new(&[], &[]));
    let rows = host
        .db_query_scoped(&ctx, &scope, "SELECT ? AS echo", &[json!("x")])
        .await
        .unwrap();
    assert_eq!(rows[0]["echo"], "x");
}

#[tokio::test]
async fn email_goes_to_the_outbox_after_validation() {
    let (host, outbox, _dir) = host().await;
    let ctx = CallContext::for_plugin("stats");
    host.send_email(
        &ctx,
        Email {
            to: "a@example.com".into(),
            subject: "Weekly".into(),
            body: "<b>9</b>".into(),
            html: true,
        },
    )
    .await
    .unwrap();
    let err = host
        .send_email(
            &ctx,
            Email {
                to: "a@example.com".into(),
                subject: "x\r\nBcc: b@evil.org".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HostError::InvalidInput("the subject contains a line break".into())
    );
    let messages = outbox.messages(10).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (
            messages[0].plugin.as_str(),
            messages[0].to.as_str(),
            messages[0].html
        ),
        ("stats", "a@example.com", true)
    );
}

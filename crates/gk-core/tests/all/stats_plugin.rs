//! The Stats plugin, built from source by `cargo xtask build-plugins`, loaded by gk-wasm behind
//! its sandbox and called for every handler against a real SQLite database with seeded tickets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gk_core::Store;
use gk_core::host::{
    ConfigValues, DatabaseConfig, Databases, HostServices, HttpClient, HttpConfig, MemoryCache,
    Outbox, PluginLogs, ProductionHost, Translations,
};
use gk_sandbox::SandboxedHostApi;
use gk_sdk::{CallContext, Plugin, PluginError, PluginManifest, PolicyStatus, ResourcePolicy};
use gk_wasm::{WasmConfig, WasmLimits, WasmPlugin, WasmRuntime};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

fn stats_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/stats")
}

/// A seeded SQLite database in a temporary directory.
async fn seeded_database() -> (tempfile::TempDir, Databases) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("stats.db").display());
    let databases = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap();
    let connection = databases.connection("default").unwrap();
    for file in ["schema.sql", "seed.sql"] {
        let sql = std::fs::read_to_string(stats_dir().join(file)).unwrap();
        connection
            .execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    (dir, databases)
}

/// The policy an admin grants when approving what Stats asks for in its plugin.yaml.
fn approved_policy() -> ResourcePolicy {
    let manifest = PluginManifest::from_dir(&stats_dir()).unwrap();
    let mut policy = ResourcePolicy::default_for("stats");
    policy.status = PolicyStatus::Approved;
    policy.permissions = manifest.resources.permissions;
    policy
}

async fn stats_plugin(policy: ResourcePolicy) -> (tempfile::TempDir, WasmPlugin) {
    let wasm = stats_dir().join("stats.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `cargo xtask build-plugins` (cargo xtask test does)",
        wasm.display()
    );
    // One runtime for the whole binary: the module is compiled once and taken from its cache.
    static RUNTIME: std::sync::OnceLock<WasmRuntime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| WasmRuntime::new(WasmConfig::default()).unwrap());
    let plugin = runtime
        .load_file(&wasm, WasmLimits::from_policy(&policy))
        .await
        .unwrap();
    let (dir, databases) = seeded_database().await;
    // The production host over the seeded database (the store beside the tickets, for the
    // outbox): the Stats plugin uses only the database.
    let store = Store::open(databases.connection("default").unwrap().clone())
        .await
        .unwrap();
    let host = ProductionHost::new(HostServices {
        databases,
        cache: Arc::new(MemoryCache::default()),
        logs: Arc::new(PluginLogs::default()),
        config: ConfigValues::default(),
        translations: Arc::new(Translations::default()),
        mailer: Arc::new(Outbox::new(store)),
        http: HttpClient::new(HttpConfig::default()),
    });
    let sandbox = SandboxedHostApi::new("stats", Arc::new(host), policy).unwrap();
    plugin
        .init(&CallContext::for_plugin("stats"), Arc::new(sandbox))
        .await
        .unwrap();
    (dir, plugin)
}

async fn call(plugin: &WasmPlugin, function: &str, args: Value) -> Value {
    let bytes = plugin
        .call(
            &CallContext::for_plugin("stats"),
            function,
            args.to_string().as_bytes(),
        )
        .await;
    serde_json::from_slice(&bytes.unwrap_or_else(|e| panic!("{function}: {e}"))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_from_the_built_module() {
    let (_db, plugin) = stats_plugin(approved_policy()).await;
    let reg = plugin.register().await.unwrap();
    assert_eq!(reg.name, "stats");
    assert_eq!(reg.routes.len(), 8);
    assert!(
        reg.routes
            .iter()
            .all(|r| r.method == "GET" && r.path.starts_with("/api/plugins/stats/"))
    );
    assert_eq!(reg.widgets.len(), 3);
    assert_eq!(reg.error_codes.len(), 3);
    let i18n = reg.i18n.unwrap();
    assert_eq!(i18n.translations["de"]["stats.open"], "Offen");
    assert_eq!(i18n.translations["en"]["stats.open"], "Open");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_handler_answers_with_the_seeded_numbers() {
    let (_db, plugin) = stats_plugin(approved_policy()).await;
    assert_eq!(
        call(&plugin, "overview", json!({})).await,
        json!({"total": 12, "open": 4, "pending": 2, "closed": 6, "range": "all"})
    );
    assert_eq!(
        call(&plugin, "overview", json!({"range": "7d"})).await,
        json!({"total": 5, "open": 3, "pending": 1, "closed": 1, "range": "7d"})
    );
    assert_eq!(
        call(&plugin, "overview", json!({"query": {"range": "30d"}})).await["total"],
        9,
        "Go-style query args"
    );
    assert_eq!(
        call(&plugin, "by_status", json!({})).await,
        json!({"statuses": [
            {"name": "closed successful", "count": 4}, {"name": "new", "count": 2}, {"name": "open", "count": 2},
            {"name": "pending reminder", "count": 2}, {"name": "closed unsuccessful", "count": 1}, {"name": "merged", "count": 1}
        ]})
    );
    assert_eq!(
        call(&plugin, "by_queue", json!({})).await,
        json!({"queues": [{"name": "Support", "count": 7}, {"name": "Billing", "count": 3}, {"name": "Raw", "count": 2}]})
    );
    assert_eq!(
        call(&plugin, "by_priority", json!({})).await,
        json!({"priorities": [
            {"name": "1 very low", "count": 1}, {"name": "2 low", "count": 2}, {"name": "3 normal", "count": 7},
            {"name": "4 high", "count": 1}, {"name": "5 very high", "count": 1}
        ]})
    );
    assert_eq!(
        call(&plugin, "by_type", json!({})).await,
        json!({"types": [
            {"name": "Incident", "count": 4}, {"name": "Service Request", "count": 4},
            {"name": "Problem", "count": 2}, {"name": "Unclassified", "count": 2}
        ]})
    );
    assert_eq!(
        call(&plugin, "by_owner", json!({})).await,
        json!({"owners": [
            {"login": "ann", "name": "Ann Lee", "count": 5}, {"login": "bob", "name": "Bob Stone", "count": 5},
            {"login": "root@localhost", "name": "Admin OTRS", "count": 2}
        ]})
    );
    let recent = call(&plugin, "recent_activity", json!({})).await;
    let tickets = recent["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 10);
    assert_eq!(
        (tickets[0]["id"].as_i64(), tickets[0]["title"].as_str()),
        (Some(1), Some("Printer on fire"))
    );
    assert_eq!(tickets[9]["id"], 10);
    assert!(
        tickets[0]["changed"].as_str().unwrap().ends_with('Z'),
        "timestamps are RFC 3339: {}",
        tickets[0]["changed"]
    );
    let timeline = call(&plugin, "timeline", json!({"range": "30d"})).await;
    let days = timeline["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(
        days.iter()
            .map(|d| d["count"].as_i64().unwrap())
            .sum::<i64>(),
        9,
        "tickets 1-9 were created in the last 30 days"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn widgets_render_html() {
    let (_db, plugin) = stats_plugin(approved_policy()).await;
    let overview = call(&plugin, "widget_overview", json!({})).await;
    let html = overview["html"].as_str().unwrap();
    assert!(
        html.contains("<div><dt>Total</dt><dd>12</dd></div>"),
        "{html}"
    );
    let by_status = call(&plugin, "widget_by_status", json!({})).await;
    assert!(
        by_status["html"]
            .as_str()
            .unwrap()
            .contains("<li><span>closed successful</span> <strong>4</strong></li>")
    );
    let chart = call(&plugin, "widget_chart", json!({"range": "7d"})).await;
    let chart = chart["html"].as_str().unwrap();
    assert_eq!(chart.matches("class=\"bar\"").count(), 7, "{chart}");
    assert!(chart.contains("<g class=\"x-axis\">"), "{chart}");
    assert!(chart.contains("<g class=\"y-axis\">"), "{chart}");
    assert!(chart.contains(" tickets</title>"), "hover texts: {chart}");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_the_declared_codes() {
    let (_db, plugin) = stats_plugin(approved_policy()).await;
    let ctx = CallContext::for_plugin("stats");
    let err = plugin
        .call(&ctx, "overview", br#"{"range":"5y"}"#)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PluginError::failed(
            "invalid_range",
            "range `5y` is not one of 7d, 30d, 90d, all"
        )
    );
    let err = plugin.call(&ctx, "drop_tables", b"").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::failed("unknown_function", "no function `drop_tables`")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_decides_which_tables_stats_may_read() {
    let mut policy = approved_policy();
    for permission in &mut policy.permissions {
        permission.scope.retain(|table| table != "users");
    }
    let (_db, plugin) = stats_plugin(policy).await;
    let err = plugin
        .call(&CallContext::for_plugin("stats"), "by_owner", b"{}")
        .await
        .unwrap_err();
    let PluginError::Failed { code, message } = err else {
        panic!("{err:?}")
    };
    assert_eq!(code.as_deref(), Some("host_permission_denied"));
    assert!(message.contains("table `users`"), "{message}");
    assert_eq!(
        call(&plugin, "by_queue", json!({})).await["queues"][0]["count"],
        7,
        "other handlers still work"
    );
}

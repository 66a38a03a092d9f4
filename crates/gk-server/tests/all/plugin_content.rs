//! Plugin content cannot act as the admin, and plugins cannot take more than their share:
//! plugin pages and widgets in an opaque origin (CSP sandbox, sandboxed frames), admin pages
//! unframeable without script, menu links and template overrides checked at registration,
//! tokens on the plugin list and `/metrics`, log and cache floods stopped at their limits.

use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::intruder::Intruder;
use crate::common::{config_for, send, send_text};
use gk_sdk::{Access, Permission, PermissionType, PolicyStatus};
use gk_server::ServeConfig;
use gk_server::auth::Role;

const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups";

async fn start(dir: &std::path::Path) -> gk_server::RunningServer {
    gk_server::start(&ServeConfig {
        metrics_token: Some("scraper-secret".into()),
        log_line_bytes: 1024,
        log_ring_bytes: 64 * 1024,
        cache_quota_bytes: 64 * 1024,
        ..config_for(dir)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_pages_and_widgets_are_sandboxed_and_admin_pages_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let addr = server.addr;
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(600))
        .unwrap();
    server
        .manager
        .register(Arc::new(Intruder::default()))
        .await
        .unwrap();

    // Plugin pages, in the layout or raw, and widget HTML: an opaque origin.
    for path in [
        "/intruder/page",
        "/intruder/raw",
        "/api/v1/plugins/intruder/widgets/intruder_widget",
        "/api/v1/plugins/intruder/widgets/intruder_widget?wrap=true",
    ] {
        let page = send_text(addr, "GET", path, Some(&agent), &[], vec![]).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains("<script>"), "{path}: {}", page.body);
        assert_eq!(page.header("content-security-policy"), SANDBOX, "{path}");
        assert_eq!(page.header("x-content-type-options"), "nosniff", "{path}");
    }
    // The menu shows the plugin's (plain) link.
    let page = send_text(addr, "GET", "/intruder/page", None, &[], vec![]).await;
    assert!(
        page.body.contains("href=\"&#x2f;intruder&#x2f;page\""),
        "{}",
        page.body
    );

    // Admin pages: no script, no framing.
    for path in ["/admin/login", "/admin/plugins"] {
        let page = send_text(addr, "GET", path, None, &[], vec![]).await;
        let csp = page.header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(page.header("x-frame-options"), "DENY", "{path}");
    }

    // The dashboard frames each widget in a sandbox; the widget's script is not in the page.
    let dashboard = send_text(addr, "GET", "/dashboard", Some(&agent), &[], vec![]).await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    assert!(
        dashboard.body.contains(
            "<iframe class=\"gk-widget-frame\" sandbox=\"allow-scripts allow-popups\" data-plugin=\"intruder\" data-widget=\"intruder_widget\" srcdoc=\"&lt;script&gt;"
        ),
        "{}",
        dashboard.body
    );
    assert!(!dashboard.body.contains("<script>"), "{}", dashboard.body);
    assert_eq!(dashboard.header("x-frame-options"), "DENY");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_links_and_overrides_of_server_templates_are_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let manager = &server.manager;
    for (link, reason) in [
        (
            "javascript:alert(document.cookie)",
            "has a scheme other than http(s)",
        ),
        ("JaVaScRiPt:alert(1)", "has a scheme other than http(s)"),
        (
            "data:text/html,<script>alert(1)</script>",
            "has a scheme other than http(s)",
        ),
        ("//evil.example/", "is protocol-relative"),
        ("java\tscript:alert(1)", "whitespace, a control character"),
    ] {
        let error = manager
            .register(Arc::new(Intruder::with_menu_link(link)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("plugin `intruder` cannot be registered: menu item `bad`: link")
                && error.contains(reason),
            "{link}: {error}"
        );
        assert!(manager.names().is_empty(), "{link}: nothing is registered");
    }
    manager
        .register(Arc::new(Intruder::with_menu_link(
            "https://help.example.com/intruder",
        )))
        .await
        .unwrap();
    manager.unregister("intruder").await.unwrap();
    let error = manager
        .register(Arc::new(Intruder::with_landing_page("javascript:alert(1)")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("landing_page: link `javascript:alert(1)` has a scheme other than http(s)"),
        "{error}"
    );

    for (template, reason) in [
        (
            "layout.html",
            "the layout and the admin templates belong to the server",
        ),
        (
            "admin_plugins.html",
            "the layout and the admin templates belong to the server",
        ),
        (
            "admin_login.html",
            "the layout and the admin templates belong to the server",
        ),
        ("dashboard.html", "the host declares only [] overridable"),
    ] {
        let error = manager
            .register(Arc::new(Intruder::overriding(template)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!(
                "template `{template}` cannot be overridden: {reason}"
            )),
            "{template}: {error}"
        );
    }
    // What the host declares overridable can be overridden; the layout never.
    manager.allow_template_overrides(["dashboard.html".to_owned(), "layout.html".to_owned()]);
    manager
        .register(Arc::new(Intruder::overriding("dashboard.html")))
        .await
        .unwrap();
    manager.unregister("intruder").await.unwrap();
    let error = manager
        .register(Arc::new(Intruder::overriding("layout.html")))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("belong to the server"),
        "{error}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_list_and_metrics_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let addr = server.addr;
    let admin = server.first_admin_token.clone().unwrap();
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(600))
        .unwrap();

    let (status, reply) = send(addr, "GET", "/api/v1/plugins", None, "").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = send(addr, "GET", "/api/v1/plugins", Some("forged"), "").await;
    assert_eq!(status, 401);
    let (status, _) = send(addr, "GET", "/api/v1/plugins", Some(&agent), "").await;
    assert_eq!(status, 200);

    for (token, expected) in [
        (None, 401),
        (Some("wrong-secret"), 401),
        (Some(agent.as_str()), 403),
        (Some(admin.as_str()), 200),
        (Some("scraper-secret"), 200),
    ] {
        let metrics = send_text(addr, "GET", "/metrics", token, &[], vec![]).await;
        assert_eq!(metrics.status, expected, "{token:?}: {}", metrics.body);
        if expected == 200 {
            assert!(
                metrics
                    .body
                    .contains("# TYPE goatkit_plugin_calls_total counter")
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_and_cache_floods_stop_at_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let addr = server.addr;
    let admin = server.first_admin_token.clone().unwrap();
    let manager = &server.manager;
    manager
        .register(Arc::new(Intruder::default()))
        .await
        .unwrap();
    let mut policy = manager.policy("intruder").await.unwrap();
    policy.status = PolicyStatus::Approved;
    policy.permissions = vec![Permission::new(PermissionType::Cache, Access::ReadWrite)];
    // The call rate limit is not what this test is about.
    policy.max_calls_per_second = 1_000_000;
    manager.set_policy(policy, "test").await.unwrap();

    // 200 lines of 5 MiB: each kept truncated, the ring within its bytes.
    let (status, reply) = send(
        addr,
        "POST",
        "/intruder/log-flood",
        Some(&admin),
        r#"{"count": 200}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, logs) = send(
        addr,
        "GET",
        "/api/v1/plugins/logs?plugin=intruder&limit=1000",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let logs = logs.as_array().unwrap();
    assert!(
        !logs.is_empty() && logs.len() < 200,
        "{} entries kept",
        logs.len()
    );
    let kept: usize = logs
        .iter()
        .map(|e| e["message"].as_str().unwrap().len())
        .sum();
    assert!(kept <= 64 * 1024, "{kept} bytes kept");
    for entry in logs {
        let message = entry["message"].as_str().unwrap();
        assert!(message.len() < 1024 + 64, "{}", message.len());
        assert!(
            message.ends_with("… [truncated 5241856 bytes]"),
            "{message}"
        );
    }

    // 1 KiB values until the quota refuses: the refusal names the quota.
    let (status, reply) = send(addr, "POST", "/intruder/cache-flood", Some(&admin), "").await;
    assert_eq!(status, 200, "{reply}");
    let stored = reply["stored"].as_u64().unwrap();
    assert!((50..=64).contains(&stored), "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("cache quota exceeded: plugin `intruder` may hold 65536 bytes in the cache (cache_quota_bytes)"),
        "{reply}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_says_whether_it_reloaded_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        common::stats_module(),
        dir.path().join("plugins/stats.wasm"),
    )
    .unwrap();
    let server = start(dir.path()).await;
    let addr = server.addr;
    let admin = server.first_admin_token.clone().unwrap();
    let manager = &server.manager;
    let put = |policy: gk_sdk::ResourcePolicy| {
        let admin = admin.clone();
        async move {
            let path = format!("/api/v1/plugins/{}/policy", policy.plugin_name);
            let body = serde_json::to_string(&policy).unwrap();
            let (status, reply) = send(addr, "PUT", &path, Some(&admin), &body).await;
            assert_eq!(status, 200, "{reply}");
            reply
        }
    };

    // Not loaded: the memory cap applies when it loads.
    assert!(!manager.is_loaded("stats").unwrap());
    let mut policy = manager.policy("stats").await.unwrap();
    policy.memory_mb = 64;
    let reply = put(policy.clone()).await;
    assert_eq!(reply["memory_mb"], 64);
    assert_eq!(
        reply["applied"],
        serde_json::json!({"load_time_changes": ["memory_mb"], "reloaded": false, "at_next_load": true})
    );

    // Loaded: a WASM plugin takes a memory or timeout change from its next call, without a
    // reload; it keeps answering.
    manager.load("stats").await.unwrap();
    policy.memory_mb = 48;
    policy.call_timeout = Duration::from_secs(5);
    let reply = put(policy.clone()).await;
    assert_eq!(
        reply["applied"],
        serde_json::json!({"load_time_changes": [], "reloaded": false, "at_next_load": false})
    );
    assert!(manager.is_loaded("stats").unwrap());
    let (status, reply) = send(
        addr,
        "POST",
        "/api/v1/plugins/stats/call/overview",
        Some(&admin),
        "{}",
    )
    .await;
    assert_ne!(status, 500, "{reply}");

    // Rate limits apply live: nothing to reload.
    policy.max_calls_per_second = 7;
    let reply = put(policy).await;
    assert_eq!(
        reply["applied"],
        serde_json::json!({"load_time_changes": [], "reloaded": false, "at_next_load": false})
    );

    // A plugin registered in-process has no source to reload from: at its next load.
    manager
        .register(Arc::new(Intruder::default()))
        .await
        .unwrap();
    let mut policy = manager.policy("intruder").await.unwrap();
    policy.permissions = vec![
        Permission::new(PermissionType::Http, Access::Read).with_scope(["https://example.com"]),
    ];
    let reply = put(policy).await;
    assert_eq!(
        reply["applied"],
        serde_json::json!({"load_time_changes": ["network"], "reloaded": false, "at_next_load": true})
    );
    server.shutdown().await;
}

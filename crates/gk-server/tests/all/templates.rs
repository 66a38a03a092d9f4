//! Templates that reach plugins: `use("plugin")` loads lazily and calls, widgets render, a
//! plugin's own template is included by name, and an override replaces a template the host
//! declares overridable (never the layout).

use std::sync::Arc;
use std::time::Duration;

use crate::common::{send_text, serve_examples_with_data};
use async_trait::async_trait;
use gk_sdk::{CallContext, GkRegistration, HostApi, Plugin, PluginError, TemplateSpec};
use gk_server::auth::Role;
use gk_server::pages::{Pages, PluginTemplates, override_handler};
use serde_json::{Value, json};

/// Overrides the server's template of its name.
struct Restyler(&'static str);

#[async_trait]
impl Plugin for Restyler {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        Ok(GkRegistration {
            name: "restyler".into(),
            version: "1.0.0".into(),
            templates: vec![TemplateSpec {
                name: self.0.into(),
                path: String::new(),
                r#override: true,
            }],
            ..Default::default()
        })
    }

    async fn init(&self, _: &CallContext, _: Arc<dyn HostApi>) -> Result<(), PluginError> {
        Ok(())
    }

    async fn call(
        &self,
        _: &CallContext,
        function: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        assert_eq!(function, override_handler(self.0));
        let args: Value = serde_json::from_slice(args).unwrap();
        assert_eq!(args["template"], self.0);
        let html = format!(
            "<main class=\"restyled\">{}: {}</main>",
            args["data"]["title"].as_str().unwrap_or_default(),
            args["data"]["content"].as_str().unwrap_or_default()
        );
        Ok(serde_json::to_vec(&json!({"html": html})).unwrap())
    }

    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

#[test]
fn override_handlers_are_named_as_goatflow_named_them() {
    assert_eq!(override_handler("layout.html"), "template_layout_html");
    assert_eq!(
        override_handler("Stats/Dash-board.html"),
        "template_stats_dash_board_html"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_use_plugins_include_theirs_and_honour_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_examples_with_data(dir.path()).await;
    let manager = server.manager.clone();
    let templates = PluginTemplates::new(Arc::new(Pages::new()), manager.clone());

    // The first `use` loads the plugin; the second finds it loaded.
    assert!(
        !manager.is_loaded("stats").unwrap(),
        "plugins load on first use"
    );
    let page = templates
        .render_source(
            r#"{% set stats = use("stats") %}{{ stats.call("overview").total }}|{% set again = use("stats") %}{{ again.call("overview", {"range": "7d"}).total }}|{{ use("stats").widget("stats_by_status") }}"#,
            json!({}),
        )
        .await
        .unwrap();
    assert!(manager.is_loaded("stats").unwrap());
    let parts: Vec<&str> = page.splitn(3, '|').collect();
    assert_eq!(parts[..2], ["12", "5"], "{page}");
    assert!(
        parts[2].starts_with(
            "<iframe class=\"gk-widget-frame\" sandbox=\"allow-scripts allow-popups\" data-plugin=\"stats\" data-widget=\"stats_by_status\" srcdoc=\"&lt;ul class=&quot;gk-stats-by-status&quot;&gt;"
        ),
        "widget HTML is framed in a sandbox: {page}"
    );

    // A plugin's own template, included by name; it reaches its plugin through `use`.
    let page = templates
        .render_source(
            r#"<h1>Today</h1>{% include "stats/summary.html" %}"#,
            json!({"range": "7d"}),
        )
        .await
        .unwrap();
    assert!(
        page.contains("<strong>5</strong> tickets: 3 open, 1 pending, 1 closed"),
        "{page}"
    );

    // What goes wrong says what.
    let error = templates
        .render_source(r#"{{ use("nope").call("x") }}"#, json!({}))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("plugin `nope` is not known"),
        "{error}"
    );
    let error = templates
        .render_source(r#"{{ use("stats").call("no_such_function") }}"#, json!({}))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no_such_function"), "{error}");
    let page = templates
        .render_source(r#"{{ use("stats").widget("nope") }}"#, json!({}))
        .await
        .unwrap();
    assert!(
        page.starts_with("<p class=\"error\">widget unavailable:"),
        "{page}"
    );
    manager.set_enabled("stats", false, "test").await.unwrap();
    let error = templates
        .render_source(r#"{{ use("stats") }}"#, json!({}))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("plugin `stats` is disabled"),
        "{error}"
    );
    manager.set_enabled("stats", true, "test").await.unwrap();

    // The dashboard page renders every dashboard widget through `use`.
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(60))
        .unwrap();
    let dashboard = send_text(server.addr, "GET", "/dashboard", Some(&agent), &[], vec![]).await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    for widget in [
        "stats_overview",
        "stats_by_status",
        "stats_chart",
        "hello_widget",
    ] {
        assert!(
            dashboard
                .body
                .contains(&format!("data-widget=\"{widget}\"")),
            "{widget} (load errors: stats {:?}, hello-grpc {:?}): {}",
            manager.load_error("stats"),
            manager.load_error("hello-grpc"),
            dashboard.body
        );
    }
    assert!(
        dashboard
            .body
            .contains("&lt;p class=&quot;hello&quot;&gt;Hello, dashboard!&lt;&#x2f;p&gt;"),
        "{}",
        dashboard.body
    );

    // The layout plugin pages (and admin pages) are wrapped in cannot be overridden.
    let refused = manager
        .register(Arc::new(Restyler("layout.html")))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("template `layout.html` cannot be overridden"),
        "{refused}"
    );
    // A template the host declares overridable is, while its plugin is enabled.
    manager.allow_template_overrides(["dashboard.html".to_owned()]);
    manager
        .register(Arc::new(Restyler("dashboard.html")))
        .await
        .unwrap();
    let page = send_text(server.addr, "GET", "/dashboard", Some(&agent), &[], vec![]).await;
    assert_eq!(page.body, "<main class=\"restyled\">Dashboard: </main>");
    manager
        .set_enabled("restyler", false, "test")
        .await
        .unwrap();
    let page = send_text(server.addr, "GET", "/dashboard", Some(&agent), &[], vec![]).await;
    assert!(page.body.starts_with("<!doctype html>"), "{}", page.body);

    server.shutdown().await;
}

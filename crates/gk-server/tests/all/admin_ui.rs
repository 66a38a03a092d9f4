//! The admin pages and the dashboard in a real browser: headless Chromium driven by
//! `tests/browser/admin.mjs` (playwright-core) against a running server with the example
//! plugins and one plugin in every other state. Needs Debian's `chromium`, Node.js and `npm ci`
//! in tests/browser (scripts/install-deps.sh installs them); a missing piece fails the test
//! with what to install. The run's screenshots are kept in `<target dir>/screenshots/`.
//!
//! Also here, without a browser: translated titles and labels, escaped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::intruder::Intruder;
use crate::common::{config_for, output_text, repository, send, send_text, stats_module};
use async_trait::async_trait;
use gk_core::discovery::Discovered;
use gk_sdk::{
    CallContext, GkRegistration, HostApi, I18nSpec, MenuItemSpec, Plugin, PluginError,
    PolicyStatus, RouteSpec, Runtime, WidgetSpec,
};
use gk_server::ServeConfig;
use gk_server::auth::Role;

/// Where the browser run leaves its screenshots: `screenshots/` in the target directory.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/admin_ui-…: two levels up is the target directory.
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    target.join("screenshots")
}

/// The example plugins as `serve_examples_with_data` sets them up, Stats signed by a trusted
/// key, and plugins in the other states: `broken` (not a module: fails to load),
/// `half-written` (a manifest without its module: refused at discovery) and `dormant`
/// (disabled before it ever loads).
async fn serve_every_state(dir: &Path) -> gk_server::RunningServer {
    let stats = repository().join("plugins/stats");
    let plugins = dir.join("plugins");
    common::install_stats_dir(&plugins);
    common::install_hello_grpc(&plugins);
    std::fs::create_dir_all(plugins.join("half-written")).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"\0asm, but not really").unwrap();
    std::fs::write(
        plugins.join("half-written/plugin.yaml"),
        "name: half-written\nversion: \"0.1.0\"\nruntime: wasm\nwasm: half-written.wasm\n",
    )
    .unwrap();
    std::fs::copy(stats_module(), plugins.join("dormant.wasm")).unwrap();

    let keys = dir.join("trusted-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (private, public) = gk_core::signing::generate_keypair().unwrap();
    std::fs::write(keys.join("release.pub"), public).unwrap();
    gk_core::signing::sign_file(&plugins.join("stats/stats.wasm"), &private).unwrap();

    let config = ServeConfig {
        approve: vec!["stats".into(), "hello-grpc".into()],
        init_sql: vec![stats.join("schema.sql"), stats.join("seed.sql")],
        trusted_keys_dir: Some(keys),
        ..config_for(dir)
    };
    let server = gk_server::start(&config).await.unwrap();
    server
        .manager
        .set_enabled("dormant", false, "test")
        .await
        .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_manages_plugins_in_the_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/install-deps.sh (npm ci in {})",
        browser_dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: run scripts/install-deps.sh (apt-get install chromium)"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = serve_every_state(dir.path()).await;
    let admin = server.first_admin_token.clone().unwrap();
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(600))
        .unwrap();
    // Something in hello-grpc's log for the log page (the unknown path loads every enabled
    // plugin: `broken` fails).
    let (status, _) = send(
        server.addr,
        "GET",
        "/api/plugins/hello-grpc/hello",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        server.manager.load_error("broken").unwrap().is_some(),
        "broken failed to load"
    );
    // A plugin whose page and widget try to act as the admin.
    server
        .manager
        .register(Arc::new(Intruder::default()))
        .await
        .unwrap();
    let before = server.manager.policy("intruder").await.unwrap();
    assert_eq!(before.status, PolicyStatus::PendingReview);
    // A plugin discovered since: not loaded yet when the list is looked at.
    let later = dir.path().join("elsewhere/later.wasm");
    std::fs::create_dir_all(later.parent().unwrap()).unwrap();
    std::fs::copy(stats_module(), &later).unwrap();
    server
        .manager
        .add_discovered(Discovered {
            name: "later".into(),
            runtime: Runtime::Wasm,
            dir: later.parent().unwrap().to_owned(),
            entry: later,
            manifest: None,
            from_package: false,
        })
        .await
        .unwrap();

    let screenshots = screenshot_dir();
    std::fs::create_dir_all(&screenshots).unwrap();
    for old in ["admin-plugins.png", "dashboard-de.png", "dashboard-en.png"] {
        let _ = std::fs::remove_file(screenshots.join(old));
    }
    let url = format!("http://{}", server.addr);
    let shots = screenshots.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("admin.mjs")
            .current_dir(&browser_dir)
            .env("GK_URL", url)
            .env("GK_ADMIN_TOKEN", admin)
            .env("GK_AGENT_TOKEN", agent)
            .env("GK_SCREENSHOTS", shots)
            .env("CHROMIUM", chromium)
            .output()
            .expect("node runs (install Node.js)")
    })
    .await
    .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "the browser run failed:\n{text}");
    assert_eq!(text.matches("ok: ").count(), 16, "{text}");
    for shot in ["admin-plugins.png", "dashboard-de.png", "dashboard-en.png"] {
        let size = std::fs::metadata(screenshots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is missing or empty ({size} bytes)");
    }
    // Nothing the intruder's scripts sent changed its policy.
    assert_eq!(server.manager.policy("intruder").await.unwrap(), before);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_list_follows_each_plugin_from_discovery_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_every_state(dir.path()).await;
    let admin = server.first_admin_token.clone().unwrap();
    let addr = server.addr;
    let list = || common::admin_page(addr, &admin, "/admin/plugins");
    let row = |name: &str, lifecycle: &str| {
        format!("<tr data-plugin=\"{name}\" data-lifecycle=\"{lifecycle}\">")
    };

    // Discovered, nothing loaded yet; the manifest without its module is refused, with why.
    let body = list().await;
    for name in ["broken", "dormant", "hello-grpc", "stats"] {
        assert!(body.contains(&row(name, "not_loaded")), "{name}: {body}");
    }
    assert!(body.contains(&row("half-written", "refused")), "{body}");
    assert!(body.contains("half-written.wasm"), "the reason: {body}");
    assert!(
        body.contains("data-state=\"signature\">verified</span>"),
        "{body}"
    );

    // Loading every enabled plugin: `broken` fails and says why; `dormant` stays unloaded.
    server.manager.load_all().await;
    let body = list().await;
    for name in ["hello-grpc", "stats"] {
        assert!(body.contains(&row(name, "loaded")), "{name}: {body}");
    }
    assert!(body.contains(&row("broken", "failed")), "{body}");
    assert!(
        body.contains("plugin `broken` cannot be registered"),
        "{body}"
    );
    assert!(body.contains(&row("dormant", "not_loaded")), "{body}");

    // The missing module arrives: the directory is taken, and is refused no more.
    std::fs::copy(
        stats_module(),
        dir.path().join("plugins/half-written/half-written.wasm"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = list().await;
        if body.contains(&row("half-written", "not_loaded")) {
            assert!(!body.contains("data-lifecycle=\"refused\""), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the loader did not take the fixed plugin: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown().await;
}

/// A plugin whose widget title and menu label are keys of its catalog, one translation
/// carrying markup.
struct Labelled;

#[async_trait]
impl Plugin for Labelled {
    async fn register(&self) -> Result<GkRegistration, PluginError> {
        let texts = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Ok(GkRegistration {
            name: "labelled".into(),
            version: "1.0.0".into(),
            routes: vec![RouteSpec {
                method: "GET".into(),
                path: "/labelled/page".into(),
                handler: "page".into(),
                middleware: Vec::new(),
                description: "labelled.route".into(),
            }],
            widgets: vec![WidgetSpec {
                id: "labelled_widget".into(),
                title: "labelled.widget".into(),
                handler: "widget".into(),
                location: "dashboard".into(),
                size: "small".into(),
                ..WidgetSpec::default()
            }],
            menu_items: vec![MenuItemSpec {
                id: "labelled".into(),
                label: "labelled.menu".into(),
                path: "/labelled/page".into(),
                location: "agent".into(),
                ..MenuItemSpec::default()
            }],
            i18n: Some(I18nSpec {
                namespace: String::new(),
                languages: vec!["en".into(), "de".into(), "fr".into()],
                translations: std::collections::BTreeMap::from([
                    (
                        "en".into(),
                        texts(&[
                            ("widget", "Open tickets"),
                            ("menu", "Tickets"),
                            ("route", "The page"),
                        ]),
                    ),
                    (
                        "de".into(),
                        texts(&[("widget", "Offene Tickets"), ("menu", "Vorgänge")]),
                    ),
                    (
                        "fr".into(),
                        texts(&[("widget", "<script>alert('x')</script> & co")]),
                    ),
                ]),
            }),
            ..GkRegistration::default()
        })
    }

    async fn init(&self, _: &CallContext, _: Arc<dyn HostApi>) -> Result<(), PluginError> {
        Ok(())
    }

    async fn call(&self, ctx: &CallContext, _: &str, _: &[u8]) -> Result<Vec<u8>, PluginError> {
        let language = ctx.language.clone().unwrap_or_default();
        Ok(serde_json::json!({"html": format!("<p>in {language}</p>")})
            .to_string()
            .into_bytes())
    }

    async fn shutdown(&self, _: &CallContext) -> Result<(), PluginError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn titles_and_labels_are_translated_in_the_request_language_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let server = gk_server::start(&config_for(dir.path())).await.unwrap();
    server.manager.register(Arc::new(Labelled)).await.unwrap();
    let addr = server.addr;
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(60))
        .unwrap();
    let admin = server
        .tokens
        .mint("root", Role::Admin, Duration::from_secs(60))
        .unwrap();

    // The dashboard: the widget's title and the menu in the best language the plugin has;
    // the widget renders in the request's language.
    for (accept, title, menu) in [
        ("de-CH, en;q=0.5", "Offene Tickets", "Vorgänge"),
        ("nl, de;q=0.9", "Offene Tickets", "Vorgänge"),
        ("nl", "Open tickets", "Tickets"),
        ("", "Open tickets", "Tickets"),
    ] {
        let headers: Vec<(&str, &str)> = if accept.is_empty() {
            Vec::new()
        } else {
            vec![("accept-language", accept)]
        };
        let page = send_text(addr, "GET", "/dashboard", Some(&agent), &headers, vec![]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body.contains(&format!("<h3>{title}</h3>")),
            "{accept}: {}",
            page.body
        );
        assert!(
            page.body
                .contains(&format!("data-menu=\"labelled\">{menu}</a>")),
            "{accept}: {}",
            page.body
        );
        assert!(!page.body.contains("labelled.widget"), "{}", page.body);
    }
    let page = send_text(
        addr,
        "GET",
        "/dashboard",
        Some(&agent),
        &[("accept-language", "de-CH")],
        vec![],
    )
    .await;
    assert!(page.body.contains("<html lang=\"de-ch\">"), "{}", page.body);
    assert!(
        page.body.contains("&lt;p&gt;in de-ch&lt;&#x2f;p&gt;"),
        "the widget renders in the page's language: {}",
        page.body
    );

    // A translation is text: markup in it is escaped, never run.
    let page = send_text(
        addr,
        "GET",
        "/dashboard",
        Some(&agent),
        &[("accept-language", "fr")],
        vec![],
    )
    .await;
    assert!(
        page.body
            .contains("<h3>&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; co</h3>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);

    // The widget list of the API, and a framed widget.
    let (status, widgets) = send(addr, "GET", "/api/v1/plugins/widgets", Some(&agent), "").await;
    assert_eq!(status, 200);
    assert_eq!(widgets[0]["title"], "Open tickets", "{widgets}");
    let listed = send_text(
        addr,
        "GET",
        "/api/v1/plugins/widgets?location=dashboard",
        Some(&agent),
        &[("accept-language", "de")],
        vec![],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed[0]["title"], "Offene Tickets", "{listed}");
    let framed = send_text(
        addr,
        "GET",
        "/api/v1/plugins/labelled/widgets/labelled_widget?wrap=true",
        Some(&agent),
        &[("accept-language", "fr")],
        vec![],
    )
    .await;
    assert!(
        framed
            .body
            .contains("<h3>&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; co</h3>"),
        "{}",
        framed.body
    );

    // The admin pages: the plugin's page shows its declarations translated.
    let cookie = format!("gk_admin={admin}");
    let detail = send_text(
        addr,
        "GET",
        "/admin/plugins/labelled",
        None,
        &[("cookie", &cookie), ("accept-language", "de")],
        vec![],
    )
    .await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    for shown in ["<td>Offene Tickets</td>", "<td>Vorgänge</td>", "The page"] {
        assert!(detail.body.contains(shown), "{shown}: {}", detail.body);
    }
    server.shutdown().await;
}

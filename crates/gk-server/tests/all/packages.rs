//! A package built by `gk package` and dropped into the plugins directory: its `static/` folder
//! is served at `/plugins/<name>/static/…` with content types, ETags and the plugin-content
//! CSP, nothing outside that folder is reachable, its `i18n/` files are the plugin's texts and
//! its `templates/` usable by name.

use crate::common;
use std::path::Path;

fn gk_package(dir: &Path, output: &Path) {
    let out = common::gk_command()
        .arg("package")
        .arg(dir)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packages_static_folder_is_served_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("static/css")).unwrap();
    // It declares a template of its own, shipped in templates/.
    std::fs::write(
        source.join("proxy.wasm"),
        common::proxy::proxy_module_registering(
            r#"{"name":"proxy","version":"1.0.0","templates":[{"name":"proxy/card.html","path":"templates/card.html"}]}"#,
        ),
    )
    .unwrap();
    std::fs::create_dir_all(source.join("templates")).unwrap();
    std::fs::write(
        source.join("templates/card.html"),
        "<div class=\"card\">{{ title }}</div>",
    )
    .unwrap();
    std::fs::write(
        source.join("plugin.yaml"),
        "name: proxy\nversion: \"1.0.0\"\nruntime: wasm\nwasm: proxy.wasm\n",
    )
    .unwrap();
    std::fs::write(source.join("static/css/app.css"), "body { color: teal }").unwrap();
    std::fs::create_dir_all(source.join("i18n")).unwrap();
    std::fs::write(
        source.join("i18n/de.json"),
        r#"{"widget": {"title": "Stellvertreter"}}"#,
    )
    .unwrap();
    std::fs::write(source.join("i18n/en.yaml"), "widget:\n  title: Proxy\n").unwrap();
    std::fs::write(
        source.join("static/page.html"),
        "<script>parent.document.cookie</script>",
    )
    .unwrap();
    let config = common::config_for(dir.path());
    std::fs::create_dir_all(&config.plugins_dir).unwrap();
    gk_package(&source, &config.plugins_dir.join("proxy.zip"));
    let server = gk_server::start(&config).await.unwrap();
    let addr = server.addr;
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::send_text(addr, "GET", path, None, &headers, vec![]).await
    };

    let css = get("/plugins/proxy/static/css/app.css", vec![]).await;
    assert_eq!(css.status, 200, "{}", css.body);
    assert_eq!(css.body, "body { color: teal }");
    assert_eq!(css.content_type, "text/css; charset=utf-8");
    assert!(css.header("cache-control").contains("max-age"));
    let etag = css.header("etag").to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = get(
        "/plugins/proxy/static/css/app.css",
        vec![("if-none-match", etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // Plugin HTML runs in an opaque origin, as every piece of plugin content does.
    let page = get("/plugins/proxy/static/page.html", vec![]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .starts_with("sandbox"),
        "{:?}",
        page.headers
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");

    for outside in [
        "/plugins/proxy/static/../plugin.yaml",
        "/plugins/proxy/static/%2e%2e/plugin.yaml",
        "/plugins/proxy/static/..%2fproxy.wasm",
        "/plugins/proxy/static/css",
        "/plugins/nobody/static/app.css",
    ] {
        let refused = get(outside, vec![]).await;
        assert_eq!(refused.status, 404, "{outside}: {}", refused.body);
    }

    // The package's i18n/ files are the plugin's texts, in each language.
    server.manager.load("proxy").await.unwrap();
    let (german, _) = server.manager.translations("de");
    assert_eq!(german["proxy.widget.title"], "Stellvertreter");
    let (english, _) = server.manager.translations("en");
    assert_eq!(english["proxy.widget.title"], "Proxy");

    // Its templates/ file is usable by name.
    let templates = gk_server::pages::PluginTemplates::new(
        std::sync::Arc::new(gk_server::pages::Pages::new()),
        server.manager.clone(),
    );
    let page = templates
        .render_source(
            r#"{% include "proxy/card.html" %}"#,
            serde_json::json!({"title": "From the package"}),
        )
        .await
        .unwrap();
    assert_eq!(page, "<div class=\"card\">From the package</div>");

    // A disabled plugin's files are gone with it.
    server
        .manager
        .set_enabled("proxy", false, "test")
        .await
        .unwrap();
    let gone = get("/plugins/proxy/static/css/app.css", vec![]).await;
    assert_eq!(gone.status, 404);
    server.shutdown().await;
}

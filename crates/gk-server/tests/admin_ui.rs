//! The admin pages in a real browser: headless Chromium driven by `tests/browser/admin.mjs`
//! (playwright-core) against a running server with the example plugins. Needs Debian's
//! `chromium`, Node.js and `npm ci` in tests/browser (scripts/install-deps.sh installs them); a
//! missing piece fails the test with what to install.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::intruder::Intruder;
use common::{output_text, send, serve_examples_with_data};
use gk_sdk::PolicyStatus;
use gk_server::auth::Role;

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
    let server = serve_examples_with_data(dir.path()).await;
    let admin = server.first_admin_token.clone().unwrap();
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(600))
        .unwrap();
    // Something in hello-grpc's log for the log page.
    let (status, _) = send(
        server.addr,
        "GET",
        "/api/plugins/hello-grpc/hello",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(status, 200);
    // A plugin whose page and widget try to act as the admin.
    server
        .manager
        .register(std::sync::Arc::new(Intruder::default()))
        .await
        .unwrap();
    let before = server.manager.policy("intruder").await.unwrap();
    assert_eq!(before.status, PolicyStatus::PendingReview);

    let url = format!("http://{}", server.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("admin.mjs")
            .current_dir(&browser_dir)
            .env("GK_URL", url)
            .env("GK_ADMIN_TOKEN", admin)
            .env("GK_AGENT_TOKEN", agent)
            .env("CHROMIUM", chromium)
            .output()
            .expect("node runs (install Node.js)")
    })
    .await
    .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "the browser run failed:\n{text}");
    assert_eq!(text.matches("ok: ").count(), 12, "{text}");
    // Nothing the intruder's scripts sent changed its policy.
    assert_eq!(server.manager.policy("intruder").await.unwrap(), before);
    server.shutdown().await;
}

//! `gk init` end to end: a new plugin of each type is created, built with `gk build`, dropped
//! into the plugins directory of a running server, and answers its route.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{config_for, gk_command, output_text, send, target_dir};
use gk_server::auth::Role;

/// `gk` with its guest builds in `target`; its output.
fn gk(args: &[&str], target: &Path) -> String {
    let output = gk_command()
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "gk {args:?} failed:\n{text}");
    text
}

/// Copies the files a server needs (plugin.yaml and the built module or executable).
fn install(project: &Path, plugins: &Path, artefact: &str) {
    let staging = plugins.join(format!(".{artefact}-incoming"));
    std::fs::create_dir_all(&staging).unwrap();
    for file in ["plugin.yaml", artefact] {
        std::fs::copy(project.join(file), staging.join(file)).unwrap();
    }
    let name = project.file_name().unwrap();
    std::fs::rename(&staging, plugins.join(name)).unwrap();
}

/// Polls a route until it answers 200 (the watcher picks new plugins up after its debounce).
async fn wait_for(addr: std::net::SocketAddr, path: &str, token: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, reply) = send(addr, "GET", path, Some(token), "").await;
        if status == 200 {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered: {status} {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_build_drop_in_and_call_both_types() {
    let dir = tempfile::tempdir().unwrap();
    let server = gk_server::start(&config_for(dir.path())).await.unwrap();
    let token = server
        .tokens
        .mint("author", Role::Agent, Duration::from_secs(600))
        .unwrap();
    let sources = dir.path().join("src");
    let sources_arg = sources.to_str().unwrap();
    let plugins = dir.path().join("plugins");

    // WASM: guests share the target directory `cargo xtask build-plugins` uses.
    let out = gk(
        &["init", "demo-wasm", "--type", "wasm", "--dir", sources_arg],
        &target_dir(),
    );
    assert!(out.contains("gk build"), "{out}");
    let project = sources.join("demo-wasm");
    for file in ["Cargo.toml", "plugin.yaml", "src/lib.rs", "README.md"] {
        assert!(project.join(file).is_file(), "{file} is missing");
    }
    gk(
        &["build", project.to_str().unwrap()],
        &target_dir().join("wasm-guests"),
    );
    assert!(project.join("demo-wasm.wasm").is_file());
    install(&project, &plugins, "demo-wasm.wasm");
    let reply = wait_for(server.addr, "/api/plugins/demo-wasm/hello?name=Ada", &token).await;
    assert_eq!(reply["message"], "Hello, Ada!");
    assert_eq!(reply["greetings"], 1);
    let reason = reply["tickets"]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("db"),
        "not approved yet, the database is refused: {reply}"
    );
    let reply = wait_for(server.addr, "/api/plugins/demo-wasm/hello", &token).await;
    assert_eq!(reply["greetings"], 2, "the cache keeps the count");

    // gRPC: the executable is built in release into a target directory of its own.
    gk(
        &["init", "demo-grpc", "--type", "grpc", "--dir", sources_arg],
        &target_dir(),
    );
    let project = sources.join("demo-grpc");
    gk(
        &["build", project.to_str().unwrap()],
        &target_dir().join("plugin-builds"),
    );
    install(&project, &plugins, "demo-grpc");
    let reply = wait_for(server.addr, "/api/plugins/demo-grpc/hello?name=Bo", &token).await;
    assert_eq!(reply["message"], "Hello, Bo!");
    assert_eq!(reply["greetings"], 1);

    server.shutdown().await;
}

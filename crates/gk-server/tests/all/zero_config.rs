//! `gk serve` as a new user runs it: no configuration at all, in an empty directory, so every
//! path is the relative default (`./plugins`, `./data`). Plugins dropped into `./plugins` while
//! it runs are picked up by the watcher, and both runtimes answer: the gRPC plugin reaches the
//! host over a socket path that must not depend on the plugin's working directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use serde_json::{Value, json};

/// `gk` in `dir`: nothing of the calling environment configures this server.
fn gk(dir: &Path) -> Command {
    let mut command = common::gk_command();
    command.current_dir(dir);
    command
}

/// How long the server and the watcher get for each step.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dropped_into_the_default_directory_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _serve = common::KillOnDrop(
        gk(dir.path())
            .args(["serve", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    common::until("the server to listen", STEP, async || {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await;
    assert!(dir.path().join("plugins").is_dir() && dir.path().join("data").is_dir());

    // A token from the secret the server made in ./data.
    let output = gk(dir.path())
        .args(["token", "--user", "ada", "--role", "admin"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", common::output_text(&output));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    // Dropped in while it runs: a WASM module and a gRPC plugin directory.
    let plugins = dir.path().join("plugins");
    std::fs::write(plugins.join("proxy.wasm"), common::proxy::proxy_module()).unwrap();
    common::install_hello_grpc(&plugins);

    common::until("both plugins to be discovered", STEP, async || {
        let (_, list) = common::send(addr, "GET", "/api/v1/plugins", Some(&token), "").await;
        let names: Vec<&str> = list
            .as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        (names.contains(&"proxy") && names.contains(&"hello-grpc")).then_some(())
    })
    .await;

    // gRPC: `greet` makes three host calls over the host socket.
    let (status, reply) = common::send(
        addr,
        "POST",
        "/api/v1/plugins/hello-grpc/call/greet",
        Some(&token),
        r#"{"name":"Ada"}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"], "Hello, Ada!");
    // WASM: the guest's `log` host call.
    let (status, reply) = common::send(
        addr,
        "POST",
        "/api/v1/plugins/proxy/call/log",
        Some(&token),
        &json!({"level": "info", "message": "dropped in"}).to_string(),
    )
    .await;
    assert_eq!((status, reply), (200, json!({"ok": true})));
    let (_, logs) = common::send(
        addr,
        "GET",
        "/api/v1/plugins/logs?plugin=proxy",
        Some(&token),
        "",
    )
    .await;
    assert!(
        logs.to_string().contains("dropped in"),
        "the guest's log line is kept: {logs}"
    );
    let _: Value = logs;
}

//! `gk serve` as a new user runs it: no configuration at all, in an empty directory, so every
//! path is the relative default (`./plugins`, `./data`). Plugins dropped into `./plugins` while
//! it runs are picked up by the watcher, and both runtimes answer: the gRPC plugin reaches the
//! host over a socket path that must not depend on the plugin's working directory.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The `gk serve` process; killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gk(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gk"));
    command.current_dir(dir);
    // Nothing of the calling environment configures this server.
    for (name, _) in std::env::vars() {
        if name.starts_with("GOATKIT_") || name.starts_with("GOATFLOW_") {
            command.env_remove(name);
        }
    }
    command
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dropped_into_the_default_directory_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = Serve(
        gk(dir.path())
            .args(["serve", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    until("the server to listen", async || {
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
    let grpc = plugins.join("hello-grpc");
    std::fs::create_dir_all(&grpc).unwrap();
    std::fs::copy(common::hello_binary(), grpc.join("hello-grpc")).unwrap();
    std::fs::copy(
        common::repository().join("plugins/hello-grpc/plugin.yaml"),
        grpc.join("plugin.yaml"),
    )
    .unwrap();

    until("both plugins to be discovered", async || {
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

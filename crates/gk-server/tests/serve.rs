//! `gk serve` composed for real: both runtimes, the loader and the HTTP listener, with the
//! Stats WASM plugin and the hello-grpc process plugin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gk_server::ServeConfig;
use gk_server::auth::{Role, TokenKeys};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stats_module() -> PathBuf {
    let wasm = repository().join("plugins/stats/stats.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `cargo xtask build-plugins` (cargo xtask test does)",
        wasm.display()
    );
    wasm
}

fn hello_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("hello-grpc");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p hello-grpc` (cargo xtask test does)",
        binary.display()
    );
    binary
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Sends a request with an optional bearer token; the status and the JSON reply.
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A server on a free port with its plugins and data under `dir`.
fn config_for(dir: &Path) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        plugins_dir: dir.join("plugins"),
        data_dir: dir.join("data"),
        ..ServeConfig::default()
    }
}

/// A server on a free port over a plugins directory holding Stats and hello-grpc.
async fn serve_examples(dir: &Path) -> gk_server::RunningServer {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(plugins.join("hello-grpc")).unwrap();
    std::fs::copy(stats_module(), plugins.join("stats.wasm")).unwrap();
    std::fs::copy(hello_binary(), plugins.join("hello-grpc/hello-grpc")).unwrap();
    std::fs::copy(
        repository().join("plugins/hello-grpc/plugin.yaml"),
        plugins.join("hello-grpc/plugin.yaml"),
    )
    .unwrap();
    let config = config_for(dir);
    gk_server::start(&config).await.unwrap()
}

#[tokio::test]
async fn the_api_checks_tokens_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_examples(dir.path()).await;
    let admin = server
        .first_admin_token
        .clone()
        .expect("a fresh install prints an admin token");
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(60))
        .unwrap();
    let foreign = TokenKeys::from_secret(&[1; 32])
        .unwrap()
        .mint("mallory", Role::Admin, Duration::from_secs(60))
        .unwrap();
    let addr = server.addr;

    let call = "/api/v1/plugins/hello-grpc/call/echo";
    assert_eq!(send(addr, "POST", call, None, "{}").await.0, 401);
    assert_eq!(send(addr, "POST", call, Some("garbage"), "{}").await.0, 401);
    let (status, reply) = send(addr, "POST", call, Some(&foreign), "{}").await;
    assert_eq!(status, 401, "a token signed with another secret");
    assert_eq!(reply["error"]["code"], "unauthorized");
    let (status, reply) = send(addr, "POST", call, Some(&agent), r#"{"a":1}"#).await;
    assert_eq!((status, reply), (200, serde_json::json!({"a": 1})));
    let (status, reply) = send(addr, "POST", call, Some(&agent), "not json").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("invalid_json"))
    );
    let (status, reply) = send(
        addr,
        "POST",
        "/api/v1/plugins/nope/call/x",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    for action in ["disable", "enable"] {
        let path = format!("/api/v1/plugins/hello-grpc/{action}");
        assert_eq!(send(addr, "POST", &path, None, "").await.0, 401, "{action}");
        assert_eq!(
            send(addr, "POST", &path, Some("bad"), "").await.0,
            401,
            "{action}"
        );
        let (status, reply) = send(addr, "POST", &path, Some(&agent), "").await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );
    }
    let (status, reply) = send(
        addr,
        "POST",
        "/api/v1/plugins/hello-grpc/disable",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!((status, &reply["enabled"]), (200, &Value::Bool(false)));
    let (status, reply) = send(addr, "POST", call, Some(&agent), "{}").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (403, Some("plugin_disabled"))
    );
    send(
        addr,
        "POST",
        "/api/v1/plugins/hello-grpc/enable",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(send(addr, "POST", call, Some(&agent), "{}").await.0, 200);

    // Widgets of loaded, enabled plugins, for any valid token.
    let widgets = "/api/v1/plugins/widgets?location=dashboard";
    assert_eq!(send(addr, "GET", widgets, None, "").await.0, 401);
    let (status, listed) = send(addr, "GET", widgets, Some(&agent), "").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["plugin"], "hello-grpc", "{listed}");
    assert_eq!(listed[0]["id"], "hello_widget", "{listed}");
    let (_, listed) = send(
        addr,
        "GET",
        "/api/v1/plugins/widgets?location=nowhere",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(listed, serde_json::json!([]));

    // Policies, stats: admins only.
    let policy_path = "/api/v1/plugins/hello-grpc/policy";
    for path in [
        policy_path,
        "/api/v1/plugins/hello-grpc/stats",
        "/api/v1/plugins/stats",
    ] {
        assert_eq!(send(addr, "GET", path, None, "").await.0, 401, "{path}");
        assert_eq!(
            send(addr, "GET", path, Some(&agent), "").await.0,
            403,
            "{path}"
        );
    }
    let (status, mut policy) = send(addr, "GET", policy_path, Some(&admin), "").await;
    assert_eq!(status, 200);
    assert_eq!(policy["plugin_name"], "hello-grpc");
    policy["status"] = Value::from("blocked");
    let (status, _) = send(addr, "PUT", policy_path, Some(&agent), &policy.to_string()).await;
    assert_eq!(status, 403);
    let (status, reply) = send(addr, "PUT", policy_path, Some(&admin), &policy.to_string()).await;
    assert_eq!((status, &reply["status"]), (200, &Value::from("blocked")));
    let (_, stored) = send(addr, "GET", policy_path, Some(&admin), "").await;
    assert_eq!(stored["status"], "blocked");
    let (status, reply) = send(
        addr,
        "PUT",
        "/api/v1/plugins/stats/policy",
        Some(&admin),
        &policy.to_string(),
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("invalid_policy"))
    );
    let (status, _) = send(
        addr,
        "PUT",
        policy_path,
        Some(&admin),
        "{\"plugin_name\": 3}",
    )
    .await;
    assert_eq!(status, 422);
    let (status, stats) = send(addr, "GET", "/api/v1/plugins/stats", Some(&admin), "").await;
    assert_eq!(status, 200);
    assert!(
        stats["hello-grpc"]["calls"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert_eq!(
        stats["hello-grpc"]["errors"], 0,
        "the call to the disabled plugin never ran: {stats}"
    );
    server.shutdown().await;

    // A restart keeps the generated secret: old tokens stay valid, no new admin token.
    let server = gk_server::start(&config_for(dir.path())).await.unwrap();
    assert!(server.first_admin_token.is_none());
    assert_eq!(
        send(server.addr, "POST", call, Some(&agent), "{}").await.0,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn serve_discovers_loads_and_lists_both_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let server = serve_examples(dir.path()).await;
    assert!(dir.path().join("data/goatkit.db").is_file());

    let (status, health) = get_json(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["plugins"], 2);
    let (_, listed) = get_json(server.addr, "/api/v1/plugins").await;
    assert_eq!(listed[0]["name"], "hello-grpc");
    assert_eq!(listed[0]["loaded"], false, "plugins load on first use");
    assert_eq!(listed[1]["name"], "stats");

    // First use loads each through its runtime.
    let reply = server
        .manager
        .call("hello-grpc", "echo", b"{\"x\":1}")
        .await
        .unwrap();
    assert_eq!(reply, b"{\"x\":1}");
    server.manager.call("stats", "overview", b"{}").await.ok();
    let (_, listed) = get_json(server.addr, "/api/v1/plugins").await;
    assert_eq!(listed[0]["loaded"], true);
    assert_eq!(listed[0]["version"], "0.1.0");
    assert_eq!(listed[1]["loaded"], true);
    assert_eq!(listed[1]["version"], "2.0.0");

    // The plugins directory is watched.
    std::fs::copy(stats_module(), plugins.join("copy.wasm")).unwrap();
    let start = std::time::Instant::now();
    loop {
        let (_, listed) = get_json(server.addr, "/api/v1/plugins").await;
        if listed.as_array().unwrap().len() == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a dropped module is discovered: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let addr = server.addr;
    server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// Runs the `gk` binary (off the runtime's threads, so the in-process server keeps serving).
async fn gk(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gk"))
            .args(&args)
            .env_remove("GOATKIT_TOKEN")
            .env_remove("GOATKIT_URL")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn gk_plugins_drives_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_examples(dir.path()).await;
    let admin = server.first_admin_token.clone().unwrap();
    let url = format!("http://{}", server.addr);
    let with = |token: &str, rest: &[&str]| {
        let mut args = vec!["plugins".to_owned(), "--server".into(), url.clone()];
        if !token.is_empty() {
            args.extend(["--token".to_owned(), token.to_owned()]);
        }
        args.extend(rest.iter().map(|s| (*s).to_owned()));
        args
    };

    let (ok, out) = gk(with(&admin, &["list"])).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("hello-grpc") && out.contains("stats"), "{out}");

    let (ok, out) = gk(with(
        &admin,
        &["call", "hello-grpc", "greet", r#"{"name":"Ada"}"#],
    ))
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("Hello, Ada!"), "{out}");
    let (ok, out) = gk(with(&admin, &["call", "hello-grpc", "greet", "not json"])).await;
    assert!(!ok);
    assert!(out.contains("the arguments must be JSON"), "{out}");

    let (ok, out) = gk(with("", &["disable", "hello-grpc"])).await;
    assert!(!ok);
    assert!(out.contains("401") && out.contains("gk token"), "{out}");
    let (ok, out) = gk(with(&admin, &["disable", "hello-grpc"])).await;
    assert!(ok, "{out}");
    let (ok, out) = gk(with(&admin, &["call", "hello-grpc", "greet"])).await;
    assert!(!ok);
    assert!(out.contains("403") && out.contains("disabled"), "{out}");
    let (ok, out) = gk(with(&admin, &["enable", "hello-grpc"])).await;
    assert!(ok, "{out}");
    let (ok, out) = gk(with(&admin, &["call", "hello-grpc", "greet"])).await;
    assert!(ok, "{out}");
    server.shutdown().await;

    let (ok, out) = gk(with(&admin, &["list"])).await;
    assert!(!ok);
    assert!(out.contains("is `gk serve` running there?"), "{out}");
}

#[tokio::test]
async fn eager_loading_loads_every_plugin_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // The examples in place, then a second start with eager loading over the same directories.
    serve_examples(dir.path()).await.shutdown().await;
    let server = gk_server::start(&ServeConfig {
        eager_loading: true,
        ..config_for(dir.path())
    })
    .await
    .unwrap();
    let (_, listed) = get_json(server.addr, "/api/v1/plugins").await;
    assert_eq!(listed[0]["name"], "hello-grpc");
    assert_eq!(listed[0]["loaded"], true, "{listed}");
    assert_eq!(listed[1]["name"], "stats");
    assert_eq!(listed[1]["loaded"], true, "{listed}");
    assert_eq!(
        server.manager.widgets(Some("dashboard")).len(),
        4,
        "Stats' three dashboard widgets and hello-grpc's one"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_a_json_504() {
    let dir = tempfile::tempdir().unwrap();
    serve_examples(dir.path()).await.shutdown().await;
    let server = gk_server::start(&ServeConfig {
        request_timeout: Duration::from_millis(500),
        ..config_for(dir.path())
    })
    .await
    .unwrap();
    let token = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(60))
        .unwrap();
    let path = "/api/v1/plugins/hello-grpc/call/sleep";
    let (status, reply) = send(server.addr, "POST", path, Some(&token), "{}").await;
    assert_eq!(status, 504, "{reply}");
    assert_eq!(reply["error"]["code"], "request_timeout");
    let path = "/api/v1/plugins/hello-grpc/call/echo";
    let (status, _) = send(server.addr, "POST", path, Some(&token), "{}").await;
    assert_eq!(
        status, 200,
        "the plugin still answers after a timed-out request"
    );
    server.shutdown().await;
}

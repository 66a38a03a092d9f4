//! What the server tests share: the example plugins, a server over them, HTTP helpers, the
//! `gk` binary with a clean environment, processes killed when dropped, free ports and
//! waiting for a condition.

pub(crate) mod intruder;
pub(crate) mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gk_server::ServeConfig;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The workspace's root directory.
pub(crate) fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, else three levels above this test
/// binary (`<target>/debug/deps/all-…`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_path_buf()
        },
        PathBuf::from,
    )
}

/// The `gk` binary with nothing of the calling environment configuring it (no `GOATKIT_*`
/// or `GOATFLOW_*` variable).
pub(crate) fn gk_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gk"));
    for (name, _) in std::env::vars() {
        if name.starts_with("GOATKIT_") || name.starts_with("GOATFLOW_") {
            command.env_remove(name);
        }
    }
    command
}

/// A child process (a `gk serve`, a Redis, an SMTP server), killed and reaped when dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) use gk_sdk::testing::free_port;

/// Polls `probe` until it gives a value; fails naming `what` after `limit`.
pub(crate) async fn until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn stats_module() -> PathBuf {
    let wasm = repository().join("plugins/stats/stats.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `cargo xtask build-plugins` (cargo xtask test does)",
        wasm.display()
    );
    wasm
}

pub(crate) fn hello_binary() -> PathBuf {
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

pub(crate) async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
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
pub(crate) async fn send(
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

/// Sets `plugin`'s `max_calls_per_second` through its policy over the API (0: no limit).
pub(crate) async fn set_calls_per_second(
    addr: std::net::SocketAddr,
    token: &str,
    plugin: &str,
    calls: u64,
) {
    let path = format!("/api/v1/plugins/{plugin}/policy");
    let (status, mut policy) = send(addr, "GET", &path, Some(token), "").await;
    assert_eq!(status, 200, "{policy}");
    policy["max_calls_per_second"] = calls.into();
    let (status, reply) = send(addr, "PUT", &path, Some(token), &policy.to_string()).await;
    assert_eq!(status, 200, "{reply}");
}

/// A server on a free port with its plugins and data under `dir`.
pub(crate) fn config_for(dir: &Path) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        plugins_dir: dir.join("plugins"),
        data_dir: dir.join("data"),
        ..ServeConfig::default()
    }
}

/// Puts hello-grpc (its executable and plugin.yaml) into `plugins/hello-grpc`.
pub(crate) fn install_hello_grpc(plugins: &Path) {
    std::fs::create_dir_all(plugins.join("hello-grpc")).unwrap();
    std::fs::copy(hello_binary(), plugins.join("hello-grpc/hello-grpc")).unwrap();
    std::fs::copy(
        repository().join("plugins/hello-grpc/plugin.yaml"),
        plugins.join("hello-grpc/plugin.yaml"),
    )
    .unwrap();
}

/// Puts Stats into `plugins/stats` as a directory with its plugin.yaml (what it requests is
/// what gets approved) and its template.
pub(crate) fn install_stats_dir(plugins: &Path) {
    let stats = repository().join("plugins/stats");
    std::fs::create_dir_all(plugins.join("stats/templates")).unwrap();
    std::fs::copy(stats_module(), plugins.join("stats/stats.wasm")).unwrap();
    std::fs::copy(stats.join("plugin.yaml"), plugins.join("stats/plugin.yaml")).unwrap();
    std::fs::copy(
        stats.join("templates/summary.html"),
        plugins.join("stats/templates/summary.html"),
    )
    .unwrap();
}

/// A server on a free port over a plugins directory holding Stats and hello-grpc.
pub(crate) async fn serve_examples(dir: &Path) -> gk_server::RunningServer {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(stats_module(), plugins.join("stats.wasm")).unwrap();
    install_hello_grpc(&plugins);
    let config = config_for(dir);
    gk_server::start(&config).await.unwrap()
}

/// A response as text: status, content type and body.
pub(crate) struct TextResponse {
    pub status: u16,
    pub content_type: String,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl TextResponse {
    /// A header's value, empty when absent.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Sends a request with optional bearer token and headers; the reply as text.
pub(crate) async fn send_text(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> TextResponse {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    TextResponse {
        status,
        content_type,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// An admin page (`/admin/…`) as the browser of admin `token` gets it (its session cookie);
/// the page, which must be 200.
pub(crate) async fn admin_page(addr: std::net::SocketAddr, token: &str, path: &str) -> String {
    let cookie = format!("gk_admin={token}");
    let page = send_text(addr, "GET", path, None, &[("cookie", &cookie)], vec![]).await;
    assert_eq!(page.status, 200, "{path}: {}", page.body);
    page.body
}

/// The example plugins, approved, over the Stats demo tables: what `cargo xtask serve` runs.
pub(crate) async fn serve_examples_with_data(dir: &Path) -> gk_server::RunningServer {
    let stats = repository().join("plugins/stats");
    let plugins = dir.join("plugins");
    install_stats_dir(&plugins);
    install_hello_grpc(&plugins);
    let config = ServeConfig {
        approve: vec!["stats".into(), "hello-grpc".into()],
        init_sql: vec![stats.join("schema.sql"), stats.join("seed.sql")],
        ..config_for(dir)
    };
    gk_server::start(&config).await.unwrap()
}

/// A finished command's stdout and stderr together, for assertions and failure messages.
pub(crate) fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `GET /api/v1/plugins` with an agent token (listing needs a valid token).
pub(crate) async fn list_plugins(server: &gk_server::RunningServer) -> Value {
    let agent = server
        .tokens
        .mint(
            "lister",
            gk_server::auth::Role::Agent,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let (status, listed) = send(server.addr, "GET", "/api/v1/plugins", Some(&agent), "").await;
    assert_eq!(status, 200, "{listed}");
    listed
}

/// The boundary of [`multipart`] bodies.
const BOUNDARY: &str = "gk-test-boundary-7MA4YWxk";

/// A multipart body with the given `(field, file name, content)` parts.
pub(crate) fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file_name, content) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `POST /api/v1/plugins/upload` with the given `(field, file name, content)` parts.
pub(crate) async fn upload(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    parts: &[(&str, &str, &[u8])],
) -> (u16, Value) {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let reply = send_text(
        addr,
        "POST",
        "/api/v1/plugins/upload",
        token,
        &[("content-type", &content_type)],
        multipart(parts),
    )
    .await;
    (
        reply.status,
        serde_json::from_str(&reply.body).unwrap_or(Value::Null),
    )
}

pub(crate) use gk_sdk::testing::service_url;

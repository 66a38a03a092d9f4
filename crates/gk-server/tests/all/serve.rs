//! `gk serve` composed for real: both runtimes, the loader and the HTTP listener, with the
//! Stats WASM plugin and the hello-grpc process plugin.

use crate::common::{
    config_for, get_json, gk_command, list_plugins, output_text, send, serve_examples, stats_module,
};

use std::time::Duration;

use gk_server::ServeConfig;

use gk_server::auth::{Role, TokenKeys};
use serde_json::Value;

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
    let listed = list_plugins(&server).await;
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
    let listed = list_plugins(&server).await;
    assert_eq!(listed[0]["loaded"], true);
    assert_eq!(listed[0]["version"], "0.1.0");
    assert_eq!(listed[1]["loaded"], true);
    assert_eq!(listed[1]["version"], "2.0.0");

    // The plugins directory is watched.
    std::fs::copy(stats_module(), plugins.join("copy.wasm")).unwrap();
    let start = std::time::Instant::now();
    loop {
        let listed = list_plugins(&server).await;
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
        let out = gk_command().args(&args).output().unwrap();
        (out.status.success(), output_text(&out))
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

    // Approving prints what the grant reaches, in words.
    let (ok, out) = gk(with(&admin, &["approve", "hello-grpc"])).await;
    assert!(ok, "{out}");
    assert!(out.contains("hello-grpc: approved"), "{out}");
    assert!(
        out.contains("cache readwrite: its own cache namespace")
            && out.contains("plugin_call read: stats"),
        "{out}"
    );

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
    let listed = list_plugins(&server).await;
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
    // Loaded first: the deadline is the call's, not the first load's (reading, checking and
    // starting a debug binary can take longer than 500 ms on a busy machine).
    server.manager.load("hello-grpc").await.unwrap();
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

#[tokio::test]
async fn every_admin_endpoint_refuses_missing_bad_expired_and_agent_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_examples(dir.path()).await;
    let addr = server.addr;
    let admin = server.first_admin_token.clone().unwrap();
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(60))
        .unwrap();
    let expired = server
        .tokens
        .mint("admin", Role::Admin, Duration::ZERO)
        .unwrap();
    let forged = TokenKeys::from_secret(&[7; 32])
        .unwrap()
        .mint("admin", Role::Admin, Duration::from_secs(60))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, policy) = send(
        addr,
        "GET",
        "/api/v1/plugins/hello-grpc/policy",
        Some(&admin),
        "",
    )
    .await;
    let policy = policy.to_string();

    // (method, path, body, what an admin gets)
    let endpoints: [(&str, &str, &str, u16); 12] = [
        ("POST", "/api/v1/plugins/hello-grpc/disable", "", 200),
        ("POST", "/api/v1/plugins/hello-grpc/enable", "", 200),
        ("POST", "/api/v1/plugins/hello-grpc/approve", "", 200),
        ("GET", "/api/v1/plugins/hello-grpc/policy", "", 200),
        ("PUT", "/api/v1/plugins/hello-grpc/policy", &policy, 200),
        ("GET", "/api/v1/plugins/hello-grpc/stats", "", 200),
        ("GET", "/api/v1/plugins/stats", "", 200),
        ("GET", "/api/v1/plugins/logs?level=info", "", 200),
        ("DELETE", "/api/v1/plugins/logs", "", 204),
        ("POST", "/api/v1/plugins/upload", "", 400),
        ("DELETE", "/api/v1/plugins/nope", "", 404),
        ("DELETE", "/api/v1/plugins/hello-grpc", "", 204),
    ];
    for (method, path, body, admin_status) in endpoints {
        for (label, token) in [
            ("no token", None),
            ("a malformed token", Some("not.a.jwt")),
            ("an expired token", Some(expired.as_str())),
            ("a token signed with another secret", Some(forged.as_str())),
        ] {
            let (status, reply) = send(addr, method, path, token, body).await;
            assert_eq!(status, 401, "{method} {path} with {label}: {reply}");
            assert_eq!(reply["error"]["code"], "unauthorized");
        }
        let (status, reply) = send(addr, method, path, Some(&agent), body).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path} as agent"
        );
        let (status, reply) = send(addr, method, path, Some(&admin), body).await;
        assert_eq!(status, admin_status, "{method} {path} as admin: {reply}");
    }
    assert!(
        !dir.path().join("plugins/hello-grpc").exists(),
        "DELETE removed its files"
    );
    server.shutdown().await;
}

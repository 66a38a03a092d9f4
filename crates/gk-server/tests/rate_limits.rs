//! A plugin call that hits one of its policy's rate limits is answered `429 Too Many Requests`
//! with `Retry-After`, end to end: hello-grpc's host call is refused by its sandbox, the plugin
//! passes the error on as a gRPC status carrying the `HostErrorDetail`, gk-grpc decodes it, and
//! the HTTP layer answers it.

mod common;

use std::time::Duration;

use common::{config_for, hello_binary, repository, send, send_text};
use gk_server::ServeConfig;
use gk_server::auth::Role;

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_plugin_call_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(plugins.join("hello-grpc")).unwrap();
    std::fs::copy(hello_binary(), plugins.join("hello-grpc/hello-grpc")).unwrap();
    std::fs::copy(
        repository().join("plugins/hello-grpc/plugin.yaml"),
        plugins.join("hello-grpc/plugin.yaml"),
    )
    .unwrap();
    let config = ServeConfig {
        approve: vec!["hello-grpc".into()],
        ..config_for(dir.path())
    };
    let server = gk_server::start(&config).await.unwrap();
    let addr = server.addr;
    let admin = server.first_admin_token.clone().unwrap();
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(600))
        .unwrap();

    // `greet` makes three host calls (cache get, cache set, log): with one host call per
    // second, the second is refused.
    let policy_path = "/api/v1/plugins/hello-grpc/policy";
    let (status, mut policy) = send(addr, "GET", policy_path, Some(&admin), "").await;
    assert_eq!(status, 200, "{policy}");
    policy["max_calls_per_second"] = 1.into();
    let (status, reply) = send(addr, "PUT", policy_path, Some(&admin), &policy.to_string()).await;
    assert_eq!(status, 200, "{reply}");

    let call = "/api/v1/plugins/hello-grpc/call/greet";
    let response = send_text(addr, "POST", call, Some(&agent), &[], b"{}".to_vec()).await;
    assert_eq!(response.status, 429, "{}", response.body);
    let retry_after: u64 = response.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_calls_per_second")),
        "{body}"
    );

    // Without the limit the same call goes through.
    policy["max_calls_per_second"] = 0.into();
    let (status, reply) = send(addr, "PUT", policy_path, Some(&admin), &policy.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, reply) = send(addr, "POST", call, Some(&agent), "{}").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"], "Hello, world!", "{reply}");

    server.shutdown().await;
}

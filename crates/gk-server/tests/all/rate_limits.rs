//! A plugin call that hits one of its policy's rate limits is answered `429 Too Many Requests`
//! with `Retry-After`, end to end: hello-grpc's host call is refused by its sandbox, the plugin
//! passes the error on as a gRPC status carrying the `HostErrorDetail`, gk-grpc decodes it, and
//! the HTTP layer answers it.

use std::time::Duration;

use crate::common::{config_for, install_hello_grpc, send, send_text, set_calls_per_second};
use gk_server::ServeConfig;
use gk_server::auth::Role;

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_plugin_call_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    install_hello_grpc(&dir.path().join("plugins"));
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
    set_calls_per_second(addr, &admin, "hello-grpc", 1).await;

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
    set_calls_per_second(addr, &admin, "hello-grpc", 0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, reply) = send(addr, "POST", call, Some(&agent), "{}").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"], "Hello, world!", "{reply}");

    server.shutdown().await;
}

//! Calls start on the caller's thread (gk-wasm `inline`): one that makes a host call moves to a
//! worker before the host sees anything, so each host call reaches the host exactly once; one
//! that makes none answers where it was asked, the same as a worker would.

use std::sync::Arc;

use gk_sdk::testing::RecordingHost;
use gk_sdk::{CallContext, Plugin};

use crate::support::{ctx, limits, try_load};

async fn recorded(name: &str) -> (gk_wasm::WasmPlugin, Arc<RecordingHost>) {
    let plugin = try_load(name, limits(2_000, 16)).await.unwrap();
    let host = Arc::new(RecordingHost::default());
    plugin
        .init(&CallContext::for_plugin(name), host.clone())
        .await
        .unwrap();
    (plugin, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_call_reaches_the_host_once() {
    let (plugin, host) = recorded("proxy").await;
    for n in 1..=5 {
        plugin
            .call(
                &ctx(),
                "cache_set",
                br#"{"key":"k","value":"aGk=","ttl":5}"#,
            )
            .await
            .unwrap();
        assert_eq!(host.count(), n, "after call {n}");
    }
    let reached = host.reached();
    assert!(
        reached.iter().all(|r| r.function == "cache_set"),
        "{reached:?}"
    );
}

#[tokio::test]
async fn a_call_without_host_calls_answers_and_reaches_nothing() {
    let (plugin, host) = recorded("echo").await;
    for _ in 0..3 {
        let reply = plugin.call(&ctx(), "any", br#"{"a":1}"#).await.unwrap();
        assert_eq!(reply, br#"{"a":1}"#);
    }
    assert_eq!(host.count(), 0);
}

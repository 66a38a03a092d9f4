//! Calls start on the caller's thread (gk-wasm `inline`): one that makes a host call the host
//! does not answer inline moves to a worker before the host sees anything, so each such host
//! call reaches the host exactly once; one that makes none answers where it was asked, the same
//! as a worker would; a read the host answers inline stays on the caller's thread, and one the
//! host refuses, or followed by more computing than the inline slice, runs again on a worker.

use std::sync::Arc;

use gk_sdk::testing::{InlineAnswer, RecordingHost};
use gk_sdk::{CallContext, Plugin};

use crate::support::{ctx, limits, try_load};

async fn recorded(name: &str) -> (gk_wasm::WasmPlugin, Arc<RecordingHost>) {
    recorded_with(name, RecordingHost::default()).await
}

async fn recorded_with(
    name: &str,
    host: RecordingHost,
) -> (gk_wasm::WasmPlugin, Arc<RecordingHost>) {
    let plugin = try_load(name, limits(2_000, 16)).await.unwrap();
    let host = Arc::new(host);
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

const QUERY: &[u8] = br#"{"query":"SELECT 1","args":[]}"#;

/// Whether each call that reached the host came as an inline attempt.
fn attempts(host: &RecordingHost) -> Vec<bool> {
    host.reached().iter().map(|r| r.inline).collect()
}

#[tokio::test]
async fn a_read_the_host_answers_inline_stays_on_the_callers_thread() {
    let host = RecordingHost::default().inline_db_query(InlineAnswer::Answered);
    let (plugin, host) = recorded_with("proxy", host).await;
    for _ in 0..3 {
        let reply = plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
        assert_eq!(reply, b"[]");
    }
    assert_eq!(attempts(&host), [true, true, true]);
}

#[tokio::test]
async fn a_read_the_host_does_not_take_inline_reaches_it_once_from_a_worker() {
    let (plugin, host) = recorded("proxy").await;
    for _ in 0..2 {
        plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
    }
    assert_eq!(attempts(&host), [false, false]);
}

#[tokio::test]
async fn a_lasting_refusal_sends_the_function_to_the_workers() {
    let host = RecordingHost::default().inline_db_query(InlineAnswer::Refused { lasting: true });
    let (plugin, host) = recorded_with("proxy", host).await;
    for _ in 0..3 {
        let reply = plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
        assert_eq!(reply, b"[]", "the worker's answer, not the refusal");
    }
    // Refused inline once, then run on a worker; the next calls go there directly.
    assert_eq!(attempts(&host), [true, false, false, false]);
}

#[tokio::test]
async fn a_passing_refusal_is_tried_inline_again_eight_times_then_after_a_cool_down() {
    let host = RecordingHost::default().inline_db_query(InlineAnswer::Refused { lasting: false });
    let (plugin, host) = recorded_with("proxy", host).await;
    for _ in 0..9 {
        plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
    }
    let mut expected = [true, false].repeat(8);
    expected.push(false);
    assert_eq!(attempts(&host), expected);
    // After 256 calls sent to the workers directly, the function is tried inline again.
    for _ in 9..(8 + 256 + 1) {
        plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
    }
    let attempts = attempts(&host);
    assert_eq!(attempts.len(), 16 + 256 + 2);
    assert!(!attempts[16..16 + 256].contains(&true));
    assert_eq!(attempts[16 + 256..], [true, false]);
}

#[tokio::test]
async fn a_read_followed_by_long_computing_runs_again_on_a_worker() {
    let host = RecordingHost::default().inline_db_query(InlineAnswer::Answered);
    let (plugin, host) = recorded_with("read_then_spin", host).await;
    for _ in 0..2 {
        let reply = plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
        assert_eq!(reply, b"[]");
    }
    // The inline slice ran out after the read: the call ran again on a worker, and the
    // function goes there directly from then on.
    assert_eq!(attempts(&host), [true, false, false]);
}

/// A call that found every permit taken waits for one and then still runs on its caller's
/// thread (when the waiting happened on the workers' path, calls queued behind a slow one all
/// went to the workers, and every later call with them).
#[tokio::test]
async fn a_call_that_waited_for_its_permit_still_runs_inline() {
    let runtime = crate::support::single_worker_runtime();
    let plugin = runtime
        .load(crate::support::fixture("proxy"), limits(300, 16))
        .await
        .unwrap();
    let host = Arc::new(
        RecordingHost::default()
            .inline_db_query(InlineAnswer::Answered)
            .holding_cache_key("slow"),
    );
    plugin
        .init(&CallContext::for_plugin("proxy"), host.clone())
        .await
        .unwrap();
    let plugin = Arc::new(plugin);
    // The one permit is held by a call on a worker whose host call never answers (until its
    // deadline, 300 ms).
    let slow = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.call(&ctx(), "cache_get", br#"{"key":"slow"}"#).await }
    });
    while host.count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The next call gets time enough to wait for the permit.
    plugin.set_limits(limits(5_000, 16));
    let reply = plugin.call(&ctx(), "db_query", QUERY).await.unwrap();
    assert_eq!(reply, b"[]");
    assert!(
        slow.await.unwrap().is_err(),
        "the slow call ran out of time"
    );
    assert_eq!(attempts(&host), [false, true], "{:?}", host.reached());
}

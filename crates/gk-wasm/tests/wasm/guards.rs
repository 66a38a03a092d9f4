//! Issue #13: a guest cannot outrun its limits through the host's imports, nor re-enter the
//! host without end.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gk_sdk::{CallContext, Plugin, PluginError};
use gk_wasm::{WasmConfig, WasmPlugin, WasmRuntime};

use crate::support::{MemoryHost, ctx, fixture, limits, load, runtime};

/// One worker per plugin: a call that follows a stuck guest cannot run until it stops. Payloads
/// are capped at 4 KiB.
fn single_worker() -> &'static WasmRuntime {
    static RUNTIME: OnceLock<WasmRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        WasmRuntime::new(WasmConfig {
            pool_size: 1,
            max_payload_bytes: 4096,
            points_per_second: Some(runtime().points_per_second()),
            ..WasmConfig::default()
        })
        .expect("runtime")
    })
}

async fn load_single(name: &str, timeout_ms: u64) -> (WasmPlugin, Arc<MemoryHost>) {
    let plugin = single_worker()
        .load(fixture(name), limits(timeout_ms, 16))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let host = Arc::new(MemoryHost::default());
    plugin
        .init(&CallContext::for_plugin(name), host.clone())
        .await
        .unwrap();
    (plugin, host)
}

/// The deadline stopped the call (checked by every import; the fuel, host time charged too,
/// is only a backstop of ten times the timeout), and the error says so.
fn stopped_by_a_limit(error: &PluginError) -> bool {
    matches!(
        error,
        PluginError::Timeout { operation, after }
            if operation.starts_with("call (stopped by its deadline after ")
                && *after == Duration::from_millis(300)
    )
}

/// How many times the guest reached the test host (log lines and host calls).
fn progress(host: &MemoryHost) -> usize {
    host.logs.lock().unwrap().len() + host.contexts.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_looping_over_any_import_is_stopped_and_its_worker_freed() {
    for (function, import) in [
        ("l", "gk.log"),
        ("c", "gk.clock_ms"),
        ("e", "gk.host_error"),
        ("f", "gk.fail"),
        ("h", "gk.host_call"),
        ("t", "wasi clock_time_get"),
        ("y", "wasi sched_yield"),
        ("w", "wasi fd_write"),
        ("r", "wasi random_get"),
    ] {
        let (plugin, host) = load_single("import_loop", 300).await;
        let error = plugin.call(&ctx(), function, b"").await.unwrap_err();
        assert!(stopped_by_a_limit(&error), "{import}: {error:?}");
        // The plugin's only worker takes the next call: the looping guest has stopped.
        assert_eq!(
            plugin.call(&ctx(), "o", b"next").await,
            Ok(b"next".to_vec()),
            "{import}: the worker is still busy with the looping guest"
        );
        // Guests that reach the test host stopped reaching it.
        let seen = progress(&host);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            progress(&host),
            seen,
            "{import}: the guest is still running"
        );
        if ["l", "h", "w"].contains(&function) {
            assert!(seen > 0, "{import}: the loop never reached the host");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_whose_caller_went_away_stops_at_its_next_import() {
    // A long deadline: only the caller giving up can stop the guest early.
    let (plugin, host) = load_single("import_loop", 30_000).await;
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), plugin.call(&ctx(), "l", b"")).await;
    assert!(gave_up.is_err(), "the endless loop answered: {gave_up:?}");
    // The next call waits for the only worker, up to its own 30 s deadline; a generous bound
    // far below that tells a stopped guest from one that ran on until its fuel was gone.
    let next = tokio::time::timeout(Duration::from_secs(10), plugin.call(&ctx(), "o", b"next"))
        .await
        .expect("the abandoned guest still holds the worker");
    assert_eq!(next, Ok(b"next".to_vec()));
    let seen = progress(&host);
    assert!(seen > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        progress(&host),
        seen,
        "the abandoned guest is still logging"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_called_by_a_start_function_are_refused() {
    let error = runtime()
        .load(fixture("start_imports"), limits(300, 16))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "the guest called `clock_ms` outside gk_register and gk_call (from its start function)"
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn re_entry_from_gk_malloc_and_gk_free_is_refused() {
    let (plugin, host) = load("reentrant", limits(2_000, 16)).await;
    host.cache.lock().unwrap().insert("k".into(), b"v".to_vec());
    assert_eq!(
        plugin.call(&ctx(), "n", b"").await.unwrap(),
        br#"{"value":"dg==","found":true}"#,
        "a guest that does not re-enter works"
    );
    for (function, expected) in [
        (
            "m",
            "re-entry refused: the guest called `host_call` from inside `gk_malloc`, which the host was running to place a host reply",
        ),
        (
            "e",
            "re-entry refused: the guest called `host_error` from inside `gk_malloc`, which the host was running to place a host reply",
        ),
        (
            "f",
            "re-entry refused: the guest called `host_call` from inside `gk_free`, which the host was running to free a buffer",
        ),
    ] {
        let error = plugin.call(&ctx(), function, b"").await.unwrap_err();
        assert_eq!(error, PluginError::Protocol(expected.into()), "{function}");
        // The instance was thrown away; a fresh one takes the next call.
        assert_eq!(
            plugin.call(&ctx(), "n", b"").await.unwrap(),
            br#"{"value":"dg==","found":true}"#
        );
    }
    // The host saw the four normal calls and the first host_call of "m"; no re-entrant one.
    assert_eq!(host.contexts.lock().unwrap().len(), 4 + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_lengths_are_capped_before_anything_is_copied() {
    let (plugin, host) = load_single("import_loop", 2_000).await;
    plugin.call(&ctx(), "L", b"").await.unwrap();
    assert_eq!(
        host.logs.lock().unwrap().last().unwrap().2,
        "(unreadable log message: log message of 100000 bytes is larger than the 65536 bytes allowed)"
    );
    // host_call arguments and replies above the runtime's payload cap (4 KiB here) are refused
    // with the sizes named; the guest sees the error through host_error.
    let (proxy, host) = load_single("proxy", 2_000).await;
    let big = format!(r#"{{"key":"{}"}}"#, "k".repeat(5000));
    let reply = proxy
        .call(&ctx(), "cache_get", big.as_bytes())
        .await
        .unwrap();
    let error: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(error["kind"], "invalid_input");
    assert_eq!(
        error["message"],
        "invalid input: host_call arguments of 5010 bytes is larger than the 4096 bytes allowed"
    );
    assert!(
        host.contexts.lock().unwrap().is_empty(),
        "the host saw them"
    );
    host.cache
        .lock()
        .unwrap()
        .insert("big".into(), vec![b'x'; 5000]);
    let reply = proxy
        .call(&ctx(), "cache_get", br#"{"key":"big"}"#)
        .await
        .unwrap();
    let error: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(error["kind"], "invalid_input", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains(
            "the reply of cache_get has 6693 bytes, more than the 4096 a guest may receive"
        ),
        "{error}"
    );
}

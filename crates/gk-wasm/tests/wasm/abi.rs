//! The ABI v1 contract: registration, calls, host calls, extensions, WASI.

use std::sync::Arc;
use std::time::Duration;

use gk_sdk::{CallContext, LogLevel, Plugin, PluginError};
use serde_json::{Value, json};

use crate::support::{ctx, limits, load};

#[tokio::test(flavor = "multi_thread")]
async fn registers_and_echoes() {
    let (plugin, _) = load("echo", limits(2_000, 16)).await;
    let reg = plugin.register().await.unwrap();
    assert_eq!((reg.name.as_str(), reg.version.as_str()), ("echo", "1.0.0"));
    assert_eq!(reg.routes[0].path, "/api/plugins/echo");
    assert_eq!(
        plugin.call(&ctx(), "echo", br#"{"a":1}"#).await.unwrap(),
        br#"{"a":1}"#
    );
    assert_eq!(
        plugin.call(&ctx(), "echo", b"").await.unwrap(),
        b"",
        "empty args are passed as 0, 0"
    );
    assert_eq!(
        plugin.call(&ctx(), "nothing", b"x").await.unwrap(),
        b"",
        "a packed 0 is no result"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_calls_go_through_the_given_host() {
    let (plugin, host) = load("proxy", limits(2_000, 16)).await;
    let caller = CallContext {
        plugin: "proxy".into(),
        caller: Some("stats".into()),
        depth: 2,
        language: Some("de".into()),
    };
    let reply = plugin
        .call(
            &caller,
            "cache_set",
            br#"{"key":"k","value":"aGk=","ttl":5}"#,
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reply).unwrap(),
        json!({"ok": true})
    );
    assert_eq!(host.cache.lock().unwrap()["k"], b"hi");
    let reply = plugin
        .call(&ctx(), "cache_get", br#"{"key":"k"}"#)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reply).unwrap(),
        json!({"value": "aGk=", "found": true})
    );
    let rows = plugin
        .call(&ctx(), "db_query", br#"{"query":"SELECT ?","args":[7]}"#)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&rows).unwrap(),
        json!([{"query": "SELECT ?", "args": [7]}])
    );
    assert_eq!(
        host.contexts.lock().unwrap()[0],
        caller,
        "the call's context reaches the host"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_errors_reach_the_guest_through_host_error() {
    let (plugin, _) = load("proxy", limits(2_000, 16)).await;
    let reply = plugin
        .call(&ctx(), "http_request", br#"{"url":"https://x.com"}"#)
        .await
        .unwrap();
    let error: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(error["kind"], "permission_denied");
    assert_eq!(error["permission"], "http");
    let reply = plugin
        .call(&ctx(), "no_such_function", b"{}")
        .await
        .unwrap();
    let error: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(error["kind"], "not_found");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown host function `no_such_function`"),
        "{error}"
    );
    let reply = plugin
        .call(&ctx(), "cache_get", b"{not json")
        .await
        .unwrap();
    let error: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(error["kind"], "invalid_input");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_host_call_pointers_fail_that_host_call_only() {
    let (plugin, _) = load("proxy", limits(2_000, 16)).await;
    let reply = plugin.call(&ctx(), "~", b"").await.unwrap();
    let error: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(error["kind"], "invalid_input");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("lies outside guest memory"),
        "{error}"
    );
    // The instance is still fine.
    assert!(
        plugin
            .call(&ctx(), "cache_get", br#"{"key":"x"}"#)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_failures_and_logs() {
    let (plugin, host) = load("proxy", limits(2_000, 16)).await;
    let err = plugin.call(&ctx(), "!", b"").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::failed("invalid_range", "range must be 7d")
    );
    plugin.call(&ctx(), "#", b"disk almost full").await.unwrap();
    assert_eq!(
        host.logs.lock().unwrap().last().unwrap(),
        &(
            "tester".to_owned(),
            LogLevel::Warn,
            "disk almost full".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_shim_for_tinygo_guests() {
    let (plugin, host) = load("wasi", limits(2_000, 16)).await;
    // errno 0 * 1000 + 16 bytes written
    assert_eq!(plugin.call(&ctx(), "w", b"").await.unwrap().len(), 16);
    assert_eq!(
        host.logs.lock().unwrap().last().unwrap().2,
        "hello from wasi"
    );
    assert_eq!(
        plugin.call(&ctx(), "o", b"").await.unwrap().len(),
        52 * 100 + 8,
        "path_open ENOSYS, fd_read EBADF"
    );
    let a = plugin.call(&ctx(), "r", b"").await.unwrap();
    let b = plugin.call(&ctx(), "r", b"").await.unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b, "random_get gives random bytes");
    let err = plugin.call(&ctx(), "x", b"").await.unwrap_err();
    assert_eq!(
        err,
        PluginError::Failed {
            code: None,
            message: "the guest called proc_exit(3)".into()
        }
    );
    assert_eq!(
        plugin.call(&ctx(), "w", b"").await.unwrap().len(),
        16,
        "a fresh instance takes the next call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_give_uncrossed_results() {
    let (plugin, _) = load("echo", limits(5_000, 16)).await;
    let plugin = Arc::new(plugin);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                let args = format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(i * 37));
                (
                    args.clone(),
                    plugin.call(&ctx(), "echo", args.as_bytes()).await,
                )
            })
        })
        .collect();
    for task in tasks {
        let (args, result) = task.await.unwrap();
        assert_eq!(result.unwrap(), args.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_refuses_further_calls() {
    let (plugin, _) = load("echo", limits(2_000, 16)).await;
    plugin.shutdown(&ctx()).await.unwrap();
    let err = plugin.call(&ctx(), "echo", b"{}").await.unwrap_err();
    assert!(matches!(err, PluginError::Unavailable(_)), "{err:?}");
    assert!(plugin.health().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_modules_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("gk-wasm-cache-{}", std::process::id()));
    let config = gk_wasm::WasmConfig {
        cache_dir: Some(dir.clone()),
        pool_size: 1,
        points_per_second: Some(1_000_000_000),
        ..Default::default()
    };
    let wasm = crate::support::fixture("echo");
    let first = gk_wasm::WasmRuntime::new(config.clone()).unwrap();
    first.compile(&wasm).unwrap();
    assert!(first.is_cached(&wasm));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].contains("-wasmer7.4"), "{files:?}");
    // A new runtime (a restart) loads it from disk and runs it.
    let second = gk_wasm::WasmRuntime::new(config).unwrap();
    let plugin = second.load(wasm, limits(2_000, 16)).await.unwrap();
    plugin
        .init(&ctx(), Arc::new(crate::support::MemoryHost::default()))
        .await
        .unwrap();
    assert_eq!(
        plugin.call(&ctx(), "echo", b"cached").await.unwrap(),
        b"cached"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_stats_guest_loads_with_only_the_enabled_proposals() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/stats/stats.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; `cargo xtask build-plugins` builds it",
            path.display()
        )
    });
    let plugin = crate::support::runtime()
        .load(wasm, limits(5_000, 64))
        .await
        .unwrap();
    assert_eq!(plugin.register().await.unwrap().name, "stats");
}

//! Issue #20: a CPU-bound call runs until its deadline and is stopped soon after it, whatever
//! its instruction mix; the error and the plugin's statistics say which limit stopped it; a
//! changed policy applies to the next call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use gk_sdk::{LimitStops, Plugin, PluginError, ResourcePolicy};
use gk_wasm::{WasmConfig, WasmPlugin, WasmRuntime};

use crate::support::{MemoryHost, ctx, fixture, limits, load, single_worker_runtime};

/// The instruction mixes of `mixes.wat`: the function and what it does.
const MIXES: [(&str, &str); 4] = [
    ("a", "tight arithmetic loop"),
    ("m", "memory-heavy loop"),
    ("r", "deep call chains"),
    ("i", "loop over host imports"),
];

/// A plugin of `mixes.wat` with one worker (so the next call shows when the guest stopped),
/// fuel at the shared runtime's calibrated rate.
async fn single_worker(timeout_ms: u64, memory_mb: u64) -> WasmPlugin {
    let runtime = single_worker_runtime();
    let plugin = runtime
        .load(fixture("mixes"), limits(timeout_ms, memory_mb))
        .await
        .unwrap();
    plugin
        .init(&ctx(), Arc::new(MemoryHost::default()))
        .await
        .unwrap();
    plugin
}

/// Whether `error` says the deadline of `timeout_ms` stopped the call, and how long it ran.
fn stopped_by_deadline(error: &PluginError, timeout_ms: u64) -> bool {
    matches!(
        error,
        PluginError::Timeout { operation, after }
            if operation.starts_with("call (stopped by its deadline after ")
                && *after == Duration::from_millis(timeout_ms)
    )
}

/// Runs `function` until it is stopped, then returns the error and when the guest stopped, as
/// a multiple of the deadline: when the plugin's only worker answered the next call.
async fn stop(plugin: &WasmPlugin, function: &str, timeout_ms: u64) -> (PluginError, f64) {
    let start = Instant::now();
    let error = plugin.call(&ctx(), function, b"").await.unwrap_err();
    assert_eq!(plugin.call(&ctx(), "o", b"x").await, Ok(b"x".to_vec()));
    let stopped = start.elapsed().as_secs_f64() / (timeout_ms as f64 / 1000.0);
    (error, stopped)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instruction_mix_is_stopped_between_1_0_and_1_5_times_its_deadline() {
    // All eight at once (about 3 s in all): on a 2-core machine that is also the loaded case.
    let cases = [1_000u64, 3_000]
        .into_iter()
        .flat_map(|timeout_ms| MIXES.map(|(function, mix)| (function, mix, timeout_ms)));
    let runs = cases.map(|(function, mix, timeout_ms)| async move {
        let plugin = single_worker(timeout_ms, 32).await;
        let (error, stopped) = stop(&plugin, function, timeout_ms).await;
        (mix, timeout_ms, error, stopped, plugin.limit_stops())
    });
    let mut failures = Vec::new();
    for (mix, timeout_ms, error, stopped, stops) in join_all(runs).await {
        let seen = format!("{mix}, {timeout_ms} ms: stopped at {stopped:.3}x, {error}");
        if !(stopped_by_deadline(&error, timeout_ms) && (1.0..=1.5).contains(&stopped)) {
            failures.push(seen);
        } else if stops
            != (LimitStops {
                deadline: 1,
                ..LimitStops::default()
            })
        {
            failures.push(format!("{seen}: counted {stops:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fuel_stops_a_call_only_as_a_backstop_and_the_error_says_so() {
    // A fuel rate far below the machine's: the fuel runs out long before the deadline.
    let runtime = WasmRuntime::new(WasmConfig {
        pool_size: 1,
        points_per_second: Some(1_000),
        ..WasmConfig::default()
    })
    .unwrap();
    let plugin = runtime
        .load(fixture("mixes"), limits(5_000, 32))
        .await
        .unwrap();
    let start = Instant::now();
    let error = plugin.call(&ctx(), "a", b"").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{error}");
    assert!(
        matches!(
            &error,
            PluginError::Timeout { operation, after }
                if operation.starts_with("call (stopped by its fuel after ")
                    && *after == Duration::from_secs(5)
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().ends_with(" ms) timed out after 5000 ms"),
        "{error}"
    );
    assert_eq!(
        plugin.limit_stops(),
        LimitStops {
            fuel: 1,
            ..LimitStops::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_traps_at_its_memory_cap_is_stopped_by_the_memory_limit() {
    let plugin = single_worker(5_000, 4).await;
    let error = plugin.call(&ctx(), "g", b"").await.unwrap_err();
    let PluginError::Trap(message) = &error else {
        panic!("{error:?}");
    };
    assert!(
        message.starts_with("call stopped by its memory limit after ")
            && message
                .contains("with its memory at its cap of 64 pages (4 MiB, the plugin's memory_mb)"),
        "{message}"
    );
    assert_eq!(
        plugin.limit_stops(),
        LimitStops {
            memory: 1,
            ..LimitStops::default()
        }
    );
    // Other traps are not memory stops.
    let (echo, _) = load("echo", limits(5_000, 16)).await;
    assert_eq!(
        echo.call(&ctx(), "trap", b"").await,
        Err(PluginError::Trap("unreachable".into()))
    );
    assert_eq!(echo.limit_stops(), LimitStops::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_applies_to_the_next_call_of_a_loaded_plugin() {
    // "grow" grows by 16 pages until it cannot: 113 pages under 8 MiB, 241 under 16 MiB.
    let (plugin, _) = load("echo", limits(5_000, 8)).await;
    assert_eq!(plugin.call(&ctx(), "grow", b"").await.unwrap().len(), 113);
    let mut policy = ResourcePolicy::default_for("echo");
    policy.call_timeout = Duration::from_millis(300);
    policy.memory_mb = 16;
    assert!(plugin.apply_limits(&policy), "applied live");
    assert_eq!(plugin.limits(), gk_wasm::WasmLimits::from_policy(&policy));
    // The next call has the new deadline.
    let start = Instant::now();
    let error = plugin.call(&ctx(), "spin", b"").await.unwrap_err();
    let waited = start.elapsed();
    assert!(stopped_by_deadline(&error, 300), "{error:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_500),
        "waited {waited:?}"
    );
    // The next instance has the new memory cap; no call failed on the way.
    for _ in 0..8 {
        assert_eq!(plugin.call(&ctx(), "grow", b"").await.unwrap().len(), 241);
    }
}

//! `cargo bench -p gk-wasm`: load and call costs of the WASM runtime, printed per operation.
//!
//! Goals on a 2-core machine: a whole `Plugin::call` with a small JSON argument under 2 µs; a
//! `host_call` round trip to a no-op host under 1 µs; a cached module ready in under 5 ms; a
//! CPU-bound guest stopped between 1.0 and 1.2 times its call timeout, whatever its
//! instruction mix, idle or loaded (`stops.rs`), the checks that stop it costing an ordinary
//! call a small part of the 2 µs.

mod fixtures;
mod stops;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_sdk::{CallContext, NoopHost, Plugin};
use gk_wasm::{WasmConfig, WasmLimits, WasmRuntime};

/// Prints one figure, per operation.
pub(crate) fn report(name: &str, per_op: Duration) {
    let nanos = per_op.as_nanos();
    if nanos >= 10_000 {
        println!("{name:<44} {:>12.1} µs/op", nanos as f64 / 1000.0);
    } else {
        println!("{name:<44} {nanos:>12} ns/op");
    }
}

/// Median time per operation over 5 rounds.
async fn measure<F, Fut>(iterations: u32, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..iterations / 10 + 1 {
        op().await;
    }
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            op().await;
        }
        rounds.push(start.elapsed() / iterations);
    }
    rounds.sort();
    rounds[2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let limits = WasmLimits {
        memory_bytes: 64 << 20,
        call_timeout: Duration::from_secs(30),
        init_timeout: Duration::from_secs(30),
    };
    println!("gk-wasm benchmark (wasmer 7.4, cranelift)");

    let stats = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/stats/stats.wasm");
    match std::fs::read(&stats) {
        Ok(wasm) => {
            let cache = tempfile_dir();
            let config = WasmConfig {
                cache_dir: Some(cache.clone()),
                ..WasmConfig::default()
            };
            let cold = WasmRuntime::new(config.clone()).unwrap();
            let start = Instant::now();
            cold.compile(&wasm).unwrap();
            report(
                &format!("cold load: compile Stats ({} KiB)", wasm.len() / 1024),
                start.elapsed(),
            );
            let warm = WasmRuntime::new(config).unwrap();
            let start = Instant::now();
            warm.compile(&wasm).unwrap();
            report("warm load: Stats from the disk cache", start.elapsed());
            let start = Instant::now();
            let plugin = warm.load(wasm.clone(), limits).await.unwrap();
            report("cached module loaded, registered, ready", start.elapsed());
            drop(plugin);
            let _ = std::fs::remove_dir_all(cache);
        }
        Err(_) => println!(
            "(plugins/stats/stats.wasm not built: run `cargo xtask build-plugins` for the load figures)"
        ),
    }

    let runtime = WasmRuntime::new(WasmConfig::default()).unwrap();
    let wasm = wat::parse_str(fixtures::ECHO).unwrap();
    let plugin = Arc::new(runtime.load(wasm, limits).await.unwrap());
    plugin
        .init(&CallContext::for_plugin("bench"), Arc::new(NoopHost))
        .await
        .unwrap();
    let ctx = CallContext::for_plugin("bench");

    let small = br#"{"id":42}"#.to_vec();
    let per_call = measure(20_000, || async {
        plugin.call(&ctx, "echo", &small).await.unwrap();
    })
    .await;
    report("Plugin::call, small JSON argument", per_call);
    let kib = vec![b'x'; 1024];
    report(
        "Plugin::call, 1 KiB argument",
        measure(20_000, || async {
            plugin.call(&ctx, "echo", &kib).await.unwrap();
        })
        .await,
    );
    let big = vec![b'x'; 64 * 1024];
    report(
        "Plugin::call, 64 KiB argument",
        measure(2_000, || async {
            plugin.call(&ctx, "echo", &big).await.unwrap();
        })
        .await,
    );
    let thousand = measure(200, || async {
        plugin.call(&ctx, "host", b"").await.unwrap();
    })
    .await;
    report(
        "host_call round trip to a no-op host",
        thousand.saturating_sub(per_call) / 1000,
    );

    let concurrent = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                let ctx = CallContext::for_plugin("bench");
                for _ in 0..5_000 {
                    plugin.call(&ctx, "echo", br#"{"id":42}"#).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "{:<44} {:>12.0} calls/s",
        "throughput, 8 tasks calling one plugin",
        40_000.0 / concurrent.elapsed().as_secs_f64()
    );
    println!("fuel rate: {} points/s", runtime.points_per_second());

    compute(&runtime, limits).await;
    stops::check_cost();
    stops::stop_accuracy(runtime.points_per_second()).await;
}

/// Guest code with loops and calls: what the deadline checks at loop headers and function
/// entries (and metering) cost.
async fn compute(runtime: &WasmRuntime, limits: WasmLimits) {
    let wasm = wat::parse_str(fixtures::COMPUTE).unwrap();
    let plugin = runtime.load(wasm, limits).await.unwrap();
    let ctx = CallContext::for_plugin("compute");
    let per_loop = measure(20, || async {
        plugin.call(&ctx, "loop", b"").await.unwrap();
    })
    .await;
    report("guest loop of 10M iterations", per_loop);
    let fib = measure(20, || async {
        plugin.call(&ctx, "fib", b"").await.unwrap();
    })
    .await;
    report("guest fib(27), 635,621 function calls", fib);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gk-wasm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

//! How close to its deadline a CPU-bound guest stops, for each instruction mix of
//! `tests/fixtures/mixes.wat`, on an idle machine and with every core kept busy; and what the
//! deadline checks cost an ordinary call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gk_sdk::{CallContext, NoopHost, Plugin};
use gk_wasm::{WasmConfig, WasmLimits, WasmRuntime};

use crate::report;

const MIXES: &str = include_str!("../../tests/fixtures/mixes.wat");

/// The mixes: function and name.
const KINDS: [(&str, &str); 4] = [
    ("a", "arithmetic loop"),
    ("m", "memory-heavy loop"),
    ("r", "deep call chains"),
    ("i", "loop over host imports"),
];

/// What the interrupt checks add to an ordinary call (guest code and host side).
pub(crate) fn check_cost() {
    match gk_wasm::interrupt_overhead(20_000) {
        Ok(cost) => {
            report(
                "ordinary call's guest code, with checks",
                cost.guest_with_checks,
            );
            report(
                "ordinary call's guest code, without checks",
                cost.guest_without_checks,
            );
            report("deadline signal, host side", cost.host);
            report(
                "interruption checks per call (goal ≪ 2 µs)",
                cost.per_call(),
            );
        }
        Err(error) => println!("interrupt overhead not measured: {error}"),
    }
}

/// Threads that keep every core busy until dropped.
struct Load(Arc<AtomicBool>);

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        for _ in 0..cores {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            });
        }
        Self(stop)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// For each mix and deadline, idle and loaded: when the guest stopped (when the plugin's only
/// worker answered the next call) as a multiple of the deadline, and the limits that stopped
/// the calls.
pub(crate) async fn stop_accuracy(points_per_second: u64) {
    let runtime = WasmRuntime::new(WasmConfig {
        pool_size: 1,
        points_per_second: Some(points_per_second),
        ..WasmConfig::default()
    })
    .unwrap();
    let wasm = wat::parse_str(MIXES).unwrap();
    for (timeout_ms, rounds) in [(100u64, 5usize), (1_000, 3)] {
        for loaded in [false, true] {
            for (function, mix) in KINDS {
                let timeout = Duration::from_millis(timeout_ms);
                let limits = WasmLimits {
                    memory_bytes: 32 << 20,
                    call_timeout: timeout,
                    init_timeout: Duration::from_secs(5),
                };
                let plugin = runtime.load(wasm.clone(), limits).await.unwrap();
                let ctx = CallContext::for_plugin("mixes");
                plugin.init(&ctx, Arc::new(NoopHost)).await.unwrap();
                let _load = loaded.then(Load::start);
                let mut stopped = Vec::new();
                for _ in 0..rounds {
                    let start = Instant::now();
                    assert!(plugin.call(&ctx, function, b"").await.is_err());
                    plugin.call(&ctx, "o", b"").await.unwrap();
                    stopped.push(start.elapsed().as_secs_f64() / timeout.as_secs_f64());
                }
                stopped.sort_by(f64::total_cmp);
                let stops = plugin.limit_stops();
                println!(
                    "{:<44} min {:.3} median {:.3} max {:.3}  (deadline {}, fuel {}, memory {})",
                    format!(
                        "{mix}, {timeout_ms} ms, {} (×timeout)",
                        if loaded { "loaded" } else { "idle" }
                    ),
                    stopped[0],
                    stopped[rounds / 2],
                    stopped[rounds - 1],
                    stops.deadline,
                    stops.fuel,
                    stops.memory
                );
            }
        }
    }
}

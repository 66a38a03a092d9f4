//! `cargo bench -p gk-grpc` (after `cargo build --release -p hello-grpc`): the costs of a plugin
//! process, printed per operation, each against a bare tonic parent and child over a Unix socket
//! built from the same proto (`reference`), measured in the same run: spawn to first answer,
//! empty call p50, one host callback p50, throughput with 64 calls in flight; then 20 plugins
//! running at once: RSS and file descriptors per plugin.
//!
//! Goals (issue #16): empty call and one callback within 1.1× of the reference, throughput
//! ≥ 0.9× of it, spawn to first answer ≤ 5 ms.

mod reference;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_grpc::{GrpcLimits, GrpcPlugin, GrpcRuntime};
use gk_sdk::{CallContext, NoopHost, Plugin};

/// Spawns measured per kind (the median is printed).
const SPAWNS: usize = 9;

/// MiB the host holds (written, so resident) for the second spawn measurement.
const BALLAST_MIB: usize = 512;
/// gRPC plugins running at once for the per-plugin costs.
const MANY: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(socket) = std::env::var(reference::CHILD_SOCKET) {
        runtime.block_on(reference::child_main(&socket));
        return;
    }
    runtime.block_on(bench());
}

fn limits() -> GrpcLimits {
    GrpcLimits {
        call_timeout: Duration::from_secs(10),
        init_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(2),
        network: false,
        memory_mb: 0,
        health_interval: Duration::from_secs(60),
    }
}

/// Starts hello-grpc, initialises it and waits for its first answer.
async fn start(run: &Path, binary: &Path) -> (GrpcPlugin, Duration) {
    let ctx = CallContext::for_plugin("hello-grpc");
    let start = Instant::now();
    let plugin = GrpcRuntime::new(run)
        .start("hello-grpc", binary, run, limits())
        .await
        .unwrap();
    plugin.init(&ctx, Arc::new(NoopHost)).await.unwrap();
    plugin.call(&ctx, "echo", b"{}").await.unwrap();
    (plugin, start.elapsed())
}

/// Medians of [`SPAWNS`] starts to first answer, ours and a bare tonic child's (reference
/// sockets numbered from `first`); one more of each before them warms the page cache.
async fn spawns(
    run: &Path,
    binary: &Path,
    host_socket: &Path,
    first: usize,
) -> (Duration, Duration) {
    let ctx = CallContext::for_plugin("hello-grpc");
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for n in 0..=SPAWNS {
        let (plugin, took) = start(run, binary).await;
        let (child, bare_took) = reference::spawn(run, host_socket, first + n).await;
        if n > 0 {
            ours.push(took);
            bare.push(bare_took);
        }
        plugin.shutdown(&ctx).await.unwrap();
        drop(child);
    }
    (median(ours), median(bare))
}

async fn sequential(plugin: &GrpcPlugin, function: &str, payload: &[u8]) -> (Duration, Duration) {
    let ctx = CallContext::for_plugin("hello-grpc");
    for _ in 0..200 {
        plugin.call(&ctx, function, payload).await.unwrap();
    }
    let mut samples = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let t = Instant::now();
        plugin.call(&ctx, function, payload).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn throughput(plugin: &Arc<GrpcPlugin>, in_flight: usize, total: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                let ctx = CallContext::for_plugin("hello-grpc");
                for _ in 0..total / in_flight {
                    plugin.call(&ctx, "echo", b"{}").await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (total / in_flight * in_flight) as f64 / start.elapsed().as_secs_f64()
}

fn line(name: &str, ours: f64, reference: f64, unit: &str, goal: &str) {
    println!(
        "{name:<40} {ours:>9.1} {unit:<7} bare tonic {reference:>9.1} {unit:<7} {:>5.2}x  ({goal})",
        ours / reference
    );
}

async fn bench() {
    let exe = std::env::current_exe().unwrap();
    let binary: PathBuf = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("hello-grpc");
    if !binary.is_file() {
        println!(
            "{} is missing: run `cargo build --release -p hello-grpc` first",
            binary.display()
        );
        return;
    }
    let run = std::env::temp_dir().join(format!("gk-grpc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run).unwrap();
    let ctx = CallContext::for_plugin("hello-grpc");
    println!("gk-grpc benchmark (hello-grpc, release) against a bare tonic parent/child");

    // Spawn to first answer, each kind SPAWNS times (the first of each warms the page cache);
    // then again with the host holding a large heap, as a server with WASM modules and caches
    // does (a fork-like start copies the host's page tables: milliseconds for a large host).
    let host_socket = reference::serve_host(&run);
    let (ours, bare) = spawns(&run, &binary, &host_socket, 0).await;
    line(
        &format!("spawn to first answer (median of {SPAWNS})"),
        ours.as_secs_f64() * 1e3,
        bare.as_secs_f64() * 1e3,
        "ms",
        "goal <= 5 ms",
    );
    let ballast = vec![1u8; BALLAST_MIB << 20];
    let (ours, bare) = spawns(&run, &binary, &host_socket, SPAWNS + 1).await;
    line(
        &format!("  the host holding {BALLAST_MIB} MiB more"),
        ours.as_secs_f64() * 1e3,
        bare.as_secs_f64() * 1e3,
        "ms",
        "goal <= 5 ms",
    );
    drop(std::hint::black_box(ballast));

    let (plugin, _) = start(&run, &binary).await;
    let (child, _) = reference::spawn(&run, &host_socket, 2 * SPAWNS + 2).await;
    let (empty, empty_p99) = sequential(&plugin, "echo", b"{}").await;
    let bare_empty = reference::p50(&child, "echo", 3000).await;
    line(
        "empty call p50",
        micros(empty),
        micros(bare_empty),
        "us",
        "goal <= 1.1x",
    );
    let (callback, callback_p99) = sequential(&plugin, "ping", b"").await;
    let bare_callback = reference::p50(&child, "ping", 3000).await;
    line(
        "one host callback p50",
        micros(callback),
        micros(bare_callback),
        "us",
        "goal <= 1.1x",
    );
    println!(
        "{:<40} empty p99 {:.1} us, callback p99 {:.1} us",
        "",
        micros(empty_p99),
        micros(callback_p99)
    );
    let payload = format!("\"{}\"", "x".repeat(16 * 1024 - 2)).into_bytes();
    let (big, _) = sequential(&plugin, "echo", &payload).await;
    println!("{:<40} {:>9.1} us", "16 KiB payload p50", micros(big));

    let plugin = Arc::new(plugin);
    let total = 20_000;
    let ours = throughput(&plugin, 64, total).await;
    let bare = reference::throughput(&child, 64, total).await;
    line(
        "throughput, 64 calls in flight",
        ours / 1e3,
        bare / 1e3,
        "k/s",
        "goal >= 0.9x",
    );
    plugin.shutdown(&ctx).await.unwrap();
    drop(child);

    many(&run, &binary).await;
    let _ = std::fs::remove_dir_all(run);
}

/// Starts MANY plugins and prints their memory and descriptors per plugin: the plugin
/// processes' own (every process of each one's process group) and what each adds to the host.
async fn many(run: &Path, binary: &Path) {
    let ctx = CallContext::for_plugin("hello-grpc");
    let (host_rss, host_fds) = (rss_kib(std::process::id()), fds(std::process::id()));
    let mut plugins = Vec::new();
    for _ in 0..MANY {
        plugins.push(start(run, binary).await.0);
    }
    let (mut rss, mut descriptors, mut processes) = (0, 0, 0);
    for plugin in &plugins {
        for pid in group(plugin.pid()) {
            rss += rss_kib(pid);
            descriptors += fds(pid);
            processes += 1;
        }
    }
    let host_rss_added = rss_kib(std::process::id()).saturating_sub(host_rss);
    let host_fds_added = fds(std::process::id()).saturating_sub(host_fds);
    let per = |n: u64| n as f64 / MANY as f64;
    println!(
        "{MANY} gRPC plugins at once: per plugin {:.1} MiB RSS in {:.1} processes, {:.1} fds; \
         the host +{:.0} KiB RSS and +{:.1} fds per plugin",
        per(rss) / 1024.0,
        per(processes),
        per(descriptors),
        per(host_rss_added),
        per(host_fds_added),
    );
    for plugin in plugins {
        plugin.shutdown(&ctx).await.unwrap();
    }
}

/// The processes of `pid`'s process group.
fn group(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

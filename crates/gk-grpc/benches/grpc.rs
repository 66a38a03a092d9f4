//! `cargo bench -p gk-grpc` (after `cargo build --release -p hello-grpc`): the costs of a plugin
//! process, printed per operation.
//!
//! Reference points on a machine of this kind with a bare tonic client/child over a Unix socket:
//! p50 45–65 µs empty, 128–145 µs with one callback, 31–56k calls/s with 64 in flight. Goal: the
//! runtime adds under 10 % to them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gk_grpc::{GrpcLimits, GrpcRuntime};
use gk_sdk::{CallContext, NoopHost, Plugin};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
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
    let limits = GrpcLimits {
        call_timeout: Duration::from_secs(10),
        init_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(2),
        network: false,
        memory_mb: 0,
        health_interval: Duration::from_secs(60),
    };
    let run = std::env::temp_dir().join(format!("gk-grpc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run).unwrap();
    let ctx = CallContext::for_plugin("hello-grpc");
    println!("gk-grpc benchmark (hello-grpc, release)");

    let start = Instant::now();
    let plugin = GrpcRuntime::new(&run)
        .start("hello-grpc", &binary, &run, limits)
        .await
        .unwrap();
    plugin.init(&ctx, Arc::new(NoopHost)).await.unwrap();
    plugin.call(&ctx, "echo", b"{}").await.unwrap();
    println!(
        "{:<44} {:>10.1} ms",
        "spawn + handshake + register + init + call",
        start.elapsed().as_secs_f64() * 1e3
    );

    for (name, function, payload) in [
        ("empty call", "echo", b"{}".to_vec()),
        ("call making one host callback", "ping", Vec::new()),
        (
            "16 KiB payload",
            "echo",
            format!("\"{}\"", "x".repeat(16 * 1024 - 2)).into_bytes(),
        ),
    ] {
        for _ in 0..200 {
            plugin.call(&ctx, function, &payload).await.unwrap();
        }
        let mut samples: Vec<Duration> = (0..3000).map(|_| Duration::ZERO).collect();
        for sample in samples.iter_mut() {
            let t = Instant::now();
            plugin.call(&ctx, function, &payload).await.unwrap();
            *sample = t.elapsed();
        }
        samples.sort();
        println!(
            "{name:<44} p50 {:>7.1} µs   p99 {:>7.1} µs",
            percentile(&samples, 0.5).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6
        );
    }

    // The same calls with a bare tonic client on the plugin's socket: the reference the runtime
    // is measured against.
    let socket = plugin.plugin_socket().unwrap();
    let channel = tonic::transport::Endpoint::try_from("http://bare.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap();
    let mut bare = gk_sdk::proto::pb::plugin_service_client::PluginServiceClient::new(channel);
    let mut samples = Vec::with_capacity(3000);
    for i in 0..3200 {
        let request = gk_sdk::proto::pb::CallRequest {
            context: None,
            function: "echo".into(),
            args_json: b"{}".to_vec(),
        };
        let t = Instant::now();
        bare.call(request).await.unwrap();
        if i >= 200 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    println!(
        "{:<44} p50 {:>7.1} µs   p99 {:>7.1} µs",
        "empty call, bare tonic client (reference)",
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );

    let plugin = Arc::new(plugin);
    let total = 20_000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                let ctx = CallContext::for_plugin("hello-grpc");
                for _ in 0..total / 64 {
                    plugin.call(&ctx, "echo", b"{}").await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "{:<44} {:>10.0} calls/s",
        "throughput, 64 calls in flight",
        f64::from(total / 64 * 64) / start.elapsed().as_secs_f64()
    );
    plugin.shutdown(&ctx).await.unwrap();
    let _ = std::fs::remove_dir_all(run);
}

//! `cargo xtask bench`: requests per second, p50/p99 latency and server CPU-seconds per 10,000
//! requests of the plugin paths, each against a plain axum handler answering the same JSON,
//! measured in one run with `wrk` (installed from Debian when missing, which is said first):
//! `POST /api/v1/plugins/noop/call/ping` (a C guest that makes no host call), the Stats WASM
//! plugin's overview route (one SQLite query), and hello-grpc's hello route (gRPC and three host
//! callbacks); the goals of issue #16 with what this run measured; then the idle server's CPU
//! share, gk-grpc's benchmark (spawn to first answer, empty call, one callback and 64 calls in
//! flight, each against a bare tonic parent and child built from the same proto; RSS and file
//! descriptors per plugin with 20 running) and the cost as work grows (`scale`: 200 WASM
//! plugins discovered, 50 loaded). Release builds in their own target directory; the server runs on the
//! embedded defaults with the Stats demo data, the plugins approved.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{guests, run};

mod cluster;
mod measure;
mod scale;

pub(crate) use cluster::bench_cluster;

use measure::{CONNECTIONS, DURATION, Measured, Target};

const SERVER: &str = "127.0.0.1:9180";
const PLAIN: &str = "127.0.0.1:9181";
const SECRET: &str = "bench-secret-bench-secret-bench-secret!";

/// Kills a child process when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing the load generator wrk from Debian (apt-get install wrk)");
    run(Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]))
}

/// Waits until `address` answers `GET path` with 200.
fn wait_ready(address: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut stream) = TcpStream::connect(address) {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            let mut reply = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut reply).is_ok()
                && reply.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{address}{path} did not answer within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `PUT path` with a JSON body and an admin token; fails unless the server answers 200.
fn put_json(address: &str, path: &str, token: &str, body: &str) -> Result<()> {
    let mut stream = TcpStream::connect(address)?;
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    if !reply.starts_with("HTTP/1.1 200") {
        bail!("PUT {path} failed:\n{reply}");
    }
    Ok(())
}

/// A WASM guest that answers `ping` with a constant and makes no host call: the HTTP → WASM
/// path without a host service. Built with clang like `examples/c-guest`.
const NOOP_C: &str = r#"
static unsigned char heap[64 * 1024];
static unsigned int top = 0;
__attribute__((export_name("gk_malloc")))
int gk_malloc(int size) {
    unsigned int n = ((unsigned int)size + 7u) & ~7u;
    if (n > sizeof heap) return 0;
    if (top + n > sizeof heap) top = 0;
    unsigned char *p = heap + top;
    top += n;
    return (int)p;
}
static long long pack(const char *p, unsigned int n) {
    return (long long)(((unsigned long long)(unsigned int)p << 32) | n);
}
#ifndef GK_NAME
#define GK_NAME "noop"
#endif
static const char REG[] = "{\"name\":\"" GK_NAME "\",\"version\":\"0.1.0\",\"description\":\"bench\"}";
static const char PONG[] = "{\"pong\":true}";
__attribute__((export_name("gk_register")))
long long gk_register(void) { return pack(REG, sizeof REG - 1); }
__attribute__((export_name("gk_call")))
long long gk_call(int f, int fl, int a, int al) {
    (void)f; (void)fl; (void)a; (void)al;
    return pack(PONG, sizeof PONG - 1);
}
"#;

/// The manifest of the no-host-call guest named `name`.
fn noop_yaml(name: &str) -> String {
    format!(
        "name: {name}\nversion: \"0.1.0\"\nruntime: wasm\nwasm: noop.wasm\n\
         description: bench guest without host calls\n"
    )
}

/// Builds the no-host-call guest registering as `name` into `dir` (`noop.wasm` and
/// `plugin.yaml`).
fn build_noop(dir: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let source = dir.join("noop.c");
    std::fs::write(&source, NOOP_C)?;
    std::fs::write(dir.join("plugin.yaml"), noop_yaml(name))?;
    run(Command::new("clang")
        .arg(format!("-DGK_NAME=\"{name}\""))
        .args([
            "--target=wasm32",
            "-O2",
            "-nostdlib",
            "-Wl,--no-entry",
            "-o",
        ])
        .arg(dir.join("noop.wasm"))
        .arg(&source))
    .context("building the bench guest with clang (apt-get install clang lld)")
}

/// The examples' approved policies without rate limits: the benchmark measures the call
/// path, not the limiter (Stats would be limited to 600 queries a minute).
const UNLIMITED_POLICIES: [(&str, &str); 3] = [
    (
        "noop",
        r#"{"plugin_name":"noop","status":"approved","memory_mb":16,"call_timeout":"5s","max_calls_per_second":0}"#,
    ),
    (
        "stats",
        r#"{"plugin_name":"stats","status":"approved","memory_mb":32,"call_timeout":"15s",
            "permissions":[{"type":"db","access":"read","scope":["ticket","ticket_state",
            "ticket_state_type","ticket_priority","ticket_type","queue","users"]}],
            "max_calls_per_second":0,"max_db_queries_per_min":0}"#,
    ),
    (
        "hello-grpc",
        r#"{"plugin_name":"hello-grpc","status":"approved","call_timeout":"5s",
            "permissions":[{"type":"cache","access":"readwrite"},
            {"type":"plugin_call","access":"read","scope":["stats"]}],
            "max_calls_per_second":0}"#,
    ),
];

/// The release builds' own target directory (`GOATKIT_BENCH_TARGET_DIR`).
fn bench_target_dir() -> PathBuf {
    std::env::var_os("GOATKIT_BENCH_TARGET_DIR").map_or_else(
        || PathBuf::from("/var/tmp/goatkit-bench-target"),
        PathBuf::from,
    )
}

fn cargo_release(target_dir: &Path, args: &[&str]) -> Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(["build", "--release"])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir);
    run(&mut command)
}

/// Builds, starts, measures and prints the table.
pub(crate) fn bench(root: &Path) -> Result<()> {
    ensure_wrk()?;
    let target_dir = bench_target_dir();
    guests::build_plugins(root)?;
    cargo_release(
        &target_dir,
        &[
            "-p",
            "gk-server",
            "--bin",
            "gk",
            "--example",
            "plain_axum",
            "-p",
            "hello-grpc",
            "--bin",
            "hello-grpc",
        ],
    )?;
    let release = target_dir.join("release");

    let work = std::env::temp_dir().join(format!("goatkit-bench-{}", std::process::id()));
    let plugins = work.join("plugins");
    build_noop(&plugins.join("noop"), "noop")?;
    std::fs::create_dir_all(plugins.join("stats"))?;
    std::fs::create_dir_all(plugins.join("hello-grpc"))?;
    let copies = [
        ("plugins/stats/plugin.yaml", root, "stats/plugin.yaml"),
        ("plugins/stats/stats.wasm", root, "stats/stats.wasm"),
        (
            "plugins/hello-grpc/plugin.yaml",
            root,
            "hello-grpc/plugin.yaml",
        ),
        ("hello-grpc", release.as_path(), "hello-grpc/hello-grpc"),
    ];
    for (from, base, to) in copies {
        let (from, to) = (base.join(from), plugins.join(to));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let stats_sql = root.join("plugins/stats");
    let config = work.join("goatkit.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{SERVER}\"\nplugins_dir = \"plugins\"\ndata_dir = \"data\"\napprove = [\"noop\", \"stats\", \"hello-grpc\"]\n\
             [database]\ninit_sql = [{:?}, {:?}]\n",
            stats_sql.join("schema.sql").display().to_string(),
            stats_sql.join("seed.sql").display().to_string(),
        ),
    )?;

    let gk = release.join("gk");
    let _server = Running(
        Command::new(&gk)
            .args(["serve", "--config"])
            .arg(&config)
            .env("GOATKIT_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting gk serve")?,
    );
    let _plain = Running(
        Command::new(release.join("examples/plain_axum"))
            .arg(PLAIN)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the plain axum server")?,
    );
    wait_ready(SERVER, "/healthz")?;
    wait_ready(PLAIN, "/api/plugins/plain/overview")?;
    let token = Command::new(&gk)
        .args(["token", "--user", "bench", "--role", "agent", "--config"])
        .arg(&config)
        .env("GOATKIT_TOKEN_SECRET", SECRET)
        .output()?;
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let admin = Command::new(&gk)
        .args(["token", "--user", "bench", "--role", "admin", "--config"])
        .arg(&config)
        .env("GOATKIT_TOKEN_SECRET", SECRET)
        .output()?;
    let admin = String::from_utf8(admin.stdout)?.trim().to_owned();
    for (plugin, policy) in UNLIMITED_POLICIES {
        put_json(
            SERVER,
            &format!("/api/v1/plugins/{plugin}/policy"),
            &admin,
            policy,
        )?;
    }

    let server = _server.0.id();
    let plain = _plain.0.id();
    let target = |label: &str, url: String, post_body, token, pid| Target {
        label: label.to_owned(),
        post_body,
        url,
        token,
        pid,
    };
    let routes = [
        target(
            "plain axum handler",
            format!("http://{PLAIN}/api/plugins/plain/overview"),
            None,
            None,
            plain,
        ),
        target(
            "HTTP -> WASM call, no host call",
            format!("http://{SERVER}/api/v1/plugins/noop/call/ping"),
            Some("{}"),
            Some(&token),
            server,
        ),
        target(
            "HTTP -> Stats overview (WASM + SQLite)",
            format!("http://{SERVER}/api/plugins/stats/overview"),
            None,
            Some(&token),
            server,
        ),
        target(
            "HTTP -> hello-grpc hello (3 host callbacks)",
            format!("http://{SERVER}/api/plugins/hello-grpc/hello?name=bench"),
            None,
            Some(&token),
            server,
        ),
    ];
    // Warm up: load the plugins and compile the modules before measuring.
    for route in &routes[1..] {
        measure::wrk(&work, route, true)?;
    }
    let mut results: Vec<Measured> = Vec::new();
    for route in &routes {
        results.extend(measure::wrk(&work, route, false)?);
    }
    // Idle: plugins loaded, no requests; one second to settle, then two measured.
    std::thread::sleep(Duration::from_secs(1));
    let idle = measure::cpu_share(server, Duration::from_secs(2));
    drop(_plain);
    eprintln!(
        "xtask: {} WASM plugins discovered, {} loaded, against a server with one plugin: \
         start, restarts, RSS per loaded plugin, sequential calls in turns",
        scale::DISCOVERED,
        scale::LOADED
    );
    let scaled = scale::measure(&gk, &work.join("scale"))?;
    drop(_server);
    let _ = std::fs::remove_dir_all(&work);

    let baseline = &results[0];
    println!(
        "\n{CONNECTIONS} connections, {DURATION} each, wrk 2 threads, release build, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| route | requests/s | p50 ms | p99 ms | throughput vs plain | p50 vs plain | p99 vs plain | CPU-s per 10k requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.2}x | {:.2}x | {:.2}x | {} |",
            r.label,
            r.requests_per_second,
            r.p50_ms,
            r.p99_ms,
            r.requests_per_second / baseline.requests_per_second,
            r.p50_ms / baseline.p50_ms,
            r.p99_ms / baseline.p99_ms,
            r.cpu_per_10k.map_or("-".to_owned(), |c| format!("{c:.3}")),
        );
    }
    goals(&results, idle);
    match idle {
        Some(share) => println!(
            "\nidle server (3 plugins loaded, 1 s after the last request): {:.1} % of one core",
            share * 100.0
        ),
        None => println!("\nidle server: /proc/{server}/stat not readable"),
    }
    // The gRPC runtime against a bare tonic client on the plugin's socket, and spawn time:
    // gk-grpc's own benchmark, on the hello-grpc just built.
    println!();
    let mut grpc = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    grpc.args(["bench", "-p", "gk-grpc", "--bench", "grpc"])
        .env("CARGO_TARGET_DIR", &target_dir);
    run(&mut grpc)?;
    scale_goals(&scaled);
    Ok(())
}

/// The cost-as-work-grows goals of issue #16: the scaled server against the single-plugin one.
fn scale_goals(measured: &scale::Scaled) {
    let (scaled, single) = (&measured.scaled, &measured.single);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let lines = [
        (
            format!("start to /healthz (median of {} restarts)", scale::RESTARTS),
            ms(scaled.restart) / ms(single.restart),
        ),
        (
            // The single server's one load carries the runtime's one-time costs: the cost of a
            // plugin is compared within the scaled server, the later loads against the earlier.
            format!(
                "RSS per loaded plugin, loads {}-{} vs 2-{}",
                scale::LOADED.div_ceil(2) + 1,
                scale::LOADED,
                scale::LOADED.div_ceil(2)
            ),
            scaled
                .rss_per_plugin_halves_kib
                .map_or(f64::NAN, |(early, late)| late / early),
        ),
        (
            "call p50 to one loaded plugin".to_owned(),
            us(scaled.call_p50) / us(single.call_p50),
        ),
    ];
    println!(
        "\n| goal (issue #16): {} plugins discovered, {} loaded, vs one | measured | goal | met |\n\
         |---|---:|---:|---|",
        scale::DISCOVERED,
        scale::LOADED
    );
    for (label, ratio) in lines {
        let met = if (0.9..=1.1).contains(&ratio) {
            "yes"
        } else {
            "no"
        };
        println!("| {label} | {ratio:.2}x | 0.90-1.10x | {met} |");
    }
    for (label, figures) in [
        (
            format!(
                "{} WASM plugins discovered, {} loaded",
                scale::DISCOVERED,
                scale::LOADED
            ),
            scaled,
        ),
        ("one WASM plugin, loaded".to_owned(), single),
    ] {
        println!(
            "\n{label}: first start (approving them) {:.0} ms, restart {:.0} ms; RSS {:.1} MiB \
             before loading, {:.0} KiB per loaded plugin{}; sequential call p50 {:.0} us",
            ms(figures.first_start),
            ms(figures.restart),
            figures.rss_before_kib as f64 / 1024.0,
            figures.rss_per_loaded_kib,
            figures
                .rss_per_plugin_halves_kib
                .map_or(String::new(), |(early, late)| format!(
                    " ({early:.0} and {late:.0} KiB over the halves after the first)"
                )),
            us(figures.call_p50),
        );
    }
    println!(
        "({} calls on one connection to each server, in turns call by call, the order \
         alternating)",
        scale::CALLS
    );
}

/// The HTTP goals of issue #16, each with what this run measured and whether it is met.
fn goals(results: &[Measured], idle: Option<f64>) {
    let Some(plain) = results.first() else {
        return;
    };
    let ratio = |i: usize| {
        results
            .get(i)
            .map_or(0.0, |r| r.requests_per_second / plain.requests_per_second)
    };
    let p99 = results.get(1).map_or(f64::MAX, |r| r.p99_ms / plain.p99_ms);
    let met = |ok: bool| if ok { "yes" } else { "no" };
    println!("\n| goal (issue #16) | measured | goal | met |\n|---|---:|---:|---|");
    for (label, measured, goal, ok) in [
        (
            "HTTP -> WASM, no host call: requests/s vs plain",
            ratio(1),
            ">= 0.50x",
            ratio(1) >= 0.5,
        ),
        (
            "HTTP -> WASM, no host call: p99 vs plain",
            p99,
            "<= 3.00x",
            p99 <= 3.0,
        ),
        (
            "HTTP -> Stats overview: requests/s vs plain",
            ratio(2),
            ">= 0.15x",
            ratio(2) >= 0.15,
        ),
        (
            "HTTP -> hello-grpc: requests/s vs plain",
            ratio(3),
            ">= 0.10x",
            ratio(3) >= 0.1,
        ),
    ] {
        println!("| {label} | {measured:.2}x | {goal} | {} |", met(ok));
    }
    if let Some(share) = idle {
        println!(
            "| idle server CPU, 1 s after the last request | {:.1} % | 0 % | {} |",
            share * 100.0,
            met(share < 0.005)
        );
    }
}

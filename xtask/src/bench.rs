//! `cargo xtask bench`: requests per second and p50/p99 latency of a plugin route on the Stats
//! WASM plugin, on hello-grpc, and on a plain axum handler answering the same JSON, measured in
//! one run with `wrk` (installed from Debian when missing, which is said first). Release builds
//! in their own target directory; the server runs on the embedded defaults with the Stats demo
//! data, both plugins approved.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{guests, run};

const SERVER: &str = "127.0.0.1:9180";
const PLAIN: &str = "127.0.0.1:9181";
const SECRET: &str = "bench-secret-bench-secret-bench-secret!";
const DURATION: &str = "10s";
const CONNECTIONS: &str = "32";

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

/// The examples' approved policies without rate limits: the benchmark measures the call
/// path, not the limiter (Stats would be limited to 600 queries a minute).
const UNLIMITED_POLICIES: [(&str, &str); 2] = [
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

/// One measured route.
struct Measured {
    label: &'static str,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `1.23ms`, `456.00us`, `2.01s` in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn wrk(label: &'static str, url: &str, token: Option<&str>) -> Result<Measured> {
    let mut command = Command::new("wrk");
    command.args(["-t2", "-c", CONNECTIONS, "-d", DURATION, "--latency"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    command.arg(url);
    eprintln!("xtask: measuring {label}: {command:?}");
    let output = command.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.contains("Non-2xx") {
        bail!("{label}: wrk failed or saw errors:\n{text}");
    }
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix).map(|rest| rest.trim().to_owned()))
    };
    let requests_per_second = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{label}: no Requests/sec in\n{text}"))?;
    let p50_ms = field("50%")
        .and_then(|v| millis(&v))
        .context("no 50% latency")?;
    let p99_ms = field("99%")
        .and_then(|v| millis(&v))
        .context("no 99% latency")?;
    Ok(Measured {
        label,
        requests_per_second,
        p50_ms,
        p99_ms,
    })
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
    let target_dir = std::env::var_os("GOATKIT_BENCH_TARGET_DIR").map_or_else(
        || PathBuf::from("/var/tmp/goatkit-bench-target"),
        PathBuf::from,
    );
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
            "listen = \"{SERVER}\"\nplugins_dir = \"plugins\"\ndata_dir = \"data\"\napprove = [\"stats\", \"hello-grpc\"]\n\
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

    let stats = format!("http://{SERVER}/api/plugins/stats/overview");
    let hello = format!("http://{SERVER}/api/plugins/hello-grpc/hello?name=bench");
    // Warm up: load both plugins and compile the module before measuring.
    for url in [&stats, &hello] {
        let status = Command::new("wrk")
            .args([
                "-t1",
                "-c1",
                "-d1s",
                "-H",
                &format!("Authorization: Bearer {token}"),
                url,
            ])
            .output()?;
        if !status.status.success() {
            bail!("warm-up of {url} failed");
        }
    }
    let results = [
        wrk(
            "plain axum handler",
            &format!("http://{PLAIN}/api/plugins/plain/overview"),
            None,
        )?,
        wrk("Stats (WASM) route", &stats, Some(&token))?,
        wrk("hello-grpc route", &hello, Some(&token))?,
    ];
    let _ = std::fs::remove_dir_all(&work);

    let baseline = &results[0];
    println!("\n{CONNECTIONS} connections, {DURATION} each, wrk 2 threads, release build");
    println!("| route | requests/s | p50 ms | p99 ms | throughput vs plain | p50 vs plain |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.2}x | {:.2}x |",
            r.label,
            r.requests_per_second,
            r.p50_ms,
            r.p99_ms,
            r.requests_per_second / baseline.requests_per_second,
            r.p50_ms / baseline.p50_ms,
        );
    }
    Ok(())
}

//! `cargo xtask bench-cluster`: what a cluster of `gk serve` nodes on one PostgreSQL database
//! and one Redis costs and how fast it agrees (issue #17). Printed, never asserted:
//!
//! - requests/s, p50/p99 and CPU-seconds per 10,000 requests of the C guest's `greet` route (one
//!   cache host call under a shared rate limit, so every call also asks Redis) on one node, then
//!   spread over three nodes, with the same load generator (three wrk processes);
//! - how long a policy changed through one node takes to be enforced by the two others: p50,
//!   p99 and max over [`ROUNDS`] changes, watched by calling the route on both until its host
//!   call is refused (blocked: the guest answers an empty body) or answered again (approved).
//!
//! The database is a fresh one on the machine's PostgreSQL (`GK_TEST_POSTGRES_URL`, created and
//! dropped with `psql`), the cache and bus the machine's Redis (`GK_TEST_REDIS_URL`).

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::measure::{self, Target};
use super::scale::{read_status, token};
use super::{Running, SECRET, cargo_release, ensure_wrk, put_json, wait_ready};
use crate::run;

/// Policy changes whose propagation is timed.
const ROUNDS: usize = 30;
/// The nodes' addresses; the first one alone for the single-node figures.
const NODES: [(&str, &str); 3] = [
    ("a", "127.0.0.1:9190"),
    ("b", "127.0.0.1:9191"),
    ("c", "127.0.0.1:9192"),
];
/// The route measured: the C guest's `greet` (one `cache_get` host call).
const ROUTE: &str = "/api/plugins/c-guest/greet";
/// Each of the three wrk processes: one thread, 11 connections (33 in all), 10 s.
const LOAD: [&str; 6] = ["-t1", "-c11", "-d10s", "--latency", "--timeout", "5s"];

/// The C guest's policy: `status` and a rate limit high enough never to refuse, low enough to
/// be checked (in Redis, shared by the nodes) on every call.
fn policy(status: &str) -> String {
    format!(
        r#"{{"plugin_name":"c-guest","status":"{status}","call_timeout":"5s",
            "permissions":[{{"type":"cache","access":"readwrite"}}],
            "max_calls_per_second":1000000}}"#
    )
}

/// A database of this run on the PostgreSQL at `admin_url`, dropped when this is.
struct Database {
    admin_url: String,
    name: String,
}

impl Database {
    fn create(admin_url: &str) -> Result<Self> {
        let name = format!("gk_bench_cluster_{}", std::process::id());
        psql(
            admin_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    fn url(&self) -> Result<String> {
        let (base, _) = self
            .admin_url
            .rsplit_once('/')
            .context("GK_TEST_POSTGRES_URL names no database")?;
        Ok(format!("{base}/{}", self.name))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = psql(&self.admin_url, &drop) {
            eprintln!("xtask: could not drop database {}: {error:#}", self.name);
        }
    }
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .context("running psql (apt-get install postgresql-client)")?;
    if !output.status.success() {
        bail!("psql `{sql}`: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Builds the C guest of `examples/c-guest` into `dir` with its manifest.
fn build_c_guest(root: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("plugin.yaml"),
        "name: c-guest\nversion: \"0.1.0\"\nruntime: wasm\nwasm: c_guest.wasm\n\
         description: A plugin written in C\n",
    )?;
    run(Command::new("clang")
        .args([
            "--target=wasm32",
            "-O2",
            "-nostdlib",
            "-Wl,--no-entry",
            "-o",
        ])
        .arg(dir.join("c_guest.wasm"))
        .arg(root.join("examples/c-guest/plugin.c")))
    .context("building examples/c-guest with clang (apt-get install clang lld)")
}

/// What every node shares.
struct Shared {
    gk: PathBuf,
    work: PathBuf,
    database_url: String,
    redis_url: String,
    prefix: String,
}

impl Shared {
    /// Starts node `id` on `address` over the shared plugins directory, with its own data.
    fn start(&self, id: &str, address: &str) -> Result<Running> {
        let home = self.work.join(id);
        std::fs::create_dir_all(&home)?;
        let config = home.join("goatkit.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{address}\"\nplugins_dir = {:?}\ndata_dir = \"data\"\napprove = [\"c-guest\"]\n",
                self.work.join("plugins").display().to_string()
            ),
        )?;
        let log = std::fs::File::create(home.join("serve.log"))?;
        let child = Command::new(&self.gk)
            .current_dir(&home)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--node-id", id])
            .env("GOATKIT_DATABASE_URL", &self.database_url)
            .env("GOATKIT_REDIS_URL", &self.redis_url)
            .env("GOATKIT_CLUSTER_ENABLED", "true")
            .env("GOATKIT_CLUSTER_PREFIX", &self.prefix)
            .env("GOATKIT_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {id}"))?;
        let running = Running(child);
        wait_ready(address, "/healthz").with_context(|| {
            format!("node {id}; its log is {}", home.join("serve.log").display())
        })?;
        Ok(running)
    }
}

/// Requests/s (summed), p50 and p99 (the worst wrk's) and CPU-seconds per 10,000 requests of
/// the nodes, with one wrk process per address of `targets`, run together.
struct Spread {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_per_10k: Option<f64>,
}

fn spread_load(work: &Path, targets: &[&str], token: &str, pids: &[u32]) -> Result<Spread> {
    let cpu_before: Option<f64> = pids.iter().map(|pid| measure::cpu_seconds(*pid)).sum();
    let results: Vec<Result<Option<measure::Measured>>> = std::thread::scope(|scope| {
        let runs: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(index, address)| {
                let dir = work.join(format!("wrk-{index}"));
                scope.spawn(move || {
                    std::fs::create_dir_all(&dir)?;
                    measure::wrk_with(&dir, &warm_up(address, token), &LOAD, false)
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| {
                run.join()
                    .unwrap_or_else(|_| bail!("a wrk thread panicked"))
            })
            .collect()
    });
    let cpu_after: Option<f64> = pids.iter().map(|pid| measure::cpu_seconds(*pid)).sum();
    let mut spread = Spread {
        requests_per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        cpu_per_10k: None,
    };
    for result in results {
        let measured = result?.context("wrk measured nothing")?;
        spread.requests_per_second += measured.requests_per_second;
        spread.p50_ms = spread.p50_ms.max(measured.p50_ms);
        spread.p99_ms = spread.p99_ms.max(measured.p99_ms);
    }
    let seconds = 10.0;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        spread.cpu_per_10k = Some((after - before) / (spread.requests_per_second * seconds) * 1e4);
    }
    Ok(spread)
}

/// A keep-alive connection calling the route; whether its host call was refused as blocked.
struct Watcher {
    address: String,
    stream: TcpStream,
    request: String,
    buf: Vec<u8>,
}

impl Watcher {
    fn connect(address: &str, token: &str) -> Result<Self> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            address: address.to_owned(),
            stream,
            request: format!(
                "GET {ROUTE} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
            buf: Vec::new(),
        })
    }

    /// Calls the route once: `true` when its host call was refused (the guest then answers
    /// nothing instead of its `{"from":"c",…}`).
    fn blocked(&mut self) -> Result<bool> {
        self.stream.write_all(self.request.as_bytes())?;
        let status = read_status(&mut self.stream, &mut self.buf)?;
        let text = String::from_utf8_lossy(&self.buf);
        if status != 200 {
            bail!("{}: {status}\n{text}", self.address);
        }
        Ok(!text.contains(r#""from":"c""#))
    }

    /// Calls until the route's state is `blocked`; how long that took from `since`.
    fn until(&mut self, blocked: bool, since: Instant) -> Result<Duration> {
        let deadline = since + Duration::from_secs(30);
        while self.blocked()? != blocked {
            if Instant::now() > deadline {
                bail!("{} did not apply the change within 30 s", self.address);
            }
        }
        Ok(since.elapsed())
    }
}

/// The `q` quantile of sorted `times`, in milliseconds.
fn quantile(times: &[Duration], q: f64) -> f64 {
    let index = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(index).map_or(f64::NAN, |t| t.as_secs_f64() * 1e3)
}

/// Times [`ROUNDS`] policy changes made through `changer` until both `watchers` enforce them.
fn propagation(changer: &str, admin: &str, watchers: &mut [Watcher]) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(ROUNDS * watchers.len());
    for round in 0..ROUNDS {
        let blocked = round % 2 == 0;
        let status = if blocked { "blocked" } else { "approved" };
        let started = Instant::now();
        put_json(
            changer,
            "/api/v1/plugins/c-guest/policy",
            admin,
            &policy(status),
        )?;
        std::thread::scope(|scope| -> Result<()> {
            let runs: Vec<_> = watchers
                .iter_mut()
                .map(|watcher| scope.spawn(move || watcher.until(blocked, started)))
                .collect();
            for run in runs {
                times.push(run.join().unwrap_or_else(|_| bail!("a watcher panicked"))?);
            }
            Ok(())
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
    times.sort();
    Ok(times)
}

/// Builds, starts one node then three, measures and prints.
pub(crate) fn bench_cluster(root: &Path) -> Result<()> {
    ensure_wrk()?;
    let postgres = std::env::var("GK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let redis_url =
        std::env::var("GK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let target_dir = super::bench_target_dir();
    cargo_release(&target_dir, &["-p", "gk-server", "--bin", "gk"])?;
    let work = std::env::temp_dir().join(format!("goatkit-bench-cluster-{}", std::process::id()));
    build_c_guest(root, &work.join("plugins/c-guest"))?;
    let database = Database::create(&postgres)?;
    let shared = Shared {
        gk: target_dir.join("release/gk"),
        work: work.clone(),
        database_url: database.url()?,
        redis_url,
        prefix: database.name.clone(),
    };
    let result = measure_cluster(&shared);
    drop(database);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn measure_cluster(shared: &Shared) -> Result<()> {
    let config = shared.work.join("a/goatkit.toml");
    let (a_id, a_address) = NODES[0];
    let a = shared.start(a_id, a_address)?;
    let agent = token(&shared.gk, &config, "agent")?;
    let admin = token(&shared.gk, &config, "admin")?;
    put_json(
        a_address,
        "/api/v1/plugins/c-guest/policy",
        &admin,
        &policy("approved"),
    )?;
    measure::wrk(&shared.work, &warm_up(a_address, &agent), true)?;
    eprintln!("xtask: one node, three wrk processes");
    let one = spread_load(&shared.work, &[a_address; 3], &agent, &[a.0.id()])?;

    let b = shared.start(NODES[1].0, NODES[1].1)?;
    let c = shared.start(NODES[2].0, NODES[2].1)?;
    for (_, address) in &NODES[1..] {
        measure::wrk(&shared.work, &warm_up(address, &agent), true)?;
    }
    eprintln!("xtask: three nodes, one wrk process each");
    let addresses: Vec<&str> = NODES.iter().map(|(_, address)| *address).collect();
    let three = spread_load(
        &shared.work,
        &addresses,
        &agent,
        &[a.0.id(), b.0.id(), c.0.id()],
    )?;

    eprintln!("xtask: {ROUNDS} policy changes through a, watched on b and c");
    let mut watchers = [
        Watcher::connect(NODES[1].1, &agent)?,
        Watcher::connect(NODES[2].1, &agent)?,
    ];
    let times = propagation(a_address, &admin, &mut watchers)?;

    println!(
        "\ncluster on one machine ({} cores): PostgreSQL store, Redis bus and shared limits; \
         route {ROUTE} (one cache host call); wrk x3, 1 thread and 11 connections each, 10 s",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| nodes | requests/s | p50 ms (worst wrk) | p99 ms (worst wrk) | CPU-s per 10k requests |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (nodes, spread) in [(1, &one), (3, &three)] {
        println!(
            "| {nodes} | {:.0} | {:.3} | {:.3} | {} |",
            spread.requests_per_second,
            spread.p50_ms,
            spread.p99_ms,
            spread
                .cpu_per_10k
                .map_or("-".to_owned(), |c| format!("{c:.3}")),
        );
    }
    println!(
        "3 nodes vs 1: {:.2}x requests/s (the nodes, Redis, PostgreSQL and wrk share the same cores)",
        three.requests_per_second / one.requests_per_second
    );
    println!(
        "\npolicy change through a enforced by b and c ({} observations, {ROUNDS} changes): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        quantile(&times, 1.0),
    );
    drop((a, b, c));
    Ok(())
}

/// One second of calls to the route on `address`: loads and compiles the plugin there.
fn warm_up<'a>(address: &str, token: &'a str) -> Target<'a> {
    Target {
        label: format!("warm-up of {address}"),
        post_body: None,
        url: format!("http://{address}{ROUTE}"),
        token: Some(token),
        pid: 0,
    }
}

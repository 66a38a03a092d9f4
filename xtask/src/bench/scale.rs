//! Cost as work grows: a server with [`DISCOVERED`] WASM plugins discovered, [`LOADED`] of them
//! loaded: its start time, its RSS per loaded plugin, and the p50 of sequential calls to one of
//! them, to compare with the same calls to the one WASM plugin of a small server, measured in
//! turns with them, call by call (so that both see the machine in the same state: a call this
//! short is mostly the wake-up of an idle server, which drifts with the machine).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Running, SECRET, build_noop, noop_yaml, put_json};

/// WASM plugins in the plugins directory.
pub(super) const DISCOVERED: usize = 200;
/// Of those, loaded (by a first call) before measuring.
pub(super) const LOADED: usize = 50;
/// Calls to warm each connection up before measuring.
const WARM_UP: usize = 1000;

/// Sequential calls measured on each server, in turns with the other's.
pub(super) const CALLS: usize = 6000;

/// The server the scaled one is compared with, and the call to make there.
pub(super) struct Baseline<'a> {
    pub(super) address: &'a str,
    pub(super) path: &'a str,
    pub(super) token: &'a str,
}

const ADDRESS: &str = "127.0.0.1:9182";

/// What the scaled server measured.
pub(super) struct Scaled {
    /// From spawning `gk serve` to `/healthz` answering.
    pub(super) start: Duration,
    /// Resident memory before loading any plugin, in KiB.
    pub(super) rss_before_kib: u64,
    /// Resident memory growth per loaded plugin, in KiB.
    pub(super) rss_per_loaded_kib: f64,
    /// Median of sequential calls to one loaded plugin.
    pub(super) call_p50: Duration,
    /// Median of the same calls to the baseline's plugin, in turns with them.
    pub(super) baseline_p50: Duration,
}

/// `VmRSS` of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from a keep-alive connection; fails
/// unless it is a 200.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    match read_status(stream, buf)? {
        200 => Ok(()),
        status => bail!("the call failed: {status}"),
    }
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from a keep-alive connection; its
/// status.
pub(super) fn read_status(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .with_context(|| format!("not an HTTP/1.1 response: {head}"))?;
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .context("no Content-Length")?;
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}

/// Sequential `POST path` calls on one keep-alive connection, timed.
struct Sequential {
    stream: TcpStream,
    request: String,
    buf: Vec<u8>,
    times: Vec<Duration>,
}

impl Sequential {
    /// Connects and warms the connection up with [`WARM_UP`] calls.
    fn connect(address: &str, path: &str, token: &str) -> Result<Self> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let mut this = Self {
            stream,
            request,
            buf: Vec::new(),
            times: Vec::with_capacity(CALLS),
        };
        for _ in 0..WARM_UP {
            this.call()?;
        }
        Ok(this)
    }

    fn call(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.stream.write_all(self.request.as_bytes())?;
        read_response(&mut self.stream, &mut self.buf)?;
        Ok(started.elapsed())
    }

    /// One timed call.
    fn timed_call(&mut self) -> Result<()> {
        let took = self.call()?;
        self.times.push(took);
        Ok(())
    }

    /// The median of the timed calls.
    fn p50(&mut self) -> Duration {
        self.times.sort();
        self.times
            .get(self.times.len() / 2)
            .copied()
            .unwrap_or_default()
    }
}

/// One call on a fresh connection (loads the plugin on first use).
fn call_once(address: &str, path: &str, token: &str) -> Result<()> {
    let mut stream = TcpStream::connect(address)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes())?;
    read_response(&mut stream, &mut Vec::new())
}

pub(super) fn token(gk: &Path, config: &Path, role: &str) -> Result<String> {
    let output = Command::new(gk)
        .args(["token", "--user", "bench", "--role", role, "--config"])
        .arg(config)
        .env("GOATKIT_TOKEN_SECRET", SECRET)
        .output()?;
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn name(index: usize) -> String {
    format!("scale-{index:03}")
}

/// Starts a server on [`DISCOVERED`] copies of the no-host-call guest in `work`, loads
/// [`LOADED`] of them and measures, with calls to `baseline` in turns.
pub(super) fn measure(gk: &Path, work: &Path, baseline: &Baseline<'_>) -> Result<Scaled> {
    let plugins = work.join("plugins");
    // One build; the copies differ only in the name in their data (same length).
    let first = plugins.join(name(0));
    build_noop(&first, &name(0))?;
    let wasm = std::fs::read(first.join("noop.wasm"))?;
    let needle = name(0).into_bytes();
    let at = wasm
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .context("the guest's name is not in its data")?;
    for index in 1..DISCOVERED {
        let dir = plugins.join(name(index));
        std::fs::create_dir_all(&dir)?;
        let mut copy = wasm.clone();
        copy[at..at + needle.len()].copy_from_slice(name(index).as_bytes());
        std::fs::write(dir.join("noop.wasm"), copy)?;
        std::fs::write(dir.join("plugin.yaml"), noop_yaml(&name(index)))?;
    }
    let approve: Vec<String> = (0..DISCOVERED).map(|i| format!("{:?}", name(i))).collect();
    let config = work.join("goatkit.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{ADDRESS}\"\nplugins_dir = \"plugins\"\ndata_dir = \"data\"\napprove = [{}]\n",
            approve.join(", ")
        ),
    )?;
    let started = Instant::now();
    let server = Running(
        Command::new(gk)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(work)
            .env("GOATKIT_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting gk serve with many plugins")?,
    );
    let pid = server.0.id();
    loop {
        if call_ok(ADDRESS, "/healthz") {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the server with {DISCOVERED} plugins did not start within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = started.elapsed();
    let agent = token(gk, &config, "agent")?;
    let admin = token(gk, &config, "admin")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_before_kib = rss_kib(pid).context("no VmRSS")?;
    for index in 0..LOADED {
        call_once(
            ADDRESS,
            &format!("/api/v1/plugins/{}/call/ping", name(index)),
            &agent,
        )?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid).context("no VmRSS")?;
    let measured = name(0);
    put_json(
        ADDRESS,
        &format!("/api/v1/plugins/{measured}/policy"),
        &admin,
        &format!(
            r#"{{"plugin_name":"{measured}","status":"approved","memory_mb":16,"call_timeout":"5s","max_calls_per_second":0}}"#
        ),
    )?;
    let scaled_path = format!("/api/v1/plugins/{measured}/call/ping");
    let mut scaled = Sequential::connect(ADDRESS, &scaled_path, &agent)?;
    let mut one = Sequential::connect(baseline.address, baseline.path, baseline.token)?;
    for _ in 0..CALLS {
        scaled.timed_call()?;
        one.timed_call()?;
    }
    Ok(Scaled {
        start,
        rss_before_kib,
        rss_per_loaded_kib: rss_after.saturating_sub(rss_before_kib) as f64 / LOADED as f64,
        call_p50: scaled.p50(),
        baseline_p50: one.p50(),
    })
}

/// Whether `GET path` answers 200.
fn call_ok(address: &str, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut reply = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.1 200")
}

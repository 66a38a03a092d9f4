//! Cost as work grows: a server with [`DISCOVERED`] WASM plugins discovered, [`LOADED`] of them
//! loaded, against a server with one plugin (the single-plugin case), both started the same way
//! from fresh data directories: start time (a restart, the median of [`RESTARTS`]; the first
//! start, which approves every plugin, is printed too), RSS per loaded plugin, and the p50 of
//! sequential calls to one loaded plugin, taken in turns with the same calls to the single
//! plugin, call by call and in alternating order (so that both see the machine in the same
//! state: a call this short is mostly the wake-up of an idle server, which drifts with the
//! machine, and the second of two servers called in a row finds its caches colder).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Running, SECRET, build_noop, noop_yaml, put_json};

/// WASM plugins in the plugins directory of the scaled server.
pub(super) const DISCOVERED: usize = 200;
/// Of those, loaded (by a first call) before measuring.
pub(super) const LOADED: usize = 50;
/// Calls to warm each connection up before measuring.
const WARM_UP: usize = 1000;
/// Restarts of each server whose median start time is compared.
pub(super) const RESTARTS: usize = 5;

/// Sequential calls measured on each server, in turns with the other's.
pub(super) const CALLS: usize = 6000;

const SCALED_ADDRESS: &str = "127.0.0.1:9182";
const SINGLE_ADDRESS: &str = "127.0.0.1:9183";

/// What one server measured.
pub(super) struct Figures {
    /// From spawning `gk serve` on a fresh data directory to `/healthz` answering.
    pub(super) first_start: Duration,
    /// The median of [`RESTARTS`] restarts on the data directory the first start made.
    pub(super) restart: Duration,
    /// Resident memory before loading any plugin, in KiB.
    pub(super) rss_before_kib: u64,
    /// Resident memory growth per loaded plugin, in KiB (the first load pays the runtime's
    /// one-time costs too: threads, allocator arenas).
    pub(super) rss_per_loaded_kib: f64,
    /// Resident memory growth per plugin over the first and the second half of the loads
    /// after the first, in KiB (the same where the cost of a plugin does not grow with the
    /// plugins loaded); `None` with fewer than three loaded.
    pub(super) rss_per_plugin_halves_kib: Option<(f64, f64)>,
    /// Median of sequential calls to one loaded plugin.
    pub(super) call_p50: Duration,
}

/// The scaled server and the single-plugin one, measured in the same run.
pub(super) struct Scaled {
    /// [`DISCOVERED`] plugins discovered, [`LOADED`] loaded.
    pub(super) scaled: Figures,
    /// One plugin, loaded.
    pub(super) single: Figures,
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

/// A server's directory with `count` copies of the no-host-call guest (one build; the copies
/// differ only in the name in their data, of the same length), all approved in its
/// configuration.
fn prepare(work: &Path, address: &str, count: usize) -> Result<PathBuf> {
    let plugins = work.join("plugins");
    let first = plugins.join(name(0));
    build_noop(&first, &name(0))?;
    let wasm = std::fs::read(first.join("noop.wasm"))?;
    let needle = name(0).into_bytes();
    let at = wasm
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .context("the guest's name is not in its data")?;
    for index in 1..count {
        let dir = plugins.join(name(index));
        std::fs::create_dir_all(&dir)?;
        let mut copy = wasm.clone();
        copy[at..at + needle.len()].copy_from_slice(name(index).as_bytes());
        std::fs::write(dir.join("noop.wasm"), copy)?;
        std::fs::write(dir.join("plugin.yaml"), noop_yaml(&name(index)))?;
    }
    let approve: Vec<String> = (0..count).map(|i| format!("{:?}", name(i))).collect();
    let config = work.join("goatkit.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nplugins_dir = \"plugins\"\ndata_dir = \"data\"\napprove = [{}]\n",
            approve.join(", ")
        ),
    )?;
    Ok(config)
}

/// Starts `gk serve` on `config` and waits for `/healthz`; the server and how long that took.
fn start(gk: &Path, config: &Path, address: &str) -> Result<(Running, Duration)> {
    let work = config
        .parent()
        .context("the configuration has no directory")?;
    let started = Instant::now();
    let server = Running(
        Command::new(gk)
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(work)
            .env("GOATKIT_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting gk serve on {}", config.display()))?,
    );
    loop {
        if call_ok(address, "/healthz") {
            return Ok((server, started.elapsed()));
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the server of {} did not start within 60 s",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A server with `count` plugins, `loaded` of them loaded, ready for the timed calls.
struct Prepared {
    server: Running,
    figures: Figures,
    calls: Sequential,
}

fn prepare_server(
    gk: &Path,
    work: &Path,
    address: &str,
    count: usize,
    loaded: usize,
) -> Result<Prepared> {
    let config = prepare(work, address, count)?;
    let (server, first_start) = start(gk, &config, address)?;
    drop(server);
    let mut restarts = Vec::with_capacity(RESTARTS);
    for _ in 0..RESTARTS {
        let (server, took) = start(gk, &config, address)?;
        drop(server);
        restarts.push(took);
    }
    restarts.sort();
    let (server, _) = start(gk, &config, address)?;
    let pid = server.0.id();
    let agent = token(gk, &config, "agent")?;
    let admin = token(gk, &config, "admin")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_before_kib = rss_kib(pid).context("no VmRSS")?;
    // RSS after the first load, after half of them and after all.
    let half = loaded.div_ceil(2);
    let mut marks = Vec::with_capacity(3);
    for index in 0..loaded {
        call_once(
            address,
            &format!("/api/v1/plugins/{}/call/ping", name(index)),
            &agent,
        )?;
        if index == 0 || index + 1 == half || index + 1 == loaded {
            std::thread::sleep(Duration::from_millis(300));
            marks.push((index + 1, rss_kib(pid).context("no VmRSS")?));
        }
    }
    let rss_after = marks.last().map_or(rss_before_kib, |&(_, rss)| rss);
    let rss_per_plugin_halves_kib = match marks.as_slice() {
        [(first, at_first), (middle, at_middle), (last, at_last)] if last > middle => {
            let per = |from: u64, to: u64, plugins: usize| {
                to.saturating_sub(from) as f64 / plugins as f64
            };
            Some((
                per(*at_first, *at_middle, middle - first),
                per(*at_middle, *at_last, last - middle),
            ))
        }
        _ => None,
    };
    let measured = name(0);
    put_json(
        address,
        &format!("/api/v1/plugins/{measured}/policy"),
        &admin,
        &format!(
            r#"{{"plugin_name":"{measured}","status":"approved","memory_mb":16,"call_timeout":"5s","max_calls_per_second":0}}"#
        ),
    )?;
    let calls = Sequential::connect(
        address,
        &format!("/api/v1/plugins/{measured}/call/ping"),
        &agent,
    )?;
    Ok(Prepared {
        server,
        figures: Figures {
            first_start,
            restart: restarts[RESTARTS / 2],
            rss_before_kib,
            rss_per_loaded_kib: rss_after.saturating_sub(rss_before_kib) as f64 / loaded as f64,
            rss_per_plugin_halves_kib,
            call_p50: Duration::ZERO,
        },
        calls,
    })
}

/// Prepares the scaled server and the single-plugin one in `work` and measures both.
pub(super) fn measure(gk: &Path, work: &Path) -> Result<Scaled> {
    let mut single = prepare_server(gk, &work.join("single"), SINGLE_ADDRESS, 1, 1)?;
    let mut scaled = prepare_server(gk, &work.join("scaled"), SCALED_ADDRESS, DISCOVERED, LOADED)?;
    for turn in 0..CALLS {
        if turn % 2 == 0 {
            scaled.calls.timed_call()?;
            single.calls.timed_call()?;
        } else {
            single.calls.timed_call()?;
            scaled.calls.timed_call()?;
        }
    }
    scaled.figures.call_p50 = scaled.calls.p50();
    single.figures.call_p50 = single.calls.p50();
    drop((scaled.server, single.server));
    Ok(Scaled {
        scaled: scaled.figures,
        single: single.figures,
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

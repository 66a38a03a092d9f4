//! What `cargo xtask bench` reads: wrk's requests/s and latency percentiles, and the CPU time
//! a server process (with its child processes, so a gRPC plugin's own process counts) spent
//! while wrk ran, from `/proc/<pid>/stat`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long each route is loaded.
pub(super) const DURATION: &str = "10s";
/// wrk's open connections.
pub(super) const CONNECTIONS: &str = "32";

/// One measured route.
pub(super) struct Measured {
    /// What was measured.
    pub(super) label: String,
    /// Requests per second over the run.
    pub(super) requests_per_second: f64,
    /// Median latency.
    pub(super) p50_ms: f64,
    /// 99th percentile latency.
    pub(super) p99_ms: f64,
    /// CPU-seconds the server (and its children) spent per 10,000 requests, when readable.
    pub(super) cpu_per_10k: Option<f64>,
}

/// A request wrk sends: method, URL, bearer token and body.
pub(super) struct Target<'a> {
    /// The row's label.
    pub(super) label: String,
    /// A JSON body to `POST`; `GET` without one.
    pub(super) post_body: Option<&'a str>,
    /// The URL.
    pub(super) url: String,
    /// A bearer token to send.
    pub(super) token: Option<&'a str>,
    /// The process whose CPU time is charged to the route.
    pub(super) pid: u32,
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

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`, else 100).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system ticks of one process (all its threads), `None` when unreadable.
fn own_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `after` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The live child processes of `pid` (from every thread's `children` list).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// CPU-seconds `pid` and its live descendants have used so far.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let mut total = own_ticks(pid)?;
    let mut pending = children(pid);
    while let Some(child) = pending.pop() {
        total += own_ticks(child).unwrap_or(0);
        pending.extend(children(child));
    }
    Some(total as f64 / ticks_per_second())
}

/// The CPU share (1.0 = one core) `pid` uses over `window`, `None` when unreadable.
pub(super) fn cpu_share(pid: u32, window: Duration) -> Option<f64> {
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let after = cpu_seconds(pid)?;
    Some((after - before) / started.elapsed().as_secs_f64())
}

/// Writes the wrk script that sends `body` by `POST` as JSON.
fn post_script(dir: &Path, body: &str) -> Result<std::path::PathBuf> {
    let script = dir.join("post.lua");
    let body = body.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{body}\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    Ok(script)
}

/// Runs wrk against `target` for [`DURATION`]; `warm_up` runs 1 s on one connection instead
/// and reads nothing.
pub(super) fn wrk(work: &Path, target: &Target<'_>, warm_up: bool) -> Result<Option<Measured>> {
    if warm_up {
        wrk_with(work, target, &["-t1", "-c1", "-d1s"], true)
    } else {
        wrk_with(
            work,
            target,
            &["-t2", "-c", CONNECTIONS, "-d", DURATION, "--latency"],
            false,
        )
    }
}

/// Runs wrk with `load` (its threads, connections, duration and `--latency`) against `target`;
/// `warm_up` reads nothing.
pub(super) fn wrk_with(
    work: &Path,
    target: &Target<'_>,
    load: &[&str],
    warm_up: bool,
) -> Result<Option<Measured>> {
    let label = &target.label;
    let mut command = Command::new("wrk");
    command.args(load);
    if let Some(token) = target.token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = target.post_body {
        command.arg("-s").arg(post_script(work, body)?);
    }
    command.arg(&target.url);
    if warm_up {
        let output = command.output().context("running wrk")?;
        if !output.status.success() {
            bail!("warm-up of {label} failed");
        }
        return Ok(None);
    }
    eprintln!("xtask: measuring {label}: {command:?}");
    let cpu_before = cpu_seconds(target.pid);
    let output = command.output().context("running wrk")?;
    let cpu_after = cpu_seconds(target.pid);
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
    // "123456 requests in 10.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<f64>().ok())
        .filter(|n| *n > 0.0);
    let cpu_per_10k = match (cpu_before, cpu_after, requests) {
        (Some(before), Some(after), Some(requests)) => Some((after - before) / requests * 1e4),
        _ => None,
    };
    Ok(Some(Measured {
        label: label.clone(),
        requests_per_second,
        p50_ms,
        p99_ms,
        cpu_per_10k,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_in_milliseconds() {
        assert_eq!(millis("2ms"), Some(2.0));
        assert_eq!(millis("500.00us"), Some(0.5));
        assert_eq!(millis("1.5s"), Some(1500.0));
        assert_eq!(millis("12"), None);
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}

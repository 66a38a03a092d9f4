//! `cargo xtask`: GoatKit's developer automation.
//!
//! - `cargo xtask test`: everything CI runs as tests (the README's test command): builds the
//!   WASM guests, then runs the workspace's tests.
//! - `cargo xtask build-plugins`: builds every Rust guest under `plugins/` and `examples/`.
//! - `cargo xtask serve`: builds and starts the server with the example plugins.
//! - `cargo xtask bench`: HTTP throughput, latency and CPU cost of plugin routes against plain
//!   axum.
//! - `cargo xtask bench-cluster`: one `gk serve` node against three on the machine's
//!   PostgreSQL and Redis, and how fast a policy change reaches the other nodes.
//! - `cargo xtask fuzz [CASES]`: the differential SQL test (guard against the SQLite engine)
//!   with many more generated statements than `test` runs, from a seed that changes each run.
//!
//! Commands print what they run, so a failure can be reproduced by hand.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod bench;
mod guests;

use guests::run;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "GoatKit developer automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run every test of the workspace (what CI runs).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build every Rust WASM guest under plugins/ and examples/ (installing the toolchain when
    /// missing).
    BuildPlugins,
    /// Requests/s, p50/p99 and server CPU-seconds per 10k requests of a WASM call without host
    /// call, a Stats route, a hello-grpc route and a plain axum handler (release builds, wrk),
    /// printed as a table with ratios to plain axum; then the idle server's CPU share.
    Bench,
    /// Requests/s of one cluster node against three (PostgreSQL store, Redis bus and shared
    /// limits, `GK_TEST_POSTGRES_URL` and `GK_TEST_REDIS_URL`), and p50/p99 of a policy
    /// change's propagation to the other nodes.
    BenchCluster,
    /// The differential SQL test with many generated statements (default 200000), from a new
    /// seed each run (printed, so a failure can be replayed with GK_SQL_SEED).
    Fuzz {
        /// How many statements to generate.
        #[arg(default_value_t = 200_000)]
        cases: u64,
    },
    /// Build and start the server with the example plugins on embedded defaults.
    Serve {
        /// Extra arguments passed to `gk serve` (for example `--listen 127.0.0.1:9000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::BuildPlugins => guests::build_plugins(&workspace_root()).map(|_| ()),
        Task::Bench => bench::bench(&workspace_root()),
        Task::BenchCluster => bench::bench_cluster(&workspace_root()),
        Task::Fuzz { cases } => {
            let seed = std::env::var("GK_SQL_SEED").unwrap_or_else(|_| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64 | 1)
                    .to_string()
            });
            eprintln!("xtask: differential SQL fuzzing, {cases} cases, GK_SQL_SEED={seed}");
            let mut test = cargo(&[
                "test",
                "--package",
                "gk-core",
                "--test",
                "all",
                "backends::sql_differential::differential_guard_and_engine_agree",
                "--",
                "--nocapture",
            ]);
            test.env("GK_SQL_CASES", cases.to_string())
                .env("GK_SQL_SEED", seed);
            run(&mut test)
        }
        Task::Test { args } => {
            guests::build_plugins(&workspace_root())?;
            // The process plugin the gk-grpc and gk-server tests start (cargo builds a binary
            // for a test only when it belongs to the test's own package).
            run(&mut cargo(&["build", "--package", "hello-grpc"]))?;
            let mut totals = TestTotals::default();
            let mut test = cargo(&[
                "test",
                "--no-fail-fast",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ]);
            test.args(&args);
            let unit = run_tests(test, &mut totals);
            let doc = run_tests(cargo(&["test", "--workspace", "--doc"]), &mut totals);
            // The guests' own unit tests (their workspaces are their own), run on the host.
            let mut guests = Ok(());
            for dir in guests::guest_crates(&workspace_root())? {
                let manifest = dir.join("Cargo.toml");
                let mut test = cargo(&["test", "--manifest-path"]);
                test.arg(&manifest);
                guests = guests.and(run_tests(test, &mut totals));
            }
            // One closing line for the whole run, so that CI reads the total and not the count of
            // whichever test binary happened to run last.
            println!(
                "tests: {} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.skipped
            );
            unit.and(doc).and(guests)
        }
        Task::Serve { args } => {
            let root = workspace_root();
            guests::build_plugins(&root)?;
            run(&mut cargo(&["build", "--package", "hello-grpc"]))?;
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), std::path::PathBuf::from);
            let binary = root.join("plugins/hello-grpc/hello-grpc");
            std::fs::copy(target.join("debug/hello-grpc"), &binary).with_context(|| {
                format!("copying the hello-grpc binary to {}", binary.display())
            })?;
            let mut serve = cargo(&[
                "run",
                "--package",
                "gk-server",
                "--bin",
                "gk",
                "--",
                "serve",
            ]);
            serve
                .arg("--config")
                .arg(root.join("goatkit.toml"))
                .args(&args);
            run(&mut serve)
        }
    }
}

/// Test counts summed over every `test result:` line of a cargo test run.
#[derive(Debug, Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl TestTotals {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.skipped += count,
                _ => {}
            }
        }
    }
}

/// Runs a `cargo test` command, echoing its output and adding its counts to `totals`.
fn run_tests(mut command: Command, totals: &mut TestTotals) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {command:?}"))?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading test output")?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(args);
    command
}

/// The workspace root (the parent of this crate): of the checkout `cargo xtask` runs in
/// (`cargo run` sets `CARGO_MANIFEST_DIR`), not of the one this binary was built in, as clones
/// that share a target directory share the binary.
fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    );
    manifest_dir
        .parent()
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_cargo_test_result_lines() {
        let mut totals = TestTotals::default();
        totals.add_line("test result: ok. 24 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        totals.add_line(
            "test result: FAILED. 8 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        totals.add_line("running 5 tests");
        assert_eq!((totals.passed, totals.failed, totals.skipped), (32, 1, 2));
    }
}

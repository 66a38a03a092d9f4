//! Building plugins from Rust source: WASM guests for `wasm32-unknown-unknown`, and gRPC
//! plugin executables. Used by `gk build` and, through `#[path]`, by `cargo xtask
//! build-plugins`, so both build the same way. Depends on `std` and `anyhow` only.
//!
//! Toolchain for guests: a rustup `wasm32-unknown-unknown` target when one is installed;
//! otherwise Debian's `rustc-web` with its library source and `-Zbuild-std` (installed with
//! apt-get when missing, which is said before it happens).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a command, saying what it runs; fails when the command fails.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    eprintln!("running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

const TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBRARY: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "lld"];

/// How guests are compiled on this machine.
enum Toolchain {
    /// rustup has the target's standard library.
    Rustup,
    /// Debian's rustc builds the standard library from source.
    DebianBuildStd,
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false)
}

fn debian_toolchain_ready() -> bool {
    Path::new(DEBIAN_RUSTC).is_file() && Path::new(DEBIAN_LIBRARY).is_dir() && which("wasm-ld")
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Finds (or installs) a toolchain that builds wasm32 guests.
fn toolchain() -> Result<Toolchain> {
    if rustup_has_target() {
        return Ok(Toolchain::Rustup);
    }
    if !debian_toolchain_ready() {
        eprintln!(
            "no rustup {TARGET} target here; installing Debian's {} with apt-get to build the standard library from source",
            DEBIAN_PACKAGES.join(", ")
        );
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        let mut install = Command::new("apt-get");
        install
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(DEBIAN_PACKAGES);
        run(&mut install)?;
        if !debian_toolchain_ready() {
            bail!(
                "after installing {}, {DEBIAN_RUSTC}, {DEBIAN_LIBRARY} or wasm-ld is still missing",
                DEBIAN_PACKAGES.join(", ")
            );
        }
    }
    Ok(Toolchain::DebianBuildStd)
}

/// The `[package] name` of a crate.
pub(crate) fn package_name(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    text.lines()
        .find_map(|line| {
            line.trim().strip_prefix("name").map(|rest| {
                rest.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
        })
        .with_context(|| format!("{}: no package name", dir.display()))
}

/// Builds one guest crate and returns the path of its `.wasm`.
pub(crate) fn build_guest(dir: &Path, target_dir: &Path) -> Result<PathBuf> {
    let toolchain = toolchain()?;
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .env("CARGO_TARGET_DIR", target_dir);
    // The host workspace's settings must not leak into the guest build.
    cargo
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER");
    if let Toolchain::DebianBuildStd = toolchain {
        cargo
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTFLAGS", "-C linker=wasm-ld")
            .arg("-Zbuild-std=std,panic_abort");
    }
    run(&mut cargo)?;
    let name = package_name(dir)?.replace('-', "_");
    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{name}.wasm"));
    if !wasm.is_file() {
        bail!(
            "the build of {} produced no {}",
            dir.display(),
            wasm.display()
        );
    }
    Ok(wasm)
}

/// What a plugin crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PluginKind {
    /// A `cdylib`: a WASM guest.
    Wasm,
    /// A binary: a gRPC plugin process.
    Grpc,
}

/// Whether the crate in `dir` is a WASM guest (`crate-type = ["cdylib"]`) or a gRPC plugin.
pub(crate) fn plugin_kind(dir: &Path) -> Result<PluginKind> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{} is not a plugin crate: it has no readable Cargo.toml (make one with `gk init`)",
            dir.display()
        )
    })?;
    Ok(if text.contains("cdylib") {
        PluginKind::Wasm
    } else {
        PluginKind::Grpc
    })
}

/// Builds the plugin crate in `dir` (release) into `target_dir` and copies the result beside
/// its Cargo.toml: `<package>.wasm` for a guest, the executable `<package>` for a gRPC plugin.
/// Returns the copied file.
pub(crate) fn build_plugin(dir: &Path, target_dir: &Path) -> Result<PathBuf> {
    let name = package_name(dir)?;
    let (built, destination) = match plugin_kind(dir)? {
        PluginKind::Wasm => (
            build_guest(dir, target_dir)?,
            dir.join(format!("{name}.wasm")),
        ),
        PluginKind::Grpc => {
            let mut cargo = Command::new("cargo");
            cargo
                .current_dir(dir)
                .args(["build", "--release"])
                .env("CARGO_TARGET_DIR", target_dir);
            run(&mut cargo)?;
            (target_dir.join("release").join(&name), dir.join(&name))
        }
    };
    // Replaced by rename so that a running process of the old executable is not disturbed.
    let staging = destination.with_extension("building");
    std::fs::copy(&built, &staging)
        .with_context(|| format!("copying {} to {}", built.display(), staging.display()))?;
    std::fs::rename(&staging, &destination)
        .with_context(|| format!("moving {} to {}", staging.display(), destination.display()))?;
    Ok(destination)
}

//! `cargo xtask build-plugins`: builds every Rust guest under `plugins/` and `examples/` for
//! `wasm32-unknown-unknown` and copies the modules beside their `plugin.yaml`.
//!
//! Toolchain: a rustup `wasm32-unknown-unknown` target when one is installed; otherwise Debian's
//! `rustc-web` with its library source and `-Zbuild-std` (installed with apt-get when missing,
//! which is said before it happens).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

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
            "xtask: no rustup {TARGET} target here; installing Debian's {} with apt-get to build the standard library from source",
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

/// The guest crates: directories under `plugins/` and `examples/` whose Cargo.toml builds a cdylib.
pub(crate) fn guest_crates(root: &Path) -> Result<Vec<PathBuf>> {
    let mut crates = Vec::new();
    for parent in ["plugins", "examples"] {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries {
            let dir = entry?.path();
            let manifest = dir.join("Cargo.toml");
            if manifest.is_file() && std::fs::read_to_string(&manifest)?.contains("cdylib") {
                crates.push(dir);
            }
        }
    }
    crates.sort();
    Ok(crates)
}

/// The `[package] name` of a crate.
fn package_name(dir: &Path) -> Result<String> {
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

/// Builds every guest and copies each module beside the crate as `<package>.wasm`.
pub(crate) fn build_plugins(root: &Path) -> Result<Vec<PathBuf>> {
    let target_dir = guest_target_dir(root);
    let mut built = Vec::new();
    for dir in guest_crates(root)? {
        let wasm = build_guest(&dir, &target_dir)?;
        let destination = dir.join(format!("{}.wasm", package_name(&dir)?));
        std::fs::copy(&wasm, &destination)
            .with_context(|| format!("copying {} to {}", wasm.display(), destination.display()))?;
        eprintln!(
            "xtask: built {} ({} bytes)",
            destination.display(),
            std::fs::metadata(&destination)?.len()
        );
        built.push(destination);
    }
    Ok(built)
}

/// Guests share one target directory (so the standard library is built once), beside the
/// workspace's.
pub(crate) fn guest_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("wasm-guests")
}

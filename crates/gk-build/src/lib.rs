//! gk-build: building plugins from Rust source, WASM guests for `wasm32-unknown-unknown` and
//! gRPC plugin executables. A leaf crate (no GoatKit dependency), used by `gk build` and by
//! `cargo xtask build-plugins`, so both build the same way.
//!
//! Toolchain for guests: a rustup `wasm32-unknown-unknown` target when one is installed;
//! otherwise Debian's `rustc-web` with its library source and `-Zbuild-std` (installed with
//! apt-get when missing, which is said before it happens). Each command run is said on stderr
//! before it runs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// Why a plugin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A command could not be started.
    #[error("could not start {command}: {source}")]
    Start {
        /// The command, as `Debug` shows it.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A command ended unsuccessfully.
    #[error("{command} failed with {status}")]
    Failed {
        /// The command, as `Debug` shows it.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// The Debian toolchain is still incomplete after installing it.
    #[error(
        "after installing {packages}, {DEBIAN_RUSTC}, {DEBIAN_LIBRARY} or wasm-ld is still missing"
    )]
    Toolchain {
        /// The packages installed.
        packages: String,
    },
    /// The directory has no readable `Cargo.toml`.
    #[error(
        "{} is not a plugin crate: it has no readable Cargo.toml (make one with `gk init`)",
        .dir.display()
    )]
    NotACrate {
        /// The directory.
        dir: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The `Cargo.toml` names no package.
    #[error("{}: no package name", .dir.display())]
    NoPackageName {
        /// The crate's directory.
        dir: PathBuf,
    },
    /// The build succeeded but its module is not where it should be.
    #[error("the build of {} produced no {}", .dir.display(), .wasm.display())]
    NoModule {
        /// The crate's directory.
        dir: PathBuf,
        /// Where the module was expected.
        wasm: PathBuf,
    },
    /// Copying or moving the result into place failed.
    #[error("{what} {} to {}: {source}", .from.display(), .to.display())]
    Place {
        /// `copying` or `moving`.
        what: &'static str,
        /// The file.
        from: PathBuf,
        /// Where it was going.
        to: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The result of a build step.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Runs a command, saying what it runs (on stderr); fails when the command fails.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("running {command:?}");
    let status = command.status().map_err(|source| BuildError::Start {
        command: format!("{command:?}"),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Failed {
            command: format!("{command:?}"),
            status,
        });
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
            return Err(BuildError::Toolchain {
                packages: DEBIAN_PACKAGES.join(", "),
            });
        }
    }
    Ok(Toolchain::DebianBuildStd)
}

/// The `[package] name` of a crate.
pub fn package_name(dir: &Path) -> Result<String> {
    let text = read_manifest(dir)?;
    text.lines()
        .find_map(|line| {
            line.trim().strip_prefix("name").map(|rest| {
                rest.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
        })
        .ok_or_else(|| BuildError::NoPackageName {
            dir: dir.to_owned(),
        })
}

/// The text of a crate's `Cargo.toml`.
fn read_manifest(dir: &Path) -> Result<String> {
    std::fs::read_to_string(dir.join("Cargo.toml")).map_err(|source| BuildError::NotACrate {
        dir: dir.to_owned(),
        source,
    })
}

/// Builds one guest crate and returns the path of its `.wasm`.
pub fn build_guest(dir: &Path, target_dir: &Path) -> Result<PathBuf> {
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
        return Err(BuildError::NoModule {
            dir: dir.to_owned(),
            wasm,
        });
    }
    Ok(wasm)
}

/// What a plugin crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// A `cdylib`: a WASM guest.
    Wasm,
    /// A binary: a gRPC plugin process.
    Grpc,
}

/// Whether the crate in `dir` is a WASM guest (`crate-type = ["cdylib"]`) or a gRPC plugin.
pub fn plugin_kind(dir: &Path) -> Result<PluginKind> {
    let text = read_manifest(dir)?;
    Ok(if text.contains("cdylib") {
        PluginKind::Wasm
    } else {
        PluginKind::Grpc
    })
}

/// Builds the plugin crate in `dir` (release) into `target_dir` and copies the result beside
/// its Cargo.toml: `<package>.wasm` for a guest, the executable `<package>` for a gRPC plugin.
/// Returns the copied file.
pub fn build_plugin(dir: &Path, target_dir: &Path) -> Result<PathBuf> {
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
    std::fs::copy(&built, &staging).map_err(|source| BuildError::Place {
        what: "copying",
        from: built.clone(),
        to: staging.clone(),
        source,
    })?;
    std::fs::rename(&staging, &destination).map_err(|source| BuildError::Place {
        what: "moving",
        from: staging.clone(),
        to: destination.clone(),
        source,
    })?;
    Ok(destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_is_named_and_kinded_by_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let err = plugin_kind(dir.path()).unwrap_err();
        assert!(matches!(err, BuildError::NotACrate { .. }), "{err}");
        assert!(
            err.to_string().ends_with("(make one with `gk init`)"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"my-guest\"\n[lib]\ncrate-type = [\"cdylib\"]\n",
        )
        .unwrap();
        assert_eq!(package_name(dir.path()).unwrap(), "my-guest");
        assert_eq!(plugin_kind(dir.path()).unwrap(), PluginKind::Wasm);
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
        assert!(matches!(
            package_name(dir.path()),
            Err(BuildError::NoPackageName { .. })
        ));
        assert_eq!(plugin_kind(dir.path()).unwrap(), PluginKind::Grpc);
    }

    #[test]
    fn a_failing_command_says_how_it_ended() {
        let err = run(Command::new("false").arg("x")).unwrap_err();
        assert!(matches!(err, BuildError::Failed { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("\"false\" \"x\" failed with exit status: 1"),
            "{err}"
        );
    }
}

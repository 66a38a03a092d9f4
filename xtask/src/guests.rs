//! `cargo xtask build-plugins`: builds every Rust guest under `plugins/` and `examples/` for
//! `wasm32-unknown-unknown` and copies the modules beside their `plugin.yaml`. The build itself
//! is the gk-build crate, shared with `gk build`.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Runs a command, saying what it runs ([`gk_build::run`]), as an `anyhow` result for xtask.
pub(crate) fn run(command: &mut std::process::Command) -> Result<()> {
    Ok(gk_build::run(command)?)
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

/// Builds every guest and copies each module beside the crate as `<package>.wasm`.
pub(crate) fn build_plugins(root: &Path) -> Result<Vec<PathBuf>> {
    let target_dir = guest_target_dir(root);
    let mut built = Vec::new();
    for dir in guest_crates(root)? {
        let destination = gk_build::build_plugin(&dir, &target_dir)?;
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

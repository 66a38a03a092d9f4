//! `gk init`: a new plugin project, complete and buildable, from the templates in `scaffold/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The runtime a new plugin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PluginType {
    /// A WASM module run in-process (the default runtime).
    Wasm,
    /// A native executable spoken to over gRPC.
    Grpc,
}

/// The files of each template, by path in the new project.
const WASM_FILES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("../../scaffold/wasm/Cargo.toml")),
    (
        "plugin.yaml",
        include_str!("../../scaffold/wasm/plugin.yaml"),
    ),
    ("src/lib.rs", include_str!("../../scaffold/wasm/src_lib.rs")),
    ("README.md", include_str!("../../scaffold/wasm/README.md")),
    (".gitignore", "/target\n*.wasm\n"),
];
const GRPC_FILES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("../../scaffold/grpc/Cargo.toml")),
    (
        "plugin.yaml",
        include_str!("../../scaffold/grpc/plugin.yaml"),
    ),
    (
        "src/main.rs",
        include_str!("../../scaffold/grpc/src_main.rs"),
    ),
    ("README.md", include_str!("../../scaffold/grpc/README.md")),
    (".gitignore", "/target\n"),
];

/// The gk-sdk of the GoatKit source this `gk` was built from, when it is still there.
fn bundled_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gk-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().ok())?
}

/// Writes a new plugin project `name` under `parent` (as `parent/name`) and returns its
/// directory. `sdk` is the path of gk-sdk (default: the one `gk` was built from).
pub(crate) fn init(
    name: &str,
    kind: PluginType,
    parent: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    gk_sdk::validate_plugin_name(name)
        .map_err(|problem| anyhow::anyhow!("`{name}` cannot name a plugin: {problem}"))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        bail!(
            "`{name}` cannot name a plugin crate: use a letter, then letters, digits, `-` or `_`"
        );
    }
    let sdk = match sdk {
        Some(path) => path
            .canonicalize()
            .with_context(|| format!("--sdk {}: no such directory", path.display()))?,
        None => bundled_sdk().context(
            "cannot find gk-sdk: pass --sdk PATH (the crates/gk-sdk directory of a GoatKit checkout)",
        )?,
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!(
            "{} is not the gk-sdk crate: it has no Cargo.toml",
            sdk.display()
        );
    }
    let dir = parent.join(name);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut e| e.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty: choose another name or --dir",
            dir.display()
        );
    }
    let sdk_spec = format!("path = {:?}", sdk.display().to_string());
    let files: &[(&str, &str)] = match kind {
        PluginType::Wasm => &WASM_FILES,
        PluginType::Grpc => &GRPC_FILES,
    };
    for (path, template) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = template
            .replace("{{name}}", name)
            .replace("{{sdk}}", &sdk_spec);
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    // The versions GoatKit was built and tested with, so the first build resolves nothing new.
    if let Some(lock) = sdk
        .parent()
        .and_then(Path::parent)
        .map(|ws| ws.join("Cargo.lock"))
        && lock.is_file()
    {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_plugins_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "1abc", "with space", "a/b"] {
            let error = init(bad, PluginType::Wasm, dir.path(), None).unwrap_err();
            assert!(
                error.to_string().contains("cannot name a plugin"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn an_existing_project_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("taken")).unwrap();
        std::fs::write(dir.path().join("taken/keep.txt"), "mine").unwrap();
        let error = init("taken", PluginType::Grpc, dir.path(), None).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("taken/keep.txt")).unwrap(),
            "mine"
        );
    }
}

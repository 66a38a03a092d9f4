//! `gk init` and `gk build`: write a new plugin project, and build one (through the `gk-build`
//! crate, which `cargo xtask build-plugins` uses too).

use std::path::PathBuf;

use super::scaffold;

/// The arguments of `gk init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The plugin's name (also the crate's and the directory's).
    name: String,
    /// The runtime it is for.
    #[arg(long = "type", value_enum, default_value = "wasm")]
    kind: scaffold::PluginType,
    /// Where to create the project directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The gk-sdk crate to depend on (default: the one this `gk` was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// The arguments of `gk build`.
#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The plugin project.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Cargo's target directory [default: $CARGO_TARGET_DIR, else DIR/target].
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

/// `gk init`.
pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let InitArgs {
        name,
        kind,
        dir,
        sdk,
    } = args;
    let project = scaffold::init(&name, kind, &dir, sdk.as_deref())?;
    println!(
        "created {}\nbuild it with: gk build {}",
        project.display(),
        project.display()
    );
    Ok(())
}

/// `gk build`.
pub(crate) fn build(args: BuildArgs) -> anyhow::Result<()> {
    let BuildArgs { dir, target_dir } = args;
    let target_dir = target_dir
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| dir.join("target"));
    let built = gk_build::build_plugin(&dir, &target_dir)?;
    println!(
        "built {}: copy {} into the server's plugins directory",
        built.display(),
        dir.display()
    );
    Ok(())
}

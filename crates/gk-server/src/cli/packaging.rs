//! `gk package`: a plugin package (ZIP) from a directory with a plugin.yaml, built by
//! gk-core's `packaging`.

use std::path::PathBuf;

use anyhow::Context;

/// The arguments of `gk package`.
#[derive(Debug, clap::Args)]
pub(crate) struct PackageArgs {
    /// The plugin directory.
    dir: PathBuf,
    /// The package to write.
    #[arg(short, long)]
    output: PathBuf,
}

/// `gk package`: builds the package and prints which plugin it holds.
pub(crate) async fn package(args: PackageArgs) -> anyhow::Result<()> {
    let PackageArgs { dir, output } = args;
    let manifest = gk_core::packaging::build(&dir, &output)
        .await
        .with_context(|| format!("cannot package {}", dir.display()))?;
    println!(
        "{}: package of plugin `{}`",
        output.display(),
        manifest.name
    );
    Ok(())
}

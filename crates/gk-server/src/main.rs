//! `gk`: the GoatKit server and command line.
//!
//! gk-server is the thin composition layer: HTTP and CLI adapters over gk-core, gk-wasm and
//! gk-grpc. It holds no business logic. Today it parses its command line; `gk serve` lands with
//! the server issue.

use clap::{Parser, Subcommand};

/// GoatKit: run and manage GoatFlow plugins.
#[derive(Debug, Parser)]
#[command(name = "gk", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server with the plugins of the plugins directory.
    Serve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            anyhow::bail!(
                "`gk serve` is not built yet: the HTTP server lands with the gk-server issue. \
                 `cargo xtask test` runs what exists today."
            )
        }
    }
}

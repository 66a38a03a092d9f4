//! `cargo xtask`: GoatKit's developer automation.
//!
//! - `cargo xtask test`: everything CI runs as tests (the README's test command).
//! - `cargo xtask serve`: builds and starts the server with the example plugins.
//!
//! Commands print what they run, so a failure can be reproduced by hand.

use std::process::Command;

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
    /// Build and start the server with the example plugins on embedded defaults.
    Serve {
        /// Extra arguments passed to `gk serve`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Test { args } => {
            let mut test = cargo(&["test", "--workspace", "--all-targets"]);
            test.args(&args);
            run(test)?;
            run(cargo(&["test", "--workspace", "--doc"]))
        }
        Task::Serve { args } => {
            let mut serve = cargo(&["run", "--package", "gk-server", "--bin", "gk", "--", "serve"]);
            serve.args(&args);
            run(serve)
        }
    }
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(args);
    command
}

fn run(mut command: Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command.status().with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

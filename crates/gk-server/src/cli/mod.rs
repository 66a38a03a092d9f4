//! The `gk` subcommands, one file per command or group of related commands. `main.rs` parses
//! the command line and calls one function here per subcommand; each file holds that
//! subcommand's clap arguments and what it does, printing included.
//!
//! The CLI is the one place where anyhow is used (besides xtask).

pub(crate) mod config;
pub(crate) mod packaging;
pub(crate) mod plugins;
pub(crate) mod project;
mod remote;
mod scaffold;
pub(crate) mod serve;
pub(crate) mod signing;
pub(crate) mod token;

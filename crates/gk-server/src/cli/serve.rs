//! `gk serve`: start the server, print where it listens, run until Ctrl-C or SIGTERM, then
//! shut down gracefully.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command};
use gk_server::ServeConfig;
use gk_server::config::flags;

use super::config::load_config;

/// The options of `gk serve`: `--config`, and a flag for each configuration key that has one
/// (declared with the key, in `gk_server::config`); each flag overrides goatkit.toml and the
/// environment.
#[derive(Debug)]
pub(crate) struct ServeArgs {
    /// The configuration file (default: ./goatkit.toml when it exists).
    config: Option<PathBuf>,
    /// The configuration flags given: name without `--`, and value (`true` for a switch).
    given: Vec<(&'static str, String)>,
}

/// The id of `--config`.
const CONFIG: &str = "config";

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let config = Arg::new(CONFIG)
            .long(CONFIG)
            .env("GOATKIT_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("The configuration file (default: ./goatkit.toml when it exists)");
        flags().fold(command.arg(config), |command, flag| {
            let help = flag.help.trim_end_matches('.');
            let arg = Arg::new(flag.long).long(flag.long).help(help);
            command.arg(match flag.value_name {
                Some(name) => arg.value_name(name).action(ArgAction::Set),
                None => arg.action(ArgAction::SetTrue),
            })
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = Self {
            config: None,
            given: Vec::new(),
        };
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(file) = matches.get_one::<PathBuf>(CONFIG) {
            self.config = Some(file.clone());
        }
        for flag in flags() {
            let value = match flag.value_name {
                Some(_) => matches.get_one::<String>(flag.long).cloned(),
                None => matches.get_flag(flag.long).then(|| "true".to_owned()),
            };
            if let Some(value) = value {
                self.given.retain(|(long, _)| *long != flag.long);
                self.given.push((flag.long, value));
            }
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The configuration (file, then environment), with these flags applied on top.
    fn config(self) -> anyhow::Result<ServeConfig> {
        let mut config = load_config(self.config.as_deref())?;
        config
            .apply_flags(
                self.given
                    .iter()
                    .map(|(long, value)| (*long, value.as_str())),
            )
            .context("the command line cannot be used")?;
        Ok(config)
    }
}

/// `gk serve`.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let server = gk_server::start(&config)
        .await
        .context("the server could not start")?;
    println!(
        "GoatKit listening on http://{addr}/ (plugins: {plugins})\n\
         Database: {database}; cache: {cache}; email: outbox table\n\
         Admin page: http://{addr}/admin/plugins",
        addr = server.addr,
        plugins = server.manager.names().join(", "),
        database = config.database_url(),
        cache = config.redis_url.as_deref().unwrap_or("in memory"),
    );
    match &server.first_admin_token {
        Some(token) => println!(
            "First start: an admin token (valid 24 h, shown once):\n  {token}\n\
             Mint more with `gk token --user NAME --role admin|agent`."
        ),
        None => {
            println!("Mint an API token with `gk token --user NAME --role admin|agent`.")
        }
    }
    stop_signal().await;
    tracing::info!("stopping: finishing in-flight requests, then shutting plugins down");
    server.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

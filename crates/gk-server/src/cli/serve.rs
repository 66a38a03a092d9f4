//! `gk serve`: start the server, print where it listens, run until Ctrl-C or SIGTERM, then
//! shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use gk_server::ServeConfig;

use super::config::load_config;

/// The options of `gk serve`; each flag overrides goatkit.toml and the environment.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The configuration file (default: ./goatkit.toml when it exists).
    #[arg(long, env = "GOATKIT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The plugins directory, scanned at start, then watched [default: plugins].
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Where the database, unpacked packages and caches are kept [default: data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Refuse plugins without a valid signature from a trusted key.
    #[arg(long)]
    require_signatures: bool,
    /// A directory of trusted public keys (hex, one per file).
    #[arg(long)]
    trusted_keys: Option<PathBuf>,
    /// How long a request may take, plugin call included (`60s`, `2m`) [default: 60s].
    #[arg(long)]
    request_timeout: Option<String>,
    /// Load every enabled plugin at start (default: on first use).
    #[arg(long)]
    eager: bool,
    /// This node's id in its cluster (`[cluster]`) [default: host name and port].
    #[arg(long)]
    node_id: Option<String>,
}

impl ServeArgs {
    /// The configuration (file, then environment), with these flags applied on top.
    fn config(self) -> anyhow::Result<ServeConfig> {
        let mut config = load_config(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(plugins) = self.plugins {
            config.plugins_dir = plugins;
        }
        if let Some(data) = self.data {
            config.data_dir = data;
        }
        config.require_signatures |= self.require_signatures;
        if let Some(keys) = self.trusted_keys {
            config.trusted_keys_dir = Some(keys);
        }
        if let Some(timeout) = self.request_timeout {
            config.request_timeout = gk_sdk::parse_duration(&timeout)
                .with_context(|| format!("--request-timeout `{timeout}`"))?;
        }
        config.eager_loading |= self.eager;
        if let Some(id) = self.node_id {
            config.cluster.set_node_id(&id)?;
        }
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

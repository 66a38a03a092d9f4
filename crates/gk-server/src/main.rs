//! `gk`: the GoatKit server and command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gk_server::ServeConfig;

/// GoatKit: run and manage GoatFlow plugins.
#[derive(Debug, Parser)]
#[command(name = "gk", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server with the plugins of the plugins directory. With no options it runs on
    /// embedded defaults: SQLite under ./data, in-memory cache, outbox email, ./plugins,
    /// 127.0.0.1:8080.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "GOATKIT_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The plugins directory (scanned at start, then watched).
        #[arg(long, env = "GOATKIT_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// Where the database, unpacked packages and caches are kept.
        #[arg(long, env = "GOATKIT_DATA", default_value = "data")]
        data: PathBuf,
        /// Refuse plugins without a valid signature from a trusted key.
        #[arg(long, env = "GOATFLOW_REQUIRE_SIGNATURES")]
        require_signatures: bool,
        /// A directory of trusted public keys (hex, one per file).
        #[arg(long, env = "GOATKIT_TRUSTED_KEYS")]
        trusted_keys: Option<PathBuf>,
    },
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            plugins,
            data,
            require_signatures,
            trusted_keys,
        } => {
            let config = ServeConfig {
                listen,
                plugins_dir: plugins,
                data_dir: data,
                require_signatures,
                trusted_keys_dir: trusted_keys,
            };
            let server = gk_server::start(&config)
                .await
                .context("the server could not start")?;
            println!(
                "GoatKit listening on http://{}/ (plugins: {})",
                server.addr,
                server.manager.names().join(", ")
            );
            stop_signal().await;
            tracing::info!("stopping: finishing in-flight requests, then shutting plugins down");
            server.shutdown().await;
            Ok(())
        }
    }
}

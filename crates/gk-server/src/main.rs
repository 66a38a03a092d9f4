//! `gk`: the GoatKit server and command line.

use std::net::SocketAddr;
use std::path::PathBuf;

mod cli;
mod remote;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gk_server::ServeConfig;
use gk_server::auth::{Role, TokenKeys, secret_path};

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
        /// Seconds a request may take, plugin call included.
        #[arg(long, env = "GOATKIT_REQUEST_TIMEOUT", default_value_t = 60)]
        request_timeout: u64,
        /// Load every enabled plugin at start (default: on first use).
        #[arg(long, env = "GOATKIT_EAGER")]
        eager: bool,
        /// The secret API tokens are signed with (at least 32 bytes). Without it the server
        /// generates one into the data directory on first start.
        #[arg(long, env = "GOATKIT_TOKEN_SECRET", hide_env_values = true)]
        token_secret: Option<String>,
    },
    /// Generate an ed25519 key pair for signing plugins: `<name>.key` (keep it secret) and
    /// `<name>.pub` (give it to the servers that should trust your plugins).
    Keygen {
        /// Directory to write the keys into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// File name of the keys, without extension.
        #[arg(long, default_value = "goatkit")]
        name: String,
    },
    /// Sign a plugin file (module, binary or package): writes `<file>.sig`.
    Sign {
        /// The file to sign.
        file: PathBuf,
        /// The private key file made by `gk keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Verify a plugin file's `<file>.sig` against trusted public keys; fails when none matches.
    Verify {
        /// The signed file.
        file: PathBuf,
        /// A public key file or hex key (repeat for several).
        #[arg(long, required = true)]
        pubkey: Vec<String>,
    },
    /// Build a plugin package (ZIP) from a directory with a plugin.yaml.
    Package {
        /// The plugin directory.
        dir: PathBuf,
        /// The package to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Manage the plugins of a running server through its API.
    Plugins {
        /// The server's base URL.
        #[arg(long, env = "GOATKIT_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// An API token (`gk token`); enable and disable need an admin token.
        #[arg(long, env = "GOATKIT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        action: PluginsAction,
    },
    /// Mint an API token from the server's secret (the configured one, or the one `gk serve`
    /// generated into the data directory).
    Token {
        /// The user the token is for.
        #[arg(long)]
        user: String,
        /// What the token allows.
        #[arg(long, value_enum, default_value = "agent")]
        role: Role,
        /// How many hours the token is valid.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// The data directory of the server.
        #[arg(long, env = "GOATKIT_DATA", default_value = "data")]
        data: PathBuf,
        /// The secret, when the server is configured with one.
        #[arg(long, env = "GOATKIT_TOKEN_SECRET", hide_env_values = true)]
        token_secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsAction {
    /// List the loaded and discovered plugins with their state.
    List,
    /// Enable a plugin.
    Enable {
        /// The plugin.
        name: String,
    },
    /// Disable a plugin: its routes, widgets and jobs disappear, calls get 403.
    Disable {
        /// The plugin.
        name: String,
    },
    /// Call a plugin function and print its JSON reply.
    Call {
        /// The plugin.
        name: String,
        /// The function.
        function: String,
        /// The arguments, as JSON.
        #[arg(default_value = "{}")]
        args: String,
    },
}

async fn plugins(
    server: String,
    token: Option<String>,
    action: PluginsAction,
) -> anyhow::Result<()> {
    let remote = remote::Remote { server, token };
    match action {
        PluginsAction::List => {
            let list = remote.send("GET", "/api/v1/plugins", "").await?;
            print!("{}", remote::plugin_table(&list));
        }
        PluginsAction::Enable { name } => {
            remote
                .send("POST", &format!("/api/v1/plugins/{name}/enable"), "")
                .await?;
            println!("{name}: enabled");
        }
        PluginsAction::Disable { name } => {
            remote
                .send("POST", &format!("/api/v1/plugins/{name}/disable"), "")
                .await?;
            println!("{name}: disabled");
        }
        PluginsAction::Call {
            name,
            function,
            args,
        } => {
            serde_json::from_str::<serde_json::Value>(&args)
                .with_context(|| format!("the arguments must be JSON, got `{args}`"))?;
            let reply = remote
                .send(
                    "POST",
                    &format!("/api/v1/plugins/{name}/call/{function}"),
                    &args,
                )
                .await?;
            println!("{reply}");
        }
    }
    Ok(())
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
            request_timeout,
            eager,
            token_secret,
        } => {
            let config = ServeConfig {
                listen,
                plugins_dir: plugins,
                data_dir: data,
                require_signatures,
                trusted_keys_dir: trusted_keys,
                request_timeout: std::time::Duration::from_secs(request_timeout),
                eager_loading: eager,
                token_secret,
            };
            let server = gk_server::start(&config)
                .await
                .context("the server could not start")?;
            println!(
                "GoatKit listening on http://{}/ (plugins: {})",
                server.addr,
                server.manager.names().join(", ")
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
        Command::Keygen { out, name } => {
            let (key, pubkey) = cli::keygen(&out, &name)?;
            println!(
                "private key: {} (keep it secret)\npublic key:  {} (trust it with `gk serve --trusted-keys DIR`)",
                key.display(),
                pubkey.display()
            );
            Ok(())
        }
        Command::Sign { file, key } => {
            println!("{}", cli::sign(&file, &key)?.display());
            Ok(())
        }
        Command::Verify { file, pubkey } => {
            cli::verify(&file, &pubkey)?;
            println!("{}: signature verified", file.display());
            Ok(())
        }
        Command::Package { dir, output } => {
            let name = cli::package(&dir, &output).await?;
            println!("{}: package of plugin `{name}`", output.display());
            Ok(())
        }
        Command::Plugins {
            server,
            token,
            action,
        } => plugins(server, token, action).await,
        Command::Token {
            user,
            role,
            hours,
            data,
            token_secret,
        } => {
            let secret = match token_secret {
                Some(secret) => secret.trim().as_bytes().to_vec(),
                None => {
                    let path = secret_path(&data);
                    std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!(
                                "cannot read {}: start `gk serve` once (it generates the secret) \
                                 or pass --token-secret",
                                path.display()
                            )
                        })?
                        .trim()
                        .as_bytes()
                        .to_vec()
                }
            };
            let token = TokenKeys::from_secret(&secret)?.mint(
                &user,
                role,
                std::time::Duration::from_secs(hours.saturating_mul(3600)),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

//! `gk token`: mint an API token from the server's secret (the configured one, or the one
//! `gk serve` generated into the data directory).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gk_server::auth::{Role, TokenKeys, secret_path};

use super::config::load_config;

/// The arguments of `gk token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The user the token is for.
    #[arg(long)]
    user: String,
    /// What the token allows.
    #[arg(long, value_enum, default_value = "agent")]
    role: Role,
    /// How many hours the token is valid.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// The server's configuration file (default: ./goatkit.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The server's data directory (overrides the configuration).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// `gk token`: prints the token.
pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let TokenArgs {
        user,
        role,
        hours,
        config,
        data,
    } = args;
    let mut config = load_config(config.as_deref())?;
    if let Some(data) = data {
        config.data_dir = data;
    }
    let secret = match config.token_secret {
        Some(secret) => secret.trim().as_bytes().to_vec(),
        None => {
            let path = secret_path(&config.data_dir);
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "cannot read {}: start `gk serve` once (it generates the secret), \
                         pass --data for the server's data directory, or set \
                         GOATKIT_TOKEN_SECRET",
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
        Duration::from_secs(hours.saturating_mul(3600)),
    )?;
    println!("{token}");
    Ok(())
}

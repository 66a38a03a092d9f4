//! `gk plugins`: list, enable, disable, approve and call the plugins of a running server
//! through its API (the HTTP client is `remote.rs`).

use anyhow::Context;

use super::remote::{self, Remote};

/// The arguments of `gk plugins`.
#[derive(Debug, clap::Args)]
pub(crate) struct PluginsArgs {
    /// The server's base URL.
    #[arg(long, env = "GOATKIT_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An API token (`gk token`); enable, disable and approve need an admin token.
    #[arg(long, env = "GOATKIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    action: PluginsAction,
}

/// What `gk plugins` does.
#[derive(Debug, clap::Subcommand)]
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
    /// Grant a plugin what it requests (its plugin.yaml `resources`) and print the policy.
    Approve {
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

/// `gk plugins`.
pub(crate) async fn run(args: PluginsArgs) -> anyhow::Result<()> {
    let PluginsArgs {
        server,
        token,
        action,
    } = args;
    let remote = Remote { server, token };
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
        PluginsAction::Approve { name } => {
            let policy = remote
                .send("POST", &format!("/api/v1/plugins/{name}/approve"), "")
                .await?;
            println!("{name}: approved");
            // What the grant reaches, in words: a request without scope is granted as `*`,
            // "every table", "any public host".
            match serde_json::from_value::<gk_sdk::ResourcePolicy>(policy.clone()) {
                Ok(granted) => {
                    for permission in &granted.permissions {
                        println!("  {}", permission.summary());
                    }
                }
                Err(_) => println!("{policy}"),
            }
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

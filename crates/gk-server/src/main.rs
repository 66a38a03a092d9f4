//! `gk`: the GoatKit server and command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod cli;
mod remote;
mod scaffold;

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
    /// Start the server with the plugins of the plugins directory. With no configuration it
    /// runs on embedded defaults: SQLite under ./data, in-memory cache, outbox email, ./plugins,
    /// 127.0.0.1:8080. Settings come from goatkit.toml, then GOATKIT_* variables (one per key,
    /// e.g. GOATKIT_LISTEN, GOATKIT_DATABASE_URL, GOATKIT_APPROVE), then these flags.
    Serve(ServeArgs),
    /// Write a new plugin project: a Cargo project, plugin.yaml and a README with the build
    /// command. Build it with `gk build DIR`.
    Init {
        /// The plugin's name (also the crate's and the directory's).
        name: String,
        /// The runtime it is for.
        #[arg(long = "type", value_enum, default_value = "wasm")]
        kind: scaffold::PluginType,
        /// Where to create the project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The gk-sdk crate to depend on (default: the one this `gk` was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin project (release): `<name>.wasm` for a WASM plugin (installing the WASM
    /// toolchain when it is missing, and saying so), the executable for a gRPC plugin, written
    /// beside its plugin.yaml.
    Build {
        /// The plugin project.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Cargo's target directory [default: $CARGO_TARGET_DIR, else DIR/target].
        #[arg(long)]
        target_dir: Option<PathBuf>,
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
        /// An API token (`gk token`); enable, disable and approve need an admin token.
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
        /// The server's configuration file (default: ./goatkit.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The server's data directory (overrides the configuration).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// The options of `gk serve`; each flag overrides goatkit.toml and the environment.
#[derive(Debug, clap::Args)]
struct ServeArgs {
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

/// The configuration: `file` or ./goatkit.toml when it exists, then the environment.
fn load_config(file: Option<&Path>) -> anyhow::Result<ServeConfig> {
    let default = Path::new(gk_server::config::DEFAULT_CONFIG_FILE);
    let file = file.or_else(|| default.is_file().then_some(default));
    let mut environment = gk_server::config::Environment::process();
    if let Some(secret) = TOKEN_SECRET_ENV.get().cloned().flatten() {
        environment.set(TOKEN_SECRET_VAR, secret);
    }
    ServeConfig::load(file, &environment).context("the configuration cannot be used")
}

/// The environment variable holding the token secret.
const TOKEN_SECRET_VAR: &str = "GOATKIT_TOKEN_SECRET";

/// [`TOKEN_SECRET_VAR`] as the process started with it. It is taken out of the environment at
/// the start of `main`, so that no child process inherits it and `/proc/<pid>/environ` does
/// not show it.
static TOKEN_SECRET_ENV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Reads [`TOKEN_SECRET_VAR`], wipes its value in the process's initial environment block
/// (what `/proc/<pid>/environ` reads) and removes it from the environment.
fn take_token_secret_from_environment() -> Option<String> {
    let value = std::env::var(TOKEN_SECRET_VAR).ok();
    unsafe extern "C" {
        static environ: *const *mut std::ffi::c_char;
    }
    let prefix = format!("{TOKEN_SECRET_VAR}=");
    // SAFETY: this runs first thing in `main`, before the async runtime or any other thread
    // exists, so nothing else reads or writes the environment meanwhile. `environ` is the C
    // library's NULL-terminated array of NUL-terminated strings; only the bytes of the matching
    // entry after its `=` are overwritten, up to (not including) its terminating NUL.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = *entry;
            if std::ffi::CStr::from_ptr(text)
                .to_bytes()
                .starts_with(prefix.as_bytes())
            {
                let mut byte = text.add(prefix.len());
                while *byte != 0 {
                    *byte = 0;
                    byte = byte.add(1);
                }
            }
            entry = entry.add(1);
        }
        std::env::remove_var(TOKEN_SECRET_VAR);
    }
    value
}

impl ServeArgs {
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

fn main() -> anyhow::Result<()> {
    TOKEN_SECRET_ENV.get_or_init(take_token_secret_from_environment);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
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
        Command::Init {
            name,
            kind,
            dir,
            sdk,
        } => {
            let project = scaffold::init(&name, kind, &dir, sdk.as_deref())?;
            println!(
                "created {}\nbuild it with: gk build {}",
                project.display(),
                project.display()
            );
            Ok(())
        }
        Command::Build { dir, target_dir } => {
            let target_dir = target_dir
                .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
                .unwrap_or_else(|| dir.join("target"));
            let built = gk_build::build_plugin(&dir, &target_dir)?;
            println!(
                "built {}: copy {} into the server's plugins directory",
                built.display(),
                dir.display()
            );
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
            config,
            data,
        } => {
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
                std::time::Duration::from_secs(hours.saturating_mul(3600)),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

//! What `gk serve` runs with. Every field has an embedded default, so a fresh machine needs no
//! configuration at all: SQLite under `./data`, an in-memory cache, the outbox for email,
//! plugins from `./plugins`, listening on 127.0.0.1:8080.
//!
//! Values come, each overriding the one before, from the defaults, `goatkit.toml` (relative
//! paths in it are relative to the file), `GOATKIT_*` environment variables, and command-line
//! flags. [`ServeConfig::load`] does the first three; the CLI applies its flags on top with
//! [`ServeConfig::apply_flags`].
//!
//! Each key is declared once, in `keys.rs`: its dotted path in the file, its variables, its
//! flag (see [`flags`]), what the file holds, what it is for, and how its value is read. The
//! defaults are [`ServeConfig::default`]. The layering is generic (`layers.rs`): a key's value,
//! whichever layer gives it, goes through the same setter, and its errors name the key, the
//! variable or the flag it came from.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! plugins_dir = "plugins"
//! data_dir = "data"
//! request_timeout = "60s"
//! eager_loading = false
//! require_signatures = false
//! trusted_keys_dir = "trusted-keys"
//! token_secret = "a secret of at least 32 bytes, never shared"
//! redis_url = "redis://127.0.0.1:6379"
//! approve = ["stats"]        # grant these plugins what they request, unless already reviewed
//! metrics_token = "a secret for scrapers"   # `/metrics` also takes an admin token
//! overridable_templates = []  # host templates plugins may override (never layout/admin)
//! log_line_bytes = 8192       # longer log messages are truncated, with a marker
//! log_ring_bytes = 1048576    # each plugin's log ring, in bytes (and at most 1000 entries)
//! cache_quota_bytes = 16777216 # what one plugin may hold in the cache (keys and values)
//! allow_unisolated_native_plugins = false # run gRPC plugins even where they cannot be isolated
//! native_plugin_read_only_paths = ["/opt/python3.12"] # more host paths gRPC plugins see, read-only
//!
//! [database]
//! url = "sqlite://data/goatkit.db"  # or postgres://…, mysql://…
//! init_sql = ["plugins/stats/schema.sql", "plugins/stats/seed.sql"]
//! query_timeout = "10s"          # a plugin's statement is stopped in the engine after this
//! max_rows = 10000               # rows one statement may return
//! max_result_bytes = 16777216    # bytes of row data one statement may return
//! max_concurrent_queries = 4     # statements one plugin may run at the same time
//!
//! [databases.reports]            # more databases, reached as `@reports:SELECT …`
//! url = "postgres://127.0.0.1/reports"
//!
//! [http]                         # plugins' outbound HTTP
//! connect_timeout = "5s"
//! timeout = "30s"
//! max_response_bytes = 10485760
//! allow_private = ["10.1.2.0/24", "127.0.0.1:8025"]  # internal networks opened (none by default)
//!
//! [email]                        # SMTP instead of the outbox table
//! smtp_url = "smtp://user:pass@mail.example.com:587"  # smtps:// for implicit TLS
//! from = "GoatFlow <helpdesk@example.com>"
//! security = "starttls"          # or "tls", "none"; by default from the scheme
//! timeout = "10s"
//!
//! [app]                          # app.* keys plugins read
//! name = "GoatFlow"
//! base_url = "https://help.example.com"
//! timezone = "Europe/Berlin"
//! default_language = "en"
//!
//! [config]                       # more keys plugins read, flattened: helpdesk.url
//! helpdesk = { url = "https://help.example.com" }
//!
//! [plugins.stats]                # one plugin's settings: plugins.stats.page_size
//! page_size = 20
//!
//! [cluster]                      # several nodes as one platform (docs/CLUSTER.md)
//! enabled = true                 # needs a PostgreSQL or MariaDB store; Redis via redis_url
//! node_id = "helpdesk-1"         # default: host name and listen port
//! prefix = "goatkit"             # Redis keys and channel
//! reconcile_every = "10s"        # every plugin compared with the store, messages or not
//! heartbeat_every = "2s"
//! ```
//!
//! What plugins read (`app`, `config`, `plugins`) is read again on SIGHUP or when the file
//! changes, without a restart; everything else needs one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gk_core::host::ConfigValues;

mod cluster;
mod env;
mod keys;
mod layers;
mod parse;
mod sections;
mod services;

use parse::value_error;

pub use cluster::ClusterSettings;
pub use env::Environment;
pub use layers::{Flag, flags};
pub use services::{AppSettings, DEFAULT_SMTP_TIMEOUT, EmailSettings, HttpSettings};

/// How long a request may take by default, plugin call included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The configuration file `gk serve` reads from the working directory when `--config` is not
/// given (and it exists).
pub const DEFAULT_CONFIG_FILE: &str = "goatkit.toml";

/// Where the server listens, keeps its files, and which services it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address of the HTTP listener (`listen`, `GOATKIT_LISTEN`).
    pub listen: SocketAddr,
    /// The plugins directory, scanned then watched (`plugins_dir`, `GOATKIT_PLUGINS_DIR`).
    pub plugins_dir: PathBuf,
    /// Where the SQLite database, unpacked packages, the module cache and sockets live
    /// (`data_dir`, `GOATKIT_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Refuse unsigned or badly signed plugins (`require_signatures`,
    /// `GOATKIT_REQUIRE_SIGNATURES`, or the Go host's `GOATFLOW_REQUIRE_SIGNATURES`).
    pub require_signatures: bool,
    /// A directory of trusted public keys, hex, one file per key (`trusted_keys_dir`,
    /// `GOATKIT_TRUSTED_KEYS_DIR`).
    pub trusted_keys_dir: Option<PathBuf>,
    /// How long a request may take before it is answered `504 request_timeout`
    /// (`request_timeout`, `GOATKIT_REQUEST_TIMEOUT`, as `60s`, `1m30s`…).
    pub request_timeout: Duration,
    /// Load every enabled plugin at start instead of on first use (`eager_loading`,
    /// `GOATKIT_EAGER_LOADING`).
    pub eager_loading: bool,
    /// The secret tokens are signed with, at least 32 bytes (`token_secret`,
    /// `GOATKIT_TOKEN_SECRET`); `None` uses the one kept in the data directory, generated on
    /// first start.
    pub token_secret: Option<String>,
    /// The database the platform and the plugins use (`database.url`, `GOATKIT_DATABASE_URL`);
    /// `None` is SQLite under the data directory.
    pub database_url: Option<String>,
    /// SQL files run against the database at start, each once per content (`database.init_sql`,
    /// `GOATKIT_DATABASE_INIT_SQL`, comma-separated): the demo tables of the examples, say.
    pub init_sql: Vec<PathBuf>,
    /// The guards on plugin statements (`database.query_timeout`, `database.max_rows`,
    /// `database.max_result_bytes`, `database.max_concurrent_queries`; `GOATKIT_DATABASE_*`).
    pub database_limits: DatabaseLimits,
    /// A Redis server for the plugin cache (`redis_url`, `GOATKIT_REDIS_URL`); `None` keeps the
    /// cache in memory.
    pub redis_url: Option<String>,
    /// Plugins granted what they request unless an admin has reviewed them already (`approve`,
    /// `GOATKIT_APPROVE`, comma-separated).
    pub approve: Vec<String>,
    /// A bearer token that reads `/metrics` (`metrics_token`, `GOATKIT_METRICS_TOKEN`), for
    /// scrapers; an admin token reads it too. `None`: only admin tokens.
    pub metrics_token: Option<String>,
    /// The host templates plugins may override (`overridable_templates`,
    /// `GOATKIT_OVERRIDABLE_TEMPLATES`, comma-separated); the layout and the admin templates
    /// never are.
    pub overridable_templates: Vec<String>,
    /// The longest log message kept, in bytes; longer ones are truncated with a marker
    /// (`log_line_bytes`, `GOATKIT_LOG_LINE_BYTES`).
    pub log_line_bytes: usize,
    /// The bytes each plugin's log ring holds at most (`log_ring_bytes`,
    /// `GOATKIT_LOG_RING_BYTES`); the oldest entries go first.
    pub log_ring_bytes: usize,
    /// The bytes (keys and values) one plugin may hold in the cache, memory or Redis
    /// (`cache_quota_bytes`, `GOATKIT_CACHE_QUOTA_BYTES`); a set over it is refused.
    pub cache_quota_bytes: u64,
    /// Run native (gRPC) plugins even where the kernel or the server's user cannot isolate them
    /// (`allow_unisolated_native_plugins`, `GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS`): they
    /// would then run as the server's user and could read its files and secrets. Off: such
    /// plugins are refused.
    pub allow_unisolated_native_plugins: bool,
    /// More host paths every native (gRPC) plugin sees, read-only, besides the system
    /// directories: an interpreter installed outside `/usr`, say
    /// (`native_plugin_read_only_paths`, `GOATKIT_NATIVE_PLUGIN_READ_ONLY_PATHS`,
    /// comma-separated).
    pub native_plugin_read_only_paths: Vec<PathBuf>,
    /// More databases plugins reach as `@name:` (`[databases.<name>] url`,
    /// `GOATKIT_DATABASES_<NAME>_URL`): name → URL.
    pub databases: BTreeMap<String, String>,
    /// Outbound HTTP (`[http]`, `GOATKIT_HTTP_*`).
    pub http: HttpSettings,
    /// Email delivery (`[email]`, `GOATKIT_EMAIL_*`).
    pub email: EmailSettings,
    /// Several nodes as one platform (`[cluster]`, `GOATKIT_CLUSTER_*`).
    pub cluster: ClusterSettings,
    /// The `app.*` keys plugins read (`[app]`, `GOATKIT_APP_*`).
    pub app: AppSettings,
    /// More keys plugins read: `[config]` flattened to dotted keys (`GOATKIT_CONFIG_<KEY>`,
    /// `__` for `.`) and `[plugins.<name>]` tables as `plugins.<name>.<key>`.
    pub plugin_config: BTreeMap<String, String>,
    /// The Go host's `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables, read as
    /// `plugins.<name>.<key>`.
    pub plugin_variables: Environment,
    /// The file this was read from, read again on SIGHUP.
    pub config_file: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            plugins_dir: PathBuf::from("plugins"),
            data_dir: PathBuf::from("data"),
            require_signatures: false,
            trusted_keys_dir: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            eager_loading: false,
            token_secret: None,
            database_url: None,
            init_sql: Vec::new(),
            database_limits: DatabaseLimits::default(),
            redis_url: None,
            approve: Vec::new(),
            metrics_token: None,
            overridable_templates: Vec::new(),
            log_line_bytes: gk_core::host::DEFAULT_LOG_LINE_BYTES,
            log_ring_bytes: gk_core::host::DEFAULT_LOG_RING_BYTES,
            cache_quota_bytes: gk_core::host::DEFAULT_CACHE_QUOTA_BYTES,
            allow_unisolated_native_plugins: false,
            native_plugin_read_only_paths: Vec::new(),
            databases: BTreeMap::new(),
            http: HttpSettings::default(),
            email: EmailSettings::default(),
            cluster: ClusterSettings::default(),
            app: AppSettings::default(),
            plugin_config: BTreeMap::new(),
            plugin_variables: Environment::default(),
            config_file: None,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (with the line, and the key when it is unknown).
        message: String,
    },
    /// A value (from the file or the environment) cannot be used.
    #[error("{key}: {problem}")]
    Value {
        /// The key or environment variable.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// The guards on every plugin statement (see docs/HOST_API.md, "The database wall").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseLimits {
    /// Longest a statement may run; the engine stops it then.
    pub query_timeout: Duration,
    /// Most rows a statement may return.
    pub max_rows: usize,
    /// Most bytes of row data a statement may return.
    pub max_result_bytes: usize,
    /// Most statements one plugin may run at the same time.
    pub max_concurrent_queries: usize,
}

impl Default for DatabaseLimits {
    fn default() -> Self {
        Self {
            query_timeout: gk_core::host::DEFAULT_QUERY_TIMEOUT,
            max_rows: gk_core::host::DEFAULT_MAX_ROWS,
            max_result_bytes: gk_core::host::DEFAULT_MAX_RESULT_BYTES,
            max_concurrent_queries: gk_core::host::DEFAULT_MAX_CONCURRENT_QUERIES,
        }
    }
}

impl ServeConfig {
    /// Where the platform's own state lives: `store.db` under the data directory while plugin
    /// data is in SQLite (a file plugins never reach), else the configured database.
    pub fn store_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.starts_with("sqlite:") => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("store.db").display()),
        }
    }

    /// The database URL in use: the configured one, or SQLite under the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("goatkit.db").display()))
    }

    /// The defaults, then `file` (when given; an explicit file must exist), then `env`.
    pub fn load(file: Option<&Path>, env: &Environment) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = file {
            layers::apply_file(&mut config, path)?;
            config.config_file = Some(path.to_path_buf());
        }
        layers::apply_env(&mut config, env)?;
        config.check()?;
        Ok(config)
    }

    /// Applies `gk serve`'s flags over the loaded configuration: each `(name, value)` is one
    /// of [`flags`] without its `--`, and `"true"` for a switch. Errors name the flag.
    pub fn apply_flags<'a>(
        &mut self,
        given: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ConfigError> {
        layers::apply_flags(self, given)?;
        self.check()
    }

    /// The checks across keys, once every layer is applied.
    fn check(&self) -> Result<(), ConfigError> {
        self.email.smtp_config()?;
        if let Some(secret) = &self.token_secret {
            let length = secret.trim().len();
            if length < 32 {
                return Err(value_error(
                    "token_secret",
                    format!("must be at least 32 bytes, it is {length}"),
                ));
            }
        }
        Ok(())
    }

    /// What plugins read with `config_get`: `app.*`, `[config]`, `[plugins.<name>]` and the
    /// `GOATFLOW_PLUGIN_*` variables.
    pub fn config_values(&self) -> ConfigValues {
        sections::config_values(
            &self.app,
            self.listen,
            &self.plugin_config,
            &self.plugin_variables,
        )
    }
}

#[cfg(test)]
mod tests;

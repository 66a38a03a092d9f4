//! What `gk serve` runs with. Every field has an embedded default, so a fresh machine needs no
//! configuration at all: SQLite under `./data`, an in-memory cache, the outbox for email,
//! plugins from `./plugins`, listening on 127.0.0.1:8080.
//!
//! Values come, each overriding the one before, from the defaults, `goatkit.toml` (relative
//! paths in it are relative to the file), `GOATKIT_*` environment variables, and command-line
//! flags. [`ServeConfig::load`] does the first three; the CLI applies its flags on top.
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
use serde::Deserialize;

mod cluster;
mod env;
mod parse;
mod services;

use parse::{list, parse_bool, parse_bytes, parse_count, parse_listen, parse_timeout, value_error};

pub use cluster::ClusterSettings;
pub use env::Environment;
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

/// `goatkit.toml` as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    plugins_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    require_signatures: Option<bool>,
    trusted_keys_dir: Option<PathBuf>,
    request_timeout: Option<String>,
    eager_loading: Option<bool>,
    token_secret: Option<String>,
    redis_url: Option<String>,
    approve: Option<Vec<String>>,
    metrics_token: Option<String>,
    overridable_templates: Option<Vec<String>>,
    log_line_bytes: Option<usize>,
    log_ring_bytes: Option<usize>,
    cache_quota_bytes: Option<u64>,
    allow_unisolated_native_plugins: Option<bool>,
    native_plugin_read_only_paths: Option<Vec<PathBuf>>,
    database: Option<FileDatabase>,
    databases: Option<BTreeMap<String, services::FileNamedDatabase>>,
    http: Option<services::FileHttp>,
    email: Option<services::FileEmail>,
    cluster: Option<cluster::FileCluster>,
    app: Option<services::FileApp>,
    config: Option<toml::Table>,
    plugins: Option<BTreeMap<String, toml::Table>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    init_sql: Option<Vec<PathBuf>>,
    query_timeout: Option<String>,
    max_rows: Option<usize>,
    max_result_bytes: Option<usize>,
    max_concurrent_queries: Option<usize>,
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
            config.apply_file(path)?;
            config.config_file = Some(path.to_path_buf());
        }
        config.apply_env(env)?;
        config.email.smtp_config()?;
        if let Some(secret) = &config.token_secret {
            let length = secret.trim().len();
            if length < 32 {
                return Err(value_error(
                    "token_secret",
                    format!("must be at least 32 bytes, it is {length}"),
                ));
            }
        }
        Ok(config)
    }

    /// What plugins read with `config_get`: `app.*`, `[config]`, `[plugins.<name>]` and the
    /// `GOATFLOW_PLUGIN_*` variables.
    pub fn config_values(&self) -> ConfigValues {
        services::config_values(
            &self.app,
            self.listen,
            &self.plugin_config,
            &self.plugin_variables,
        )
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: label.clone(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            // Where and what, never the line itself: it may hold a password.
            message: match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
            path: label,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let relative = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        if let Some(listen) = file.listen {
            self.listen = parse_listen("listen", &listen)?;
        }
        if let Some(dir) = file.plugins_dir {
            self.plugins_dir = relative(dir);
        }
        if let Some(dir) = file.data_dir {
            self.data_dir = relative(dir);
        }
        if let Some(required) = file.require_signatures {
            self.require_signatures = required;
        }
        if let Some(dir) = file.trusted_keys_dir {
            self.trusted_keys_dir = Some(relative(dir));
        }
        if let Some(timeout) = file.request_timeout {
            self.request_timeout = parse_timeout("request_timeout", &timeout)?;
        }
        if let Some(eager) = file.eager_loading {
            self.eager_loading = eager;
        }
        if let Some(secret) = file.token_secret {
            self.token_secret = Some(secret);
        }
        if let Some(url) = file.redis_url {
            self.redis_url = Some(url);
        }
        if let Some(approve) = file.approve {
            self.approve = approve;
        }
        if let Some(token) = file.metrics_token {
            self.metrics_token = Some(token).filter(|t| !t.is_empty());
        }
        if let Some(names) = file.overridable_templates {
            self.overridable_templates = names;
        }
        if let Some(bytes) = file.log_line_bytes {
            self.log_line_bytes = bytes;
        }
        if let Some(bytes) = file.log_ring_bytes {
            self.log_ring_bytes = bytes;
        }
        if let Some(bytes) = file.cache_quota_bytes {
            self.cache_quota_bytes = bytes;
        }
        if let Some(allow) = file.allow_unisolated_native_plugins {
            self.allow_unisolated_native_plugins = allow;
        }
        if let Some(paths) = file.native_plugin_read_only_paths {
            self.native_plugin_read_only_paths = paths.into_iter().map(relative).collect();
        }
        if let Some(tables) = file.databases {
            self.databases = services::named_databases_from_file(tables, base)?;
        }
        if let Some(http) = file.http {
            self.http.apply_file(http)?;
        }
        if let Some(cluster) = file.cluster {
            self.cluster.apply_file(cluster)?;
        }
        if let Some(email) = file.email {
            self.email.apply_file(email)?;
        }
        if let Some(app) = file.app {
            self.app.apply_file(app)?;
        }
        if let Some(table) = file.config {
            services::flatten("", &table, &mut self.plugin_config);
        }
        for (plugin, table) in file.plugins.unwrap_or_default() {
            services::flatten(
                &format!("plugins.{plugin}"),
                &table,
                &mut self.plugin_config,
            );
        }
        if let Some(database) = file.database {
            if let Some(url) = database.url {
                self.database_url = Some(url);
            }
            if let Some(files) = database.init_sql {
                self.init_sql = files.into_iter().map(relative).collect();
            }
            let limits = &mut self.database_limits;
            if let Some(timeout) = database.query_timeout {
                limits.query_timeout = parse_timeout("database.query_timeout", &timeout)?;
            }
            if let Some(n) = database.max_rows {
                limits.max_rows = parse_count("database.max_rows", &n.to_string())?;
            }
            if let Some(n) = database.max_result_bytes {
                limits.max_result_bytes = parse_count("database.max_result_bytes", &n.to_string())?;
            }
            if let Some(n) = database.max_concurrent_queries {
                limits.max_concurrent_queries =
                    parse_count("database.max_concurrent_queries", &n.to_string())?;
            }
        }
        Ok(())
    }

    fn apply_env(&mut self, variables: &Environment) -> Result<(), ConfigError> {
        let env = |key: &str| variables.get(key);
        if let Some(listen) = env("GOATKIT_LISTEN") {
            self.listen = parse_listen("GOATKIT_LISTEN", &listen)?;
        }
        if let Some(dir) = env("GOATKIT_PLUGINS_DIR") {
            self.plugins_dir = dir.into();
        }
        if let Some(dir) = env("GOATKIT_DATA_DIR") {
            self.data_dir = dir.into();
        }
        for key in ["GOATFLOW_REQUIRE_SIGNATURES", "GOATKIT_REQUIRE_SIGNATURES"] {
            if let Some(value) = env(key) {
                self.require_signatures = parse_bool(key, &value)?;
            }
        }
        if let Some(dir) = env("GOATKIT_TRUSTED_KEYS_DIR") {
            self.trusted_keys_dir = Some(dir.into());
        }
        if let Some(timeout) = env("GOATKIT_REQUEST_TIMEOUT") {
            self.request_timeout = parse_timeout("GOATKIT_REQUEST_TIMEOUT", &timeout)?;
        }
        if let Some(eager) = env("GOATKIT_EAGER_LOADING") {
            self.eager_loading = parse_bool("GOATKIT_EAGER_LOADING", &eager)?;
        }
        if let Some(secret) = env("GOATKIT_TOKEN_SECRET") {
            self.token_secret = Some(secret);
        }
        if let Some(url) = env("GOATKIT_REDIS_URL") {
            self.redis_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(approve) = env("GOATKIT_APPROVE") {
            self.approve = list(&approve);
        }
        if let Some(token) = env("GOATKIT_METRICS_TOKEN") {
            self.metrics_token = Some(token).filter(|t| !t.is_empty());
        }
        if let Some(names) = env("GOATKIT_OVERRIDABLE_TEMPLATES") {
            self.overridable_templates = list(&names);
        }
        if let Some(bytes) = env("GOATKIT_LOG_LINE_BYTES") {
            self.log_line_bytes = parse_bytes("GOATKIT_LOG_LINE_BYTES", &bytes)?;
        }
        if let Some(bytes) = env("GOATKIT_LOG_RING_BYTES") {
            self.log_ring_bytes = parse_bytes("GOATKIT_LOG_RING_BYTES", &bytes)?;
        }
        if let Some(bytes) = env("GOATKIT_CACHE_QUOTA_BYTES") {
            self.cache_quota_bytes = parse_bytes("GOATKIT_CACHE_QUOTA_BYTES", &bytes)?;
        }
        if let Some(allow) = env("GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS") {
            self.allow_unisolated_native_plugins =
                parse_bool("GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS", &allow)?;
        }
        if let Some(paths) = env("GOATKIT_NATIVE_PLUGIN_READ_ONLY_PATHS") {
            self.native_plugin_read_only_paths =
                list(&paths).into_iter().map(PathBuf::from).collect();
        }
        if let Some(url) = env("GOATKIT_DATABASE_URL") {
            self.database_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(files) = env("GOATKIT_DATABASE_INIT_SQL") {
            self.init_sql = list(&files).into_iter().map(PathBuf::from).collect();
        }
        let limits = &mut self.database_limits;
        if let Some(timeout) = env("GOATKIT_DATABASE_QUERY_TIMEOUT") {
            limits.query_timeout = parse_timeout("GOATKIT_DATABASE_QUERY_TIMEOUT", &timeout)?;
        }
        if let Some(n) = env("GOATKIT_DATABASE_MAX_ROWS") {
            limits.max_rows = parse_count("GOATKIT_DATABASE_MAX_ROWS", &n)?;
        }
        if let Some(n) = env("GOATKIT_DATABASE_MAX_RESULT_BYTES") {
            limits.max_result_bytes = parse_count("GOATKIT_DATABASE_MAX_RESULT_BYTES", &n)?;
        }
        if let Some(n) = env("GOATKIT_DATABASE_MAX_CONCURRENT_QUERIES") {
            limits.max_concurrent_queries =
                parse_count("GOATKIT_DATABASE_MAX_CONCURRENT_QUERIES", &n)?;
        }
        services::apply_named_databases_env(&mut self.databases, variables)?;
        self.http.apply_env(variables)?;
        self.email.apply_env(variables)?;
        self.cluster.apply_env(variables)?;
        self.app.apply_env(variables)?;
        services::apply_config_env(&mut self.plugin_config, variables);
        self.plugin_variables = Environment::from_pairs(
            variables
                .iter()
                .filter(|(name, _)| name.starts_with(gk_core::host::PLUGIN_VARIABLE_PREFIX)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;

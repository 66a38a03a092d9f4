//! What `gk serve` runs with. Every field has an embedded default, so a fresh machine needs no
//! configuration at all: SQLite under `./data`, an in-memory cache, the outbox for email,
//! plugins from `./plugins`, listening on 127.0.0.1:8080.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long a request may take by default, plugin call included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server listens and keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// The plugins directory (scanned, then watched).
    pub plugins_dir: PathBuf,
    /// Where the SQLite database, unpacked packages, the module cache and sockets live.
    pub data_dir: PathBuf,
    /// Refuse unsigned or badly signed plugins.
    pub require_signatures: bool,
    /// A directory of trusted public keys (hex, one file per key).
    pub trusted_keys_dir: Option<PathBuf>,
    /// How long a request may take before it is answered `504 request_timeout`.
    pub request_timeout: Duration,
    /// Load every enabled plugin at start instead of on first use, so that their routes,
    /// widgets and menus are known from the start.
    pub eager_loading: bool,
    /// The secret tokens are signed with (at least 32 bytes); `None` uses the one kept in the
    /// data directory, generated on first start.
    pub token_secret: Option<String>,
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
        }
    }
}

impl ServeConfig {
    /// The SQLite database of the embedded default.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("goatkit.db").display())
    }
}

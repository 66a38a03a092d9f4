//! Every configuration key, declared once: its dotted path in `goatkit.toml`, its environment
//! variables, its `gk serve` flag, what the file holds, what it is for, and how its value is
//! read and checked. Defaults are [`ServeConfig::default`] (named constants). The layering that
//! applies these declarations, file then environment then flags, is `layers.rs`.

use super::cluster::{host_port, name, prefix};
use super::layers::{Key, Section, Shape};
use super::parse::{parse_bool, parse_bytes, parse_count, parse_listen, parse_timeout};
use super::sections::{
    config_env, config_file, named_databases_env, named_databases_file, plugin_tables_file,
    plugin_variables_env,
};
use super::services::{app_name, base_url, default_language, networks, parse_security, timezone};

/// The keys, in the order each layer applies them.
pub(super) const KEYS: &[Key] = &[
    Key {
        path: "listen",
        env: &["GOATKIT_LISTEN"],
        flag: Some("--listen <ADDR>"),
        shape: Shape::Text,
        doc: "Address to listen on [default: 127.0.0.1:8080].",
        set: |c, v| {
            c.listen = v.parse(parse_listen)?;
            Ok(())
        },
    },
    Key {
        path: "plugins_dir",
        env: &["GOATKIT_PLUGINS_DIR"],
        flag: Some("--plugins <DIR>"),
        shape: Shape::Text,
        doc: "The plugins directory, scanned at start, then watched [default: plugins].",
        set: |c, v| {
            c.plugins_dir = v.path();
            Ok(())
        },
    },
    Key {
        path: "data_dir",
        env: &["GOATKIT_DATA_DIR"],
        flag: Some("--data <DIR>"),
        shape: Shape::Text,
        doc: "Where the database, unpacked packages and caches are kept [default: data].",
        set: |c, v| {
            c.data_dir = v.path();
            Ok(())
        },
    },
    Key {
        path: "require_signatures",
        // The Go host's name first: GoatKit's own wins when both are set.
        env: &["GOATFLOW_REQUIRE_SIGNATURES", "GOATKIT_REQUIRE_SIGNATURES"],
        flag: Some("--require-signatures"),
        shape: Shape::Bool,
        doc: "Refuse plugins without a valid signature from a trusted key.",
        set: |c, v| {
            c.require_signatures = v.parse(parse_bool)?;
            Ok(())
        },
    },
    Key {
        path: "trusted_keys_dir",
        env: &["GOATKIT_TRUSTED_KEYS_DIR"],
        flag: Some("--trusted-keys <DIR>"),
        shape: Shape::Text,
        doc: "A directory of trusted public keys (hex, one per file).",
        set: |c, v| {
            c.trusted_keys_dir = Some(v.path());
            Ok(())
        },
    },
    Key {
        path: "request_timeout",
        env: &["GOATKIT_REQUEST_TIMEOUT"],
        flag: Some("--request-timeout <DURATION>"),
        shape: Shape::Text,
        doc: "How long a request may take, plugin call included (`60s`, `2m`) [default: 60s].",
        set: |c, v| {
            c.request_timeout = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "eager_loading",
        env: &["GOATKIT_EAGER_LOADING"],
        flag: Some("--eager"),
        shape: Shape::Bool,
        doc: "Load every enabled plugin at start (default: on first use).",
        set: |c, v| {
            c.eager_loading = v.parse(parse_bool)?;
            Ok(())
        },
    },
    Key {
        path: "token_secret",
        env: &["GOATKIT_TOKEN_SECRET"],
        flag: None,
        shape: Shape::Text,
        doc: "The secret tokens are signed with, at least 32 bytes.",
        set: |c, v| {
            c.token_secret = Some(v.string());
            Ok(())
        },
    },
    Key {
        path: "redis_url",
        env: &["GOATKIT_REDIS_URL"],
        flag: None,
        shape: Shape::Text,
        doc: "A Redis server for the plugin cache; empty: in memory.",
        set: |c, v| {
            c.redis_url = v.optional();
            Ok(())
        },
    },
    Key {
        path: "approve",
        env: &["GOATKIT_APPROVE"],
        flag: None,
        shape: Shape::List,
        doc: "Plugins granted what they request unless already reviewed.",
        set: |c, v| {
            c.approve = v.list();
            Ok(())
        },
    },
    Key {
        path: "metrics_token",
        env: &["GOATKIT_METRICS_TOKEN"],
        flag: None,
        shape: Shape::Text,
        doc: "A bearer token that reads `/metrics`; empty: only admin tokens.",
        set: |c, v| {
            c.metrics_token = v.optional();
            Ok(())
        },
    },
    Key {
        path: "overridable_templates",
        env: &["GOATKIT_OVERRIDABLE_TEMPLATES"],
        flag: None,
        shape: Shape::List,
        doc: "The host templates plugins may override.",
        set: |c, v| {
            c.overridable_templates = v.list();
            Ok(())
        },
    },
    Key {
        path: "log_line_bytes",
        env: &["GOATKIT_LOG_LINE_BYTES"],
        flag: None,
        shape: Shape::Integer,
        doc: "The longest log message kept, in bytes.",
        set: |c, v| {
            c.log_line_bytes = v.parse(parse_bytes)?;
            Ok(())
        },
    },
    Key {
        path: "log_ring_bytes",
        env: &["GOATKIT_LOG_RING_BYTES"],
        flag: None,
        shape: Shape::Integer,
        doc: "The bytes each plugin's log ring holds at most.",
        set: |c, v| {
            c.log_ring_bytes = v.parse(parse_bytes)?;
            Ok(())
        },
    },
    Key {
        path: "cache_quota_bytes",
        env: &["GOATKIT_CACHE_QUOTA_BYTES"],
        flag: None,
        shape: Shape::Integer,
        doc: "The bytes one plugin may hold in the cache.",
        set: |c, v| {
            c.cache_quota_bytes = v.parse(parse_bytes)?;
            Ok(())
        },
    },
    Key {
        path: "allow_unisolated_native_plugins",
        env: &["GOATKIT_ALLOW_UNISOLATED_NATIVE_PLUGINS"],
        flag: None,
        shape: Shape::Bool,
        doc: "Run gRPC plugins even where they cannot be isolated.",
        set: |c, v| {
            c.allow_unisolated_native_plugins = v.parse(parse_bool)?;
            Ok(())
        },
    },
    Key {
        path: "native_plugin_read_only_paths",
        env: &["GOATKIT_NATIVE_PLUGIN_READ_ONLY_PATHS"],
        flag: None,
        shape: Shape::List,
        doc: "More host paths gRPC plugins see, read-only.",
        set: |c, v| {
            c.native_plugin_read_only_paths = v.paths();
            Ok(())
        },
    },
    Key {
        path: "database.url",
        env: &["GOATKIT_DATABASE_URL"],
        flag: None,
        shape: Shape::Text,
        doc: "The database of the platform and the plugins; empty: SQLite in the data directory.",
        set: |c, v| {
            c.database_url = v.optional();
            Ok(())
        },
    },
    Key {
        path: "database.init_sql",
        env: &["GOATKIT_DATABASE_INIT_SQL"],
        flag: None,
        shape: Shape::List,
        doc: "SQL files run at start, each once per content.",
        set: |c, v| {
            c.init_sql = v.paths();
            Ok(())
        },
    },
    Key {
        path: "database.query_timeout",
        env: &["GOATKIT_DATABASE_QUERY_TIMEOUT"],
        flag: None,
        shape: Shape::Text,
        doc: "How long a plugin's statement may run.",
        set: |c, v| {
            c.database_limits.query_timeout = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "database.max_rows",
        env: &["GOATKIT_DATABASE_MAX_ROWS"],
        flag: None,
        shape: Shape::Integer,
        doc: "The rows one statement may return.",
        set: |c, v| {
            c.database_limits.max_rows = v.parse(parse_count)?;
            Ok(())
        },
    },
    Key {
        path: "database.max_result_bytes",
        env: &["GOATKIT_DATABASE_MAX_RESULT_BYTES"],
        flag: None,
        shape: Shape::Integer,
        doc: "The bytes of row data one statement may return.",
        set: |c, v| {
            c.database_limits.max_result_bytes = v.parse(parse_count)?;
            Ok(())
        },
    },
    Key {
        path: "database.max_concurrent_queries",
        env: &["GOATKIT_DATABASE_MAX_CONCURRENT_QUERIES"],
        flag: None,
        shape: Shape::Integer,
        doc: "The statements one plugin may run at the same time.",
        set: |c, v| {
            c.database_limits.max_concurrent_queries = v.parse(parse_count)?;
            Ok(())
        },
    },
    Key {
        path: "http.connect_timeout",
        env: &["GOATKIT_HTTP_CONNECT_TIMEOUT"],
        flag: None,
        shape: Shape::Text,
        doc: "The longest DNS lookup and connect of plugins' HTTP.",
        set: |c, v| {
            c.http.connect_timeout = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "http.timeout",
        env: &["GOATKIT_HTTP_TIMEOUT"],
        flag: None,
        shape: Shape::Text,
        doc: "The longest whole HTTP request of a plugin.",
        set: |c, v| {
            c.http.timeout = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "http.max_response_bytes",
        env: &["GOATKIT_HTTP_MAX_RESPONSE_BYTES"],
        flag: None,
        shape: Shape::Integer,
        doc: "The largest response body a plugin gets.",
        set: |c, v| {
            c.http.max_response_bytes = v.parse(parse_bytes)?;
            Ok(())
        },
    },
    Key {
        path: "http.allow_private",
        env: &["GOATKIT_HTTP_ALLOW_PRIVATE"],
        flag: None,
        shape: Shape::List,
        doc: "Internal networks opened to plugins, each optionally with one port.",
        set: |c, v| {
            c.http.allow_private = networks(v.name(), &v.list())?;
            Ok(())
        },
    },
    Key {
        path: "email.smtp_url",
        env: &["GOATKIT_EMAIL_SMTP_URL"],
        flag: None,
        shape: Shape::Text,
        doc: "SMTP instead of the outbox table; empty: the outbox.",
        set: |c, v| {
            c.email.smtp_url = v.optional();
            Ok(())
        },
    },
    Key {
        path: "email.security",
        env: &["GOATKIT_EMAIL_SECURITY"],
        flag: None,
        shape: Shape::Text,
        doc: "`starttls`, `tls` or `none`, over what the SMTP URL's scheme says.",
        set: |c, v| {
            c.email.security = Some(v.parse(parse_security)?);
            Ok(())
        },
    },
    Key {
        path: "email.from",
        env: &["GOATKIT_EMAIL_FROM"],
        flag: None,
        shape: Shape::Text,
        doc: "The sender; needed with `email.smtp_url`.",
        set: |c, v| {
            c.email.from = Some(v.string());
            Ok(())
        },
    },
    Key {
        path: "email.timeout",
        env: &["GOATKIT_EMAIL_TIMEOUT"],
        flag: None,
        shape: Shape::Text,
        doc: "The longest SMTP exchange.",
        set: |c, v| {
            c.email.timeout = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "app.name",
        env: &["GOATKIT_APP_NAME"],
        flag: None,
        shape: Shape::Text,
        doc: "The application's name plugins read.",
        set: |c, v| {
            c.app.name = v.parse(app_name)?;
            Ok(())
        },
    },
    Key {
        path: "app.base_url",
        env: &["GOATKIT_APP_BASE_URL"],
        flag: None,
        shape: Shape::Text,
        doc: "The URL people reach the server at.",
        set: |c, v| {
            c.app.base_url = Some(v.parse(base_url)?);
            Ok(())
        },
    },
    Key {
        path: "app.timezone",
        env: &["GOATKIT_APP_TIMEZONE"],
        flag: None,
        shape: Shape::Text,
        doc: "The time zone, as an IANA name.",
        set: |c, v| {
            c.app.timezone = v.parse(timezone)?;
            Ok(())
        },
    },
    Key {
        path: "app.default_language",
        env: &["GOATKIT_APP_DEFAULT_LANGUAGE"],
        flag: None,
        shape: Shape::Text,
        doc: "The language used when a request names none.",
        set: |c, v| {
            c.app.default_language = v.parse(default_language)?;
            Ok(())
        },
    },
    Key {
        path: "cluster.enabled",
        env: &["GOATKIT_CLUSTER_ENABLED"],
        flag: None,
        shape: Shape::Bool,
        doc: "Join a cluster (a PostgreSQL or MariaDB store every node shares).",
        set: |c, v| {
            c.cluster.enabled = v.parse(parse_bool)?;
            Ok(())
        },
    },
    Key {
        path: "cluster.node_id",
        env: &["GOATKIT_NODE_ID"],
        flag: Some("--node-id <ID>"),
        shape: Shape::Text,
        doc: "This node's id in its cluster (`[cluster]`) [default: host name and port].",
        set: |c, v| {
            c.cluster.node_id = Some(v.parse(name)?);
            Ok(())
        },
    },
    Key {
        path: "cluster.prefix",
        env: &["GOATKIT_CLUSTER_PREFIX"],
        flag: None,
        shape: Shape::Text,
        doc: "The prefix of the cluster's Redis keys and channel.",
        set: |c, v| {
            c.cluster.prefix = v.parse(prefix)?;
            Ok(())
        },
    },
    Key {
        path: "cluster.reconcile_every",
        env: &["GOATKIT_CLUSTER_RECONCILE_EVERY"],
        flag: None,
        shape: Shape::Text,
        doc: "How often a node reconciles every plugin with the store.",
        set: |c, v| {
            c.cluster.reconcile_every = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "cluster.heartbeat_every",
        env: &["GOATKIT_CLUSTER_HEARTBEAT_EVERY"],
        flag: None,
        shape: Shape::Text,
        doc: "How often a node writes its heartbeat.",
        set: |c, v| {
            c.cluster.heartbeat_every = v.parse(parse_timeout)?;
            Ok(())
        },
    },
    Key {
        path: "cluster.advertise",
        env: &["GOATKIT_CLUSTER_ADVERTISE"],
        flag: None,
        shape: Shape::Text,
        doc: "The `host:port` other nodes reach this node's HTTP at.",
        set: |c, v| {
            c.cluster.advertise = Some(v.parse(host_port)?);
            Ok(())
        },
    },
];

/// The open-ended tables, applied after the keys of the same layer.
pub(super) const SECTIONS: &[Section] = &[
    // `[databases.<name>] url`, `GOATKIT_DATABASES_<NAME>_URL`.
    Section {
        path: "databases",
        file: named_databases_file,
        env: named_databases_env,
    },
    // `[config]` flattened to dotted keys, `GOATKIT_CONFIG_<KEY>` (`__` for `.`).
    Section {
        path: "config",
        file: config_file,
        env: config_env,
    },
    // `[plugins.<name>]` as `plugins.<name>.<key>`; the Go host's
    // `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables.
    Section {
        path: "plugins",
        file: plugin_tables_file,
        env: plugin_variables_env,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each path, variable and flag is declared once.
    #[test]
    fn every_name_is_declared_once() {
        let mut seen = std::collections::BTreeSet::new();
        for key in KEYS {
            let names = std::iter::once(key.path)
                .chain(key.env.iter().copied())
                .chain(key.flag);
            for name in names {
                assert!(seen.insert(name), "{name} is declared twice");
            }
        }
        for section in SECTIONS {
            assert!(
                seen.insert(section.path),
                "{} is declared twice",
                section.path
            );
        }
    }
}

//! The open-ended tables of `goatkit.toml`: `[databases.<name>]`, `[config]` and
//! `[plugins.<name>]`, with their variables (`GOATKIT_DATABASES_<NAME>_URL`,
//! `GOATKIT_CONFIG_<KEY>`, the Go host's `GOATFLOW_PLUGIN_<NAME>_<KEY>`), and what plugins read
//! of them.

use std::collections::BTreeMap;
use std::path::Path;

use gk_core::host::ConfigValues;

use super::layers::FileLayer;
use super::services::AppSettings;
use super::{ConfigError, Environment, ServeConfig, value_error};

/// Checks a database name as plugins write it in `@name:`.
fn database_name(key: &str, name: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if lower == gk_sdk::DEFAULT_DATABASE {
        return Err(value_error(
            key,
            "the default database is configured as [database] url (GOATKIT_DATABASE_URL)",
        ));
    }
    if lower.is_empty()
        || !lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(value_error(
            key,
            format!("`{name}` is not a database name (letters, digits, `_`, `-`)"),
        ));
    }
    Ok(lower)
}

fn database_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    if !matches!(scheme, "sqlite" | "postgres" | "postgresql" | "mysql") {
        return Err(value_error(
            key,
            "not a database URL (sqlite://…, postgres://…, mysql://…)",
        ));
    }
    Ok(url.to_owned())
}

/// `[databases.<name>]` tables, each with one key, `url`: name → URL, replacing those set
/// before.
pub(super) fn named_databases_file(
    config: &mut ServeConfig,
    tables: &toml::Table,
    file: &FileLayer<'_>,
) -> Result<(), ConfigError> {
    let mut databases = BTreeMap::new();
    for (name, table) in tables {
        let table = file.table(&["databases", name], table)?;
        if let Some(other) = table.keys().find(|key| *key != "url") {
            return Err(file.unknown(&["databases", name, other], &["url"]));
        }
        let key = format!("databases.{name}.url");
        let lower = database_name(&format!("databases.{name}"), name)?;
        let url = match table.get("url") {
            Some(url) => file.string(&["databases", name, "url"], url)?,
            None => return Err(value_error(&key, "is missing")),
        };
        databases.insert(lower, relative_sqlite(&database_url(&key, url)?, file.base));
    }
    config.databases = databases;
    Ok(())
}

/// A relative SQLite path in the file is relative to the file, as every path there is.
fn relative_sqlite(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
            format!("sqlite://{}", base.join(path).display())
        }
        _ => url.to_owned(),
    }
}

/// `GOATKIT_DATABASES_<NAME>_URL` variables: name (lower-cased) → URL; an empty value removes
/// the database.
pub(super) fn named_databases_env(
    config: &mut ServeConfig,
    env: &Environment,
) -> Result<(), ConfigError> {
    for (rest, url) in env.with_prefix("GOATKIT_DATABASES_") {
        let variable = format!("GOATKIT_DATABASES_{rest}");
        let Some(name) = rest.strip_suffix("_URL") else {
            return Err(value_error(
                &variable,
                "is not GOATKIT_DATABASES_<NAME>_URL",
            ));
        };
        let name = database_name(&variable, name)?;
        if url.is_empty() {
            config.databases.remove(&name);
        } else {
            config.databases.insert(name, database_url(&variable, url)?);
        }
    }
    Ok(())
}

/// Flattens a TOML table to dotted keys under `prefix`: strings as they are, numbers, booleans
/// and dates as written, arrays as JSON.
fn flatten(prefix: &str, table: &toml::Table, into: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&dotted, inner, into),
            toml::Value::String(text) => {
                into.insert(dotted, text.clone());
            }
            toml::Value::Array(_) => {
                let json = serde_json::to_string(value).unwrap_or_default();
                into.insert(dotted, json);
            }
            other => {
                into.insert(dotted, other.to_string());
            }
        }
    }
}

/// `[config]`: every key plugins read, flattened to dotted keys.
pub(super) fn config_file(
    config: &mut ServeConfig,
    table: &toml::Table,
    _file: &FileLayer<'_>,
) -> Result<(), ConfigError> {
    flatten("", table, &mut config.plugin_config);
    Ok(())
}

/// `GOATKIT_CONFIG_<KEY>` variables as `[config]` keys: lower-cased, `__` read as `.`
/// (`GOATKIT_CONFIG_HELPDESK__URL` is `helpdesk.url`).
pub(super) fn config_env(config: &mut ServeConfig, env: &Environment) -> Result<(), ConfigError> {
    for (rest, value) in env.with_prefix("GOATKIT_CONFIG_") {
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if !key.is_empty() {
            config.plugin_config.insert(key, value.to_owned());
        }
    }
    Ok(())
}

/// `[plugins.<name>]` tables, as `plugins.<name>.<key>`.
pub(super) fn plugin_tables_file(
    config: &mut ServeConfig,
    tables: &toml::Table,
    file: &FileLayer<'_>,
) -> Result<(), ConfigError> {
    for (plugin, table) in tables {
        let table = file.table(&["plugins", plugin], table)?;
        flatten(
            &format!("plugins.{plugin}"),
            table,
            &mut config.plugin_config,
        );
    }
    Ok(())
}

/// The Go host's `GOATFLOW_PLUGIN_<NAME>_<KEY>` variables, kept as they are.
pub(super) fn plugin_variables_env(
    config: &mut ServeConfig,
    env: &Environment,
) -> Result<(), ConfigError> {
    config.plugin_variables = Environment::from_pairs(
        env.iter()
            .filter(|(name, _)| name.starts_with(gk_core::host::PLUGIN_VARIABLE_PREFIX)),
    );
    Ok(())
}

/// What plugins read with `config_get`, built from the configuration.
pub(super) fn config_values(
    app: &AppSettings,
    listen: std::net::SocketAddr,
    values: &BTreeMap<String, String>,
    variables: &Environment,
) -> ConfigValues {
    let mut config = ConfigValues::new(values.clone());
    config.set("app.name", app.name.clone());
    config.set("app.version", env!("CARGO_PKG_VERSION"));
    config.set(
        "app.base_url",
        app.base_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}")),
    );
    config.set("app.timezone", app.timezone.clone());
    config.set("app.default_language", app.default_language.clone());
    config.set_plugin_variables(variables.iter());
    config
}

//! The sections of `goatkit.toml` that configure the host services plugins use: `[app]`,
//! `[config]`, `[plugins.<name>]`, `[http]`, `[email]` and `[databases.<name>]`, with their
//! `GOATKIT_*` variables.

use std::collections::BTreeMap;
use std::time::Duration;

use gk_core::host::{
    ConfigValues, DEFAULT_MAX_RESPONSE_BYTES, HttpConfig, PrivateNetwork, SmtpConfig, SmtpSecurity,
};
use serde::Deserialize;

use super::{ConfigError, Environment, parse_bytes, parse_timeout, value_error};

/// The `app.*` keys plugins read with `config_get` (`[app]`, `GOATKIT_APP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// The application's name (`app.name`, `GOATKIT_APP_NAME`).
    pub name: String,
    /// The URL people reach the server at (`app.base_url`, `GOATKIT_APP_BASE_URL`); `None`:
    /// `http://` and the listen address.
    pub base_url: Option<String>,
    /// The time zone, as an IANA name (`app.timezone`, `GOATKIT_APP_TIMEZONE`).
    pub timezone: String,
    /// The language used when a request names none (`app.default_language`,
    /// `GOATKIT_APP_DEFAULT_LANGUAGE`).
    pub default_language: String,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            name: "GoatKit".to_owned(),
            base_url: None,
            timezone: "UTC".to_owned(),
            default_language: gk_core::host::FALLBACK_LANGUAGE.to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileApp {
    name: Option<String>,
    base_url: Option<String>,
    timezone: Option<String>,
    default_language: Option<String>,
}

impl AppSettings {
    pub(super) fn apply_file(&mut self, file: FileApp) -> Result<(), ConfigError> {
        self.apply(
            "app.",
            file.name,
            file.base_url,
            file.timezone,
            file.default_language,
        )
    }

    pub(super) fn apply_env(&mut self, env: &Environment) -> Result<(), ConfigError> {
        let var = |key: &str| env.get(&format!("GOATKIT_APP_{key}"));
        self.apply(
            "GOATKIT_APP_",
            var("NAME"),
            var("BASE_URL"),
            var("TIMEZONE"),
            var("DEFAULT_LANGUAGE"),
        )
    }

    fn apply(
        &mut self,
        prefix: &str,
        name: Option<String>,
        base_url: Option<String>,
        timezone: Option<String>,
        default_language: Option<String>,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| {
            if prefix.ends_with('_') {
                format!("{prefix}{}", k.to_ascii_uppercase())
            } else {
                format!("{prefix}{k}")
            }
        };
        if let Some(name) = name {
            if name.trim().is_empty() {
                return Err(value_error(&key("name"), "must not be empty"));
            }
            self.name = name;
        }
        if let Some(url) = base_url {
            let parsed = url::Url::parse(&url)
                .map_err(|e| value_error(&key("base_url"), format!("`{url}` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(value_error(
                    &key("base_url"),
                    format!("`{url}` is not an http(s) URL with a host"),
                ));
            }
            self.base_url = Some(url.trim_end_matches('/').to_owned());
        }
        if let Some(zone) = timezone {
            let valid = !zone.is_empty()
                && zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
            if !valid {
                return Err(value_error(
                    &key("timezone"),
                    format!("`{zone}` is not a time zone name like Europe/Berlin or UTC"),
                ));
            }
            self.timezone = zone;
        }
        if let Some(language) = default_language {
            let valid = (2..=35).contains(&language.len())
                && language
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(value_error(
                    &key("default_language"),
                    format!("`{language}` is not a language tag like en or de-CH"),
                ));
            }
            self.default_language = language;
        }
        Ok(())
    }
}

/// Outbound HTTP for plugins (`[http]`, `GOATKIT_HTTP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Longest DNS lookup and connect (`http.connect_timeout`).
    pub connect_timeout: Duration,
    /// Longest whole request (`http.timeout`).
    pub timeout: Duration,
    /// Largest response body a plugin gets (`http.max_response_bytes`).
    pub max_response_bytes: usize,
    /// Internal networks opened to plugins, each optionally with one port
    /// (`http.allow_private`, `GOATKIT_HTTP_ALLOW_PRIVATE` comma-separated). Empty: loopback,
    /// private, link-local and metadata addresses are refused.
    pub allow_private: Vec<PrivateNetwork>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let defaults = HttpConfig::default();
        Self {
            connect_timeout: defaults.connect_timeout,
            timeout: defaults.total_timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            allow_private: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHttp {
    connect_timeout: Option<String>,
    timeout: Option<String>,
    max_response_bytes: Option<usize>,
    allow_private: Option<Vec<String>>,
}

fn networks(key: &str, entries: &[String]) -> Result<Vec<PrivateNetwork>, ConfigError> {
    entries
        .iter()
        .map(|entry| entry.parse().map_err(|e| value_error(key, e)))
        .collect()
}

impl HttpSettings {
    /// The client's configuration.
    pub fn client_config(&self) -> HttpConfig {
        HttpConfig {
            connect_timeout: self.connect_timeout,
            total_timeout: self.timeout,
            max_response_bytes: self.max_response_bytes,
            allow_private: self.allow_private.clone(),
        }
    }

    pub(super) fn apply_file(&mut self, file: FileHttp) -> Result<(), ConfigError> {
        if let Some(timeout) = file.connect_timeout {
            self.connect_timeout = parse_timeout("http.connect_timeout", &timeout)?;
        }
        if let Some(timeout) = file.timeout {
            self.timeout = parse_timeout("http.timeout", &timeout)?;
        }
        if let Some(bytes) = file.max_response_bytes {
            self.max_response_bytes = bytes;
        }
        if let Some(entries) = file.allow_private {
            self.allow_private = networks("http.allow_private", &entries)?;
        }
        Ok(())
    }

    pub(super) fn apply_env(&mut self, env: &Environment) -> Result<(), ConfigError> {
        if let Some(timeout) = env.get("GOATKIT_HTTP_CONNECT_TIMEOUT") {
            self.connect_timeout = parse_timeout("GOATKIT_HTTP_CONNECT_TIMEOUT", &timeout)?;
        }
        if let Some(timeout) = env.get("GOATKIT_HTTP_TIMEOUT") {
            self.timeout = parse_timeout("GOATKIT_HTTP_TIMEOUT", &timeout)?;
        }
        if let Some(bytes) = env.get("GOATKIT_HTTP_MAX_RESPONSE_BYTES") {
            self.max_response_bytes = parse_bytes("GOATKIT_HTTP_MAX_RESPONSE_BYTES", &bytes)?;
        }
        if let Some(entries) = env.get("GOATKIT_HTTP_ALLOW_PRIVATE") {
            self.allow_private = networks("GOATKIT_HTTP_ALLOW_PRIVATE", &super::list(&entries))?;
        }
        Ok(())
    }
}

/// How long an SMTP exchange may take by default.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Email delivery (`[email]`, `GOATKIT_EMAIL_*`): the outbox table unless `smtp_url` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// `smtp://user:pass@host:587` (STARTTLS) or `smtps://…:465` (implicit TLS)
    /// (`email.smtp_url`, `GOATKIT_EMAIL_SMTP_URL`).
    pub smtp_url: Option<String>,
    /// `starttls`, `tls` or `none`, over what the scheme says (`email.security`).
    pub security: Option<SmtpSecurity>,
    /// The sender (`email.from`, `GOATKIT_EMAIL_FROM`); needed with `smtp_url`.
    pub from: Option<String>,
    /// Longest SMTP exchange (`email.timeout`, `GOATKIT_EMAIL_TIMEOUT`).
    pub timeout: Duration,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            security: None,
            from: None,
            timeout: DEFAULT_SMTP_TIMEOUT,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEmail {
    smtp_url: Option<String>,
    security: Option<String>,
    from: Option<String>,
    timeout: Option<String>,
}

fn parse_security(key: &str, value: &str) -> Result<SmtpSecurity, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "starttls" => Ok(SmtpSecurity::StartTls),
        "tls" => Ok(SmtpSecurity::Tls),
        "none" => Ok(SmtpSecurity::None),
        other => Err(value_error(
            key,
            format!("`{other}` is not starttls, tls or none"),
        )),
    }
}

fn decoded(key: &str, text: &str) -> Result<String, ConfigError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| value_error(key, "the user or password is not UTF-8 once decoded"))
}

impl EmailSettings {
    pub(super) fn apply_file(&mut self, file: FileEmail) -> Result<(), ConfigError> {
        if let Some(url) = file.smtp_url {
            self.smtp_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(security) = file.security {
            self.security = Some(parse_security("email.security", &security)?);
        }
        if let Some(from) = file.from {
            self.from = Some(from);
        }
        if let Some(timeout) = file.timeout {
            self.timeout = parse_timeout("email.timeout", &timeout)?;
        }
        Ok(())
    }

    pub(super) fn apply_env(&mut self, env: &Environment) -> Result<(), ConfigError> {
        if let Some(url) = env.get("GOATKIT_EMAIL_SMTP_URL") {
            self.smtp_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(security) = env.get("GOATKIT_EMAIL_SECURITY") {
            self.security = Some(parse_security("GOATKIT_EMAIL_SECURITY", &security)?);
        }
        if let Some(from) = env.get("GOATKIT_EMAIL_FROM") {
            self.from = Some(from);
        }
        if let Some(timeout) = env.get("GOATKIT_EMAIL_TIMEOUT") {
            self.timeout = parse_timeout("GOATKIT_EMAIL_TIMEOUT", &timeout)?;
        }
        Ok(())
    }

    /// The SMTP transport's settings, or `None` for the outbox.
    pub fn smtp_config(&self) -> Result<Option<SmtpConfig>, ConfigError> {
        let Some(text) = &self.smtp_url else {
            return Ok(None);
        };
        let key = "email.smtp_url";
        let url = url::Url::parse(text).map_err(|e| {
            value_error(
                key,
                format!("not a URL like smtp://user:pass@host:587 ({e})"),
            )
        })?;
        let (scheme_security, default_port) = match url.scheme() {
            "smtp" => (SmtpSecurity::StartTls, 587),
            "smtps" => (SmtpSecurity::Tls, 465),
            other => {
                return Err(value_error(
                    key,
                    format!("scheme `{other}` is not smtp (STARTTLS) or smtps (implicit TLS)"),
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| value_error(key, "the URL has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let username = Some(decoded(key, url.username())?).filter(|u| !u.is_empty());
        let password = url.password().map(|p| decoded(key, p)).transpose()?;
        let from = self.from.clone().ok_or_else(|| {
            value_error(
                "email.from",
                "a sender address is needed with email.smtp_url",
            )
        })?;
        if !from.contains('@') {
            return Err(value_error(
                "email.from",
                format!("`{from}` is not an email address"),
            ));
        }
        Ok(Some(SmtpConfig {
            host,
            port: url.port().unwrap_or(default_port),
            security: self.security.unwrap_or(scheme_security),
            username,
            password,
            from,
            timeout: self.timeout,
        }))
    }
}

/// A named database (`[databases.<name>]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNamedDatabase {
    url: Option<String>,
}

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

/// `[databases.<name>]` tables: name → URL.
pub(super) fn named_databases_from_file(
    tables: BTreeMap<String, FileNamedDatabase>,
    base: &std::path::Path,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut databases = BTreeMap::new();
    for (name, table) in tables {
        let key = format!("databases.{name}.url");
        let name = database_name(&format!("databases.{name}"), &name)?;
        let url = table.url.ok_or_else(|| value_error(&key, "is missing"))?;
        databases.insert(name, relative_sqlite(&database_url(&key, &url)?, base));
    }
    Ok(databases)
}

/// A relative SQLite path in the file is relative to the file, as every path there is.
fn relative_sqlite(url: &str, base: &std::path::Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
            format!("sqlite://{}", base.join(path).display())
        }
        _ => url.to_owned(),
    }
}

/// `GOATKIT_DATABASES_<NAME>_URL` variables: name (lower-cased) → URL; an empty value removes
/// the database.
pub(super) fn apply_named_databases_env(
    databases: &mut BTreeMap<String, String>,
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
            databases.remove(&name);
        } else {
            databases.insert(name, database_url(&variable, url)?);
        }
    }
    Ok(())
}

/// Flattens a TOML table to dotted keys under `prefix`: strings as they are, numbers, booleans
/// and dates as written, arrays as JSON.
pub(super) fn flatten(prefix: &str, table: &toml::Table, into: &mut BTreeMap<String, String>) {
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

/// `GOATKIT_CONFIG_<KEY>` variables as `[config]` keys: lower-cased, `__` read as `.`
/// (`GOATKIT_CONFIG_HELPDESK__URL` is `helpdesk.url`).
pub(super) fn apply_config_env(values: &mut BTreeMap<String, String>, env: &Environment) {
    for (rest, value) in env.with_prefix("GOATKIT_CONFIG_") {
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if !key.is_empty() {
            values.insert(key, value.to_owned());
        }
    }
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

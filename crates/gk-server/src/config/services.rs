//! The settings of the host services plugins use, `[app]`, `[http]` and `[email]`, and the
//! checks of their values (the keys themselves are declared in `keys.rs`).

use std::time::Duration;

use gk_core::host::{
    DEFAULT_MAX_RESPONSE_BYTES, HttpConfig, PrivateNetwork, SmtpConfig, SmtpSecurity,
};

use super::{ConfigError, value_error};

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

/// `app.name`: not blank.
pub(super) fn app_name(key: &str, name: &str) -> Result<String, ConfigError> {
    if name.trim().is_empty() {
        return Err(value_error(key, "must not be empty"));
    }
    Ok(name.to_owned())
}

/// `app.base_url`: an http(s) URL with a host, without its trailing `/`.
pub(super) fn base_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let parsed =
        url::Url::parse(url).map_err(|e| value_error(key, format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(value_error(
            key,
            format!("`{url}` is not an http(s) URL with a host"),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `app.timezone`: what an IANA time zone name is written with.
pub(super) fn timezone(key: &str, zone: &str) -> Result<String, ConfigError> {
    let valid = !zone.is_empty()
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if !valid {
        return Err(value_error(
            key,
            format!("`{zone}` is not a time zone name like Europe/Berlin or UTC"),
        ));
    }
    Ok(zone.to_owned())
}

/// `app.default_language`: a language tag.
pub(super) fn default_language(key: &str, language: &str) -> Result<String, ConfigError> {
    let valid = (2..=35).contains(&language.len())
        && language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(value_error(
            key,
            format!("`{language}` is not a language tag like en or de-CH"),
        ));
    }
    Ok(language.to_owned())
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

/// `http.allow_private`: each entry a network, optionally with one port.
pub(super) fn networks(key: &str, entries: &[String]) -> Result<Vec<PrivateNetwork>, ConfigError> {
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

/// `email.security`.
pub(super) fn parse_security(key: &str, value: &str) -> Result<SmtpSecurity, ConfigError> {
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

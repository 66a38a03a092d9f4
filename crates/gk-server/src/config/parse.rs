//! Reading one value of the configuration: each error names the key (or variable) and the
//! problem.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;

pub(super) fn parse_count(key: &str, value: &str) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err(value_error(key, "must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(value_error(key, format!("`{value}` is not a number"))),
    }
}

pub(super) fn value_error(key: &str, problem: impl ToString) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        problem: problem.to_string(),
    }
}

pub(super) fn parse_listen(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        value_error(
            key,
            format!("`{value}` is not an address like 127.0.0.1:8080"),
        )
    })
}

pub(super) fn parse_timeout(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let timeout = gk_sdk::parse_duration(value).map_err(|e| value_error(key, e))?;
    if timeout.is_zero() {
        return Err(value_error(key, "must be longer than zero"));
    }
    Ok(timeout)
}

pub(super) fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(value_error(key, format!("`{other}` is not true or false"))),
    }
}

pub(super) fn parse_bytes<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| value_error(key, format!("`{value}` is not a number of bytes")))
}

pub(super) fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

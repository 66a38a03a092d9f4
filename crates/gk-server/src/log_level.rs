//! The log level a log query names, read the same way by the JSON API and the admin pages.

use gk_sdk::LogLevel;

/// A level that is not one of `debug`, `info`, `warn`, `error`.
#[derive(Debug, thiserror::Error)]
#[error("level `{0}` is not one of debug, info, warn, error")]
pub(crate) struct UnknownLevel(pub(crate) String);

/// The level named by a query (`debug` when none or empty; `warning` is `warn`).
pub(crate) fn parse_level(level: Option<&str>) -> Result<LogLevel, UnknownLevel> {
    match level.unwrap_or("debug") {
        "debug" | "" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        other => Err(UnknownLevel(other.to_owned())),
    }
}

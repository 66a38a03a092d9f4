//! The error types shared by the host, the sandbox and both runtimes.

use std::time::Duration;

/// The stable name of a [`HostError`]'s kind, as it travels over the wire (WASM error channel,
/// gRPC status details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostErrorKind {
    /// See [`HostError::PermissionDenied`].
    PermissionDenied,
    /// See [`HostError::RateLimited`].
    RateLimited,
    /// See [`HostError::NotFound`].
    NotFound,
    /// See [`HostError::InvalidInput`].
    InvalidInput,
    /// See [`HostError::Timeout`].
    Timeout,
    /// See [`HostError::Unavailable`].
    Unavailable,
    /// See [`HostError::CallDepthExceeded`].
    CallDepthExceeded,
    /// See [`HostError::PluginFailed`].
    PluginFailed,
    /// See [`HostError::Backend`].
    Backend,
}

impl HostErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [HostErrorKind; 9] = [
        Self::PermissionDenied,
        Self::RateLimited,
        Self::NotFound,
        Self::InvalidInput,
        Self::Timeout,
        Self::Unavailable,
        Self::CallDepthExceeded,
        Self::PluginFailed,
        Self::Backend,
    ];

    /// The wire name, e.g. `permission_denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::NotFound => "not_found",
            Self::InvalidInput => "invalid_input",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::CallDepthExceeded => "call_depth_exceeded",
            Self::PluginFailed => "plugin_failed",
            Self::Backend => "backend",
        }
    }

    /// The kind with this wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Why a host function failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The plugin's policy does not grant what the call needs.
    #[error("permission denied: `{permission}` is required: {reason}")]
    PermissionDenied {
        /// The missing permission, e.g. `db:write` or `http:api.example.com`.
        permission: String,
        /// What exactly was refused.
        reason: String,
    },
    /// A rate limit of the plugin's policy was reached; the call did not reach the backend.
    #[error("rate limited: {limit} exceeded, retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// Which limit, e.g. `max_db_queries_per_min`.
        limit: String,
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// The thing asked for does not exist (config key, plugin, function).
    #[error("not found: {0}")]
    NotFound(String),
    /// The arguments of the call are malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The backend is not reachable, or the plugin is disabled or blocked.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A chain of plugin-to-plugin calls went deeper than allowed.
    #[error("plugin call depth exceeded: at most {max} nested plugin calls are allowed")]
    CallDepthExceeded {
        /// The allowed depth.
        max: u32,
    },
    /// A plugin called through `call_plugin` failed.
    #[error("plugin call failed: {0}")]
    PluginFailed(String),
    /// The backend failed (database error, SMTP refusal, …).
    #[error("{0}")]
    Backend(String),
}

impl HostError {
    /// A permission denial naming the missing permission.
    pub fn denied(permission: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::PermissionDenied {
            permission: permission.into(),
            reason: reason.into(),
        }
    }

    /// The kind of this error.
    pub fn kind(&self) -> HostErrorKind {
        match self {
            Self::PermissionDenied { .. } => HostErrorKind::PermissionDenied,
            Self::RateLimited { .. } => HostErrorKind::RateLimited,
            Self::NotFound(_) => HostErrorKind::NotFound,
            Self::InvalidInput(_) => HostErrorKind::InvalidInput,
            Self::Timeout(_) => HostErrorKind::Timeout,
            Self::Unavailable(_) => HostErrorKind::Unavailable,
            Self::CallDepthExceeded { .. } => HostErrorKind::CallDepthExceeded,
            Self::PluginFailed(_) => HostErrorKind::PluginFailed,
            Self::Backend(_) => HostErrorKind::Backend,
        }
    }

    /// The free-text part of the error (the reason, for denials; empty for structured kinds).
    pub fn detail(&self) -> &str {
        match self {
            Self::PermissionDenied { reason, .. } => reason,
            Self::RateLimited { .. } | Self::CallDepthExceeded { .. } => "",
            Self::NotFound(m)
            | Self::InvalidInput(m)
            | Self::Timeout(m)
            | Self::Unavailable(m)
            | Self::PluginFailed(m)
            | Self::Backend(m) => m,
        }
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin has no function of that name.
    #[error("plugin has no function `{0}`")]
    UnknownFunction(String),
    /// The plugin ran the function and reported a failure.
    #[error("{}", match code { Some(code) => format!("{code}: {message}"), None => message.clone() })]
    Failed {
        /// The plugin's error code without the plugin prefix, if it gave one.
        code: Option<String>,
        /// What went wrong, in the plugin's words.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("{operation} timed out after {} ms", after.as_millis())]
    Timeout {
        /// What timed out: `call`, `init`, `register`, `shutdown`.
        operation: String,
        /// The deadline that was exceeded.
        after: Duration,
    },
    /// The plugin's process or instance died during the call.
    #[error("plugin crashed: {0}")]
    Crashed(String),
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, out of fuel).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin broke the ABI or wire contract (bad pointer, malformed JSON, missing export).
    #[error("plugin broke the protocol: {0}")]
    Protocol(String),
    /// The plugin cannot take calls now (not started, failed, shutting down).
    #[error("plugin unavailable: {0}")]
    Unavailable(String),
    /// A host function the plugin needed failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl PluginError {
    /// A failure the plugin reports with one of its declared error codes.
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed {
            code: Some(code.into()),
            message: message.into(),
        }
    }
}

/// Why a `plugin.yaml` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The manifest's path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the manifest's shape.
    #[error("plugin.yaml is not valid: {0}")]
    Syntax(String),
    /// A field has a value the platform cannot accept.
    #[error("plugin.yaml: field `{field}`: {problem}")]
    InvalidField {
        /// The field, e.g. `name` or `resources.call_timeout`.
        field: String,
        /// What is wrong and what would be right.
        problem: String,
    },
}

impl ManifestError {
    pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_error_kinds_round_trip_their_wire_names() {
        for kind in HostErrorKind::ALL {
            assert_eq!(HostErrorKind::from_wire(kind.as_str()), Some(kind));
        }
        assert_eq!(HostErrorKind::from_wire("nonsense"), None);
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            HostError::denied("db:write", "db_query accepts only reads").to_string(),
            "permission denied: `db:write` is required: db_query accepts only reads"
        );
        let limited = HostError::RateLimited {
            limit: "max_calls_per_second".into(),
            retry_after: Duration::from_millis(250),
        };
        assert_eq!(
            limited.to_string(),
            "rate limited: max_calls_per_second exceeded, retry in 250 ms"
        );
        assert_eq!(
            PluginError::failed("invalid_range", "range must be 7d").to_string(),
            "invalid_range: range must be 7d"
        );
        let timeout = PluginError::Timeout {
            operation: "call".into(),
            after: Duration::from_secs(2),
        };
        assert_eq!(timeout.to_string(), "call timed out after 2000 ms");
    }
}

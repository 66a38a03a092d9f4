//! API errors: JSON `{"error": {"code", "message"}}` with the status that says what happened
//! (and `Retry-After` when the plugin was rate limited).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gk_core::ManagerError;
use gk_sdk::{HostError, PluginError};
use serde_json::json;

use crate::auth::AuthError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `plugin_disabled`, `stats:quota`…).
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// When a retry may succeed: sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl ToString) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// The same error, telling the client to retry after `after`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_seconds(after: Duration) -> u64 {
    after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0))
        .max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(after)),
            );
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", error)
    }
}

/// The code a WASM guest built with the Rust guest SDK fails with when it passes a host
/// `rate_limited` error on (`host_<kind>`).
const GUEST_RATE_LIMITED: &str = "host_rate_limited";

/// When a guest's rate-limited call may be retried: the `retry in N ms` of the host error's
/// text it passed on, else one second.
fn guest_retry_after(message: &str) -> Duration {
    message
        .rsplit_once("retry in ")
        .and_then(|(_, rest)| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis)
}

/// Maps a manager error; `declared_status` gives the HTTP status a plugin declared for one of
/// its error codes (`<plugin>:<code>`).
pub fn manager_error(
    error: ManagerError,
    declared_status: impl Fn(&str) -> Option<u16>,
) -> ApiError {
    use StatusCode as S;
    match &error {
        ManagerError::NotFound(_) | ManagerError::Undeclared { .. } => {
            ApiError::new(S::NOT_FOUND, "not_found", error)
        }
        ManagerError::Disabled(_) => ApiError::new(S::FORBIDDEN, "plugin_disabled", error),
        ManagerError::Invalid { .. } | ManagerError::Policy(_) => {
            ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid", error)
        }
        ManagerError::Plugin { plugin, source } => match source {
            PluginError::UnknownFunction(_) => {
                ApiError::new(S::NOT_FOUND, "unknown_function", error)
            }
            PluginError::Failed {
                code: Some(code),
                message,
            } => {
                let qualified = format!("{plugin}:{code}");
                let declared = declared_status(&qualified).and_then(|s| S::from_u16(s).ok());
                match declared {
                    Some(status) => ApiError::new(status, qualified, error),
                    // A WASM guest passing a host rate limit on (the Rust guest SDK's code).
                    None if code == GUEST_RATE_LIMITED => {
                        let after = guest_retry_after(message);
                        ApiError::new(S::TOO_MANY_REQUESTS, "rate_limited", error)
                            .with_retry_after(after)
                    }
                    None => ApiError::new(S::BAD_REQUEST, qualified, error),
                }
            }
            PluginError::Host(HostError::RateLimited { retry_after, .. }) => {
                let after = *retry_after;
                ApiError::new(S::TOO_MANY_REQUESTS, "rate_limited", error).with_retry_after(after)
            }
            PluginError::Timeout { .. } => ApiError::new(S::GATEWAY_TIMEOUT, "timeout", error),
            PluginError::Crashed(_) | PluginError::Unavailable(_) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "plugin_unavailable", error)
            }
            _ => ApiError::new(S::BAD_REQUEST, "plugin_error", error),
        },
        _ => {
            tracing::error!(%error, "internal error");
            ApiError::new(S::INTERNAL_SERVER_ERROR, "internal", error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limited(retry_after: Duration) -> ManagerError {
        ManagerError::Plugin {
            plugin: "hello".into(),
            source: PluginError::Host(HostError::RateLimited {
                limit: "max_calls_per_second".into(),
                retry_after,
            }),
        }
    }

    #[tokio::test]
    async fn a_rate_limited_call_is_429_with_retry_after_in_whole_seconds() {
        let error = manager_error(rate_limited(Duration::from_millis(1500)), |_| None);
        assert_eq!(
            (error.status, error.code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_calls_per_second"),
            "{body}"
        );

        // A WASM guest passes the host error on as its failure `host_rate_limited`.
        let guest = |declared: Option<u16>| {
            manager_error(
                ManagerError::Plugin {
                    plugin: "stats".into(),
                    source: PluginError::failed(
                        "host_rate_limited",
                        "rate limited: max_db_queries_per_min exceeded, retry in 2500 ms",
                    ),
                },
                move |_| declared,
            )
        };
        let limited = guest(None);
        assert_eq!(
            (limited.status, limited.code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert_eq!(limited.into_response().headers()[header::RETRY_AFTER], "3");
        let declared = guest(Some(503));
        assert_eq!(
            (declared.status, declared.code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "stats:host_rate_limited")
        );
        assert_eq!(guest_retry_after("no time given"), Duration::from_secs(1));

        let soon = manager_error(rate_limited(Duration::from_millis(3)), |_| None);
        assert_eq!(soon.into_response().headers()[header::RETRY_AFTER], "1");
        let other = manager_error(
            ManagerError::Plugin {
                plugin: "hello".into(),
                source: PluginError::Host(HostError::Backend("disk full".into())),
            },
            |_| None,
        );
        assert_eq!(other.status, StatusCode::BAD_REQUEST);
        assert!(
            other
                .into_response()
                .headers()
                .get(header::RETRY_AFTER)
                .is_none()
        );
    }
}

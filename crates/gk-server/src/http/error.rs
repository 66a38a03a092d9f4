//! API errors: JSON `{"error": {"code", "message"}}` with the status that says what happened.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gk_core::ManagerError;
use gk_sdk::PluginError;
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
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl ToString) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", error)
    }
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
                code: Some(code), ..
            } => {
                let qualified = format!("{plugin}:{code}");
                let status = declared_status(&qualified)
                    .and_then(|s| S::from_u16(s).ok())
                    .unwrap_or(S::BAD_REQUEST);
                ApiError::new(status, qualified, error)
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

//! Errors answered over HTTP: JSON `{"error": {"code", "message"}}` with the status that says
//! what happened (and `Retry-After` when the plugin was rate limited), and the same mapping
//! for the admin pages' notices.
//!
//! The mappings of the platform's errors are exhaustive matches: a new variant does not compile
//! until it is given a status here. A server-side failure (store, database, I/O) answers a
//! generic message with the request's id (see [`crate::request_id`]) and is logged once, at
//! error level, with that id and the real cause; its text never reaches the client.
//!
//! This module is a leaf shared by `http` (the JSON API) and `admin` (the HTML pages).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gk_core::{InstallError, Manager, ManagerError};
use gk_sdk::{HostError, PluginError};
use serde_json::json;

use crate::auth::AuthError;
pub use crate::request_id::REQUEST_ID_HEADER;
use crate::request_id::RequestId;

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
    /// The real cause of a server-side failure: logged with the request id, never answered.
    cause: Option<String>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl ToString) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.to_string(),
            retry_after: None,
            cause: None,
        }
    }

    /// A server-side failure: answered as 500 `internal` with a generic message and a request
    /// id; `cause` is only logged.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::internal_as("internal", cause)
    }

    /// A server-side failure answered as 500 with `code` (`render`…), a generic message and a
    /// request id; `cause` is only logged.
    pub fn internal_as(code: &str, cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error")
        }
    }

    /// The same error, telling the client to retry after `after`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether this is a server-side failure (its cause is logged, never shown).
    pub fn is_internal(&self) -> bool {
        self.cause.is_some()
    }

    /// The message a person may read: for a server-side failure a generic message with the
    /// request's id, the cause logged once at error level with that id; otherwise the message.
    pub fn into_message(self) -> String {
        match self.cause {
            Some(cause) => {
                let request_id = log_internal(self.status, &self.code, &cause);
                format!("{}; request id {request_id}", self.message)
            }
            None => self.message,
        }
    }
}

/// Logs a server-side failure once, at error level, with the id of the request it failed;
/// returns that id.
pub fn log_internal(status: StatusCode, code: &str, cause: &str) -> RequestId {
    let request_id = crate::request_id::current_or_new();
    tracing::error!(%request_id, status = status.as_u16(), %code, %cause, "request failed");
    request_id
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
        let Some(cause) = self.cause else {
            let body = json!({"error": {"code": self.code, "message": self.message}});
            let mut response = (self.status, Json(body)).into_response();
            if let Some(after) = self.retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(after)),
                );
            }
            return response;
        };
        let request_id = log_internal(self.status, &self.code, &cause);
        let body = json!({"error": {
            "code": self.code,
            "message": format!("{}; request id {request_id}", self.message),
            "request_id": request_id.as_str(),
        }});
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER, request_id.header_value().clone());
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

impl From<crate::upload::UploadError> for ApiError {
    fn from(error: crate::upload::UploadError) -> Self {
        Self::new(error.status, error.code, error.message)
    }
}

impl From<crate::log_level::UnknownLevel> for ApiError {
    fn from(error: crate::log_level::UnknownLevel) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_level", error)
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
    // No catch-all: a new variant must be given a status here.
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
            // The plugin is broken, not the request.
            PluginError::Trap(_) => ApiError::new(S::BAD_GATEWAY, "plugin_trapped", error),
            PluginError::Protocol(_) => ApiError::new(S::BAD_GATEWAY, "plugin_protocol", error),
            PluginError::Failed { code: None, .. } | PluginError::Host(_) => {
                ApiError::new(S::BAD_REQUEST, "plugin_error", error)
            }
            // gk-sdk's public `PluginError` is `#[non_exhaustive]`: a variant added there is
            // a plugin failure until it is given its own status.
            _ => ApiError::new(S::BAD_GATEWAY, "plugin_error", error),
        },
        ManagerError::Store(_) | ManagerError::HostInUse => ApiError::internal(error),
    }
}

/// Maps a manager error with the HTTP statuses the plugins declared for their error codes.
pub fn for_manager(manager: &Manager, error: ManagerError) -> ApiError {
    let codes = manager.error_codes();
    manager_error(error, |qualified| {
        codes.get(qualified).map(|c| c.http_status)
    })
}

/// Maps an install or uninstall error: a refused file or a conflict is the caller's to fix
/// (its reason is answered), the store or the disk failing is a server-side failure.
pub fn install_error(manager: &Manager, error: InstallError) -> ApiError {
    use StatusCode as S;
    match error {
        InstallError::FileName(_) | InstallError::Refused(_) => {
            ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_plugin", error)
        }
        InstallError::Conflict { .. } => ApiError::new(S::CONFLICT, "conflict", error),
        InstallError::NotInstalled(_) => ApiError::new(S::CONFLICT, "not_installed", error),
        InstallError::Load(error) => {
            let mut api = for_manager(manager, error);
            if api.status == S::NOT_FOUND || api.status == S::BAD_REQUEST {
                api.status = S::UNPROCESSABLE_ENTITY;
            }
            api
        }
        InstallError::Store { .. } | InstallError::Io { .. } => ApiError::internal(error),
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    /// A router whose one route fails with `error`, mapped as the API maps it.
    fn failing(error: fn() -> ManagerError) -> Router {
        Router::new().route(
            "/",
            get(move || async move { Err::<(), _>(manager_error(error(), |_| None)) }),
        )
    }

    async fn answer(router: Router) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap(),
        )
    }

    const SQL_FAILURE: &str = "error returned from database: relation \"gk_plugin_state\" does not exist at SELECT \"value\" FROM";

    #[tokio::test]
    async fn a_store_failure_is_500_with_a_request_id_and_no_database_text() {
        let (status, headers, body) = answer(failing(|| {
            ManagerError::Store(gk_core::StoreError::Database(sea_orm::DbErr::Custom(
                SQL_FAILURE.into(),
            )))
        }))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal", "{body}");
        let id = body["error"]["request_id"].as_str().unwrap().to_owned();
        assert!(!id.is_empty());
        assert_eq!(headers[REQUEST_ID_HEADER], id.as_str());
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(message, format!("internal error; request id {id}"));
        let text = body.to_string();
        for leak in ["SELECT", "gk_plugin_state", "database", "store"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }

        // Each failure has its own id.
        let (_, _, again) = answer(failing(|| ManagerError::HostInUse)).await;
        assert_eq!(again["error"]["code"], "internal");
        assert_ne!(again["error"]["request_id"], id.as_str());

        // A template that fails to render keeps its code, not its text.
        let render = ApiError::internal_as("render", "syntax error in dashboard.html line 3");
        assert_eq!(
            (render.status, render.code.as_str(), render.message.as_str()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "render",
                "internal error"
            )
        );
    }

    #[tokio::test]
    async fn a_rate_limited_call_through_a_router_is_429() {
        let (status, headers, body) = answer(failing(|| ManagerError::Plugin {
            plugin: "hello".into(),
            source: PluginError::Host(HostError::RateLimited {
                limit: "max_calls_per_second".into(),
                retry_after: Duration::from_millis(200),
            }),
        }))
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(headers.get(REQUEST_ID_HEADER).is_none());
    }

    #[test]
    fn every_variant_has_its_status() {
        let plugin = |source| ManagerError::Plugin {
            plugin: "p".into(),
            source,
        };
        let cases = [
            (ManagerError::NotFound("p".into()), 404, "not_found"),
            (
                ManagerError::Undeclared {
                    plugin: "p".into(),
                    item: "widget `w`".into(),
                },
                404,
                "not_found",
            ),
            (ManagerError::Disabled("p".into()), 403, "plugin_disabled"),
            (
                ManagerError::Invalid {
                    plugin: "p".into(),
                    problem: "bad".into(),
                },
                422,
                "invalid",
            ),
            (
                ManagerError::Policy(gk_sandbox::PolicyError::WrongPlugin {
                    plugin: "p".into(),
                    policy_plugin: "q".into(),
                }),
                422,
                "invalid",
            ),
            (ManagerError::HostInUse, 500, "internal"),
            (
                ManagerError::Store(gk_core::StoreError::Corrupt {
                    key: "k".into(),
                    problem: "bad".into(),
                }),
                500,
                "internal",
            ),
            (
                plugin(PluginError::UnknownFunction("f".into())),
                404,
                "unknown_function",
            ),
            (plugin(PluginError::failed("boom", "no")), 400, "p:boom"),
            (
                plugin(PluginError::Failed {
                    code: None,
                    message: "no".into(),
                }),
                400,
                "plugin_error",
            ),
            (
                plugin(PluginError::Timeout {
                    operation: "call".into(),
                    after: Duration::from_secs(1),
                }),
                504,
                "timeout",
            ),
            (
                plugin(PluginError::Crashed("x".into())),
                503,
                "plugin_unavailable",
            ),
            (
                plugin(PluginError::Unavailable("x".into())),
                503,
                "plugin_unavailable",
            ),
            (
                plugin(PluginError::Trap("unreachable".into())),
                502,
                "plugin_trapped",
            ),
            (
                plugin(PluginError::Protocol("bad frame".into())),
                502,
                "plugin_protocol",
            ),
            (
                plugin(PluginError::Host(HostError::NotFound("k".into()))),
                400,
                "plugin_error",
            ),
        ];
        for (error, status, code) in cases {
            let text = error.to_string();
            let api = manager_error(error, |_| None);
            assert_eq!(
                (api.status.as_u16(), api.code.as_str()),
                (status, code),
                "{text}"
            );
            if status == 500 {
                assert_eq!(api.message, "internal error", "{text}");
            }
        }
    }

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

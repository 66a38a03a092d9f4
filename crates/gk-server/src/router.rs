//! The server's one router, composed here and nowhere else: the JSON API and the dashboard
//! ([`crate::http`]), the admin pages ([`crate::admin`]) behind their security headers, the
//! plugin routes as the fallback, and the layers every request goes through:
//!
//! 1. its id ([`crate::request_id`]): a safe incoming `x-request-id` or a new one, echoed in the
//!    response and used by an internal failure's answer and log line;
//! 2. a tracing span `gk.http.request` (INFO: method, matched route, path, request id), the
//!    parent of the plugin call's and the host calls' spans (`gk.host.*`); nothing is formatted
//!    when no subscriber wants the span;
//! 3. tower's `TimeoutLayer` with the configured `request_timeout`; its `Elapsed` error (and
//!    only it: a handler's own 504 passes untouched) is answered by axum's `HandleErrorLayer` as
//!    `504 request_timeout` (JSON) as before;
//! 4. the body limit.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

use crate::error::ApiError;
use crate::http::{MAX_BODY_BYTES, headers, plugin_routes};
use crate::request_id::RequestId;
use crate::state::AppState;

/// The router of the server.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    let app = Router::new()
        .merge(crate::http::routes())
        .merge(crate::admin::routes().layer(axum::middleware::from_fn(headers::admin_pages)))
        .fallback(plugin_routes::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    with_request_layers(app, timeout).with_state(state)
}

/// `router` with the request id, the tracing span and the request timeout around every route
/// and the fallback (see the module docs).
pub(crate) fn with_request_layers<S>(router: Router<S>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(
        ServiceBuilder::new()
            .layer(crate::request_id::RequestIdLayer)
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    // A 5xx is logged where it is made (once, with its cause), not again here.
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .layer(HandleErrorLayer::new(move |error: BoxError| async move {
                timeout_answer(&error, timeout)
            }))
            .layer(TimeoutLayer::new(timeout)),
    )
}

/// The span of one request. Its fields are only read (and formatted) when a subscriber
/// enables the span.
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(RequestId::as_str);
    tracing::info_span!(
        "gk.http.request",
        method = %request.method(),
        route,
        path = request.uri().path(),
        request_id,
    )
}

/// The answer to a request that failed in the layers: the timeout's `Elapsed` as the JSON
/// `504 request_timeout` clients got before. Routes never fail (axum's are infallible), so
/// nothing else reaches here; were it to, it is a 500 without its cause.
fn timeout_answer(error: &BoxError, timeout: Duration) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!(timeout = ?timeout, "request timed out");
        return ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} ms", timeout.as_millis()),
        )
        .into_response();
    }
    ApiError::internal(error).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;
    use crate::request_id::REQUEST_ID_HEADER;

    /// Routes that fail inside, answer slowly, or answer 504 themselves, with the layers.
    fn app() -> Router {
        let routes = Router::new()
            .route(
                "/fail",
                get(|| async {
                    Err::<(), _>(ApiError::internal(
                        "error returned from database: SELECT secret FROM gk_plugin_state",
                    ))
                }),
            )
            .route("/ok", get(|| async { "ok" }))
            .route("/bare-504", get(|| async { StatusCode::GATEWAY_TIMEOUT }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/plugin-timeout",
                get(|| async {
                    Err::<(), _>(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "call timed out",
                    ))
                }),
            );
        with_request_layers(routes, Duration::from_millis(100))
    }

    async fn get_with(path: &str, id: Option<&str>) -> (Response, serde_json::Value) {
        let mut request = Request::get(path);
        if let Some(id) = id {
            request = request.header(REQUEST_ID_HEADER, id);
        }
        let response = app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, Body::empty()), json)
    }

    fn id_of(response: &Response) -> String {
        response.headers()[REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn one_id_per_request_in_the_response_and_the_internal_error() {
        // A safe incoming id is kept, echoed, and is the failure's id.
        let (response, body) = get_with("/fail", Some("lb-42.a_b")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(id_of(&response), "lb-42.a_b");
        assert_eq!(body["error"]["request_id"], "lb-42.a_b", "{body}");
        assert_eq!(
            body["error"]["message"],
            "internal error; request id lb-42.a_b"
        );
        assert!(!body.to_string().contains("SELECT"), "{body}");

        // An unsafe or overlong one is replaced by a new id, used the same way.
        for bad in ["has space", "semi;colon", &"x".repeat(65)] {
            let (response, body) = get_with("/fail", Some(bad)).await;
            let id = id_of(&response);
            assert_ne!(id, bad);
            assert!(RequestId::accept(&id.parse().unwrap()).is_some(), "{id}");
            assert_eq!(body["error"]["request_id"], id.as_str(), "{body}");
        }

        // A request that does not fail gets an id too, each its own.
        let (first, _) = get_with("/ok", None).await;
        let (second, _) = get_with("/ok", None).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_ne!(id_of(&first), id_of(&second));
    }

    #[tokio::test]
    async fn a_request_past_its_timeout_is_a_json_504_and_a_handler_504_is_kept() {
        let (response, body) = get_with("/slow", None).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["code"], "request_timeout", "{body}");
        assert_eq!(
            body["error"]["message"],
            "the request took longer than 100 ms"
        );
        assert!(response.headers().contains_key(REQUEST_ID_HEADER));

        let (response, body) = get_with("/plugin-timeout", None).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["code"], "timeout", "{body}");

        // Only the layer's own timeout is rewritten, not a handler's bare 504.
        let (response, body) = get_with("/bare-504", None).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body, serde_json::Value::Null, "{body}");
    }
}

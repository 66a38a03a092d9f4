//! Plugin routes: the routes plugins declare in their registrations, served as declared.
//!
//! The table is rebuilt when the manager's catalog changes. A path no loaded plugin declares
//! loads the discovered plugins first (their routes are not known before), once per catalog
//! change, then is looked up again. A disabled plugin's routes answer `403`, not `404`.
//!
//! Handler arguments are one JSON object: the JSON body's fields, then the query's, then the
//! path parameters' (a later source wins), and the caller: `_method`, `_path`, `_user_id`,
//! `_user_email`, `_user_login`, `_user_role`, `_is_admin`. A reply `{"html": …}` is wrapped in
//! the page layout unless it says `"raw": true`; any other reply is JSON.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use gk_sdk::CallContext;
use serde_json::{Map, Value};

mod package_static;

use crate::auth::{Claims, Role};
use crate::error::ApiError;
use crate::pages::MenuEntry;
pub use crate::route_table::{RouteTable, Routes};
use crate::state::AppState;

/// The bearer token's claims when there is a header; `Ok(None)` without one.
pub(crate) fn optional_claims(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Claims>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(crate::auth::AuthError::Missing)?;
    Ok(Some(state.tokens.verify(token)?))
}

/// The end user's language from `Accept-Language` (its first tag, primary subtag).
pub(crate) fn language(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
    let first = value.split(',').next()?.split(';').next()?.trim();
    let primary = first.split('-').next()?.to_ascii_lowercase();
    (!primary.is_empty() && primary != "*").then_some(primary)
}

/// The caller's fields every plugin route and widget gets.
pub(crate) fn caller_fields(
    args: &mut Map<String, Value>,
    method: &Method,
    path: &str,
    user: Option<&Claims>,
) {
    args.insert("_method".into(), Value::from(method.as_str()));
    args.insert("_path".into(), Value::from(path));
    args.insert(
        "_user_id".into(),
        user.and_then(|u| u.uid).map_or(Value::Null, Value::from),
    );
    args.insert(
        "_user_email".into(),
        user.and_then(|u| u.email.clone())
            .map_or(Value::Null, Value::from),
    );
    args.insert(
        "_user_login".into(),
        user.map_or(Value::Null, |u| Value::from(u.sub.as_str())),
    );
    args.insert(
        "_user_role".into(),
        user.map_or(Value::Null, |u| {
            Value::from(match u.role {
                Role::Admin => "admin",
                Role::Agent => "agent",
            })
        }),
    );
    args.insert(
        "_is_admin".into(),
        Value::from(user.is_some_and(|u| u.role == Role::Admin)),
    );
}

/// The query string's parameters.
pub(crate) fn query_fields(args: &mut Map<String, Value>, uri: &Uri) {
    if let Some(query) = uri.query() {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            args.insert(key.into_owned(), Value::String(value.into_owned()));
        }
    }
}

fn invalid_body(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_json", message)
}

/// Serves a plugin route; everything the server does not route itself ends here.
pub async fn serve(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path().to_owned();
    if method == Method::GET
        && let Some((plugin, file)) = package_static::split(&path)
    {
        return package_static::serve(&state, plugin, file, &headers).await;
    }
    let Some((route, params)) = state.routes.find(&state.manager, &method, &path).await else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {method} {path}"),
        ));
    };
    let user = optional_claims(&state, &headers)?;
    if route.needs_token && user.is_none() {
        return Err(crate::auth::AuthError::Missing.into());
    }
    if route.needs_admin && !user.as_ref().is_some_and(|u| u.role == Role::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{method} {path} needs an admin token"),
        ));
    }

    let mut args = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(invalid_body("the request body must be a JSON object")),
            Err(e) => return Err(invalid_body(&format!("the request body is not JSON: {e}"))),
        }
    };
    query_fields(&mut args, &uri);
    args.extend(params);
    caller_fields(&mut args, &method, &path, user.as_ref());
    let arguments = serde_json::to_vec(&Value::Object(args)).map_err(ApiError::internal)?;

    let language = language(&headers);
    let mut ctx = CallContext::for_plugin(route.plugin.clone());
    ctx.language = language.clone();
    tracing::debug!(plugin = %route.plugin, handler = %route.handler, %path, "plugin route");
    let reply = state
        .manager
        .call_with(&ctx, &route.handler, &arguments)
        .await
        .map_err(|e| crate::error::for_manager(&state.manager, e))?;
    // Every reply of a plugin is plugin content: served in an opaque origin.
    reply_response(&state, &route.plugin, reply, language.as_deref())
        .await
        .map(super::headers::plugin_content)
}

/// A plugin's reply as the HTTP response: JSON, raw HTML, or HTML in the page layout.
async fn reply_response(
    state: &AppState,
    plugin: &str,
    reply: Vec<u8>,
    language: Option<&str>,
) -> Result<Response, ApiError> {
    let html = match serde_json::from_slice::<Value>(&reply) {
        Ok(Value::Object(fields)) => match fields.get("html") {
            Some(Value::String(html)) => Some((
                html.clone(),
                fields.get("raw") == Some(&Value::Bool(true)),
                fields,
            )),
            _ => None,
        },
        _ => None,
    };
    let Some((html, raw, fields)) = html else {
        return Ok(([(header::CONTENT_TYPE, "application/json")], reply).into_response());
    };
    if raw {
        return Ok(Html(html).into_response());
    }
    let title = fields
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or(plugin);
    let page = state
        .templates
        .render(
            "layout.html",
            serde_json::json!({
                "title": title, "content": html, "language": language,
                "menu": crate::pages::Translator::with_languages(
                    &state.manager,
                    language.map(str::to_owned).into_iter().collect(),
                )
                .menu(menu(state)),
            }),
        )
        .await
        .map_err(|e| ApiError::internal_as("render", e))?;
    Ok(Html(page).into_response())
}

/// The navigation menu of the dashboard and plugin pages: the enabled plugins' `agent` menu
/// items (see [`crate::pages::menu`]).
pub(crate) fn menu(state: &AppState) -> Vec<MenuEntry> {
    crate::pages::menu::build(&state.manager, crate::pages::menu::DEFAULT_LOCATION)
}

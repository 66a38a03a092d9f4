//! The admin pages at `/admin/plugins`: server-rendered HTML with plain forms, no JavaScript.
//!
//! Signing in stores the admin token in an `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/admin`; every form also carries a CSRF value derived from the token, checked on each POST.
//! Every action goes through the same [`gk_core::Manager`] and [`gk_core::Loader`] calls as the
//! JSON API, then redirects back with a notice (post/redirect/get).
//!
//! A failure the admin can act on (bad input, a refused file and its reason, a plugin's own
//! error) is shown as it is. A server-side failure (the store, the disk, a template) is shown as
//! a generic message with the request's id, and its cause logged once, at error level, with
//! that id ([`crate::error::ApiError::into_message`]).
//!
//! This module knows nothing of the JSON API: [`crate::router`] mounts [`routes`] beside it.

mod list;
mod nodes;
mod session;

use axum::Router;
use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use gk_sdk::{PolicyStatus, ResourcePolicy};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, for_manager, install_error};
use crate::pages::{MenuEntry, Translator};
use crate::state::AppState;
use session::{AdminSession, CsrfForm, sign_in_cookie, sign_out_cookie};

/// The admin routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/plugins") }))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/plugins", get(plugins_page))
        .route("/admin/plugins/upload", post(upload))
        .route("/admin/plugins/logs", get(logs_page))
        .route("/admin/plugins/logs/clear", post(clear_logs))
        .route("/admin/plugins/{name}", get(plugin_page))
        .route("/admin/plugins/{name}/{action}", post(plugin_action))
}

/// A notice or an error to show after a redirect.
#[derive(Debug, Default, Deserialize)]
struct Flash {
    notice: Option<String>,
    error: Option<String>,
}

fn back(path: &str, key: &str, message: &str) -> Redirect {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(key, message)
        .finish();
    Redirect::to(&format!("{path}?{query}"))
}

/// What a notice says about a failure: see the module docs.
fn problem(error: ApiError) -> String {
    error.into_message()
}

/// What a notice says about a manager failure.
fn manager_problem(state: &AppState, error: gk_core::ManagerError) -> String {
    problem(for_manager(&state.manager, error))
}

fn render(state: &AppState, template: &str, context: minijinja::Value) -> Response {
    render_page(&state.pages, template, context)
}

/// A page; a template that fails is a server-side failure (see the module docs).
fn render_page(pages: &crate::pages::Pages, template: &str, context: minijinja::Value) -> Response {
    match pages.render(template, context) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            let message = problem(ApiError::internal_as("render", error));
            (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        }
    }
}

/// What a policy change took beyond the live sandbox, for the notice after it.
fn applied_note(applied: &gk_core::PolicyApplied) -> String {
    let changed = applied.load_time_changes.join(", ");
    if applied.reloaded {
        format!("; reloaded to apply {changed}")
    } else if applied.at_next_load {
        format!("; {changed} apply at the plugin's next load")
    } else {
        String::new()
    }
}

fn value(v: impl Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// The navigation menu of the admin pages: the enabled plugins' `admin` menu items.
fn admin_menu(state: &AppState) -> Vec<MenuEntry> {
    crate::pages::menu::build(&state.manager, "admin")
}

/// The navigation menu in the request's language.
fn menu(state: &AppState, headers: &HeaderMap) -> minijinja::Value {
    value(Translator::new(&state.manager, headers).menu(admin_menu(state)))
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(flash): Query<Flash>,
) -> Response {
    render(
        &state,
        "admin_login.html",
        minijinja::context! { title => "Sign in", menu => menu(&state, &headers), error => flash.error },
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    match state.tokens.verify(token) {
        Ok(claims) if claims.role == crate::auth::Role::Admin => {
            tracing::info!(user = %claims.sub, "admin signed in");
            ([sign_in_cookie(token)], Redirect::to("/admin/plugins")).into_response()
        }
        Ok(claims) => back(
            "/admin/login",
            "error",
            &format!("`{}` is not an admin: use an admin token", claims.sub),
        )
        .into_response(),
        Err(error) => back("/admin/login", "error", &format!("{error}")).into_response(),
    }
}

async fn logout(session: AdminSession, form: CsrfForm) -> Response {
    if let Err(refused) = session.check_csrf(form.value()) {
        return refused.into_response();
    }
    ([sign_out_cookie()], Redirect::to("/admin/login")).into_response()
}

fn runtime_of(state: &AppState, name: &str) -> String {
    match state.manager.source(name) {
        Ok(Some(found)) => found.runtime.to_string(),
        _ => "embedded".into(),
    }
}

/// Every plugin the server knows of, whatever its state, and the files it refused.
async fn plugins_page(
    State(state): State<AppState>,
    session: AdminSession,
    headers: HeaderMap,
    Query(flash): Query<Flash>,
) -> Response {
    let texts = Translator::new(&state.manager, &headers);
    let plugins: Vec<list::PluginRow> = state
        .loader
        .inventory()
        .await
        .into_iter()
        .map(|mut plugin| {
            plugin.description = texts.text(&plugin.name, &plugin.description);
            list::PluginRow::from(plugin)
        })
        .collect();
    let cluster = match &state.cluster {
        Some(cluster) => Some(nodes::ClusterSection::read(cluster).await),
        None => None,
    };
    render(
        &state,
        "admin_plugins.html",
        minijinja::context! {
            title => "Plugins", menu => menu(&state, &headers), plugins => value(plugins),
            cluster => value(cluster),
            csrf => session.csrf, notice => flash.notice, error => flash.error,
        },
    )
}

async fn plugin_page(
    State(state): State<AppState>,
    session: AdminSession,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let manager = &state.manager;
    if !manager.names().contains(&name) {
        return back("/admin/plugins", "error", &format!("no plugin `{name}`")).into_response();
    }
    // The page shows what the plugin declares: load it if it was only discovered.
    let registration = match manager.load(&name).await {
        Ok(registration) => registration,
        Err(error) => {
            let problem = manager_problem(&state, error);
            return back("/admin/plugins", "error", &problem).into_response();
        }
    };
    let (policy, requested) = match (
        manager.policy(&name).await,
        manager.requested_resources(&name).await,
    ) {
        (Ok(policy), Ok(requested)) => (policy, requested),
        (Err(error), _) | (_, Err(error)) => {
            let problem = manager_problem(&state, error);
            return back("/admin/plugins", "error", &problem).into_response();
        }
    };
    let policy_json = serde_json::to_string_pretty(&policy).unwrap_or_default();
    // In words: a request without scope reads "every table of the default database", …
    let summaries = |permissions: &[gk_sdk::Permission]| -> Vec<String> {
        permissions
            .iter()
            .map(gk_sdk::Permission::summary)
            .collect()
    };
    let requested_permissions = summaries(&requested.permissions);
    let granted_permissions = summaries(&policy.permissions);
    let texts = Translator::new(&state.manager, &headers);
    let registration = texts.registration(registration);
    render(
        &state,
        "admin_plugin.html",
        minijinja::context! {
            title => name.clone(), menu => value(texts.menu(admin_menu(&state))),
            name => name.clone(),
            enabled => manager.is_enabled(&name).unwrap_or(false),
            runtime => runtime_of(&state, &name),
            registration => value(&registration), policy => value(&policy),
            requested => value(&requested), policy_json,
            requested_permissions, granted_permissions,
            csrf => session.csrf, notice => flash.notice, error => flash.error,
        },
    )
}

#[derive(Debug, Deserialize)]
struct PolicyForm {
    csrf: String,
    #[serde(default)]
    policy: String,
}

/// enable, disable, approve, block, policy: then back to where the form was.
async fn plugin_action(
    State(state): State<AppState>,
    session: AdminSession,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<PolicyForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let manager = &state.manager;
    let by = session.claims.sub.as_str();
    let detail = format!("/admin/plugins/{name}");
    let outcome = match action.as_str() {
        "enable" | "disable" => {
            let enabled = action == "enable";
            return match manager.set_enabled(&name, enabled, by).await {
                Ok(()) => back("/admin/plugins", "notice", &format!("{name}: {action}d")),
                Err(error) => back("/admin/plugins", "error", &manager_problem(&state, error)),
            }
            .into_response();
        }
        "approve" => manager
            .approve_requested(&name, by)
            .await
            .map(|_| format!("{name}: approved with what it requests")),
        "block" => match manager.policy(&name).await {
            Ok(mut policy) => {
                policy.status = PolicyStatus::Blocked;
                manager
                    .set_policy(policy, by)
                    .await
                    .map(|applied| format!("{name}: blocked{}", applied_note(&applied)))
            }
            Err(error) => Err(error),
        },
        "policy" => match serde_json::from_str::<ResourcePolicy>(&form.policy) {
            Ok(policy) if policy.plugin_name == name => manager
                .set_policy(policy, by)
                .await
                .map(|applied| format!("{name}: policy saved{}", applied_note(&applied))),
            Ok(policy) => {
                let problem = format!("the policy names `{}`, not `{name}`", policy.plugin_name);
                return back(&detail, "error", &problem).into_response();
            }
            Err(error) => {
                return back(&detail, "error", &format!("not a policy: {error}")).into_response();
            }
        },
        other => {
            return (StatusCode::NOT_FOUND, format!("no action `{other}`")).into_response();
        }
    };
    match outcome {
        Ok(notice) => {
            tracing::info!(plugin = %name, %action, %by, "admin page action");
            back(&detail, "notice", &notice).into_response()
        }
        Err(error) => back(&detail, "error", &manager_problem(&state, error)).into_response(),
    }
}

async fn upload(
    State(state): State<AppState>,
    session: AdminSession,
    multipart: Multipart,
) -> Response {
    let upload = match crate::upload::read_upload(multipart, true).await {
        Ok(upload) => upload,
        Err(error) => return back("/admin/plugins", "error", &error.message).into_response(),
    };
    if let Err(refused) = session.check_csrf(upload.csrf.as_deref().unwrap_or_default()) {
        return refused.into_response();
    }
    match state
        .loader
        .install(
            &upload.file_name,
            &upload.content,
            upload.signature.as_deref(),
            &session.claims.sub,
        )
        .await
    {
        Ok(registration) => back(
            "/admin/plugins",
            "notice",
            &format!("{} {} installed", registration.name, registration.version),
        ),
        Err(error) => back(
            "/admin/plugins",
            "error",
            &problem(install_error(&state.manager, error)),
        ),
    }
    .into_response()
}

/// The query of the log page.
#[derive(Debug, Deserialize)]
struct LogFilter {
    plugin: Option<String>,
    level: Option<String>,
    notice: Option<String>,
}

/// `HH:MM:SS.mmm` (UTC) of a time in milliseconds since the Unix epoch.
fn clock(time_ms: u64) -> String {
    let ms = time_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The most entries the log page shows.
const LOG_PAGE_ENTRIES: usize = 500;

async fn logs_page(
    State(state): State<AppState>,
    session: AdminSession,
    headers: HeaderMap,
    Query(filter): Query<LogFilter>,
) -> Response {
    let plugin = filter.plugin.filter(|p| !p.is_empty());
    let level_name = filter.level.unwrap_or_else(|| "debug".into());
    let level = match crate::log_level::parse_level(Some(&level_name)) {
        Ok(level) => level,
        Err(error) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, error.to_string()).into_response();
        }
    };
    let local = state.logs.read(plugin.as_deref(), level, LOG_PAGE_ENTRIES);
    // On a node of a cluster, every live node's entries, as the API merges them.
    let (entries, missing) = match &state.cluster {
        Some(cluster) => {
            let filter = crate::cluster_view::LogFilter {
                plugin: plugin.as_deref(),
                level: Some(&level_name),
            };
            let merged = crate::cluster_view::cluster_logs(
                cluster,
                &state.tokens,
                filter,
                local,
                LOG_PAGE_ENTRIES,
            )
            .await;
            (merged.entries, merged.missing)
        }
        None => (
            local
                .iter()
                .filter_map(|entry| serde_json::to_value(entry).ok())
                .collect(),
            Vec::new(),
        ),
    };
    let entries: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|mut entry| {
            let time = entry["time_ms"].as_u64().unwrap_or(0);
            if let Some(fields) = entry.as_object_mut() {
                fields.insert("time".to_owned(), clock(time).into());
            }
            entry
        })
        .collect();
    render(
        &state,
        "admin_logs.html",
        minijinja::context! {
            title => "Plugin logs", menu => menu(&state, &headers),
            plugins => state.manager.names(), plugin => plugin.unwrap_or_default(),
            level => level_name, entries => value(entries), csrf => session.csrf,
            notice => filter.notice, cluster => state.cluster.is_some(), missing => missing,
        },
    )
}

#[derive(Debug, Deserialize)]
struct ClearForm {
    csrf: String,
    #[serde(default)]
    plugin: String,
}

async fn clear_logs(
    State(state): State<AppState>,
    session: AdminSession,
    Form(form): Form<ClearForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let plugin = Some(form.plugin.as_str()).filter(|p| !p.is_empty());
    state.logs.clear(plugin);
    back("/admin/plugins/logs", "notice", "logs cleared").into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, header};
    use gk_core::ManagerError;
    use tower::ServiceExt as _;

    use super::*;
    use crate::error::manager_error;
    use crate::request_id::REQUEST_ID_HEADER;

    const SQL_FAILURE: &str =
        "error returned from database: relation \"gk_plugin_state\" does not exist at SELECT";

    /// The admin pages' failure paths, behind the router's request layers.
    fn app() -> Router {
        let routes = Router::new()
            .route(
                "/page",
                get(|| async {
                    render_page(
                        &crate::pages::Pages::new(),
                        "no_such_template.html",
                        minijinja::context! {},
                    )
                }),
            )
            .route(
                "/action/{kind}",
                post(|Path(kind): Path<String>| async move {
                    let error = match kind.as_str() {
                        "store" => ManagerError::Store(gk_core::StoreError::Database(
                            sea_orm::DbErr::Custom(SQL_FAILURE.into()),
                        )),
                        _ => ManagerError::Disabled("hello".into()),
                    };
                    let problem = problem(manager_error(error, |_| None));
                    back("/admin/plugins/hello", "error", &problem).into_response()
                }),
            );
        crate::router::with_request_layers(routes, Duration::from_secs(5))
    }

    async fn send(request: Request<Body>) -> (Response, String) {
        let response = app().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        (Response::from_parts(parts, Body::empty()), text)
    }

    fn request_id(response: &Response) -> String {
        response.headers()[REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn a_page_that_fails_to_render_shows_the_request_id_not_the_cause() {
        let (response, body) = send(Request::get("/page").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = request_id(&response);
        assert_eq!(body, format!("internal error; request id {id}"));
        for leak in ["no_such_template", "template", "not found"] {
            assert!(!body.contains(leak), "{leak} in {body}");
        }
    }

    #[tokio::test]
    async fn a_notice_of_an_internal_failure_has_the_request_id_not_the_cause() {
        let post = |kind: &str| {
            Request::post(format!("/action/{kind}"))
                .body(Body::empty())
                .unwrap()
        };
        let (response, _) = send(post("store")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let id = request_id(&response);
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        let notice: String = url::form_urlencoded::parse(
            location
                .split_once('?')
                .map_or("", |(_, query)| query)
                .as_bytes(),
        )
        .filter(|(key, _)| key == "error")
        .map(|(_, value)| value.into_owned())
        .collect();
        assert_eq!(notice, format!("internal error; request id {id}"));
        for leak in ["SELECT", "gk_plugin_state", "database"] {
            assert!(!location.contains(leak), "{leak} in {location}");
        }

        // What the admin can act on keeps its message.
        let (response, _) = send(post("disabled")).await;
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        assert!(location.contains("hello"), "{location}");
        assert!(location.contains("disabled"), "{location}");
    }
}

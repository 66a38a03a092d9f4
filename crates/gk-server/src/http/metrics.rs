//! `GET /metrics`: the plugins' counters in the Prometheus text exposition format (0.0.4).

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use gk_core::{LATENCY_BUCKETS_MICROS, PluginStats};

use super::AppState;
use crate::error::ApiError;

/// Reads one value of a plugin from whether it is enabled and its statistics.
type Counter = fn(bool, &PluginStats) -> u64;

/// A metric's `# HELP` and `# TYPE` lines.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The host-call counters of a plugin's sandbox, by kind.
fn host_calls(stats: &PluginStats) -> [(&'static str, u64); 9] {
    let h = &stats.host;
    [
        ("db_query", h.db_queries),
        ("db_exec", h.db_execs),
        ("cache", h.cache_ops),
        ("http", h.http_requests),
        ("email", h.emails),
        ("plugin_call", h.plugin_calls),
        ("log", h.logs),
        ("config", h.config_reads),
        ("translate", h.translations),
    ]
}

/// Renders every plugin's statistics.
pub fn render(plugins: &[(String, bool, PluginStats)]) -> String {
    let mut out = String::new();
    let scalars: [(&str, &str, &str, Counter); 6] = [
        (
            "goatkit_plugin_enabled",
            "gauge",
            "Whether the plugin is enabled (1) or disabled (0).",
            |enabled, _| u64::from(enabled),
        ),
        (
            "goatkit_plugin_calls_total",
            "counter",
            "Calls into the plugin.",
            |_, s| s.calls,
        ),
        (
            "goatkit_plugin_call_errors_total",
            "counter",
            "Calls into the plugin that failed.",
            |_, s| s.errors,
        ),
        (
            "goatkit_plugin_host_denied_total",
            "counter",
            "Host API calls the plugin's policy refused.",
            |_, s| s.host.denied,
        ),
        (
            "goatkit_plugin_host_rate_limited_total",
            "counter",
            "Host API calls a rate limit refused.",
            |_, s| s.host.rate_limited,
        ),
        (
            "goatkit_plugin_host_errors_total",
            "counter",
            "Host API calls the service failed.",
            |_, s| s.host.errors,
        ),
    ];
    for (metric, kind, help, value) in scalars {
        describe(&mut out, metric, kind, help);
        for (name, enabled, stats) in plugins {
            let value = value(*enabled, stats);
            let _ = writeln!(out, "{metric}{{plugin=\"{}\"}} {value}", label(name));
        }
    }
    describe(
        &mut out,
        "goatkit_plugin_call_duration_seconds",
        "histogram",
        "How long calls into the plugin took.",
    );
    for (name, _, stats) in plugins {
        let name = label(name);
        for (bound, count) in LATENCY_BUCKETS_MICROS.iter().zip(&stats.latency_histogram) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "goatkit_plugin_call_duration_seconds_bucket{{plugin=\"{name}\",le=\"{le}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "goatkit_plugin_call_duration_seconds_bucket{{plugin=\"{name}\",le=\"+Inf\"}} {}",
            stats.calls
        );
        let _ = writeln!(
            out,
            "goatkit_plugin_call_duration_seconds_sum{{plugin=\"{name}\"}} {}",
            stats.total_micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "goatkit_plugin_call_duration_seconds_count{{plugin=\"{name}\"}} {}",
            stats.calls
        );
    }
    describe(
        &mut out,
        "goatkit_plugin_host_calls_total",
        "counter",
        "Host API calls the plugin made that reached the service, by kind.",
    );
    for (name, _, stats) in plugins {
        for (kind, count) in host_calls(stats) {
            let _ = writeln!(
                out,
                "goatkit_plugin_host_calls_total{{plugin=\"{}\",kind=\"{kind}\"}} {count}",
                label(name)
            );
        }
    }
    out
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// Whether `headers` carry the configured metrics token or an admin token.
fn may_read(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(crate::auth::AuthError::Missing)?;
    if let Some(expected) = &state.metrics_token
        && same_secret(expected.as_bytes(), token.as_bytes())
    {
        return Ok(());
    }
    let claims = state.tokens.verify(token)?;
    if claims.role != crate::auth::Role::Admin {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "`{}` is not an admin: /metrics needs an admin token or the metrics token",
                claims.sub
            ),
        ));
    }
    Ok(())
}

/// The counters of the rate limiter the cluster's nodes share.
fn render_shared_limits(out: &mut String, shared: &gk_sandbox::SharedLimitStats) {
    for (name, kind, help, value) in [
        (
            "goatkit_shared_limit_checks_total",
            "counter",
            "Host calls whose rate limits the cluster's shared limiter (Redis) judged.",
            shared.shared_checks,
        ),
        (
            "goatkit_shared_limit_fallback_checks_total",
            "counter",
            "Host calls judged by this node's own limits because the shared limiter did not answer.",
            shared.fallback_checks,
        ),
        (
            "goatkit_shared_limit_outages_total",
            "counter",
            "Times the shared limiter stopped answering.",
            shared.outages,
        ),
        (
            "goatkit_shared_limit_degraded",
            "gauge",
            "1 while the shared limiter does not answer and this node applies the limits alone.",
            u64::from(shared.degraded),
        ),
    ] {
        describe(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// `GET /metrics`: for the configured `metrics_token` or an admin token.
pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    may_read(&state, &headers)?;
    let manager = &state.manager;
    let plugins: Vec<(String, bool, PluginStats)> = manager
        .names()
        .into_iter()
        .filter_map(|name| {
            let stats = manager.stats(&name).ok()?;
            let enabled = manager.is_enabled(&name).unwrap_or(false);
            Some((name, enabled, stats))
        })
        .collect();
    let mut out = render(&plugins);
    if let Some(shared) = manager.shared_limit_stats() {
        render_shared_limits(&mut out, &shared);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

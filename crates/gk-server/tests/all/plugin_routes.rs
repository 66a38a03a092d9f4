//! Plugin routes and widgets over HTTP with the real server: the Stats WASM plugin on its demo
//! tables, hello-grpc, a plugin-to-plugin call, enable/disable and a live policy change.

use std::time::Duration;

use crate::common::{send, send_text, serve_examples_with_data};
use gk_server::auth::Role;
use serde_json::{Value, json};

#[tokio::test]
async fn declared_routes_answer_with_the_plugins_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_examples_with_data(dir.path()).await;
    let addr = server.addr;
    let agent = server
        .tokens
        .mint("agent", Role::Agent, Duration::from_secs(600))
        .unwrap();
    let admin = server.first_admin_token.clone().unwrap();

    // Stats (WASM) on the seeded tickets; `auth` middleware.
    let overview = "/api/plugins/stats/overview";
    let (status, reply) = send(addr, "GET", overview, None, "").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, reply) = send(addr, "GET", overview, Some(&agent), "").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"total": 12, "open": 4, "pending": 2, "closed": 6, "range": "all"})
    );
    let (status, reply) = send(
        addr,
        "GET",
        "/api/plugins/stats/overview?range=7d",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!((status, reply["total"].as_i64()), (200, Some(5)));
    // A declared error code answers with its declared status.
    let (status, reply) = send(
        addr,
        "GET",
        "/api/plugins/stats/overview?range=1y",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("stats:invalid_range"))
    );
    for path in [
        "by-status",
        "by-queue",
        "by-priority",
        "by-type",
        "by-owner",
        "recent-activity",
        "timeline",
    ] {
        let (status, reply) = send(
            addr,
            "GET",
            &format!("/api/plugins/stats/{path}"),
            Some(&agent),
            "",
        )
        .await;
        assert_eq!(status, 200, "{path}: {reply}");
    }
    // Wrong method and unknown paths.
    let (status, _) = send(addr, "POST", overview, Some(&agent), "{}").await;
    assert_eq!(status, 404);
    let (status, reply) = send(addr, "GET", "/api/plugins/nothing/here", Some(&agent), "").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // hello-grpc: query parameters and the caller reach the handler.
    let (status, reply) = send(
        addr,
        "GET",
        "/api/plugins/hello-grpc/hello?name=Ada",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (200, Some("Hello, Ada!")),
        "{reply}"
    );
    // A plugin-to-plugin call: hello-grpc asks Stats, through its sandbox.
    let (status, reply) = send(
        addr,
        "GET",
        "/api/plugins/hello-grpc/tickets",
        Some(&agent),
        "",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["overview"]["total"], 12);

    // HTML replies: wrapped in the layout, or raw.
    let page = send_text(
        addr,
        "GET",
        "/api/plugins/hello-grpc/page",
        Some(&agent),
        &[],
        vec![],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(
        page.body.starts_with("<!doctype html>\n<html lang=\"en\">"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<title>Hello page · GoatKit</title>"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<h1 class=\"hello-page\">Hello, agent!</h1>"),
        "{}",
        page.body
    );
    let german = send_text(
        addr,
        "GET",
        "/api/plugins/hello-grpc/page",
        Some(&agent),
        &[("accept-language", "de-DE,de;q=0.9,en;q=0.5")],
        vec![],
    )
    .await;
    assert!(
        german.body.contains("<html lang=\"de\">"),
        "{}",
        german.body
    );
    let raw = send_text(
        addr,
        "GET",
        "/api/plugins/hello-grpc/page?raw=true",
        Some(&agent),
        &[],
        vec![],
    )
    .await;
    assert_eq!(raw.body, "<h1 class=\"hello-page\">Hello, agent!</h1>");

    // Widgets as HTML, bare and framed.
    let widget = send_text(
        addr,
        "GET",
        "/api/v1/plugins/stats/widgets/stats_by_status",
        Some(&agent),
        &[],
        vec![],
    )
    .await;
    assert_eq!(widget.status, 200, "{}", widget.body);
    assert!(
        widget.body.starts_with("<ul class=\"gk-stats-by-status\">"),
        "{}",
        widget.body
    );
    let framed = send_text(
        addr,
        "GET",
        "/api/v1/plugins/stats/widgets/stats_overview?wrap=true",
        Some(&agent),
        &[],
        vec![],
    )
    .await;
    assert!(framed.body.starts_with("<section class=\"gk-widget gk-widget-medium\" data-plugin=\"stats\" data-widget=\"stats_overview\">"), "{}", framed.body);
    let missing = send_text(
        addr,
        "GET",
        "/api/v1/plugins/stats/widgets/nope",
        Some(&agent),
        &[],
        vec![],
    )
    .await;
    assert_eq!(missing.status, 404);
    let (status, _) = send(
        addr,
        "GET",
        "/api/v1/plugins/stats/widgets/stats_overview",
        None,
        "",
    )
    .await;
    assert_eq!(status, 401);

    // Disabled: the route answers 403; enabled again: 200.
    let (status, _) = send(
        addr,
        "POST",
        "/api/v1/plugins/stats/disable",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, reply) = send(addr, "GET", overview, Some(&agent), "").await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (403, Some("plugin_disabled"))
    );
    let (status, reply) = send(
        addr,
        "GET",
        "/api/plugins/hello-grpc/tickets",
        Some(&agent),
        "",
    )
    .await;
    assert_ne!(
        status, 200,
        "a disabled plugin cannot be called by another: {reply}"
    );
    let (status, _) = send(
        addr,
        "POST",
        "/api/v1/plugins/stats/enable",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(addr, "GET", overview, Some(&agent), "").await;
    assert_eq!(status, 200);

    // A policy change applies to the next call: without `ticket` in its scope Stats is refused.
    let (_, mut policy) = send(
        addr,
        "GET",
        "/api/v1/plugins/stats/policy",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(policy["status"], "approved");
    let granted = policy.clone();
    policy["permissions"][0]["scope"] = json!(["queue"]);
    let (status, reply) = send(
        addr,
        "PUT",
        "/api/v1/plugins/stats/policy",
        Some(&admin),
        &policy.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = send(addr, "GET", overview, Some(&agent), "").await;
    assert_ne!(status, 200, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ticket"),
        "{reply}"
    );
    let (status, _) = send(
        addr,
        "PUT",
        "/api/v1/plugins/stats/policy",
        Some(&admin),
        &granted.to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(addr, "GET", overview, Some(&agent), "").await;
    assert_eq!(status, 200);

    // The logs: hello-grpc logged its greetings.
    let (status, logs) = send(
        addr,
        "GET",
        "/api/v1/plugins/logs?plugin=hello-grpc&level=info",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let messages: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(messages.contains(&"greeted"), "{logs}");
    let (status, logs) = send(
        addr,
        "GET",
        "/api/v1/plugins/logs?plugin=hello-grpc&level=error",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!((status, logs), (200, json!([])));
    let (status, reply) = send(
        addr,
        "GET",
        "/api/v1/plugins/logs?level=loud",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("invalid_level"))
    );
    let (status, _) = send(addr, "GET", "/api/v1/plugins/logs", Some(&agent), "").await;
    assert_eq!(status, 403);
    let (status, _) = send(
        addr,
        "DELETE",
        "/api/v1/plugins/logs?plugin=hello-grpc",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let (_, logs) = send(
        addr,
        "GET",
        "/api/v1/plugins/logs?plugin=hello-grpc",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(logs, Value::Array(vec![]));

    // Metrics: what happened above, in Prometheus' text format, for an admin token.
    let metrics = send_text(addr, "GET", "/metrics", None, &[], vec![]).await;
    assert_eq!(metrics.status, 401);
    let metrics = send_text(addr, "GET", "/metrics", Some(&admin), &[], vec![]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4")
    );
    let value = |series: &str| -> f64 {
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{}", metrics.body))
    };
    let stats_calls = value("goatkit_plugin_calls_total{plugin=\"stats\"}");
    assert!(stats_calls >= 14.0, "{stats_calls}");
    assert_eq!(
        value("goatkit_plugin_call_duration_seconds_count{plugin=\"stats\"}"),
        stats_calls
    );
    assert!(
        value("goatkit_plugin_call_duration_seconds_bucket{plugin=\"stats\",le=\"+Inf\"}")
            == stats_calls
    );
    assert!(value("goatkit_plugin_call_errors_total{plugin=\"stats\"}") >= 2.0);
    assert!(value("goatkit_plugin_host_calls_total{plugin=\"stats\",kind=\"db_query\"}") >= 12.0);
    assert!(value("goatkit_plugin_host_denied_total{plugin=\"stats\"}") >= 1.0);
    assert!(
        value("goatkit_plugin_host_calls_total{plugin=\"hello-grpc\",kind=\"plugin_call\"}") >= 1.0
    );
    assert_eq!(value("goatkit_plugin_enabled{plugin=\"stats\"}"), 1.0);

    server.shutdown().await;
}

//! What Stats provides: 8 routes, 3 widgets, translations in English and German, 3 error codes.

use std::collections::BTreeMap;

use gk_sdk::{ErrorCodeSpec, GkRegistration, I18nSpec, RouteSpec, TemplateSpec, WidgetSpec};

const ROUTES: [(&str, &str, &str); 8] = [
    ("overview", "overview", "Ticket counts overview (?range=7d|30d|90d|all)"),
    ("by-status", "by_status", "Ticket counts by state"),
    ("by-queue", "by_queue", "Ticket counts by queue (top 10)"),
    ("by-priority", "by_priority", "Ticket counts by priority"),
    ("by-type", "by_type", "Ticket counts by ticket type"),
    ("by-owner", "by_owner", "Ticket counts by owner"),
    ("recent-activity", "recent_activity", "The ten most recently changed tickets"),
    ("timeline", "timeline", "Tickets created per day (?range=7d|30d|90d)"),
];

const WIDGETS: [(&str, &str, &str, &str); 3] = [
    ("stats_overview", "stats.overview", "widget_overview", "medium"),
    ("stats_by_status", "stats.by_status", "widget_by_status", "small"),
    ("stats_chart", "stats.chart", "widget_chart", "large"),
];

const EN: [(&str, &str); 8] = [
    ("stats.title", "Statistics"),
    ("stats.overview", "Ticket overview"),
    ("stats.by_status", "Tickets by state"),
    ("stats.chart", "Tickets per day"),
    ("stats.open", "Open"),
    ("stats.pending", "Pending"),
    ("stats.closed", "Closed"),
    ("stats.total", "Total"),
];

const DE: [(&str, &str); 8] = [
    ("stats.title", "Statistiken"),
    ("stats.overview", "Ticketübersicht"),
    ("stats.by_status", "Tickets nach Status"),
    ("stats.chart", "Tickets pro Tag"),
    ("stats.open", "Offen"),
    ("stats.pending", "Wartend"),
    ("stats.closed", "Geschlossen"),
    ("stats.total", "Gesamt"),
];

fn catalog(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(crate) fn registration() -> GkRegistration {
    GkRegistration {
        name: "stats".into(),
        version: "2.0.0".into(),
        description: "Ticket statistics, reporting and analytics".into(),
        author: "GoatFlow Team".into(),
        license: "Apache-2.0".into(),
        routes: ROUTES
            .iter()
            .map(|(path, handler, description)| RouteSpec {
                method: "GET".into(),
                path: format!("/api/plugins/stats/{path}"),
                handler: (*handler).into(),
                middleware: vec!["auth".into()],
                description: (*description).into(),
            })
            .collect(),
        widgets: WIDGETS
            .iter()
            .enumerate()
            .map(|(order, (id, title, handler, size))| WidgetSpec {
                id: (*id).into(),
                title: (*title).into(),
                handler: (*handler).into(),
                location: "dashboard".into(),
                size: (*size).into(),
                order: order as i32 + 1,
                refreshable: true,
                refresh_sec: 60,
                ..Default::default()
            })
            .collect(),
        i18n: Some(I18nSpec {
            namespace: "stats".into(),
            languages: vec!["de".into(), "en".into()],
            translations: BTreeMap::from([("de".into(), catalog(&DE)), ("en".into(), catalog(&EN))]),
        }),
        // A template hosts can include; it reaches Stats through `use("stats")`.
        templates: vec![TemplateSpec {
            name: "stats/summary.html".into(),
            path: "templates/summary.html".into(),
            r#override: false,
        }],
        error_codes: vec![
            ErrorCodeSpec { code: "query_failed".into(), message: "Database query failed".into(), http_status: 500 },
            ErrorCodeSpec { code: "invalid_range".into(), message: "Invalid date range specified".into(), http_status: 400 },
            ErrorCodeSpec { code: "no_data".into(), message: "No statistics data available".into(), http_status: 404 },
        ],
        ..Default::default()
    }
}

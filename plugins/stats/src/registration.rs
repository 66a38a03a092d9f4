//! What Stats provides: 8 routes, 3 widgets, translations in English and German, 3 error codes.
//! Widget titles and route descriptions are keys of the catalog: the host translates them.

use std::collections::BTreeMap;

use gk_sdk::{ErrorCodeSpec, GkRegistration, I18nSpec, RouteSpec, TemplateSpec, WidgetSpec};

const ROUTES: [(&str, &str); 8] = [
    ("overview", "overview"),
    ("by-status", "by_status"),
    ("by-queue", "by_queue"),
    ("by-priority", "by_priority"),
    ("by-type", "by_type"),
    ("by-owner", "by_owner"),
    ("recent-activity", "recent_activity"),
    ("timeline", "timeline"),
];

/// Widget titles are keys of the catalog below: the host shows them in the viewer's language.
const WIDGETS: [(&str, &str, &str, &str); 3] = [
    ("stats_overview", "stats.overview", "widget_overview", "medium"),
    ("stats_by_status", "stats.by_status", "widget_by_status", "small"),
    ("stats_chart", "stats.chart", "widget_chart", "large"),
];

const EN: [(&str, &str); 24] = [
    ("stats.title", "Statistics"),
    ("stats.overview", "Ticket overview"),
    ("stats.by_status", "Tickets by state"),
    ("stats.chart", "Tickets per day"),
    ("stats.open", "Open"),
    ("stats.pending", "Pending"),
    ("stats.closed", "Closed"),
    ("stats.total", "Total"),
    ("stats.no_tickets_yet", "No tickets yet."),
    ("stats.no_tickets_in", "No tickets were created in these {days} days."),
    ("stats.months", "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"),
    ("stats.day_month", "{month} {day}"),
    ("stats.tickets_on_one", "{date}: 1 ticket"),
    ("stats.tickets_on", "{date}: {count} tickets"),
    ("stats.chart_total_one", "1 ticket in the last {days} days"),
    ("stats.chart_total", "{count} tickets in the last {days} days"),
    ("stats.routes.overview", "Ticket counts overview (?range=7d|30d|90d|all)"),
    ("stats.routes.by_status", "Ticket counts by state"),
    ("stats.routes.by_queue", "Ticket counts by queue (top 10)"),
    ("stats.routes.by_priority", "Ticket counts by priority"),
    ("stats.routes.by_type", "Ticket counts by ticket type"),
    ("stats.routes.by_owner", "Ticket counts by owner"),
    ("stats.routes.recent_activity", "The ten most recently changed tickets"),
    ("stats.routes.timeline", "Tickets created per day (?range=7d|30d|90d)"),
];

const DE: [(&str, &str); 24] = [
    ("stats.title", "Statistiken"),
    ("stats.overview", "Ticketübersicht"),
    ("stats.by_status", "Tickets nach Status"),
    ("stats.chart", "Tickets pro Tag"),
    ("stats.open", "Offen"),
    ("stats.pending", "Wartend"),
    ("stats.closed", "Geschlossen"),
    ("stats.total", "Gesamt"),
    ("stats.no_tickets_yet", "Noch keine Tickets."),
    ("stats.no_tickets_in", "In diesen {days} Tagen wurden keine Tickets erstellt."),
    ("stats.months", "Jan Feb Mär Apr Mai Jun Jul Aug Sep Okt Nov Dez"),
    ("stats.day_month", "{day}. {month}"),
    ("stats.tickets_on_one", "{date}: 1 Ticket"),
    ("stats.tickets_on", "{date}: {count} Tickets"),
    ("stats.chart_total_one", "1 Ticket in den letzten {days} Tagen"),
    ("stats.chart_total", "{count} Tickets in den letzten {days} Tagen"),
    ("stats.routes.overview", "Ticketzahlen im Überblick (?range=7d|30d|90d|all)"),
    ("stats.routes.by_status", "Ticketzahlen nach Status"),
    ("stats.routes.by_queue", "Ticketzahlen nach Queue (die zehn größten)"),
    ("stats.routes.by_priority", "Ticketzahlen nach Priorität"),
    ("stats.routes.by_type", "Ticketzahlen nach Tickettyp"),
    ("stats.routes.by_owner", "Ticketzahlen nach Besitzer"),
    ("stats.routes.recent_activity", "Die zehn zuletzt geänderten Tickets"),
    ("stats.routes.timeline", "Erstellte Tickets pro Tag (?range=7d|30d|90d)"),
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
            .map(|(path, handler)| RouteSpec {
                method: "GET".into(),
                path: format!("/api/plugins/stats/{path}"),
                handler: (*handler).into(),
                middleware: vec!["auth".into()],
                // A key of the catalog, like the widget titles.
                description: format!("stats.routes.{handler}"),
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

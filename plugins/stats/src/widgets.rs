//! The dashboard widgets: HTML in the host's widget vocabulary (`<dl class="gk-tiles">` for
//! label/value tiles, `<ul>` rows with a `<strong>` value, `<svg class="gk-chart">`, and
//! `.gk-empty`), so the host's widget stylesheet lays them out; texts in the viewer's language
//! through the host's `translate` (the catalog is in `registration.rs`).

use gk_sdk::TranslateArgs;
use gk_sdk::guest::{GuestError, host};
use serde_json::{Value, json};

use crate::chart::{Bar, bar_chart, escape};
use crate::handlers::{Args, by_status, int, overview, text, timeline};

/// `key` from the plugin's catalog in the caller's language; `fallback` when the host has no
/// text for it (it answers the key itself) or cannot translate.
fn tr(key: &str, fallback: &str) -> String {
    match host::translate(key, &TranslateArgs::None) {
        Ok(text) if !text.is_empty() && text != key => text,
        _ => fallback.to_owned(),
    }
}

/// Replaces `{name}` in `template` with `value`.
fn fill(template: &str, name: &str, value: &str) -> String {
    template.replace(&format!("{{{name}}}"), value)
}

pub(crate) fn widget_overview(args: &Args) -> Result<Value, GuestError> {
    let o = overview(args)?;
    let tiles: String = [("total", "Total"), ("open", "Open"), ("pending", "Pending"), ("closed", "Closed")]
        .iter()
        .map(|(key, fallback)| {
            let label = tr(&format!("stats.{key}"), fallback);
            format!("<div><dt>{}</dt><dd>{}</dd></div>", escape(&label), int(o.get(*key)))
        })
        .collect();
    Ok(json!({"html": format!("<dl class=\"gk-tiles gk-stats-overview\">{tiles}</dl>")}))
}

pub(crate) fn widget_by_status(args: &Args) -> Result<Value, GuestError> {
    let statuses = by_status(args)?;
    let items: String = statuses["statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("<li><span>{}</span> <strong>{}</strong></li>", escape(&text(s.get("name"))), int(s.get("count"))))
        .collect();
    if items.is_empty() {
        let empty = tr("stats.no_tickets_yet", "No tickets yet.");
        return Ok(json!({"html": format!("<p class=\"gk-empty\">{}</p>", escape(&empty))}));
    }
    Ok(json!({"html": format!("<ul class=\"gk-stats-by-status\">{items}</ul>")}))
}

/// `2026-11-26` as the catalog's day-and-month format (`Nov 26`, `26. Nov`); the date itself
/// when it is not one.
fn short_date(date: &str, months: &[&str], format: &str) -> String {
    let mut parts = date.splitn(3, '-').skip(1);
    let (Some(month), Some(day)) = (parts.next(), parts.next()) else {
        return date.to_owned();
    };
    let (Ok(month), Ok(day)) = (month.parse::<usize>(), day.get(..2).unwrap_or(day).parse::<u32>()) else {
        return date.to_owned();
    };
    let Some(name) = month.checked_sub(1).and_then(|m| months.get(m)) else {
        return date.to_owned();
    };
    fill(&fill(format, "month", name), "day", &day.to_string())
}

pub(crate) fn widget_chart(args: &Args) -> Result<Value, GuestError> {
    let series = timeline(args)?;
    let days = series["days"].as_array().cloned().unwrap_or_default();
    let months = tr("stats.months", "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec");
    let months: Vec<&str> = months.split_whitespace().collect();
    let date_format = tr("stats.day_month", "{month} {day}");
    let one = tr("stats.tickets_on_one", "{date}: 1 ticket");
    let many = tr("stats.tickets_on", "{date}: {count} tickets");
    let bars: Vec<Bar> = days
        .iter()
        .map(|d| {
            let label = short_date(&text(d.get("date")), &months, &date_format);
            let value = int(d.get("count"));
            let tooltip = fill(&fill(if value == 1 { &one } else { &many }, "date", &label), "count", &value.to_string());
            Bar { label, tooltip, value }
        })
        .collect();
    let title = tr("stats.chart", "Tickets per day");
    let total: i64 = bars.iter().map(|b| b.value).sum();
    let caption = if total == 1 {
        tr("stats.chart_total_one", "1 ticket in the last {days} days")
    } else {
        tr("stats.chart_total", "{count} tickets in the last {days} days")
    };
    let caption = fill(&fill(&caption, "count", &total.to_string()), "days", &days.len().to_string());
    let empty = fill(&tr("stats.no_tickets_in", "No tickets were created in these {days} days."), "days", &days.len().to_string());
    Ok(json!({"html": bar_chart(&title, &caption, &bars, &empty)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_the_catalog_format() {
        let en: Vec<&str> = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(' ').collect();
        assert_eq!(short_date("2026-11-26", &en, "{month} {day}"), "Nov 26");
        assert_eq!(short_date("2026-03-05 00:00:00", &en, "{day}. {month}"), "5. Mar");
        assert_eq!(short_date("2026-13-05", &en, "{month} {day}"), "2026-13-05");
        assert_eq!(short_date("yesterday", &en, "{month} {day}"), "yesterday");
    }
}

//! The handlers: one SQL query each, answered as JSON (the widgets in `widgets` render them).

use gk_sdk::guest::{GuestError, host};
use gk_sdk::{HostError, Row};
use serde_json::{Value, json};

use crate::time::{sql_date, sql_timestamp};

const DAY_MS: i64 = 86_400_000;

/// The arguments every handler gets: the route's query parameters (flat, or under `query` as
/// the Go host sent them).
pub(crate) struct Args {
    range: Option<String>,
}

impl Args {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, GuestError> {
        if bytes.is_empty() {
            return Ok(Self { range: None });
        }
        let value: Value = serde_json::from_slice(bytes)?;
        let range = value
            .get("range")
            .or_else(|| value.get("query").and_then(|q| q.get("range")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self { range })
    }

    /// Days covered by `?range=` (`None`: all time); `default` when absent.
    fn days(&self, default: &str) -> Result<Option<i64>, GuestError> {
        match self.range.as_deref().unwrap_or(default) {
            "all" | "" => Ok(None),
            "7d" => Ok(Some(7)),
            "30d" => Ok(Some(30)),
            "90d" => Ok(Some(90)),
            other => Err(GuestError::new("invalid_range", format!("range `{other}` is not one of 7d, 30d, 90d, all"))),
        }
    }
}

/// A `WHERE` clause and its argument for a range.
fn since(days: Option<i64>) -> (String, Vec<Value>) {
    match days {
        None => (String::new(), Vec::new()),
        Some(days) => ("WHERE t.create_time >= ?".to_owned(), vec![json!(sql_timestamp(host::now_ms() - days * DAY_MS))]),
    }
}

fn query(sql: &str, args: &[Value]) -> Result<Vec<Row>, GuestError> {
    host::db_query(sql, args).map_err(|error| match error {
        HostError::PermissionDenied { .. } | HostError::RateLimited { .. } => GuestError::from(error),
        other => GuestError::new("query_failed", other.to_string()),
    })
}

/// An integer from a row value, whatever numeric form the database returned.
pub(crate) fn int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Name/count pairs of a grouped query.
fn counts(sql: &str, args: &[Value]) -> Result<Vec<Value>, GuestError> {
    Ok(query(sql, args)?.iter().map(|row| json!({"name": text(row.get("name")), "count": int(row.get("n"))})).collect())
}

pub(crate) fn overview(args: &Args) -> Result<Value, GuestError> {
    let (filter, params) = since(args.days("all")?);
    let rows = query(
        &format!(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN tst.name IN ('new', 'open') THEN 1 ELSE 0 END), 0) AS open_count, \
             COALESCE(SUM(CASE WHEN tst.name LIKE 'pending%' THEN 1 ELSE 0 END), 0) AS pending_count, \
             COALESCE(SUM(CASE WHEN tst.name IN ('closed', 'merged', 'removed') THEN 1 ELSE 0 END), 0) AS closed_count \
             FROM ticket t JOIN ticket_state ts ON t.ticket_state_id = ts.id \
             JOIN ticket_state_type tst ON ts.type_id = tst.id {filter}"
        ),
        &params,
    )?;
    let row = rows.first().cloned().unwrap_or_default();
    Ok(json!({
        "total": int(row.get("total")),
        "open": int(row.get("open_count")),
        "pending": int(row.get("pending_count")),
        "closed": int(row.get("closed_count")),
        "range": args.range.clone().unwrap_or_else(|| "all".into()),
    }))
}

pub(crate) fn by_status(args: &Args) -> Result<Value, GuestError> {
    let (filter, params) = since(args.days("all")?);
    let sql = format!(
        "SELECT ts.name AS name, COUNT(*) AS n FROM ticket t JOIN ticket_state ts ON t.ticket_state_id = ts.id \
         {filter} GROUP BY ts.name ORDER BY n DESC, ts.name"
    );
    Ok(json!({"statuses": counts(&sql, &params)?}))
}

pub(crate) fn by_queue(args: &Args) -> Result<Value, GuestError> {
    let (filter, params) = since(args.days("all")?);
    let sql = format!(
        "SELECT q.name AS name, COUNT(*) AS n FROM ticket t JOIN queue q ON t.queue_id = q.id \
         {filter} GROUP BY q.name ORDER BY n DESC, q.name LIMIT 10"
    );
    Ok(json!({"queues": counts(&sql, &params)?}))
}

pub(crate) fn by_priority(args: &Args) -> Result<Value, GuestError> {
    let (filter, params) = since(args.days("all")?);
    let sql = format!(
        "SELECT tp.name AS name, COUNT(*) AS n FROM ticket t JOIN ticket_priority tp ON t.ticket_priority_id = tp.id \
         {filter} GROUP BY tp.id, tp.name ORDER BY tp.id"
    );
    Ok(json!({"priorities": counts(&sql, &params)?}))
}

pub(crate) fn by_type(args: &Args) -> Result<Value, GuestError> {
    let (filter, params) = since(args.days("all")?);
    let sql = format!(
        "SELECT COALESCE(tt.name, 'Unclassified') AS name, COUNT(*) AS n FROM ticket t \
         LEFT JOIN ticket_type tt ON t.type_id = tt.id {filter} GROUP BY tt.name ORDER BY n DESC, name"
    );
    Ok(json!({"types": counts(&sql, &params)?}))
}

pub(crate) fn by_owner(args: &Args) -> Result<Value, GuestError> {
    let (filter, params) = since(args.days("all")?);
    let rows = query(
        &format!(
            "SELECT u.login AS login, u.first_name AS first_name, u.last_name AS last_name, COUNT(*) AS n \
             FROM ticket t JOIN users u ON t.user_id = u.id {filter} \
             GROUP BY u.id, u.login, u.first_name, u.last_name ORDER BY n DESC, u.login"
        ),
        &params,
    )?;
    let owners: Vec<Value> = rows
        .iter()
        .map(|row| {
            let name = format!("{} {}", text(row.get("first_name")), text(row.get("last_name")));
            json!({"login": text(row.get("login")), "name": name.trim(), "count": int(row.get("n"))})
        })
        .collect();
    Ok(json!({"owners": owners}))
}

pub(crate) fn recent_activity(_args: &Args) -> Result<Value, GuestError> {
    let rows = query(
        "SELECT t.id AS id, t.tn AS tn, t.title AS title, ts.name AS state, t.change_time AS change_time \
         FROM ticket t JOIN ticket_state ts ON t.ticket_state_id = ts.id \
         ORDER BY t.change_time DESC, t.id DESC LIMIT 10",
        &[],
    )?;
    let tickets: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "id": int(row.get("id")),
                "tn": text(row.get("tn")),
                "title": text(row.get("title")),
                "state": text(row.get("state")),
                "changed": text(row.get("change_time")),
            })
        })
        .collect();
    Ok(json!({"tickets": tickets}))
}

pub(crate) fn timeline(args: &Args) -> Result<Value, GuestError> {
    let days = args.days("30d")?.unwrap_or(90);
    let today = host::now_ms().div_euclid(DAY_MS);
    let first = today - days + 1;
    let rows = query(
        "SELECT date(t.create_time) AS day, COUNT(*) AS n FROM ticket t WHERE t.create_time >= ? \
         GROUP BY date(t.create_time) ORDER BY day",
        &[json!(format!("{} 00:00:00", sql_date(first)))],
    )?;
    let counted: Vec<(String, i64)> = rows.iter().map(|row| (text(row.get("day")), int(row.get("n")))).collect();
    let series: Vec<Value> = (first..=today)
        .map(|day| {
            let date = sql_date(day);
            let count = counted.iter().filter(|(d, _)| d.starts_with(&date)).map(|(_, n)| n).sum::<i64>();
            json!({"date": date, "count": count})
        })
        .collect();
    Ok(json!({"days": series}))
}

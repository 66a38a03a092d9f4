//! The {{name}} plugin: a route and a dashboard widget, using the cache and the database
//! through the GoatKit host.

use std::time::Duration;

use gk_sdk::guest::{GuestError, GuestPlugin, host};
use gk_sdk::{GkRegistration, RouteSpec, WidgetSpec};
use serde_json::{Value, json};

struct Plugin;

impl GuestPlugin for Plugin {
    fn register() -> GkRegistration {
        GkRegistration {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            description: "The {{name}} plugin".into(),
            routes: vec![RouteSpec {
                method: "GET".into(),
                path: "/api/plugins/{{name}}/hello".into(),
                handler: "hello".into(),
                middleware: vec!["auth".into()],
                description: "Greets, counts the greetings, and counts the tickets".into(),
            }],
            widgets: vec![WidgetSpec {
                id: "{{name}}_widget".into(),
                title: "{{name}}".into(),
                handler: "widget".into(),
                location: "dashboard".into(),
                size: "small".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn call(function: &str, args: &[u8]) -> Result<Vec<u8>, GuestError> {
        let args: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(args)?
        };
        let reply = match function {
            "hello" => hello(&args)?,
            "widget" => json!({"html": format!("<p>{} greetings so far</p>", greetings()?)}),
            other => return Err(GuestError::unknown_function(other)),
        };
        Ok(serde_json::to_vec(&reply)?)
    }
}

/// The greeting counter kept in the plugin's cache.
fn greetings() -> Result<u64, GuestError> {
    let stored = host::cache_get("greetings")?;
    Ok(stored
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0))
}

fn hello(args: &Value) -> Result<Value, GuestError> {
    let name = args["name"].as_str().unwrap_or("world");
    let count = greetings()? + 1;
    host::cache_set("greetings", count.to_string().as_bytes(), Duration::ZERO)?;
    // Needs `db: read` on `ticket`: granted once an admin approves what plugin.yaml requests.
    let tickets = match host::db_query("SELECT COUNT(*) AS n FROM ticket", &[]) {
        Ok(rows) => rows.first().and_then(|row| row.get("n")).cloned().unwrap_or(Value::Null),
        Err(error) => json!({"error": error.to_string()}),
    };
    gk_sdk::info!("greeted {name}");
    Ok(json!({"message": format!("Hello, {name}!"), "greetings": count, "tickets": tickets}))
}

gk_sdk::export_plugin!(Plugin);

//! The Stats plugin: ticket statistics for GoatFlow as API routes and dashboard widgets.
//!
//! Every handler reads the ticket tables through the host's `db_query` (so the plugin's policy
//! decides which tables it sees) with SQL that runs on SQLite, PostgreSQL and MariaDB alike.

mod chart;
mod handlers;
mod registration;
mod time;
mod widgets;

use gk_sdk::GkRegistration;
use gk_sdk::guest::{GuestError, GuestPlugin};

struct Stats;

impl GuestPlugin for Stats {
    fn register() -> GkRegistration {
        registration::registration()
    }

    fn call(function: &str, args: &[u8]) -> Result<Vec<u8>, GuestError> {
        let args = handlers::Args::parse(args)?;
        let result = match function {
            "overview" => handlers::overview(&args)?,
            "by_status" => handlers::by_status(&args)?,
            "by_queue" => handlers::by_queue(&args)?,
            "by_priority" => handlers::by_priority(&args)?,
            "by_type" => handlers::by_type(&args)?,
            "by_owner" => handlers::by_owner(&args)?,
            "recent_activity" => handlers::recent_activity(&args)?,
            "timeline" => handlers::timeline(&args)?,
            "widget_overview" => widgets::widget_overview(&args)?,
            "widget_by_status" => widgets::widget_by_status(&args)?,
            "widget_chart" => widgets::widget_chart(&args)?,
            other => return Err(GuestError::unknown_function(other)),
        };
        Ok(serde_json::to_vec(&result)?)
    }
}

gk_sdk::export_plugin!(Stats);

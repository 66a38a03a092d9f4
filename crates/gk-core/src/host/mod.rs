//! The production host services that a plugin's sandbox wraps.

mod db;
mod placeholders;
mod rows;

pub use db::{DEFAULT_MAX_ROWS, DEFAULT_QUERY_TIMEOUT, DatabaseConfig, Databases};

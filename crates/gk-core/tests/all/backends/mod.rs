//! The production host services against real backends.

mod cache;
mod database_wall;
mod databases;
mod engine_roles;
mod http;
mod inline_reads;
mod services;
mod smtp;
mod sql_differential;
mod store;

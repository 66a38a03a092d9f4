//! The production host services against real backends.

mod cache;
mod databases;
mod services;
mod store;

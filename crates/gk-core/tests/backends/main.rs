//! The production host services against real backends.

mod databases;
mod services;
mod store;

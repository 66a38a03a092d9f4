//! The sandbox's behaviour through its public API, against a recording host.

mod database;
mod identity;
mod inline;
mod limits;
mod policy_swap;
mod services;
mod shared_limits;
mod support;

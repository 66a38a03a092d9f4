//! The sandbox's behaviour through its public API, against a recording host.

mod bypass;
mod limits;
mod policy_swap;
mod support;

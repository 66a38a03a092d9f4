//! Several `gk serve` processes sharing one PostgreSQL store (and Redis) act as one platform,
//! one module per concern: `changes` (uploads, approvals, upgrades under load, policies,
//! disables, a late node, one view, forged rows), `limits` (shared rate limits, jobs run once),
//! `outage` (Redis stopped and restarted under load), `postgres_bus` (no Redis). `harness`
//! starts the nodes. The propagation times are printed.

mod harness;

mod changes;
mod limits;
mod outage;
mod postgres_bus;

//! Running several `gk serve` nodes as one platform.
//!
//! - [`Cluster`]: this node's membership: the store as the source of truth (packages included),
//!   control messages that bring every change to every node, periodic reconciliation, the
//!   nodes' heartbeats (see the `membership` module).
//! - [`limits`]: rate limits held for the whole cluster in Redis ([`RedisLimiter`]), with each
//!   node's own limits deciding while Redis does not answer.
//! - [`PackageSeal`]: the HMAC every stored package carries, so a node installs only what a
//!   node of its own cluster stored (kept by the loader, which seals what it stores; re-exported
//!   here).
//! - [`jobs`]: each occurrence of a plugin job claimed by one node only ([`JobClaims`], in Redis
//!   or in the store's database).

mod bus;
pub mod jobs;
pub mod limits;
mod membership;
mod reconcile;

pub use crate::loader::PackageSeal;
pub use bus::BusKind;
pub use jobs::{JobClaimError, JobClaims, RedisJobClaims, StoreJobClaims};
pub use limits::RedisLimiter;
pub use membership::{Cluster, ClusterConfig, ClusterError, NodeView};

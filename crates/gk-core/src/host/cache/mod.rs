//! The cache behind `cache_get`, `cache_set` and `cache_delete`: in memory (the embedded
//! default) or Redis/Valkey. Keys arrive already namespaced by the sandbox
//! (`plugin:<name>:<key>`). A zero TTL means no expiry on every backend.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::HostResult;

pub use memory::{DEFAULT_MEMORY_CACHE_ENTRIES, MemoryCache};
pub use redis::RedisCache;

/// A key-value cache with expiry.
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// The value of `key`, if present and not expired.
    async fn get(&self, key: &str) -> HostResult<Option<Vec<u8>>>;
    /// Sets `key`; a zero `ttl` means no expiry.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> HostResult<()>;
    /// Removes `key` (an absent key is not an error).
    async fn delete(&self, key: &str) -> HostResult<()>;
}

//! The cache behind `cache_get`, `cache_set` and `cache_delete`: in memory (the embedded
//! default) or Redis/Valkey. Keys arrive already namespaced by the sandbox
//! (`plugin:<name>:<key>`). A zero TTL means no expiry on every backend.
//!
//! Every backend holds each plugin to a byte quota ([`DEFAULT_CACHE_QUOTA_BYTES`] unless
//! configured): the bytes of its keys and values together. A set that would take a plugin over
//! it is refused with [`quota_exceeded`]'s error; expired entries stop counting.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::HostResult;

pub use memory::{DEFAULT_MEMORY_CACHE_ENTRIES, MemoryCache};
pub use redis::RedisCache;

/// The default bytes (keys and values) one plugin may hold in the cache.
pub const DEFAULT_CACHE_QUOTA_BYTES: u64 = 16 * 1024 * 1024;

/// The plugin a backend key belongs to: `name` of `plugin:<name>:<key>`; `None` for keys the
/// sandbox did not namespace (the platform's own), which no quota applies to.
pub fn key_owner(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("plugin:")?;
    let (name, _) = rest.split_once(':')?;
    Some(name)
}

/// The error of a set refused by the quota, naming it.
pub fn quota_exceeded(plugin: &str, quota: u64, used: u64, wanted: u64) -> gk_sdk::HostError {
    gk_sdk::HostError::InvalidInput(format!(
        "cache quota exceeded: plugin `{plugin}` may hold {quota} bytes in the cache \
         (cache_quota_bytes) and holds {used}; this entry needs {wanted}"
    ))
}

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

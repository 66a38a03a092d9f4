//! The in-memory cache: TTLs honoured, size bounded, least recently used entries evicted first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use gk_sdk::HostResult;

use super::Cache;

/// The default number of entries the memory cache holds.
pub const DEFAULT_MEMORY_CACHE_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    used: AtomicU64,
}

/// A bounded in-process cache.
#[derive(Debug)]
pub struct MemoryCache {
    entries: DashMap<String, Entry>,
    capacity: usize,
    clock: AtomicU64,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::new(),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// The number of entries held (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes room for one entry: expired entries go first, then the least recently used tenth.
    fn make_room(&self) {
        if self.entries.len() < self.capacity {
            return;
        }
        let now = Instant::now();
        self.entries
            .retain(|_, e| e.expires.is_none_or(|t| t > now));
        if self.entries.len() < self.capacity {
            return;
        }
        let mut by_use: Vec<(u64, String)> = self
            .entries
            .iter()
            .map(|e| (e.used.load(Ordering::Relaxed), e.key().clone()))
            .collect();
        by_use.sort_unstable();
        let evict = (self.capacity / 10).max(1);
        for (_, key) in by_use.into_iter().take(evict) {
            self.entries.remove(&key);
        }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new(DEFAULT_MEMORY_CACHE_ENTRIES)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> HostResult<Option<Vec<u8>>> {
        let now = Instant::now();
        let found = match self.entries.get(key) {
            Some(entry) if entry.expires.is_none_or(|t| t > now) => {
                entry.used.store(self.tick(), Ordering::Relaxed);
                return Ok(Some(entry.value.clone()));
            }
            Some(_) => true,
            None => false,
        };
        if found {
            self.entries
                .remove_if(key, |_, e| e.expires.is_some_and(|t| t <= now));
        }
        Ok(None)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> HostResult<()> {
        if !self.entries.contains_key(key) {
            self.make_room();
        }
        let expires = (!ttl.is_zero()).then(|| Instant::now() + ttl);
        self.entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires,
                used: AtomicU64::new(self.tick()),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> HostResult<()> {
        self.entries.remove(key);
        Ok(())
    }
}

//! The in-memory cache: TTLs honoured, size bounded, least recently used entries evicted first,
//! and each plugin held to its byte quota.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use gk_sdk::HostResult;

use super::{Cache, DEFAULT_CACHE_QUOTA_BYTES, key_owner, quota_exceeded};

/// The default number of entries the memory cache holds.
pub const DEFAULT_MEMORY_CACHE_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    used: AtomicU64,
}

/// What an entry counts for against its plugin's quota: its key and its value.
fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// A bounded in-process cache.
#[derive(Debug)]
pub struct MemoryCache {
    entries: DashMap<String, Entry>,
    capacity: usize,
    clock: AtomicU64,
    /// Bytes held per plugin (see [`key_owner`]).
    usage: DashMap<String, u64>,
    quota: u64,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (at least 1), each plugin held to the default
    /// quota ([`DEFAULT_CACHE_QUOTA_BYTES`]).
    pub fn new(capacity: usize) -> Self {
        Self::with_quota(capacity, DEFAULT_CACHE_QUOTA_BYTES)
    }

    /// A cache of at most `capacity` entries, each plugin holding at most `quota` bytes.
    pub fn with_quota(capacity: usize, quota: u64) -> Self {
        Self {
            entries: DashMap::new(),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
            usage: DashMap::new(),
            quota,
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

    /// The bytes `plugin`'s entries count for (expired ones included until they are swept).
    pub fn bytes_of(&self, plugin: &str) -> u64 {
        self.usage.get(plugin).map_or(0, |used| *used)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives back the bytes of removed entries to their plugins. Never called while a shard of
    /// `entries` is locked (sets lock `usage` then `entries`).
    fn release(&self, removed: impl IntoIterator<Item = (String, u64)>) {
        for (key, bytes) in removed {
            if let Some(owner) = key_owner(&key)
                && let Some(mut used) = self.usage.get_mut(owner)
            {
                *used = used.saturating_sub(bytes);
            }
        }
    }

    /// Removes the entries that `remove` picks, releasing their bytes.
    fn remove_where(&self, mut remove: impl FnMut(&String, &Entry) -> bool) {
        let mut removed = Vec::new();
        self.entries.retain(|key, entry| {
            if remove(key, entry) {
                removed.push((key.clone(), cost(key, &entry.value)));
                false
            } else {
                true
            }
        });
        self.release(removed);
    }

    fn sweep_expired(&self) {
        let now = Instant::now();
        self.remove_where(|_, e| e.expires.is_some_and(|t| t <= now));
    }

    /// Makes room for one entry: expired entries go first, then the least recently used tenth.
    fn make_room(&self) {
        if self.entries.len() < self.capacity {
            return;
        }
        self.sweep_expired();
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
            if let Some((key, entry)) = self.entries.remove(&key) {
                let bytes = cost(&key, &entry.value);
                self.release([(key, bytes)]);
            }
        }
    }

    /// Whether `owner` can take `wanted` more bytes in place of the current value of `key`.
    fn fits(&self, owner: &str, key: &str, wanted: u64) -> Result<(), (u64, u64)> {
        let used = self.bytes_of(owner);
        let replaced = self.entries.get(key).map_or(0, |e| cost(key, &e.value));
        if used.saturating_sub(replaced) + wanted > self.quota {
            return Err((used, wanted));
        }
        Ok(())
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Option<Entry> {
        // A ttl past what an `Instant` can hold never expires (instead of panicking).
        let expires = (!ttl.is_zero())
            .then(|| Instant::now().checked_add(ttl))
            .flatten();
        self.entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires,
                used: AtomicU64::new(self.tick()),
            },
        )
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
        if found
            && let Some((key, entry)) = self
                .entries
                .remove_if(key, |_, e| e.expires.is_some_and(|t| t <= now))
        {
            let bytes = cost(&key, &entry.value);
            self.release([(key, bytes)]);
        }
        Ok(None)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> HostResult<()> {
        if !self.entries.contains_key(key) {
            self.make_room();
        }
        let wanted = cost(key, value);
        let Some(owner) = key_owner(key) else {
            self.insert(key, value, ttl);
            return Ok(());
        };
        if self.fits(owner, key, wanted).is_err() {
            // Expired entries still count until swept: sweep, then decide.
            self.sweep_expired();
        }
        // The plugin's counter is held from the check to the insert: concurrent sets of one
        // plugin cannot both pass a check that only one of them fits.
        let mut used = self.usage.entry(owner.to_owned()).or_insert(0);
        let replaced = self.entries.get(key).map_or(0, |e| cost(key, &e.value));
        if used.saturating_sub(replaced) + wanted > self.quota {
            return Err(quota_exceeded(owner, self.quota, *used, wanted));
        }
        let old = self.insert(key, value, ttl);
        *used = used.saturating_sub(old.map_or(0, |e| cost(key, &e.value))) + wanted;
        Ok(())
    }

    async fn delete(&self, key: &str) -> HostResult<()> {
        if let Some((key, entry)) = self.entries.remove(key) {
            let bytes = cost(&key, &entry.value);
            self.release([(key, bytes)]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plugin_is_held_to_its_quota_and_others_are_not_touched() {
        let cache = MemoryCache::with_quota(1000, 1024);
        let value = vec![7u8; 200];
        let mut stored = 0;
        let mut refused = None;
        for i in 0..100 {
            match cache
                .set(&format!("plugin:flood:k{i}"), &value, Duration::ZERO)
                .await
            {
                Ok(()) => stored += 1,
                Err(error) => {
                    refused = Some(error.to_string());
                    break;
                }
            }
        }
        assert_eq!(stored, 4, "4 × (13..14 + 200) bytes fit in 1024");
        let refused = refused.unwrap();
        assert!(
            refused.contains("cache quota exceeded: plugin `flood` may hold 1024 bytes"),
            "{refused}"
        );
        assert!(cache.bytes_of("flood") <= 1024);
        // Replacing a value counts the difference; deleting gives the bytes back.
        cache
            .set("plugin:flood:k0", b"small", Duration::ZERO)
            .await
            .unwrap();
        cache.delete("plugin:flood:k1").await.unwrap();
        cache
            .set("plugin:flood:k9", &value, Duration::ZERO)
            .await
            .unwrap();
        // Another plugin has its own quota.
        cache
            .set("plugin:other:k", &value, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(cache.bytes_of("other"), 214);
    }

    #[tokio::test]
    async fn expired_entries_stop_counting() {
        let cache = MemoryCache::with_quota(1000, 300);
        cache
            .set("plugin:p:a", &[0; 250], Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache
            .set("plugin:p:b", &[0; 250], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(cache.bytes_of("p"), 260);
    }
}

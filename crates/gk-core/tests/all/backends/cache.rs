//! The same cache behaviour on the in-memory cache and on Redis, and Redis surviving a restart.

use std::time::Duration;

use gk_core::host::cache::{Cache, MemoryCache, RedisCache};
use gk_sdk::HostError;

use crate::common::{OwnRedis, free_port, service_url};

async fn behaviour(cache: &dyn Cache, name: &str) {
    let prefix = format!("gk-test:{}:{name}:", std::process::id());
    let key = |k: &str| format!("{prefix}{k}");
    assert_eq!(cache.get(&key("absent")).await.unwrap(), None, "{name}");
    cache
        .set(&key("bytes"), b"\x00\xffbinary", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        cache.get(&key("bytes")).await.unwrap(),
        Some(b"\x00\xffbinary".to_vec()),
        "{name}"
    );
    cache
        .set(&key("bytes"), b"replaced", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        cache.get(&key("bytes")).await.unwrap(),
        Some(b"replaced".to_vec()),
        "{name}"
    );
    cache
        .set(&key("short"), b"v", Duration::from_millis(150))
        .await
        .unwrap();
    cache
        .set(&key("forever"), b"v", Duration::ZERO)
        .await
        .unwrap();
    assert!(cache.get(&key("short")).await.unwrap().is_some(), "{name}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cache.get(&key("short")).await.unwrap(),
        None,
        "{name}: expired"
    );
    assert!(
        cache.get(&key("forever")).await.unwrap().is_some(),
        "{name}: TTL 0 never expires"
    );
    cache.delete(&key("forever")).await.unwrap();
    cache.delete(&key("never-there")).await.unwrap();
    assert_eq!(cache.get(&key("forever")).await.unwrap(), None, "{name}");
    cache.delete(&key("bytes")).await.unwrap();
}

#[tokio::test]
async fn memory() {
    behaviour(&MemoryCache::new(1000), "memory").await;
}

#[tokio::test]
async fn redis() {
    if let Some(url) = service_url("GK_TEST_REDIS_URL") {
        let cache = RedisCache::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        behaviour(&cache, "redis").await;
    }
}

#[tokio::test]
async fn redis_that_is_not_there_is_a_clear_error() {
    let err = RedisCache::connect("redis://127.0.0.1:1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("configuration: cache redis://127.0.0.1:1:"),
        "{err}"
    );
}

#[tokio::test]
async fn redis_reconnects_after_a_restart() {
    if service_url("GK_TEST_REDIS_URL").is_none() {
        return;
    }
    let port = free_port();
    let mut server = OwnRedis::start(port);
    let cache = RedisCache::connect(&format!("redis://127.0.0.1:{}", server.port))
        .await
        .unwrap();
    cache.set("k", b"before", Duration::ZERO).await.unwrap();

    server.stop();
    let err = cache.get("k").await.unwrap_err();
    assert!(
        matches!(err, HostError::Unavailable(_)),
        "while down: {err:?}"
    );

    let _server = OwnRedis::start(port);
    let mut recovered = false;
    for _ in 0..50 {
        if cache.set("k", b"after", Duration::ZERO).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the pool reconnected within 5 s");
    assert_eq!(
        cache.get("k").await.unwrap(),
        Some(b"after".to_vec()),
        "the restarted server kept nothing, and new writes work"
    );
}

/// Fills one plugin's namespace until the quota stops it; the refusal names the quota, the
/// bytes held stay within it, another plugin is not touched, and deletes give bytes back.
async fn flood(cache: &dyn Cache, plugin: &str, quota: u64) {
    let value = vec![b'x'; 1000];
    let mut stored = 0u64;
    let refused = loop {
        let key = format!("plugin:{plugin}:k{stored}");
        match cache.set(&key, &value, Duration::ZERO).await {
            Ok(()) => stored += 1,
            Err(error) => break error,
        }
        assert!(
            stored < 10_000,
            "{plugin}: the quota never stopped the flood"
        );
    };
    let per_entry = (format!("plugin:{plugin}:k0").len() + 1000) as u64;
    assert!(
        stored * per_entry <= quota,
        "{plugin}: {stored} entries stored"
    );
    assert!(
        (stored + 2) * (per_entry + 4) > quota,
        "{plugin}: refused early"
    );
    assert!(matches!(refused, HostError::InvalidInput(_)), "{refused:?}");
    assert!(
        refused.to_string().contains(&format!(
            "cache quota exceeded: plugin `{plugin}` may hold {quota} bytes in the cache (cache_quota_bytes)"
        )),
        "{refused}"
    );
    let other = format!("{plugin}-other");
    cache
        .set(&format!("plugin:{other}:k"), &value, Duration::ZERO)
        .await
        .unwrap();
    cache.delete(&format!("plugin:{plugin}:k0")).await.unwrap();
    cache
        .set(&format!("plugin:{plugin}:k0"), &value, Duration::ZERO)
        .await
        .unwrap();
    for i in 0..stored {
        cache
            .delete(&format!("plugin:{plugin}:k{i}"))
            .await
            .unwrap();
    }
    cache.delete(&format!("plugin:{other}:k")).await.unwrap();
}

#[tokio::test]
async fn memory_quota() {
    let cache = MemoryCache::with_quota(100_000, 64 * 1024);
    flood(&cache, "flood", 64 * 1024).await;
    assert_eq!(cache.bytes_of("flood"), 0);
}

#[tokio::test]
async fn redis_quota_holds_under_concurrency() {
    let Some(url) = service_url("GK_TEST_REDIS_URL") else {
        return;
    };
    let quota = 64 * 1024;
    let cache = std::sync::Arc::new(
        RedisCache::connect_with_quota(&url, quota)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let plugin = format!("gk-test-{}", std::process::id());
    flood(cache.as_ref(), &plugin, quota).await;
    assert_eq!(cache.bytes_of(&plugin).await.unwrap(), 0);

    // Eight writers at once: together they never pass the quota.
    let mut writers = Vec::new();
    for w in 0..8 {
        let cache = cache.clone();
        let plugin = plugin.clone();
        writers.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for i in 0..40 {
                let key = format!("plugin:{plugin}:w{w}-{i}");
                if cache.set(&key, &[b'y'; 1000], Duration::ZERO).await.is_ok() {
                    stored.push(key);
                }
            }
            stored
        }));
    }
    let mut keys = Vec::new();
    for writer in writers {
        keys.extend(writer.await.unwrap());
    }
    let held = cache.bytes_of(&plugin).await.unwrap();
    assert!(held <= quota, "{held} bytes held");
    let listed: u64 = keys.iter().map(|k| (k.len() + 1000) as u64).sum();
    assert_eq!(held, listed, "the counter is what was stored");
    for key in keys {
        cache.delete(&key).await.unwrap();
    }
    assert_eq!(cache.bytes_of(&plugin).await.unwrap(), 0);
}

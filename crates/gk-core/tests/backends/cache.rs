//! The same cache behaviour on the in-memory cache and on Redis, and Redis surviving a restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gk_core::host::cache::{Cache, MemoryCache, RedisCache};
use gk_sdk::HostError;

use crate::databases::service_url;

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

/// A redis-server of this test's own, on a free port, so restarting it disturbs nobody.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test (Debian package redis-server)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn redis_reconnects_after_a_restart() {
    if service_url("GK_TEST_REDIS_URL").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

//! The cluster pieces against real backends: rate limits shared in Redis, and job occurrences
//! claimed in Redis or the store's database, the store opened by nodes starting together. Each
//! test uses keys, plugin names and job ids of its own run, so runs in parallel do not meet.

#[path = "../common/mod.rs"]
mod common;
mod jobs;
mod limits;
mod store;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The URL of a test service, or `None` (printed) when its variable is not set; in CI a missing
/// variable fails.
pub(crate) fn service_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{variable} is not set: .ci/run exports it for CI")
        }
        _ => {
            eprintln!("skipping: {variable} is not set");
            None
        }
    }
}

/// A name no other test run uses.
pub(crate) fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Deletes the keys a test left under `prefix` in the Redis at `url`.
pub(crate) async fn forget_keys(url: &str, prefix: &str) {
    use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
    use fred::types::CustomCommand;
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let keys: Vec<String> = client
        .custom(
            CustomCommand::new_static("KEYS", None, false),
            vec![format!("{prefix}:*")],
        )
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = client.del(keys).await.unwrap();
    }
    let _ = client.quit().await;
}

/// A port nothing listens on (now).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own, on its own port, so stopping it disturbs nobody.
#[derive(Debug)]
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    child: Child,
}

impl OwnRedis {
    pub(crate) fn start(port: u16) -> Self {
        let mut child = Command::new("redis-server")
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
                return Self { port, child };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on port {port} did not start");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

//! The Redis/Valkey cache through `fred`: a connection pool that reconnects after the server
//! restarts (commands issued while it is down fail with `unavailable`, not hang).

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike, Config, Error as RedisError, Expiration, KeysInterface, Pool,
    ReconnectPolicy,
};
use gk_sdk::{HostError, HostResult};

use super::Cache;
use crate::{CoreError, CoreResult};

/// Connections in the pool.
const POOL_SIZE: usize = 4;
/// How long a command (or the first connection) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A cache in Redis or Valkey.
pub struct RedisCache {
    pool: Pool,
    url: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: &RedisError) -> HostError {
    HostError::Unavailable(format!("cache: {error}"))
}

impl RedisCache {
    /// Connects to `url` (`redis://host:port/db`); fails when the server does not answer.
    pub async fn connect(url: &str) -> CoreResult<Self> {
        let open_error = |e: RedisError| CoreError::Config(format!("cache {url}: {e}"));
        let config = Config::from_url(url).map_err(open_error)?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_pool(POOL_SIZE)
            .map_err(open_error)?;
        let _connections = pool.init().await.map_err(open_error)?;
        Ok(Self {
            pool,
            url: url.to_owned(),
        })
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> HostResult<Option<Vec<u8>>> {
        self.pool
            .get::<Option<Vec<u8>>, _>(key)
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> HostResult<()> {
        let expire = match ttl.as_millis() {
            0 => None,
            ms => Some(Expiration::PX(i64::try_from(ms).unwrap_or(i64::MAX))),
        };
        self.pool
            .set::<(), _, _>(key, value, expire, None, false)
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn delete(&self, key: &str) -> HostResult<()> {
        self.pool
            .del::<i64, _>(key)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&e))
    }
}

//! The Redis/Valkey cache through `fred`: a connection pool that reconnects after the server
//! restarts (commands issued while it is down fail with `unavailable`, not hang).
//!
//! Quotas are kept in Redis itself, so that every server sharing it agrees: for each plugin a
//! hash `gk:cache-usage:<plugin>` (key → bytes) and a counter `gk:cache-bytes:<plugin>`,
//! changed only by Lua scripts, which Redis runs atomically: concurrent sets from any number
//! of servers cannot together pass the quota. A key that expired still counts until a set
//! finds the plugin over its quota; that set first forgets the keys that no longer exist.
//! (Single-node Redis/Valkey: the scripts touch keys of one plugin that need not share a
//! cluster slot.)

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike, Config, Error as RedisError, KeysInterface, Pool, ReconnectPolicy,
};
use fred::types::CustomCommand;
use gk_sdk::{HostError, HostResult};

use super::{Cache, DEFAULT_CACHE_QUOTA_BYTES, key_owner, quota_exceeded};
use crate::{CoreError, CoreResult};

/// Connections in the pool.
const POOL_SIZE: usize = 4;
/// How long a command (or the first connection) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets KEYS[1] to ARGV[1] (PX ARGV[2] unless 0) within the quota ARGV[3] of the plugin whose
/// usage hash is KEYS[2] and counter KEYS[3]. Answers `{1, used}` when set, `{0, used}` when
/// refused.
const SET_SCRIPT: &str = r#"
local key, usage, total = KEYS[1], KEYS[2], KEYS[3]
local wanted = string.len(ARGV[1]) + string.len(key)
local quota = tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', usage, key) or '0')
if old > 0 and redis.call('EXISTS', key) == 0 then
  redis.call('HDEL', usage, key)
  redis.call('DECRBY', total, old)
  old = 0
end
local used = tonumber(redis.call('GET', total) or '0')
if used - old + wanted > quota then
  local fields = redis.call('HGETALL', usage)
  local sum = 0
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', fields[i]) == 0 then
      redis.call('HDEL', usage, fields[i])
    else
      sum = sum + tonumber(fields[i + 1])
    end
  end
  redis.call('SET', total, sum)
  used = sum
  if used - old + wanted > quota then
    return {0, used}
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', key, ARGV[1])
end
redis.call('HSET', usage, key, wanted)
redis.call('INCRBY', total, wanted - old)
return {1, used - old + wanted}
"#;

/// Deletes KEYS[1] and gives its bytes back to the plugin (usage hash KEYS[2], counter KEYS[3]).
const DELETE_SCRIPT: &str = r#"
local old = tonumber(redis.call('HGET', KEYS[2], KEYS[1]) or '0')
redis.call('DEL', KEYS[1])
if old > 0 then
  redis.call('HDEL', KEYS[2], KEYS[1])
  redis.call('DECRBY', KEYS[3], old)
end
return old
"#;

/// The usage hash and the byte counter of `plugin`.
fn accounting_keys(plugin: &str) -> (String, String) {
    (
        format!("gk:cache-usage:{plugin}"),
        format!("gk:cache-bytes:{plugin}"),
    )
}

/// A cache in Redis or Valkey.
pub struct RedisCache {
    pool: Pool,
    url: String,
    quota: u64,
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
    /// Connects to `url` (`redis://host:port/db`) with the default quota
    /// ([`DEFAULT_CACHE_QUOTA_BYTES`]); fails when the server does not answer.
    pub async fn connect(url: &str) -> CoreResult<Self> {
        Self::connect_with_quota(url, DEFAULT_CACHE_QUOTA_BYTES).await
    }

    /// Connects to `url`, each plugin holding at most `quota` bytes (keys and values).
    pub async fn connect_with_quota(url: &str, quota: u64) -> CoreResult<Self> {
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
            quota,
        })
    }

    /// The bytes `plugin` holds, as its counter says (keys that expired included until a set
    /// over the quota forgets them).
    pub async fn bytes_of(&self, plugin: &str) -> HostResult<u64> {
        let (_, total) = accounting_keys(plugin);
        self.pool
            .get::<Option<u64>, _>(total)
            .await
            .map(Option::unwrap_or_default)
            .map_err(|e| unavailable(&e))
    }

    async fn eval(
        &self,
        script: &'static str,
        args: Vec<fred::types::Value>,
    ) -> HostResult<fred::types::Value> {
        let mut all = vec![fred::types::Value::from(script)];
        all.extend(args);
        self.pool
            .custom::<fred::types::Value, _>(CustomCommand::new_static("EVAL", None, false), all)
            .await
            .map_err(|e| unavailable(&e))
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
        use fred::types::Value;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let Some(owner) = key_owner(key) else {
            let expire = (ttl_ms > 0).then_some(fred::types::Expiration::PX(ttl_ms));
            return self
                .pool
                .set::<(), _, _>(key, value, expire, None, false)
                .await
                .map_err(|e| unavailable(&e));
        };
        let (usage, total) = accounting_keys(owner);
        let reply = self
            .eval(
                SET_SCRIPT,
                vec![
                    Value::from(3),
                    Value::from(key),
                    Value::from(usage),
                    Value::from(total),
                    Value::Bytes(value.to_vec().into()),
                    Value::from(ttl_ms),
                    Value::from(i64::try_from(self.quota).unwrap_or(i64::MAX)),
                ],
            )
            .await?;
        let answer: Vec<i64> = reply
            .convert()
            .map_err(|e| HostError::Backend(format!("cache: unexpected script reply: {e}")))?;
        match answer.as_slice() {
            [1, _] => Ok(()),
            [0, used] => Err(quota_exceeded(
                owner,
                self.quota,
                u64::try_from(*used).unwrap_or_default(),
                (key.len() + value.len()) as u64,
            )),
            other => Err(HostError::Backend(format!(
                "cache: unexpected script reply {other:?}"
            ))),
        }
    }

    async fn delete(&self, key: &str) -> HostResult<()> {
        use fred::types::Value;
        let Some(owner) = key_owner(key) else {
            return self
                .pool
                .del::<i64, _>(key)
                .await
                .map(|_| ())
                .map_err(|e| unavailable(&e));
        };
        let (usage, total) = accounting_keys(owner);
        self.eval(
            DELETE_SCRIPT,
            vec![
                Value::from(3),
                Value::from(key),
                Value::from(usage),
                Value::from(total),
            ],
        )
        .await
        .map(|_| ())
    }
}

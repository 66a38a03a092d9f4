//! [`RedisLimiter`]: the plugins' rate limits held for the whole cluster in Redis (or Valkey),
//! as gk-sandbox's [`SharedLimiter`].
//!
//! Each limit is a GCRA, the same algorithm as the local `governor` limits: a limit of N per
//! period lets N calls through at once, then one more every period / N. Its state is one key,
//! `<prefix>:rl:<plugin>:<limit>` (`limit` is the policy field: `max_calls_per_second`,
//! `max_db_queries_per_min`, `max_http_req_per_min`, `max_emails_per_min`), holding the
//! theoretical arrival time in microseconds of Redis's clock, and expiring when it no longer
//! matters (at most one period after the last call). One Lua script judges every limit of a
//! call, with the time from the Redis server (`TIME`: node clocks never enter into it), and
//! counts the call in all of them or in none; it is sent once (`SCRIPT LOAD`) and called by
//! `EVALSHA`, with `EVAL` when the server has forgotten it (`NOSCRIPT`, after a restart). One
//! call is one round trip. (The keys of one call are not hash-tagged: a single Redis or
//! Valkey server, or one primary with replicas, not a Redis Cluster.)
//!
//! Failures: a command that fails or takes longer than [`LIMIT_COMMAND_TIMEOUT`] (Redis down,
//! restarting, a network partition, a slow server) is a [`SharedLimitError`], and the sandbox
//! judges the call by the node's own limits instead (logged at WARN once per outage, at INFO
//! when Redis answers again, counted in `SandboxConfig::shared_limit_stats` and in each
//! plugin's `limit_fallbacks`). While disconnected, commands fail at once rather than wait for
//! the timeout, and the connections are re-established in the background (every 100 ms at
//! first, then at most every second). Redis losing its keys (a restart without persistence)
//! only refills the buckets.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Builder, ClientLike, Config, Error as RedisError, Pool, ReconnectPolicy};
use fred::types::config::Options;
use fred::types::{CustomCommand, Value};
use gk_sandbox::{Admission, LimitSpec, SharedLimitError, SharedLimiter};

use crate::{CoreError, CoreResult};

/// Connects each client of `pool` in the background, trying again (every 100 ms at first,
/// then at most every 2 s) until it answers; from then on fred's reconnect policy keeps it
/// connected. (fred's own connect gives up after a failed first connection when commands
/// are to fail fast while disconnected, as here.) Within a Tokio runtime.
pub(super) fn connect_until_up(pool: &Pool, what: &'static str, url: String) {
    for client in pool.clients() {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            let mut said = false;
            loop {
                match client.init().await {
                    Ok(_) => {
                        if said {
                            tracing::info!(%url, "{what}: Redis answers");
                        }
                        return;
                    }
                    Err(error) if !said => {
                        tracing::warn!(%url, %error, "{what}: Redis does not answer; trying again in the background");
                        said = true;
                    }
                    Err(error) => {
                        tracing::debug!(%url, %error, "{what}: Redis does not answer yet")
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
    }
}

/// How long one limit check may take before the node's own limits decide.
pub const LIMIT_COMMAND_TIMEOUT: Duration = Duration::from_millis(80);
/// How long [`RedisLimiter::connect`] waits for the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections in the pool.
const POOL_SIZE: usize = 2;

/// Judges every limit of one call. KEYS: one per limit. ARGV: for each limit its period in
/// microseconds and its amount. Answers `{0, 0}` when admitted (every key counted the call), or
/// `{i, wait}` when the i-th limit (from 1) has no room for `wait` microseconds (nothing
/// counted).
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next_tats = {}
for i = 1, #KEYS do
  local period = tonumber(ARGV[2 * i - 1])
  local amount = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local next_tat = tat + period / amount
  local wait = next_tat - period - now
  if wait > 1 then
    return {i, math.ceil(wait)}
  end
  next_tats[i] = next_tat
end
for i = 1, #KEYS do
  local ttl = math.ceil((next_tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', next_tats[i]), 'PX', string.format('%.0f', ttl))
end
return {0, 0}
"#;

/// The cluster's rate limits in Redis; see the [module](self) for the keys and failures.
pub struct RedisLimiter {
    pool: Pool,
    prefix: String,
    url: String,
    sha: String,
    options: Options,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `url` without its password, for messages.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(an unreadable URL)".to_owned(),
    }
}

/// The SHA-1 Redis names a script by.
fn script_sha(script: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        script.as_bytes(),
    ))
}

impl RedisLimiter {
    /// Connects to `redis_url` (`redis://[:password@]host:port/db`) and loads the script; keys
    /// start with `key_prefix` (e.g. `gk`; every node of a cluster uses the same). Fails when
    /// the URL is not one or the server does not answer within 2 s.
    pub async fn connect(redis_url: &str, key_prefix: &str) -> CoreResult<Arc<Self>> {
        let limiter = Self::build(redis_url, key_prefix)?;
        let open_error =
            |e: RedisError| CoreError::Config(format!("rate limiter {}: {e}", redacted(redis_url)));
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, limiter.pool.init()).await;
        match connected {
            Ok(Ok(_handles)) => {}
            Ok(Err(error)) => {
                let _ = limiter.pool.quit().await;
                return Err(open_error(error));
            }
            Err(_) => {
                let _ = limiter.pool.quit().await;
                return Err(CoreError::Config(format!(
                    "rate limiter {}: no answer within {} s",
                    redacted(redis_url),
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
        let loaded: String = limiter
            .pool
            .custom(
                CustomCommand::new_static("SCRIPT", None, false),
                vec![Value::from("LOAD"), Value::from(GCRA_SCRIPT)],
            )
            .await
            .map_err(open_error)?;
        if loaded != limiter.sha {
            return Err(CoreError::Config(format!(
                "rate limiter {}: the server names the script {loaded}, not {}",
                redacted(redis_url),
                limiter.sha
            )));
        }
        Ok(Arc::new(limiter))
    }

    /// The same without waiting: connects in the background (within a Tokio runtime) and keeps
    /// trying; until Redis answers every call is judged by the nodes' own limits. Fails only
    /// when the URL is not one.
    pub fn connect_lazy(redis_url: &str, key_prefix: &str) -> CoreResult<Arc<Self>> {
        let limiter = Self::build(redis_url, key_prefix)?;
        connect_until_up(&limiter.pool, "rate limiter", redacted(redis_url));
        Ok(Arc::new(limiter))
    }

    fn build(redis_url: &str, key_prefix: &str) -> CoreResult<Self> {
        let config = Config::from_url(redis_url)
            .map_err(|e| CoreError::Config(format!("rate limiter {}: {e}", redacted(redis_url))))?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = CONNECT_TIMEOUT;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = LIMIT_COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            .build_pool(POOL_SIZE)
            .map_err(|e| CoreError::Config(format!("rate limiter {}: {e}", redacted(redis_url))))?;
        Ok(Self {
            pool,
            prefix: key_prefix.to_owned(),
            url: redacted(redis_url),
            sha: script_sha(GCRA_SCRIPT),
            options: Options {
                max_attempts: Some(1),
                timeout: Some(LIMIT_COMMAND_TIMEOUT),
                fail_fast: true,
                ..Options::default()
            },
        })
    }

    /// The key of one limit of one plugin.
    pub fn key(&self, plugin: &str, limit: &str) -> String {
        format!("{}:rl:{plugin}:{limit}", self.prefix)
    }

    /// Closes the connections (they are not re-established).
    pub async fn close(&self) {
        let _ = self.pool.quit().await;
    }

    /// Runs the script by its SHA-1, or by its text when the server does not know it.
    async fn run(&self, args: Vec<Value>) -> Result<Value, RedisError> {
        let client = self.pool.next_connected().with_options(&self.options);
        let mut with_sha = Vec::with_capacity(args.len() + 1);
        with_sha.push(Value::from(self.sha.as_str()));
        with_sha.extend(args.iter().cloned());
        match client
            .custom::<Value, _>(CustomCommand::new_static("EVALSHA", None, false), with_sha)
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                let mut with_text = Vec::with_capacity(args.len() + 1);
                with_text.push(Value::from(GCRA_SCRIPT));
                with_text.extend(args);
                client
                    .custom::<Value, _>(CustomCommand::new_static("EVAL", None, false), with_text)
                    .await
            }
            other => other,
        }
    }
}

#[async_trait]
impl SharedLimiter for RedisLimiter {
    async fn admit(
        &self,
        plugin: &str,
        limits: &[LimitSpec],
    ) -> Result<Admission, SharedLimitError> {
        let mut args = Vec::with_capacity(1 + limits.len() * 3);
        args.push(Value::from(limits.len() as i64));
        for limit in limits {
            args.push(Value::from(self.key(plugin, limit.name)));
        }
        for limit in limits {
            let period_us = i64::try_from(limit.period.as_micros()).unwrap_or(i64::MAX);
            args.push(Value::from(period_us.max(1)));
            args.push(Value::from(i64::from(limit.amount.max(1))));
        }
        let reply = self.run(args).await.map_err(|error| {
            // An error reply (a script error, a wrong type) is an answer that is not one;
            // anything else (closed, refused, timed out) means Redis is not there.
            if error.details().starts_with("ERR") || error.details().starts_with("WRONGTYPE") {
                SharedLimitError::Protocol(error.to_string())
            } else {
                SharedLimitError::Unavailable(error.to_string())
            }
        })?;
        let answer: Vec<i64> = reply
            .convert()
            .map_err(|e| SharedLimitError::Protocol(e.to_string()))?;
        match answer.as_slice() {
            [0, _] => Ok(Admission::Admitted),
            [index, wait_us] => {
                let refused = usize::try_from(*index - 1)
                    .ok()
                    .and_then(|i| limits.get(i))
                    .ok_or_else(|| {
                        SharedLimitError::Protocol(format!("no limit number {index}"))
                    })?;
                Ok(Admission::Refused {
                    limit: refused.name.to_owned(),
                    retry_after: Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0)),
                })
            }
            other => Err(SharedLimitError::Protocol(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{GCRA_SCRIPT, redacted, script_sha};

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("redis://:secret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn the_script_is_named_by_its_sha1() {
        assert_eq!(
            script_sha("return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        assert_eq!(script_sha(GCRA_SCRIPT).len(), 40);
    }
}

//! Named databases: `default` plus any others from configuration, each a URL (`sqlite://…`,
//! `postgres://…`, `mysql://…`). A query starting with `@name:` runs on `name`.
//!
//! Each database has two pools. The platform's own pool ([`Databases::connection`],
//! [`Databases::query`], [`Databases::exec`]) runs trusted SQL. Plugin statements
//! ([`Databases::query_scoped`], [`Databases::exec_scoped`]) run on a pool of their own, so a
//! plugin's long query never holds a connection the platform needs, and under the engine's own
//! limits:
//! - **scope**: on SQLite an authorizer on every plugin connection lets a statement touch only
//!   the tables and functions its [`TableScope`] allows (see `sqlite_authorizer`);
//! - **deadline**: the engine stops a query at `query_timeout` (SQLite: a progress handler;
//!   PostgreSQL: `statement_timeout`; MariaDB: `max_statement_time`), and the connection
//!   comes back healthy;
//! - **share**: at most `max_concurrent_queries` statements of one plugin at a time;
//! - **size**: reading stops past `max_rows` rows or `max_result_bytes` bytes.

mod bind;
mod pools;
mod results;
mod roles;
mod sqlite_authorizer;
mod sqlite_pool;
mod sqlite_values;
mod sqlite_watchdog;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use gk_sdk::{HostError, HostResult, Row, TableScope, split_database};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, Statement, StreamTrait, TransactionTrait,
};
use serde_json::Value;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::host::placeholders::{rewrite, sqlite_placeholders};
use crate::host::rows;
use crate::{CoreError, CoreResult};

use bind::{bind, bind_postgres};
use pools::PluginPool;
use results::Collected;

/// The default longest a query may run.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default most rows a query may return.
pub const DEFAULT_MAX_ROWS: usize = 10_000;

/// The default most bytes of row data a query may return (16 MiB).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 16 << 20;

/// The default most statements one plugin may run at the same time.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 4;

/// How long opening a connection may take before the database counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which databases exist and the guards on every query.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Database name → URL. `default` is the one queries without a prefix use.
    pub urls: BTreeMap<String, String>,
    /// Longest a query may run.
    pub query_timeout: Duration,
    /// Most rows a query may return.
    pub max_rows: usize,
    /// Most bytes of row data a query may return.
    pub max_result_bytes: usize,
    /// Most statements one plugin may run at the same time (the others wait, within their
    /// deadline).
    pub max_concurrent_queries: usize,
}

impl DatabaseConfig {
    /// One `default` database at `url`, default guards.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            urls: BTreeMap::from([(gk_sdk::DEFAULT_DATABASE.to_owned(), url.into())]),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_rows: DEFAULT_MAX_ROWS,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT_QUERIES,
        }
    }
}

/// Open connections to every configured database.
#[derive(Debug, Clone)]
pub struct Databases {
    /// The platform's pools.
    connections: HashMap<String, DatabaseConnection>,
    /// The plugins' pools.
    plugin_pools: HashMap<String, PluginPool>,
    /// PostgreSQL parameter types per SQL text, as the server infers them.
    parameter_types: Arc<DashMap<String, Vec<String>>>,
    /// Each plugin's share of the plugin pools.
    plugin_slots: Arc<DashMap<String, Arc<Semaphore>>>,
    limits: Limits,
}

/// The guards on every query.
#[derive(Debug, Clone, Copy)]
struct Limits {
    query_timeout: Duration,
    max_rows: usize,
    max_result_bytes: usize,
    max_concurrent_queries: usize,
}

/// A URL with its password replaced, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Databases {
    /// Connects to every database of `config`. SQLite files and their directories are created.
    pub async fn connect(config: &DatabaseConfig) -> CoreResult<Self> {
        let mut connections = HashMap::new();
        let mut plugin_pools = HashMap::new();
        for (name, url) in &config.urls {
            let open_error = |message: String| CoreError::DatabaseOpen {
                name: name.clone(),
                url: redacted(url),
                message,
            };
            let (platform, plugins) =
                pools::open(url, config.query_timeout, config.max_result_bytes)
                    .await
                    .map_err(open_error)?;
            connections.insert(name.to_ascii_lowercase(), platform);
            plugin_pools.insert(name.to_ascii_lowercase(), plugins);
        }
        if !connections.contains_key(gk_sdk::DEFAULT_DATABASE) {
            return Err(CoreError::Config(
                "no `default` database is configured".into(),
            ));
        }
        Ok(Self {
            connections,
            plugin_pools,
            parameter_types: Arc::default(),
            plugin_slots: Arc::default(),
            limits: Limits {
                query_timeout: config.query_timeout,
                max_rows: config.max_rows,
                max_result_bytes: config.max_result_bytes,
                max_concurrent_queries: config.max_concurrent_queries.max(1),
            },
        })
    }

    /// The connection of a database, for the platform's own tables.
    pub fn connection(&self, name: &str) -> Option<&DatabaseConnection> {
        self.connections.get(name)
    }

    /// The SQL dialect of each database, by name: plugin SQL is parsed as its database reads it.
    pub fn dialects(&self) -> impl Iterator<Item = (&str, gk_sandbox::SqlDialect)> {
        self.connections.iter().map(|(name, c)| {
            let dialect = match c.get_database_backend() {
                DbBackend::Postgres => gk_sandbox::SqlDialect::Postgres,
                DbBackend::MySql => gk_sandbox::SqlDialect::MySql,
                _ => gk_sandbox::SqlDialect::Sqlite,
            };
            (name.as_str(), dialect)
        })
    }

    /// Runs a trusted query of the platform with `?` placeholders and returns its rows as JSON
    /// objects. Plugin statements go through [`query_scoped`](Self::query_scoped).
    pub async fn query(&self, query: &str, args: &[Value]) -> HostResult<Vec<Row>> {
        let (name, sql) =
            split_database(query).map_err(|e| HostError::InvalidInput(e.to_string()))?;
        let connection = self.platform_connection(&name)?;
        self.run_platform(&name, connection, sql, args, Collected::rows())
            .await
            .map(Collected::into_rows)
    }

    /// Runs a trusted statement of the platform and returns the number of affected rows.
    pub async fn exec(&self, query: &str, args: &[Value]) -> HostResult<u64> {
        let (name, sql) =
            split_database(query).map_err(|e| HostError::InvalidInput(e.to_string()))?;
        let connection = self.platform_connection(&name)?;
        self.run_platform(&name, connection, sql, args, Collected::affected())
            .await
            .map(Collected::into_affected)
    }

    /// Runs a plugin's read query, checked by its sandbox (`?` placeholders; `$1, $2, …` on
    /// PostgreSQL), on the plugin pool, with `scope` enforced by the engine where it can.
    ///
    /// In an inline attempt ([`gk_sdk::inline`]) it answers only a read-only statement on a
    /// SQLite database that finds a free connection and the plugin's query slot at once and
    /// ends within a short budget without waiting for a lock; it refuses anything else before
    /// it runs (a statement interrupted at the budget has changed nothing).
    pub async fn query_scoped(
        &self,
        plugin: &str,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<Vec<Row>> {
        self.run_scoped(plugin, scope, query, args, Collected::rows())
            .await
            .map(Collected::into_rows)
    }

    /// Runs a plugin's write statement; see [`query_scoped`](Self::query_scoped).
    pub async fn exec_scoped(
        &self,
        plugin: &str,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
    ) -> HostResult<u64> {
        self.run_scoped(plugin, scope, query, args, Collected::affected())
            .await
            .map(Collected::into_affected)
    }

    fn platform_connection(&self, name: &str) -> HostResult<&DatabaseConnection> {
        self.connections
            .get(name)
            .ok_or_else(|| HostError::NotFound(format!("database `{name}` is not configured")))
    }

    async fn run_scoped(
        &self,
        plugin: &str,
        scope: &Arc<dyn TableScope>,
        query: &str,
        args: &[Value],
        collect: Collected,
    ) -> HostResult<Collected> {
        let (name, sql) =
            split_database(query).map_err(|e| HostError::InvalidInput(e.to_string()))?;
        let pool = self
            .plugin_pools
            .get(&name)
            .ok_or_else(|| HostError::NotFound(format!("database `{name}` is not configured")))?;
        let slots = self
            .plugin_slots
            .entry(plugin.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_concurrent_queries)))
            .clone();
        let _slot = if gk_sdk::inline::is_attempt() {
            if !matches!(pool, PluginPool::Sqlite(_)) {
                return Err(gk_sdk::inline::refuse(
                    format!("database `{name}` is a database server"),
                    true,
                ));
            }
            slots.try_acquire_owned().map_err(|error| {
                let reason = match error {
                    TryAcquireError::NoPermits => {
                        "the plugin runs max_concurrent_queries queries already"
                    }
                    TryAcquireError::Closed => "the database is closing",
                };
                gk_sdk::inline::refuse(reason, false)
            })?
        } else {
            let deadline = tokio::time::Instant::now() + self.limits.query_timeout;
            tokio::time::timeout_at(deadline, slots.acquire_owned())
                .await
                .map_err(|_| {
                    HostError::Timeout(format!(
                        "the plugin already runs {} queries (max_concurrent_queries) and none ended within query_timeout",
                        self.limits.max_concurrent_queries
                    ))
                })?
                .map_err(|_| HostError::Unavailable("the database is closing".into()))?
        };
        match pool {
            PluginPool::Sqlite(pool) => {
                let placeholders = sqlite_placeholders(sql).map_err(HostError::InvalidInput)?;
                if placeholders != args.len() {
                    return Err(HostError::InvalidInput(format!(
                        "the query has {placeholders} `?` placeholders but {} arguments were given",
                        args.len()
                    )));
                }
                let values = args
                    .iter()
                    .enumerate()
                    .map(|(i, v)| bind(i, v))
                    .collect::<HostResult<Vec<_>>>()?;
                pool.run(plugin, &name, scope, sql, values, self.limits, collect)
                    .await
            }
            PluginPool::Server { pool, roles } => {
                if !roles.has_login() {
                    // Fail closed: without its own login the engine cannot hold the scope.
                    return Err(HostError::Unavailable(format!(
                        "database `{name}`: plugin statements are refused because the platform's user may not create the `goatkit_plugins` login the engine needs to enforce plugin scopes (see the server log)"
                    )));
                }
                let admin = self.platform_connection(&name)?;
                let role = guarded(
                    self.limits.query_timeout,
                    roles.ensure(admin, &name, plugin, scope),
                )
                .await?;
                // On PostgreSQL the sandbox has numbered the placeholders already.
                let rewrite = pool.get_database_backend() != DbBackend::Postgres;
                let statement = self.statement(&name, pool, sql, args, rewrite).await?;
                let limits = self.limits;
                let run = async {
                    let transaction = pool.begin().await.map_err(|e| backend_error(&name, &e))?;
                    transaction
                        .execute_unprepared(&roles.switch_to(&role))
                        .await
                        .map_err(|e| backend_error(&name, &e))?;
                    let collected =
                        collect_on(&transaction, &name, statement, collect, &limits).await?;
                    transaction
                        .commit()
                        .await
                        .map_err(|e| backend_error(&name, &e))?;
                    Ok(collected)
                };
                let result = guarded(self.limits.query_timeout, run).await;
                if result.is_ok() && roles::changes_tables(sql) {
                    roles.tables_changed();
                }
                engine_refusal(&name, sql, result)
            }
        }
    }

    /// Prepares and runs a statement of the platform: numbers `?` placeholders for PostgreSQL,
    /// binds the arguments, collects the outcome.
    async fn run_platform(
        &self,
        name: &str,
        connection: &DatabaseConnection,
        sql: &str,
        args: &[Value],
        collect: Collected,
    ) -> HostResult<Collected> {
        let statement = self.statement(name, connection, sql, args, true).await?;
        let limits = self.limits;
        let run = collect_on(connection, name, statement, collect, &limits);
        guarded(self.limits.query_timeout, run).await
    }

    /// Prepares a statement: numbers placeholders for PostgreSQL (unless numbered already),
    /// binds arguments.
    async fn statement(
        &self,
        name: &str,
        connection: &DatabaseConnection,
        sql: &str,
        args: &[Value],
        rewrite_placeholders: bool,
    ) -> HostResult<Statement> {
        let backend = connection.get_database_backend();
        let postgres = backend == DbBackend::Postgres;
        let sql = if rewrite_placeholders {
            let (rewritten, placeholders) = rewrite(sql, |index| {
                if postgres {
                    format!("${}", index + 1)
                } else {
                    "?".to_owned()
                }
            });
            if placeholders != args.len() {
                return Err(HostError::InvalidInput(format!(
                    "the query has {placeholders} `?` placeholders but {} arguments were given",
                    args.len()
                )));
            }
            rewritten
        } else {
            sql.to_owned()
        };
        let values = if postgres && !args.is_empty() {
            // PostgreSQL does not turn a text parameter into a timestamp, number or JSON on its
            // own: ask it which types it infers, and bind each argument as that type.
            let types = self
                .postgres_parameter_types(name, connection, &sql)
                .await?;
            if types.len() != args.len() {
                return Err(HostError::InvalidInput(format!(
                    "the query has {} placeholders but {} arguments were given",
                    types.len(),
                    args.len()
                )));
            }
            args.iter()
                .zip(&types)
                .enumerate()
                .map(|(i, (v, pg_type))| bind_postgres(i, v, pg_type))
                .collect::<HostResult<Vec<_>>>()?
        } else {
            args.iter()
                .enumerate()
                .map(|(i, v)| bind(i, v))
                .collect::<HostResult<Vec<_>>>()?
        };
        Ok(Statement::from_sql_and_values(backend, sql, values))
    }

    /// The parameter types PostgreSQL infers for `sql`, remembered per SQL text.
    async fn postgres_parameter_types(
        &self,
        name: &str,
        connection: &DatabaseConnection,
        sql: &str,
    ) -> HostResult<Vec<String>> {
        if let Some(types) = self.parameter_types.get(sql) {
            return Ok(types.clone());
        }
        use sea_orm::sqlx::{AssertSqlSafe, Executor, SqlSafeStr, Statement as _, TypeInfo};
        let pool = connection.get_postgres_connection_pool();
        // Preparing runs nothing; the statement is the platform's or a sandbox-checked one.
        let prepared = guarded(self.limits.query_timeout, async {
            pool.prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
                .await
                .map_err(|e| HostError::Backend(format!("database `{name}`: {e}")))
        })
        .await?;
        let types: Vec<String> = match prepared.parameters() {
            Some(sea_orm::sqlx::Either::Left(types)) => types
                .iter()
                .map(|t| t.name().to_ascii_uppercase())
                .collect(),
            _ => Vec::new(),
        };
        if self.parameter_types.len() > 10_000 {
            self.parameter_types.clear();
        }
        self.parameter_types.insert(sql.to_owned(), types.clone());
        Ok(types)
    }
}

/// Runs `statement` on `executor` (a connection or a transaction) and collects its outcome.
async fn collect_on<C: ConnectionTrait + StreamTrait>(
    executor: &C,
    name: &str,
    statement: Statement,
    mut collect: Collected,
    limits: &Limits,
) -> HostResult<Collected> {
    if collect.wants_rows() {
        let stream = executor
            .stream_raw(statement)
            .await
            .map_err(|e| backend_error(name, &e))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| backend_error(name, &e))?;
            let row = rows::to_json(&row)
                .map_err(|problem| HostError::Backend(format!("database `{name}`: {problem}")))?;
            collect.push(row, limits)?;
        }
    } else {
        let done = executor
            .execute_raw(statement)
            .await
            .map_err(|e| backend_error(name, &e))?;
        collect.set_affected(done.rows_affected());
    }
    Ok(collect)
}

/// A permission error of the engine on a statement the guard allowed: refused, and logged as
/// a defect of the guard.
fn engine_refusal(name: &str, sql: &str, result: HostResult<Collected>) -> HostResult<Collected> {
    match result {
        Err(HostError::Backend(message))
            if message.contains("permission denied")
                || message.contains("must be owner")
                || message.contains("command denied") =>
        {
            tracing::error!(
                database = name,
                sql,
                %message,
                "the database engine refused what the SQL guard allowed (a guard defect)"
            );
            Err(HostError::denied(
                "db",
                format!("the database engine refused the statement ({message})"),
            ))
        }
        other => other,
    }
}

/// Bounds `run` by `timeout` on the host's side too (the engine stops the query itself).
async fn guarded<T>(timeout: Duration, run: impl Future<Output = HostResult<T>>) -> HostResult<T> {
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

fn timed_out(timeout: Duration) -> HostError {
    HostError::Timeout(format!(
        "the query ran longer than {} ms (query_timeout)",
        timeout.as_millis()
    ))
}

fn backend_error(name: &str, error: &sea_orm::DbErr) -> HostError {
    let text = error.to_string();
    // PostgreSQL `statement_timeout`, MariaDB `max_statement_time`.
    if text.contains("canceling statement due to statement timeout")
        || text.contains("max_statement_time")
    {
        return HostError::Timeout(format!(
            "database `{name}` stopped the query at query_timeout"
        ));
    }
    HostError::Backend(format!("database `{name}`: {text}"))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("postgres://ann:secret@db:5432/x"),
            "postgres://ann:***@db:5432/x"
        );
        assert_eq!(redacted("sqlite://data/gk.db"), "sqlite://data/gk.db");
        assert_eq!(
            redacted("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
    }
}

//! Named databases through sea-orm: `default` plus any others from configuration, each a URL
//! (`sqlite://…`, `postgres://…`, `mysql://…`). A query starting with `@name:` runs on `name`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use gk_sdk::{HostError, HostResult, Row, split_database};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    StreamTrait,
};
use serde_json::Value;

use crate::host::placeholders::numbered;
use crate::host::rows;
use crate::{CoreError, CoreResult};

/// The default longest a query may run.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default most rows a query may return.
pub const DEFAULT_MAX_ROWS: usize = 10_000;

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
}

impl DatabaseConfig {
    /// One `default` database at `url`, default guards.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            urls: BTreeMap::from([(gk_sdk::DEFAULT_DATABASE.to_owned(), url.into())]),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_rows: DEFAULT_MAX_ROWS,
        }
    }
}

/// Open connections to every configured database.
#[derive(Debug, Clone)]
pub struct Databases {
    connections: HashMap<String, DatabaseConnection>,
    query_timeout: Duration,
    max_rows: usize,
}

/// A URL with its password replaced, for messages.
fn redacted(url: &str) -> String {
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
        for (name, url) in &config.urls {
            let open_error = |message: String| CoreError::DatabaseOpen {
                name: name.clone(),
                url: redacted(url),
                message,
            };
            let mut url = url.clone();
            let mut options = ConnectOptions::new(url.clone());
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p).to_owned())
            {
                if let Some(dir) = std::path::Path::new(&path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| open_error(format!("cannot create {}: {e}", dir.display())))?;
                }
                if !url.contains("mode=") {
                    url.push_str(if url.contains('?') {
                        "&mode=rwc"
                    } else {
                        "?mode=rwc"
                    });
                }
                options = ConnectOptions::new(url.clone());
            }
            if url.starts_with("sqlite::memory:") || url.contains(":memory:") {
                // Every connection to an in-memory SQLite database is a database of its own.
                options.max_connections(1);
            }
            options
                .sqlx_logging(false)
                .connect_timeout(CONNECT_TIMEOUT)
                .acquire_timeout(CONNECT_TIMEOUT);
            let connection = Database::connect(options)
                .await
                .map_err(|e| open_error(e.to_string()))?;
            connections.insert(name.to_ascii_lowercase(), connection);
        }
        if !connections.contains_key(gk_sdk::DEFAULT_DATABASE) {
            return Err(CoreError::Config(
                "no `default` database is configured".into(),
            ));
        }
        Ok(Self {
            connections,
            query_timeout: config.query_timeout,
            max_rows: config.max_rows,
        })
    }

    /// The connection of a database, for the platform's own tables.
    pub fn connection(&self, name: &str) -> Option<&DatabaseConnection> {
        self.connections.get(name)
    }

    /// Prepares a query: picks the database, numbers placeholders for PostgreSQL, binds arguments.
    fn statement(
        &self,
        query: &str,
        args: &[Value],
    ) -> HostResult<(String, &DatabaseConnection, Statement)> {
        let (name, sql) = split_database(query).map_err(HostError::InvalidInput)?;
        let connection = self
            .connections
            .get(&name)
            .ok_or_else(|| HostError::NotFound(format!("database `{name}` is not configured")))?;
        let backend = connection.get_database_backend();
        let (numbered_sql, placeholders) = numbered(sql);
        if placeholders != args.len() {
            return Err(HostError::InvalidInput(format!(
                "the query has {placeholders} `?` placeholders but {} arguments were given",
                args.len()
            )));
        }
        let sql = if backend == DbBackend::Postgres {
            numbered_sql
        } else {
            sql.to_owned()
        };
        let values = args
            .iter()
            .enumerate()
            .map(|(i, v)| bind(i, v))
            .collect::<HostResult<Vec<_>>>()?;
        Ok((
            name,
            connection,
            Statement::from_sql_and_values(backend, sql, values),
        ))
    }

    /// Runs a query and returns its rows as JSON objects.
    pub async fn query(&self, query: &str, args: &[Value]) -> HostResult<Vec<Row>> {
        let (name, connection, statement) = self.statement(query, args)?;
        let max_rows = self.max_rows;
        let run = async {
            let mut stream = connection
                .stream_raw(statement)
                .await
                .map_err(|e| backend_error(&name, &e))?;
            let mut rows = Vec::new();
            while let Some(row) = stream.next().await {
                let row = row.map_err(|e| backend_error(&name, &e))?;
                if rows.len() == max_rows {
                    return Err(HostError::InvalidInput(format!(
                        "the query returned more than {max_rows} rows (max_rows): add a LIMIT"
                    )));
                }
                rows.push(rows::to_json(&row).map_err(|problem| {
                    HostError::Backend(format!("database `{name}`: {problem}"))
                })?);
            }
            Ok(rows)
        };
        self.guarded(run).await
    }

    /// Runs a statement and returns the number of affected rows.
    pub async fn exec(&self, query: &str, args: &[Value]) -> HostResult<u64> {
        let (name, connection, statement) = self.statement(query, args)?;
        let run = async {
            connection
                .execute_raw(statement)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| backend_error(&name, &e))
        };
        self.guarded(run).await
    }

    async fn guarded<T>(&self, run: impl Future<Output = HostResult<T>>) -> HostResult<T> {
        tokio::time::timeout(self.query_timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(HostError::Timeout(format!(
                    "the query ran longer than {} ms (query_timeout)",
                    self.query_timeout.as_millis()
                )))
            })
    }
}

fn backend_error(name: &str, error: &sea_orm::DbErr) -> HostError {
    HostError::Backend(format!("database `{name}`: {error}"))
}

/// Binds one JSON argument with its own type.
fn bind(index: usize, value: &Value) -> HostResult<sea_orm::Value> {
    Ok(match value {
        Value::Null => sea_orm::Value::String(None),
        Value::Bool(b) => sea_orm::Value::Bool(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => sea_orm::Value::BigInt(Some(i)),
            (None, Some(f)) => sea_orm::Value::Double(Some(f)),
            _ => {
                return Err(HostError::InvalidInput(format!(
                    "argument {} ({n}) is out of range",
                    index + 1
                )));
            }
        },
        Value::String(s) => sea_orm::Value::String(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(HostError::InvalidInput(format!(
                "argument {} is an array or object: arguments are null, booleans, numbers or strings",
                index + 1
            )));
        }
    })
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

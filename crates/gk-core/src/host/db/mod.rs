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

use crate::host::placeholders::rewrite;
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
    /// PostgreSQL parameter types per SQL text, as the server infers them.
    parameter_types: std::sync::Arc<dashmap::DashMap<String, Vec<String>>>,
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
            parameter_types: std::sync::Arc::default(),
            query_timeout: config.query_timeout,
            max_rows: config.max_rows,
        })
    }

    /// The connection of a database, for the platform's own tables.
    pub fn connection(&self, name: &str) -> Option<&DatabaseConnection> {
        self.connections.get(name)
    }

    /// Prepares a query: picks the database, numbers placeholders for PostgreSQL, binds arguments.
    async fn statement(
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
        // PostgreSQL numbers its placeholders and types every bound parameter; a NULL bound
        // as text would not go into a column of another type, so NULLs are written as the
        // untyped literal `NULL` instead (no plugin data enters the SQL text).
        let postgres = backend == DbBackend::Postgres;
        let mut bound = 0;
        let (rewritten, placeholders) = rewrite(sql, |index| match args.get(index) {
            Some(Value::Null) if postgres => "NULL".to_owned(),
            _ if postgres => {
                bound += 1;
                format!("${bound}")
            }
            _ => "?".to_owned(),
        });
        if placeholders != args.len() {
            return Err(HostError::InvalidInput(format!(
                "the query has {placeholders} `?` placeholders but {} arguments were given",
                args.len()
            )));
        }
        let bound_args: Vec<(usize, &Value)> = args
            .iter()
            .enumerate()
            .filter(|(_, v)| !(postgres && v.is_null()))
            .collect();
        let values = if postgres && !bound_args.is_empty() {
            // PostgreSQL does not turn a text parameter into a timestamp, number or JSON on its
            // own: ask it which types it infers, and bind each argument as that type.
            let types = self
                .postgres_parameter_types(&name, connection, &rewritten)
                .await?;
            bound_args
                .iter()
                .zip(
                    types
                        .iter()
                        .map(String::as_str)
                        .chain(std::iter::repeat("")),
                )
                .map(|((i, v), pg_type)| bind_postgres(*i, v, pg_type))
                .collect::<HostResult<Vec<_>>>()?
        } else {
            bound_args
                .iter()
                .map(|(i, v)| bind(*i, v))
                .collect::<HostResult<Vec<_>>>()?
        };
        let sql = rewritten;
        Ok((
            name,
            connection,
            Statement::from_sql_and_values(backend, sql, values),
        ))
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
        // The SQL is the plugin's own, already judged by its sandbox; preparing it runs nothing.
        let prepared = self
            .guarded(async {
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

    /// Runs a query and returns its rows as JSON objects.
    pub async fn query(&self, query: &str, args: &[Value]) -> HostResult<Vec<Row>> {
        let (name, connection, statement) = self.statement(query, args).await?;
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
        let (name, connection, statement) = self.statement(query, args).await?;
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

/// Binds one JSON argument as the PostgreSQL type inferred for its parameter (the prepared
/// statement expects exactly that type): numbers, booleans and strings are converted to it, or
/// refused with an error naming the argument.
fn bind_postgres(index: usize, value: &Value, pg_type: &str) -> HostResult<sea_orm::Value> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    let wrong = |what: &str| {
        HostError::InvalidInput(format!("argument {} ({value}) is not {what}", index + 1))
    };
    if matches!(value, Value::Array(_) | Value::Object(_)) {
        return bind(index, value);
    }
    let text = match value {
        Value::String(text) => Some(text.trim()),
        _ => None,
    };
    let integer = || -> HostResult<i64> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| wrong("an integer")),
            Value::Bool(b) => Ok(i64::from(*b)),
            _ => text
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| wrong("an integer")),
        }
    };
    let float = || -> HostResult<f64> {
        match value {
            Value::Number(n) => n.as_f64().ok_or_else(|| wrong("a number")),
            _ => text
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| wrong("a number")),
        }
    };
    let naive = |text: &str| {
        [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc).naive_utc())
        })
    };
    Ok(match pg_type {
        "INT2" => sea_orm::Value::SmallInt(Some(
            i16::try_from(integer()?).map_err(|_| wrong("a 16-bit integer"))?,
        )),
        "INT4" => sea_orm::Value::Int(Some(
            i32::try_from(integer()?).map_err(|_| wrong("a 32-bit integer"))?,
        )),
        "INT8" => sea_orm::Value::BigInt(Some(integer()?)),
        "FLOAT4" => sea_orm::Value::Float(Some(float()? as f32)),
        "FLOAT8" => sea_orm::Value::Double(Some(float()?)),
        "NUMERIC" => {
            let digits = match value {
                Value::Number(n) => n.to_string(),
                _ => text.ok_or_else(|| wrong("a number"))?.to_owned(),
            };
            sea_orm::Value::Decimal(Some(digits.parse().map_err(|_| wrong("a number"))?))
        }
        "BOOL" => sea_orm::Value::Bool(Some(match (value, text.map(str::to_ascii_lowercase)) {
            (Value::Bool(b), _) => *b,
            (_, Some(t)) if matches!(t.as_str(), "true" | "t" | "1" | "yes") => true,
            (_, Some(t)) if matches!(t.as_str(), "false" | "f" | "0" | "no") => false,
            (Value::Number(n), _) if n.as_i64().is_some() => n.as_i64() != Some(0),
            _ => return Err(wrong("a boolean")),
        })),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
            sea_orm::Value::String(Some(match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }))
        }
        "TIMESTAMP" => sea_orm::Value::ChronoDateTime(Some(
            text.and_then(naive).ok_or_else(|| wrong("a timestamp"))?,
        )),
        "TIMESTAMPTZ" => sea_orm::Value::ChronoDateTimeUtc(Some(
            text.and_then(naive)
                .map(|t| t.and_utc())
                .ok_or_else(|| wrong("a timestamp"))?,
        )),
        "DATE" => sea_orm::Value::ChronoDate(Some(
            text.and_then(|t| {
                NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .ok()
                    .or_else(|| naive(t).map(|n| n.date()))
            })
            .ok_or_else(|| wrong("a date"))?,
        )),
        "TIME" => sea_orm::Value::ChronoTime(Some(
            text.and_then(|t| NaiveTime::parse_from_str(t, "%H:%M:%S%.f").ok())
                .ok_or_else(|| wrong("a time"))?,
        )),
        "JSON" | "JSONB" => sea_orm::Value::Json(Some(Box::new(match text {
            Some(t) => serde_json::from_str(t).map_err(|_| wrong("JSON"))?,
            None => value.clone(),
        }))),
        _ => bind(index, value)?,
    })
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

//! The two pools of one database (the platform's, the plugins'), and a plugin statement run on
//! SQLite under the authorizer and a deadline the engine enforces.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::sqlx::{self, AssertSqlSafe, Executor, SqlSafeStr};
use sea_orm::{DatabaseConnection, SqlxMySqlConnector, SqlxPostgresConnector, SqlxSqliteConnector};

use super::CONNECT_TIMEOUT;
use super::roles::{
    EngineRoles, MARIADB_LOGIN_HOSTS, Server, again_while_raced, execute_all, serialised_with_syncs,
};
use super::sqlite_pool::SqlitePluginPool;

/// The most connections of a plugin pool (a plugin's own share is smaller) on PostgreSQL and
/// MariaDB.
const PLUGIN_POOL_CONNECTIONS: u32 = 8;

/// The connections of a SQLite plugin pool: two per core (in WAL mode readers do not wait for
/// one another, so reads scale with the cores), never fewer than twice a plugin's default share
/// ([`super::DEFAULT_MAX_CONCURRENT_QUERIES`]), so that one busy plugin cannot hold every
/// connection, and at most 32 (each connection is a thread).
fn sqlite_plugin_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let floor = u32::try_from(2 * super::DEFAULT_MAX_CONCURRENT_QUERIES).unwrap_or(8);
    u32::try_from(cores * 2)
        .unwrap_or(u32::MAX)
        .clamp(floor, 32)
}

/// A SQLite file database in WAL mode with `synchronous = NORMAL`: readers do not block the
/// writer or one another, and a commit waits for no fsync of the database file (the WAL is
/// synced at checkpoints; a power loss may lose the last commits, never consistency).
fn sqlite_file_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
}

/// The most connections of the platform's pool.
const PLATFORM_POOL_CONNECTIONS: u32 = 8;

/// The pool plugin statements run on.
#[derive(Debug, Clone)]
pub(super) enum PluginPool {
    /// SQLite: connections of the plugins' own (see `sqlite_pool`), each with the authorizer.
    Sqlite(Arc<SqlitePluginPool>),
    /// PostgreSQL or MariaDB: a pool whose sessions stop statements at the query timeout;
    /// each statement runs as its plugin's role.
    Server {
        /// The plugins' pool.
        pool: DatabaseConnection,
        /// The plugin roles of this database.
        roles: Arc<EngineRoles>,
    },
}

/// Opens the platform's pool and the plugins' pool of the database at `url`.
pub(super) async fn open(
    url: &str,
    query_timeout: Duration,
    max_value_bytes: usize,
) -> Result<(DatabaseConnection, PluginPool), String> {
    let error = |e: sqlx::Error| e.to_string();
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(error)?
            .create_if_missing(true);
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = if memory {
            options
        } else {
            sqlite_file_options(options)
        };
        if !memory
            && let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        // An in-memory database lives as long as a connection to it: keep one open per pool.
        // No test before each acquire: the connection is in this process, and sqlx's ping is a
        // round trip to the connection's thread (two thread wake-ups per statement); a crashed
        // connection thread fails the statement anyway.
        let pool = |max: u32| {
            let options = SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { max })
                .min_connections(u32::from(memory))
                .test_before_acquire(false)
                .acquire_timeout(CONNECT_TIMEOUT);
            if memory {
                options.idle_timeout(None).max_lifetime(None)
            } else {
                options
            }
        };
        let platform = pool(PLATFORM_POOL_CONNECTIONS)
            .connect_with(options.clone())
            .await
            .map_err(error)?;
        // Plugin statements run on connections of their own, on the caller's thread, with the
        // authorizer and a statement cache keyed by plugin, policy and SQL (`sqlite_pool`). An
        // in-memory database is the platform pool's (same shared-cache name), one connection.
        let filename = options
            .get_filename()
            .to_str()
            .ok_or("the SQLite file name is not UTF-8")?;
        let size = if memory {
            1
        } else {
            sqlite_plugin_connections() as usize
        };
        let plugins = SqlitePluginPool::new(filename, memory, size, max_value_bytes)?;
        return Ok((
            SqlxSqliteConnector::from_sqlx_sqlite_pool(platform),
            PluginPool::Sqlite(Arc::new(plugins)),
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url).map_err(error)?;
        let platform = PgPoolOptions::new()
            .max_connections(PLATFORM_POOL_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(error)?;
        let platform = SqlxPostgresConnector::from_sqlx_postgres_pool(platform);
        // Plugin statements log in as a role without privileges of its own, which may only
        // switch to the plugin roles (so `SET ROLE` cannot reach the platform's user).
        let login = postgres_login(&platform, url).await;
        let plugin_options = match &login {
            Some((name, password)) => options.clone().username(name).password(password),
            None => options.clone(),
        };
        // The server stops a plugin statement at the deadline and the session goes on.
        let timeout_ms = query_timeout.as_millis().max(1).to_string();
        let plugins = PgPoolOptions::new()
            .max_connections(PLUGIN_POOL_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(plugin_options.options([("statement_timeout", timeout_ms.as_str())]))
            .await
            .map_err(error)?;
        return Ok((
            platform,
            PluginPool::Server {
                pool: SqlxPostgresConnector::from_sqlx_postgres_pool(plugins),
                roles: Arc::new(EngineRoles::new(
                    Server::Postgres,
                    login.map(|(name, _)| name),
                )),
            },
        ));
    }
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let options = MySqlConnectOptions::from_str(&url).map_err(error)?;
        let platform = MySqlPoolOptions::new()
            .max_connections(PLATFORM_POOL_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(error)?;
        let platform = SqlxMySqlConnector::from_sqlx_mysql_pool(platform);
        let login = mariadb_login(&platform, &url).await;
        let plugin_options = match &login {
            Some((name, password)) => options.clone().username(name).password(password),
            None => options,
        };
        // MariaDB's `max_statement_time` is in seconds, with a fraction.
        let seconds = format!("{:.3}", query_timeout.as_secs_f64().max(0.001));
        let plugins = MySqlPoolOptions::new()
            .max_connections(PLUGIN_POOL_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |connection, _| {
                let set = format!("SET SESSION max_statement_time = {seconds}");
                Box::pin(async move {
                    connection
                        .execute(AssertSqlSafe(set).into_sql_str())
                        .await
                        .map(|_| ())
                })
            })
            .connect_with(plugin_options)
            .await
            .map_err(error)?;
        return Ok((
            platform,
            PluginPool::Server {
                pool: SqlxMySqlConnector::from_sqlx_mysql_pool(plugins),
                roles: Arc::new(EngineRoles::new(
                    Server::MariaDb,
                    login.map(|(name, _)| name),
                )),
            },
        ));
    }
    Err("the URL is not sqlite://, postgres:// or mysql://".to_owned())
}

/// The name of the login plugin statements connect as on PostgreSQL and MariaDB.
const LOGIN: &str = "goatkit_plugins";

/// The login plugin statements connect as on PostgreSQL: no privileges of its own
/// (`NOINHERIT`), a member of each plugin role. `None` when the platform's user may not create
/// roles: plugin statements on that database are then refused (see `run_scoped`).
async fn postgres_login(platform: &DatabaseConnection, url: &str) -> Option<(String, String)> {
    let password = login_password(url);
    let statements = [
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN}') \
             THEN CREATE ROLE {LOGIN} LOGIN NOINHERIT; END IF; END $$"
        ),
        format!(
            "ALTER ROLE {LOGIN} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE \
             PASSWORD '{password}'"
        ),
        format!(
            "DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO {LOGIN}', \
             current_database()); END $$"
        ),
    ];
    // Serialised with the role syncs of this database, and tried again when another database
    // of the server (whose syncs take their own lock) created the login at the same moment.
    let created = again_while_raced("plugin login", || {
        serialised_with_syncs(platform, &statements)
    })
    .await;
    login_or_warning(created, password)
}

/// The login plugin statements connect as on MariaDB: a user with no privileges of its own,
/// granted each plugin role (MariaDB adds a role's privileges to the user's own, so the login
/// must have none). `None` as for PostgreSQL.
async fn mariadb_login(platform: &DatabaseConnection, url: &str) -> Option<(String, String)> {
    let password = login_password(url);
    let mut statements = Vec::new();
    for host in MARIADB_LOGIN_HOSTS {
        statements.push(format!(
            "CREATE USER IF NOT EXISTS '{LOGIN}'@'{host}' IDENTIFIED BY '{password}'"
        ));
        statements.push(format!(
            "ALTER USER '{LOGIN}'@'{host}' IDENTIFIED BY '{password}'"
        ));
        // MariaDB lets a user choose a default database only with some privilege in it (a
        // role's count only once set): `SHOW VIEW` reads no row.
        statements.push(format!(
            "GRANT SHOW VIEW ON `{}`.* TO '{LOGIN}'@'{host}'",
            database_of(url)
        ));
    }
    let created = again_while_raced("plugin login", || execute_all(platform, &statements)).await;
    login_or_warning(created, password)
}

/// The login and its password once its statements ran, or `None` with the reason logged.
fn login_or_warning(
    created: Result<(), sea_orm::DbErr>,
    password: String,
) -> Option<(String, String)> {
    if let Err(error) = created {
        tracing::warn!(
            %error,
            "cannot create the `{LOGIN}` login: plugin statements on this database are refused"
        );
        return None;
    }
    Some((LOGIN.to_owned(), password))
}

/// The database a MySQL URL names (empty for none).
fn database_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').replace('`', "``"))
        .unwrap_or_default()
}

/// The login's password, derived from the platform's URL without its database (the server,
/// the platform's user and its password where there is one): every node agrees on it, every
/// database of one server gets the same (the login is the server's, not a database's), and a
/// plugin cannot know it.
fn login_password(url: &str) -> String {
    let server = match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path("");
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    };
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{server}\0{LOGIN}").as_bytes(),
    );
    hex::encode(digest.as_ref())
}

#[cfg(test)]
mod login_tests {
    use super::login_password;

    #[test]
    fn every_database_of_one_server_shares_the_login_password() {
        let a = login_password("postgres://gk:secret@db.example:5432/helpdesk");
        assert_eq!(
            a,
            login_password("postgres://gk:secret@db.example:5432/reports?sslmode=require")
        );
        assert_ne!(
            a,
            login_password("postgres://gk:other@db.example:5432/helpdesk")
        );
        assert_ne!(
            a,
            login_password("postgres://gk:secret@db2.example:5432/helpdesk")
        );
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait;

    use super::*;

    async fn pragma(db: &DatabaseConnection, name: &str) -> String {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                format!("PRAGMA {name}"),
            ))
            .await
            .expect("pragma")
            .expect("a row");
        row.try_get_by_index::<String>(0)
            .or_else(|_| row.try_get_by_index::<i64>(0).map(|n| n.to_string()))
            .expect("a value")
    }

    #[tokio::test]
    async fn sqlite_files_are_in_wal_mode_with_normal_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("gk.db").display());
        let (platform, plugins) = open(&url, Duration::from_secs(1), 1 << 20)
            .await
            .expect("open");
        assert_eq!(pragma(&platform, "journal_mode").await, "wal");
        // 1 = NORMAL
        assert_eq!(pragma(&platform, "synchronous").await, "1");
        let PluginPool::Sqlite(pool) = plugins else {
            panic!("a SQLite plugin pool")
        };
        assert_eq!(pool.size(), sqlite_plugin_connections() as usize);
    }

    #[tokio::test]
    async fn sqlite_memory_databases_keep_their_journal() {
        let (platform, _) = open("sqlite::memory:", Duration::from_secs(1), 1 << 20)
            .await
            .expect("open");
        assert_eq!(pragma(&platform, "journal_mode").await, "memory");
    }
}

//! PostgreSQL's and MariaDB's own wall behind the SQL guard: a role per plugin (no login) whose
//! grants mirror its table scope, and every plugin statement run as that role in a transaction
//! of its own (`SET LOCAL ROLE` on PostgreSQL; `SET ROLE` on MariaDB, which has no local form,
//! set again before every statement). Plugin statements log in as a role without privileges of
//! its own that may only switch to plugin roles. A statement the guard misread still meets the
//! server's permission checks.
//!
//! The grants are derived from the scope the sandbox hands over with each statement, table by
//! table over the database's tables, and kept in step: again whenever the plugin's scope
//! changes (a new policy version) and whenever the set of tables may have changed (a schema
//! statement ran). The platform's own tables are never granted. On PostgreSQL a sync changes
//! only the tables whose grants differ from the scope's, locks them first (so no other session
//! drops one while its catalog row changes), and runs under an advisory lock that the login's
//! set-up takes too; a sync or set-up that still races another session's change (a table gone
//! since the listing, a role created at the same moment by another node) is tried again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gk_sdk::{HostError, HostResult, TableAccess, TableScope};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, RuntimeErr, Statement, TransactionTrait,
};
use tokio::sync::Mutex;

use crate::Store;

/// The role a plugin's statements run as: its name made safe, and a digest of the name so that
/// two names never share a role (`a-b` and `a_b`, or long names cut short).
pub(super) fn role_name(plugin: &str) -> String {
    let clean: String = plugin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, plugin.as_bytes());
    format!("gk_plugin_{clean}_{}", hex::encode(&digest.as_ref()[..6]))
}

/// Quotes an identifier for PostgreSQL.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// What a plugin's grants were made from: its scope and the tables epoch.
type SyncedFrom = (Arc<dyn TableScope>, u64);

/// Which server the roles live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Server {
    /// PostgreSQL.
    Postgres,
    /// MariaDB (MySQL's roles add to a user's own privileges; the login has none).
    MariaDb,
}

/// The roles of one database, and what each was last granted from.
#[derive(Debug)]
pub(super) struct EngineRoles {
    server: Server,
    /// The login plugin statements connect as (`None`: the platform's own).
    login: Option<String>,
    /// Bumped whenever the set of tables may have changed.
    tables_epoch: AtomicU64,
    /// Per plugin: what its grants were made from.
    synced: Mutex<HashMap<String, SyncedFrom>>,
}

impl EngineRoles {
    /// The roles of a database whose plugin pool logs in as `login`.
    pub(super) fn new(server: Server, login: Option<String>) -> Self {
        Self {
            server,
            login,
            tables_epoch: AtomicU64::new(0),
            synced: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that a statement may have created, dropped or renamed a table.
    pub(super) fn tables_changed(&self) {
        self.tables_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether plugin statements log in as the plugins' own login (without it, the engine
    /// cannot hold a plugin's scope).
    pub(super) fn has_login(&self) -> bool {
        self.login.is_some()
    }

    /// The statement that makes a transaction run as `role`. On PostgreSQL the session's
    /// settings are reset first, so nothing a statement set outlives it on the pooled connection.
    pub(super) fn switch_to(&self, role: &str) -> String {
        match self.server {
            Server::Postgres => format!("RESET ALL; SET LOCAL ROLE {}", quoted(role)),
            Server::MariaDb => format!("SET ROLE `{role}`"),
        }
    }

    /// Makes sure the plugin's role exists and its grants mirror `scope` over the tables of
    /// the database now; returns the role's name. `admin` is the platform's connection.
    pub(super) async fn ensure(
        &self,
        admin: &DatabaseConnection,
        database: &str,
        plugin: &str,
        scope: &Arc<dyn TableScope>,
    ) -> HostResult<String> {
        let role = role_name(plugin);
        let epoch = self.tables_epoch.load(Ordering::SeqCst);
        let mut synced = self.synced.lock().await;
        // The scope is kept (not only its address), so a new scope can never take the place
        // of a dropped one at the same address.
        if let Some((last_scope, last_epoch)) = synced.get(plugin)
            && Arc::ptr_eq(last_scope, scope)
            && *last_epoch == epoch
        {
            return Ok(role);
        }
        let (server, login, role_name) = (self.server, self.login.as_deref(), role.as_str());
        let complete = again_while_raced("role sync", || async move {
            match server {
                Server::Postgres => sync(admin, database, role_name, login, scope).await,
                Server::MariaDb => sync_mariadb(admin, database, role_name, login, scope).await,
            }
        })
        .await
        .map_err(|e| HostError::Backend(format!("database `{database}`: role {role}: {e}")))?;
        // A table skipped because it went (or was renamed) since the listing: the next
        // statement syncs again rather than trust this sync.
        if complete {
            synced.insert(plugin.to_owned(), (scope.clone(), epoch));
        }
        Ok(role)
    }
}

/// How many times a change of roles is tried when other sessions change the schema or the
/// roles under it.
const ATTEMPTS: u32 = 5;

/// Runs `attempt` until it succeeds, fails otherwise than by [racing](raced) another session,
/// or has been tried [`ATTEMPTS`] times.
pub(super) async fn again_while_raced<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(error) if tried < ATTEMPTS && raced(&error) => {
                tracing::debug!(what, tried, %error, "raced another session's change; again");
                // Apart in time from the session it raced (which may be trying again too).
                tokio::time::sleep(Duration::from_millis(5 << tried)).await;
                tried += 1;
            }
            done => return done,
        }
    }
}

/// The SQLSTATE of a refusal by the database.
fn sql_state(error: &DbErr) -> Option<(String, String)> {
    let (DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error))) =
        error
    else {
        return None;
    };
    let refusal = error.as_database_error()?;
    Some((refusal.code()?.into_owned(), refusal.message().to_owned()))
}

/// Whether `error` is a race with a change another session (another node, plugin or the
/// platform) made at the same time: a table or schema listed a moment ago that is gone now, a
/// role created meanwhile, catalog rows updated at once.
fn raced(error: &DbErr) -> bool {
    let Some((state, message)) = sql_state(error) else {
        return false;
    };
    match state.as_str() {
        // PostgreSQL: undefined_table, undefined_object, invalid_schema_name, deadlock_detected,
        // lock_not_available (lock_timeout), unique_violation and duplicate_object (a role
        // created by two sessions at once).
        "42P01" | "42704" | "3F000" | "40P01" | "55P03" | "23505" | "42710" => true,
        // PostgreSQL's `tuple concurrently updated` (or deleted) is an internal error (XX000).
        "XX000" => message.contains("concurrently"),
        // MariaDB: no such table (1146).
        "42S02" => true,
        _ => false,
    }
}

/// Whether `error` says a table does not exist (PostgreSQL or MariaDB).
fn no_such_table(error: &DbErr) -> bool {
    sql_state(error).is_some_and(|(state, _)| matches!(state.as_str(), "42P01" | "42S02"))
}

/// PostgreSQL: `statements` in one transaction that holds the lock role syncs take, so that
/// they never update the same catalog rows as a sync on another connection.
pub(super) async fn serialised_with_syncs(
    platform: &DatabaseConnection,
    statements: &[String],
) -> Result<(), DbErr> {
    let transaction = locked_for_syncs(platform).await?;
    execute_all(&transaction, statements).await?;
    transaction.commit().await
}

/// PostgreSQL: a transaction that holds the lock role syncs take, and waits for no lock longer
/// than [`LOCK_TIMEOUT`].
async fn locked_for_syncs(
    platform: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    let transaction = platform.begin().await?;
    transaction
        .execute_unprepared(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    transaction
        .execute_unprepared(&format!("SELECT pg_advisory_xact_lock({ROLE_SYNC_LOCK})"))
        .await?;
    Ok(transaction)
}

/// PostgreSQL: the role and its grants, in one transaction that holds an advisory lock, so that
/// two syncs (of two plugins, or two nodes) never update the same catalog rows at once
/// (`tuple concurrently updated`).
async fn sync(
    platform: &DatabaseConnection,
    database: &str,
    role: &str,
    login: Option<&str>,
    scope: &Arc<dyn TableScope>,
) -> Result<bool, DbErr> {
    let transaction = locked_for_syncs(platform).await?;
    let complete = sync_grants(&transaction, database, role, login, scope).await?;
    transaction.commit().await?;
    Ok(complete)
}

/// PostgreSQL: the tables (views, foreign and partitioned tables) the platform's user can see,
/// as `information_schema.tables` lists them, each with what the role `$1` holds on it (its
/// table privileges, sorted and joined by `, ` as [`READ_GRANTS`] and [`WRITE_GRANTS`] are
/// written; an owner's implicit ones included; `*` after one held with grant option; `columns`
/// when it holds a privilege on a column) and whether the sync may lock it first (a plain or
/// foreign table it may read: `LOCK` on a view checks the view owner's rights on what it reads).
const TABLES_AND_GRANTS: &str = "\
    SELECT n.nspname AS table_schema, c.relname AS table_name, \
        concat_ws(', ', \
            (SELECT string_agg(DISTINCT a.privilege_type \
                    || CASE WHEN a.is_grantable THEN '*' ELSE '' END, ', ' \
                    ORDER BY a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END) \
                FROM aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a \
                WHERE a.grantee = r.oid), \
            (SELECT 'columns' FROM pg_attribute t, aclexplode(t.attacl) a \
                WHERE t.attrelid = c.oid AND t.attacl IS NOT NULL AND a.grantee = r.oid \
                LIMIT 1)) AS granted, \
        COALESCE(c.relkind IN ('r', 'f') AND has_table_privilege(c.oid, 'SELECT'), false) AS lockable \
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
        CROSS JOIN (SELECT oid FROM pg_roles WHERE rolname = $1) r \
    WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') \
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
        AND n.nspname NOT LIKE 'pg\\_%' \
        AND (pg_has_role(c.relowner, 'USAGE') \
            OR has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') \
            OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))";

/// What a role that reads a table holds on it.
const READ_GRANTS: &str = "SELECT";
/// What a role that writes a table holds on it (in `aclexplode`'s names, sorted).
const WRITE_GRANTS: &str = "DELETE, INSERT, REFERENCES, SELECT, TRUNCATE, UPDATE";
/// The most tables a sync locks (each lock is a slot of the server's shared lock table); a
/// sync that changes more runs without locks, and is tried again if it races a change.
const MOST_LOCKS: usize = 64;
/// How long a sync (or the login's set-up) waits for a lock: another node's sync, or a table
/// another session holds.
const LOCK_TIMEOUT: &str = "2s";

/// The advisory lock key that serialises PostgreSQL role syncs.
const ROLE_SYNC_LOCK: i64 = 0x676b_726f_6c65;

async fn sync_grants<C: ConnectionTrait>(
    admin: &C,
    database: &str,
    role: &str,
    login: Option<&str>,
    scope: &Arc<dyn TableScope>,
) -> Result<bool, DbErr> {
    let backend = admin.get_database_backend();
    let role_sql = quoted(role);
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT 1 AS one FROM pg_roles WHERE rolname = $1",
            [role.into()],
        ))
        .await?
        .is_some();
    if !exists {
        admin
            .execute_unprepared(&format!("CREATE ROLE {role_sql} NOLOGIN"))
            .await?;
    }
    // The plugins' login may switch to the role (and, being `NOINHERIT`, has nothing else).
    if let Some(login) = login {
        admin
            .execute_unprepared(&format!("GRANT {role_sql} TO {}", quoted(login)))
            .await?;
    }
    // Each table with what the role holds on it now; only tables whose grants differ from the
    // scope's are touched (a sync after one new table changes one table's grants, and fewer
    // catalog rows are updated while other sessions change the schema).
    let tables = admin
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            TABLES_AND_GRANTS,
            [role.into()],
        ))
        .await?;
    let mut schemas = Vec::new();
    let mut changes = Vec::new();
    for row in tables {
        let schema: String = row.try_get("", "table_schema")?;
        let table: String = row.try_get("", "table_name")?;
        let lockable: bool = row.try_get("", "lockable")?;
        let granted: String = row.try_get("", "granted")?;
        let target = format!("{}.{}", quoted(&schema), quoted(&table));
        let (read, write) = if Store::TABLES.contains(&table.as_str()) {
            (false, false)
        } else {
            let parts: Vec<&str> = if schema == "public" {
                vec![table.as_str()]
            } else {
                vec![schema.as_str(), table.as_str()]
            };
            access(scope, database, &parts)
        };
        if (read || write) && !schemas.contains(&schema) {
            schemas.push(schema);
        }
        // A plugin that writes a table reads it in its own `WHERE`, as the guard allows.
        let wanted = match (read, write) {
            (_, true) => WRITE_GRANTS,
            (true, false) => READ_GRANTS,
            (false, false) => "",
        };
        if granted == wanted {
            continue;
        }
        // `CASCADE`: grants the role made with a grant option it should not hold go too.
        let mut statements = vec![format!("REVOKE ALL ON {target} FROM {role_sql} CASCADE")];
        if !wanted.is_empty() {
            statements.push(format!("GRANT {wanted} ON {target} TO {role_sql}"));
        }
        changes.push((target, lockable, statements));
    }
    // Table by table, each in a savepoint: locked first (until the commit no other session
    // drops or alters it, it waits), so a table dropped since the listing fails its own lock
    // or grant and is skipped, as it needs no grant; any other failure fails the sync.
    let locks = changes.len() <= MOST_LOCKS;
    let mut complete = true;
    for (target, lockable, statements) in changes {
        admin.execute_unprepared("SAVEPOINT gk_role_table").await?;
        let lock = (locks && lockable).then(|| format!("LOCK TABLE {target} IN ACCESS SHARE MODE"));
        let mut changed = Ok(());
        for statement in lock.iter().chain(&statements) {
            changed = admin.execute_unprepared(statement).await.map(drop);
            if changed.is_err() {
                break;
            }
        }
        match changed {
            Ok(()) => {
                admin
                    .execute_unprepared("RELEASE SAVEPOINT gk_role_table")
                    .await?;
            }
            Err(error) if no_such_table(&error) => {
                tracing::debug!(role, %target, "a table went before its grant");
                complete = false;
                admin
                    .execute_unprepared("ROLLBACK TO SAVEPOINT gk_role_table")
                    .await?;
            }
            Err(error) => return Err(error),
        }
    }
    let mut statements = Vec::new();
    if !schemas.contains(&"public".to_owned()) {
        schemas.push("public".to_owned());
    }
    for schema in schemas {
        statements.push(format!(
            "GRANT USAGE ON SCHEMA {} TO {role_sql}",
            quoted(&schema)
        ));
    }
    // New tables: PostgreSQL cannot limit `CREATE` by name; a plugin allowed to write any table
    // may create tables in `public` (the guard checks the name), which it then owns.
    let creates = scope.may_create_tables(database);
    statements.push(format!(
        "{} CREATE ON SCHEMA public {} {role_sql}",
        if creates { "GRANT" } else { "REVOKE" },
        if creates { "TO" } else { "FROM" }
    ));
    execute_all(admin, &statements).await?;
    tracing::debug!(role, database, complete, "plugin role grants synced");
    Ok(complete)
}

/// MariaDB: the role and its grants on the tables of the connection's database.
async fn sync_mariadb(
    admin: &DatabaseConnection,
    database: &str,
    role: &str,
    login: Option<&str>,
    scope: &Arc<dyn TableScope>,
) -> Result<bool, DbErr> {
    let backend = admin.get_database_backend();
    admin
        .execute_unprepared(&format!("CREATE ROLE IF NOT EXISTS `{role}`"))
        .await?;
    if let Some(login) = login {
        for host in MARIADB_LOGIN_HOSTS {
            admin
                .execute_unprepared(&format!("GRANT `{role}` TO '{login}'@'{host}'"))
                .await?;
        }
    }
    let schema: String = admin
        .query_one_raw(Statement::from_string(backend, "SELECT DATABASE() AS db"))
        .await?
        .map(|row| row.try_get("", "db"))
        .transpose()?
        .unwrap_or_default();
    let tables = admin
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = ?",
            [schema.clone().into()],
        ))
        .await?;
    let mut statements = Vec::new();
    for row in tables {
        let table: String = row.try_get("", "t")?;
        let target = format!("`{schema}`.`{}`", table.replace('`', "``"));
        // MariaDB refuses to revoke what was never granted: ignore that.
        let _ = admin
            .execute_unprepared(&format!("REVOKE ALL PRIVILEGES ON {target} FROM `{role}`"))
            .await;
        if Store::TABLES.contains(&table.as_str()) {
            continue;
        }
        let parts = [table.as_str()];
        let (read, write) = access(scope, database, &parts);
        if read || write {
            statements.push(format!("GRANT SELECT ON {target} TO `{role}`"));
        }
        if write {
            statements.push(format!(
                "GRANT INSERT, UPDATE, DELETE, DROP, ALTER, INDEX ON {target} TO `{role}`"
            ));
        }
    }
    let database_level = format!("`{schema}`.*");
    let _ = admin
        .execute_unprepared(&format!("REVOKE CREATE ON {database_level} FROM `{role}`"))
        .await;
    if scope.may_create_tables(database) {
        statements.push(format!("GRANT CREATE ON {database_level} TO `{role}`"));
    }
    // Each statement commits on its own: a table dropped since the listing needs no grant.
    let mut complete = true;
    for statement in &statements {
        match admin.execute_unprepared(statement).await {
            Err(error) if no_such_table(&error) => {
                tracing::debug!(role, %error, "a table went before its grant");
                complete = false;
            }
            done => {
                done?;
            }
        }
    }
    tracing::debug!(role, database, complete, "plugin role grants synced");
    Ok(complete)
}

/// The hosts the MariaDB plugin login is created for.
pub(super) const MARIADB_LOGIN_HOSTS: [&str; 2] = ["%", "localhost"];

/// Runs `statements` in order, stopping at the first error.
pub(super) async fn execute_all<C: ConnectionTrait>(
    connection: &C,
    statements: &[String],
) -> Result<(), DbErr> {
    for statement in statements {
        connection.execute_unprepared(statement).await?;
    }
    Ok(())
}

/// What `scope` lets a plugin do to a table: (read, write).
fn access(scope: &Arc<dyn TableScope>, database: &str, table: &[&str]) -> (bool, bool) {
    (
        scope.allows_table(database, table, TableAccess::Read),
        scope.allows_table(database, table, TableAccess::Write),
    )
}

/// Whether a statement may change the set of tables (so the grants must be synced again).
pub(super) fn changes_tables(sql: &str) -> bool {
    let head: String = sql
        .trim_start()
        .chars()
        .take(6)
        .collect::<String>()
        .to_ascii_uppercase();
    ["CREATE", "DROP", "ALTER"]
        .iter()
        .any(|keyword| head.starts_with(keyword))
}

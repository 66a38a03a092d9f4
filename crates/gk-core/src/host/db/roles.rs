//! PostgreSQL's own wall behind the SQL guard: a role per plugin (no login) whose grants mirror
//! its table scope, and every plugin statement run under `SET LOCAL ROLE` in a transaction of
//! its own. A statement the guard misread still meets PostgreSQL's permission checks.
//!
//! The grants are derived from the scope the sandbox hands over with each statement, table by
//! table over the database's tables, and kept in step: again whenever the plugin's scope
//! changes (a new policy version) and whenever the set of tables may have changed (a schema
//! statement ran). The platform's own tables are never granted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gk_sdk::{HostError, HostResult, TableAccess, TableScope};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::sync::Mutex;

use crate::Store;

/// The role a plugin's statements run as.
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
        .take(48)
        .collect();
    format!("gk_plugin_{clean}")
}

/// Quotes an identifier for PostgreSQL.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The roles of one database, and what each was last granted from.
#[derive(Debug)]
pub(super) struct PgRoles {
    /// The login plugin statements connect as (`None`: the platform's own).
    login: Option<String>,
    /// Bumped whenever the set of tables may have changed.
    tables_epoch: AtomicU64,
    /// Per plugin: the scope (by address) and tables epoch its grants were made from.
    synced: Mutex<HashMap<String, (usize, u64)>>,
}

impl PgRoles {
    /// The roles of a database whose plugin pool logs in as `login`.
    pub(super) fn new(login: Option<String>) -> Self {
        Self {
            login,
            tables_epoch: AtomicU64::new(0),
            synced: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that a statement may have created, dropped or renamed a table.
    pub(super) fn tables_changed(&self) {
        self.tables_epoch.fetch_add(1, Ordering::SeqCst);
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
        let wanted = (
            Arc::as_ptr(scope).cast::<()>() as usize,
            self.tables_epoch.load(Ordering::SeqCst),
        );
        let mut synced = self.synced.lock().await;
        if synced.get(plugin) == Some(&wanted) {
            return Ok(role);
        }
        sync(admin, database, &role, self.login.as_deref(), scope)
            .await
            .map_err(|e| HostError::Backend(format!("database `{database}`: role {role}: {e}")))?;
        synced.insert(plugin.to_owned(), wanted);
        Ok(role)
    }
}

async fn sync(
    admin: &DatabaseConnection,
    database: &str,
    role: &str,
    login: Option<&str>,
    scope: &Arc<dyn TableScope>,
) -> Result<(), sea_orm::DbErr> {
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
    match login {
        Some(login) => {
            admin
                .execute_unprepared(&format!("GRANT {role_sql} TO {}", quoted(login)))
                .await?;
        }
        None => {
            // A superuser may switch anyway; another platform user needs the membership.
            let _ = admin
                .execute_unprepared(&format!("GRANT {role_sql} TO CURRENT_USER"))
                .await;
        }
    }
    let tables = admin
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
             AND table_schema NOT LIKE 'pg\\_%'",
        ))
        .await?;
    let mut schemas = Vec::new();
    let mut statements = Vec::new();
    for row in tables {
        let schema: String = row.try_get("", "table_schema")?;
        let table: String = row.try_get("", "table_name")?;
        let target = format!("{}.{}", quoted(&schema), quoted(&table));
        statements.push(format!("REVOKE ALL ON {target} FROM {role_sql}"));
        if Store::TABLES.contains(&table.as_str()) {
            continue;
        }
        let parts: Vec<&str> = if schema == "public" {
            vec![table.as_str()]
        } else {
            vec![schema.as_str(), table.as_str()]
        };
        let read = scope.allows_table(database, &parts, TableAccess::Read);
        let write = scope.allows_table(database, &parts, TableAccess::Write);
        if read || write {
            // A plugin that writes a table reads it in its own `WHERE`, as the guard allows.
            statements.push(format!("GRANT SELECT ON {target} TO {role_sql}"));
        }
        if write {
            statements.push(format!(
                "GRANT INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON {target} TO {role_sql}"
            ));
        }
        if (read || write) && !schemas.contains(&schema) {
            schemas.push(schema);
        }
    }
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
    for statement in statements {
        admin.execute_unprepared(&statement).await?;
    }
    tracing::debug!(role, database, "plugin role grants synced");
    Ok(())
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

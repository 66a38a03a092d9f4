//! Database permissions: which tables of which database a plugin may read and write.

use gk_sdk::{Access, ResourcePolicy, TableAccess, TableScope, split_database};

use crate::scope::{Scope, ScopeMatch};
use crate::sql_guard::TableRef;

/// Schemas whose tables describe the server itself (users, grants, settings).
const SYSTEM_SCHEMAS: &[&str] = &[
    "information_schema",
    "pg_catalog",
    "pg_toast",
    "mysql",
    "performance_schema",
    "sys",
];

/// One granted `db` permission for one database.
#[derive(Debug)]
struct DbGrant {
    database: String,
    access: Access,
    tables: Scope,
}

/// Every `db` grant of a policy.
#[derive(Debug, Default)]
pub(crate) struct DbRules {
    grants: Vec<DbGrant>,
}

impl DbRules {
    /// Compiles the `db` permissions. Entries `@name:pattern` apply to database `name`, the rest
    /// to `default`. A permission without scope grants no table.
    pub(crate) fn compile(policy: &ResourcePolicy) -> Result<Self, String> {
        let mut grants: Vec<DbGrant> = Vec::new();
        for permission in policy.permissions_of(gk_sdk::PermissionType::Db) {
            let mut by_database: Vec<(String, Vec<&str>)> = Vec::new();
            for entry in &permission.scope {
                let (database, pattern) =
                    split_database(entry).map_err(|problem| format!("`{entry}`: {problem}"))?;
                match by_database.iter_mut().find(|(db, _)| *db == database) {
                    Some((_, patterns)) => patterns.push(pattern),
                    None => by_database.push((database, vec![pattern])),
                }
            }
            for (database, patterns) in by_database {
                grants.push(DbGrant {
                    database,
                    access: permission.access,
                    tables: Scope::compile(patterns, Some('.'))?,
                });
            }
        }
        Ok(Self { grants })
    }

    /// Whether `table` of `database` may be read (`write == false`) or written.
    pub(crate) fn allows(&self, database: &str, table: &TableRef, write: bool) -> bool {
        let parts: Vec<&str> = table.parts.iter().map(String::as_str).collect();
        let system = is_system_table(table);
        self.grants.iter().any(|grant| {
            let access_ok = if write {
                grant.access.can_write()
            } else {
                grant.access.can_read()
            };
            access_ok
                && grant.database == database
                && match grant.tables.matches(&parts) {
                    ScopeMatch::Exact => true,
                    ScopeMatch::Any | ScopeMatch::Pattern => !system,
                    ScopeMatch::No => false,
                }
        })
    }

    /// Whether any grant names `database`.
    pub(crate) fn knows_database(&self, database: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.database == database && !g.tables.is_empty())
    }
}

impl TableScope for DbRules {
    fn allows_table(&self, database: &str, table: &[&str], access: TableAccess) -> bool {
        let Some(table) = TableRef::from_parts(table) else {
            return false;
        };
        self.allows(database, &table, access == TableAccess::Write)
    }

    fn allows_function(&self, name: &str) -> bool {
        crate::sql_functions::is_allowed_function(name)
    }

    fn may_create_tables(&self, database: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.database == database && g.access.can_write() && !g.tables.is_empty())
    }
}

/// A catalog table: in a system schema, or named `pg_*` or `sqlite_*`. Wildcards never cover
/// them; a scope must name them exactly.
fn is_system_table(table: &TableRef) -> bool {
    let first = table.parts.first().map(String::as_str).unwrap_or_default();
    let name = table.table();
    (table.is_qualified() && SYSTEM_SCHEMAS.contains(&first))
        || name.starts_with("pg_")
        || name.starts_with("sqlite_")
        || first.starts_with("pg_")
}

/// Splits a query into its database and SQL.
pub(crate) fn database_of(query: &str) -> Result<(String, &str), String> {
    split_database(query).map_err(|problem| format!("malformed database prefix: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gk_sdk::{Permission, PermissionType};

    fn table(name: &str) -> TableRef {
        TableRef {
            parts: name.split('.').map(str::to_owned).collect(),
        }
    }

    fn rules(permissions: Vec<Permission>) -> DbRules {
        let mut policy = ResourcePolicy::default_for("p");
        policy.permissions = permissions;
        DbRules::compile(&policy).unwrap()
    }

    #[test]
    fn scope_and_access_per_database() {
        let r = rules(vec![
            Permission::new(PermissionType::Db, Access::Read)
                .with_scope(["ticket*", "@analytics:orders"]),
            Permission::new(PermissionType::Db, Access::ReadWrite).with_scope(["plugin_notes"]),
        ]);
        assert!(r.allows("default", &table("tickets"), false));
        assert!(!r.allows("default", &table("tickets"), true));
        assert!(r.allows("default", &table("plugin_notes"), true));
        assert!(!r.allows("default", &table("orders"), false));
        assert!(r.allows("analytics", &table("orders"), false));
        assert!(!r.allows("analytics", &table("tickets"), false));
        assert!(!r.allows("other", &table("tickets"), false));
        assert!(r.knows_database("analytics") && !r.knows_database("other"));
    }

    #[test]
    fn wildcards_never_cover_system_tables() {
        let r = rules(vec![
            Permission::new(PermissionType::Db, Access::ReadWrite).with_scope([
                "*",
                "p*",
                "pg_stat_activity",
            ]),
        ]);
        assert!(r.allows("default", &table("anything"), true));
        for system in [
            "pg_shadow",
            "sqlite_master",
            "information_schema.tables",
            "mysql.user",
            "pg_catalog.pg_authid",
        ] {
            assert!(!r.allows("default", &table(system), false), "{system}");
        }
        assert!(
            r.allows("default", &table("pg_stat_activity"), false),
            "named exactly"
        );
    }

    #[test]
    fn empty_scope_grants_nothing() {
        let r = rules(vec![Permission::new(PermissionType::Db, Access::ReadWrite)]);
        assert!(!r.allows("default", &table("tickets"), false));
    }

    #[test]
    fn database_prefixes() {
        assert_eq!(
            database_of("@Analytics:SELECT 1").unwrap(),
            ("analytics".to_owned(), "SELECT 1")
        );
        assert_eq!(
            database_of("SELECT 1").unwrap(),
            ("default".to_owned(), "SELECT 1")
        );
        assert!(
            database_of("@evil db:SELECT 1")
                .unwrap_err()
                .contains("is not a database name")
        );
        assert!(database_of("@nocolon SELECT 1").is_err());
    }
}

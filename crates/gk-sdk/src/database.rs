//! The `@name:` prefix that selects a named database in `db_query` and `db_exec`.

/// The database a query runs on when it has no `@name:` prefix.
pub const DEFAULT_DATABASE: &str = "default";

/// Splits `@name:SQL` into (`name`, `SQL`) with the name lower-cased; a query without the
/// prefix is (`default`, query). A prefix that is not `@` + letters, digits, `_` or `-` + `:`
/// is an error naming the problem.
///
/// ```
/// assert_eq!(gk_sdk::split_database("@Analytics:SELECT 1"), Ok(("analytics".to_owned(), "SELECT 1")));
/// assert_eq!(gk_sdk::split_database("SELECT 1"), Ok(("default".to_owned(), "SELECT 1")));
/// assert_eq!(
///     gk_sdk::split_database("@bad name:SELECT 1"),
///     Err(gk_sdk::DatabasePrefixError::BadName { name: "bad name".into() })
/// );
/// ```
pub fn split_database(query: &str) -> Result<(String, &str), DatabasePrefixError> {
    let Some(rest) = query.trim_start().strip_prefix('@') else {
        return Ok((DEFAULT_DATABASE.to_owned(), query));
    };
    let Some((name, sql)) = rest.split_once(':') else {
        return Err(DatabasePrefixError::Unterminated);
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(DatabasePrefixError::BadName {
            name: name.to_owned(),
        });
    }
    Ok((name.to_ascii_lowercase(), sql))
}

/// Why a query's `@name:` prefix is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabasePrefixError {
    /// `@` without the `:` that ends the name.
    #[error("a database prefix is written `@name:`")]
    Unterminated,
    /// A name that is empty or holds other than letters, digits, `_` and `-`.
    #[error("`{name}` is not a database name")]
    BadName {
        /// The name as written.
        name: String,
    },
}

/// What a statement does to a table, as the database engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableAccess {
    /// Reading rows.
    Read,
    /// Inserting, changing or deleting rows, or changing the table's schema.
    Write,
}

/// What the database engine may let one plugin's statements touch: the engine-side copy of the
/// plugin's `db` permissions, checked by the engine itself (the SQLite authorizer, a database
/// role) behind the SQL guard, so that a statement the guard misread still cannot leave its scope.
pub trait TableScope: Send + Sync + std::fmt::Debug {
    /// Whether `table` (its name parts, schema first, lower-cased) of `database` may be accessed.
    fn allows_table(&self, database: &str, table: &[&str], access: TableAccess) -> bool;

    /// Whether the SQL function `name` (lower-cased) may be called.
    fn allows_function(&self, name: &str) -> bool;

    /// Whether statements may create new tables in `database` (engines that cannot limit
    /// `CREATE` by name grant it only then; the guard checks the name).
    fn may_create_tables(&self, database: &str) -> bool {
        let _ = database;
        false
    }
}

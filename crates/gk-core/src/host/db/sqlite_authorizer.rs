//! The SQLite engine's own wall behind the SQL guard: an authorizer (`sqlite3_set_authorizer`)
//! on every connection of the plugin pool.
//!
//! SQLite asks the authorizer about every table, column, function and operation while it
//! compiles a statement. A plugin statement runs while an [`ActiveStatement`] holds its rules
//! for that connection; at any other moment (no statement, or one whose caller gave up before
//! SQLite compiled it) the authorizer denies everything. So a statement the guard misread still
//! cannot touch a table outside the plugin's [`TableScope`], attach a file, run a pragma or call
//! a function that is not on the allowed list.
//!
//! The rules are found by the connection's handle address in a process-wide map, never through a
//! pointer whose lifetime SQLite would have to respect: a statement that outlives its caller
//! finds no rules, and is denied.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use dashmap::DashMap;
use gk_sdk::{TableAccess, TableScope};
use libsqlite3_sys as ffi;

/// What one plugin statement may touch, and what the engine refused it.
#[derive(Debug)]
pub(crate) struct StatementRules {
    database: String,
    scope: Arc<dyn TableScope>,
    refused: Mutex<Vec<String>>,
    /// Whether this statement was allowed a `CREATE`/`DROP`/`ALTER`: SQLite then reads its
    /// schema table on its behalf.
    schema_change: AtomicBool,
}

impl StatementRules {
    pub(crate) fn new(database: &str, scope: Arc<dyn TableScope>) -> Self {
        Self {
            database: database.to_owned(),
            scope,
            refused: Mutex::new(Vec::new()),
            schema_change: AtomicBool::new(false),
        }
    }

    /// What the engine refused this statement, as `operation object` lines.
    pub(crate) fn refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the statement was allowed to change the schema (such statements are not kept
    /// compiled).
    pub(crate) fn changes_schema(&self) -> bool {
        self.schema_change.load(Ordering::Relaxed)
    }

    fn refuse(&self, what: String) {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }
}

/// The rules of the statement now running on each connection, by handle address.
static ACTIVE: LazyLock<DashMap<usize, Arc<StatementRules>>> = LazyLock::new(DashMap::new);

fn key_of(handle: NonNull<ffi::sqlite3>) -> usize {
    handle.as_ptr() as usize
}

/// Installs the authorizer on a new connection of the plugin pool. From then on the connection
/// compiles nothing but what an [`ActiveStatement`] allows.
///
/// `max_value_bytes` caps every string or blob the connection builds (`SQLITE_LIMIT_LENGTH`),
/// so a statement cannot make a value of gigabytes in the host's memory.
pub(crate) fn install(handle: NonNull<ffi::sqlite3>, max_value_bytes: usize) -> Result<(), String> {
    let key = key_of(handle);
    let limit = i32::try_from(max_value_bytes).unwrap_or(i32::MAX).max(1024);
    // SAFETY: as below; `sqlite3_limit` only lowers a limit of this open connection.
    unsafe {
        ffi::sqlite3_limit(handle.as_ptr(), ffi::SQLITE_LIMIT_LENGTH, limit);
    }
    // An earlier connection at the same address left nothing behind that applies here.
    ACTIVE.remove(&key);
    // SAFETY: `handle` is an open connection, locked for us by sqlx (no other thread uses it
    // during this call). The user data is the handle's address as a plain number, never
    // dereferenced, so no lifetime is involved.
    let code = unsafe {
        ffi::sqlite3_set_authorizer(handle.as_ptr(), Some(authorize), key as *mut c_void)
    };
    if code == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_set_authorizer failed with code {code}"))
    }
}

/// While alive, statements compiled on one connection are judged by one plugin's rules.
#[derive(Debug)]
pub(crate) struct ActiveStatement {
    key: usize,
}

impl ActiveStatement {
    /// Puts `rules` in force on the connection `handle`.
    pub(crate) fn begin(handle: NonNull<ffi::sqlite3>, rules: Arc<StatementRules>) -> Self {
        let key = key_of(handle);
        ACTIVE.insert(key, rules);
        Self { key }
    }
}

impl Drop for ActiveStatement {
    fn drop(&mut self) {
        ACTIVE.remove(&self.key);
    }
}

/// Reads an optional C string argument of the authorizer.
///
/// # Safety
/// `text` is null or a NUL-terminated string valid for the duration of the callback.
unsafe fn text<'a>(text: *const c_char) -> Option<&'a str> {
    if text.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller (SQLite passes NUL-terminated UTF-8 names).
        unsafe { CStr::from_ptr(text) }.to_str().ok()
    }
}

unsafe extern "C" fn authorize(
    user_data: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    database: *const c_char,
    _trigger_or_view: *const c_char,
) -> c_int {
    let key = user_data as usize;
    // SAFETY: SQLite passes null or NUL-terminated strings valid during this callback.
    let (first, second, database) = unsafe { (text(first), text(second), text(database)) };
    // No unwinding across the FFI boundary: a panic here denies.
    let allowed = std::panic::catch_unwind(|| {
        let Some(rules) = ACTIVE.get(&key).map(|r| r.clone()) else {
            return false;
        };
        let allowed = decide(&rules, action, first, second, database);
        if !allowed {
            rules.refuse(describe(action, first, second));
        }
        allowed
    })
    .unwrap_or(false);
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// SQLite's own schema table: SQLite writes it for `CREATE`/`DROP`/`ALTER` (allowed when the
/// table they name is), and refuses user SQL that writes it unless `writable_schema` is on,
/// which needs a pragma (always denied).
fn is_schema_table(table: &str) -> bool {
    table.eq_ignore_ascii_case("sqlite_master") || table.eq_ignore_ascii_case("sqlite_schema")
}

fn decide(
    rules: &StatementRules,
    action: c_int,
    first: Option<&str>,
    second: Option<&str>,
    database: Option<&str>,
) -> bool {
    // Only the connection's own database: never `temp` or an attached one.
    let main = matches!(database, None | Some("main"));
    let table = |name: Option<&str>, access: TableAccess| {
        main && name.is_some_and(|t| rules.scope.allows_table(&rules.database, &[t], access))
    };
    let schema_change = |allowed: bool| {
        if allowed {
            rules.schema_change.store(true, Ordering::Relaxed);
        }
        allowed
    };
    match action {
        ffi::SQLITE_SELECT | ffi::SQLITE_RECURSIVE => true,
        // SQLite's own bookkeeping of a schema change it has allowed.
        ffi::SQLITE_READ
            if main
                && first.is_some_and(is_schema_table)
                && rules.schema_change.load(Ordering::Relaxed) =>
        {
            true
        }
        // A source used without any of its columns (`count(*)`, `SELECT 1 FROM t`): SQLite
        // names CTEs and tables alike here, without a database, so a CTE named like a table
        // cannot be told apart. Only the number of rows can be learnt this way; every column
        // read is checked below, and the guard refuses the table itself.
        ffi::SQLITE_READ if database.is_none() && second == Some("") => true,
        // A table the plugin may write may also be read by the statement that writes it (a
        // `WHERE` on its own columns), as the guard allows.
        ffi::SQLITE_READ => table(first, TableAccess::Read) || table(first, TableAccess::Write),
        ffi::SQLITE_INSERT | ffi::SQLITE_UPDATE | ffi::SQLITE_DELETE => {
            (main && first.is_some_and(is_schema_table)) || table(first, TableAccess::Write)
        }
        ffi::SQLITE_CREATE_TABLE
        | ffi::SQLITE_DROP_TABLE
        | ffi::SQLITE_CREATE_VIEW
        | ffi::SQLITE_DROP_VIEW => schema_change(table(first, TableAccess::Write)),
        ffi::SQLITE_CREATE_INDEX | ffi::SQLITE_DROP_INDEX => {
            schema_change(table(second, TableAccess::Write))
        }
        // The first argument is the database name here.
        ffi::SQLITE_ALTER_TABLE => {
            schema_change(matches!(first, Some("main")) && table(second, TableAccess::Write))
        }
        ffi::SQLITE_FUNCTION => {
            second.is_some_and(|f| rules.scope.allows_function(&f.to_ascii_lowercase()))
        }
        // PRAGMA, ATTACH, DETACH, transactions, savepoints, triggers, temporary objects,
        // virtual tables, REINDEX, ANALYZE: never a plugin's.
        _ => false,
    }
}

fn describe(action: c_int, first: Option<&str>, second: Option<&str>) -> String {
    let operation = match action {
        ffi::SQLITE_READ => "read",
        ffi::SQLITE_INSERT => "insert into",
        ffi::SQLITE_UPDATE => "update",
        ffi::SQLITE_DELETE => "delete from",
        ffi::SQLITE_CREATE_TABLE | ffi::SQLITE_CREATE_VIEW | ffi::SQLITE_CREATE_INDEX => "create",
        ffi::SQLITE_DROP_TABLE | ffi::SQLITE_DROP_VIEW | ffi::SQLITE_DROP_INDEX => "drop",
        ffi::SQLITE_ALTER_TABLE => "alter",
        ffi::SQLITE_FUNCTION => "call function",
        ffi::SQLITE_PRAGMA => "pragma",
        ffi::SQLITE_ATTACH => "attach",
        ffi::SQLITE_DETACH => "detach",
        ffi::SQLITE_TRANSACTION => "transaction",
        _ => "operation",
    };
    let object = match action {
        ffi::SQLITE_FUNCTION | ffi::SQLITE_ALTER_TABLE => second,
        ffi::SQLITE_CREATE_INDEX | ffi::SQLITE_DROP_INDEX => second,
        _ => first,
    };
    match object {
        Some(object) => format!("{operation} `{object}`"),
        None => format!("{operation} (code {action})"),
    }
}

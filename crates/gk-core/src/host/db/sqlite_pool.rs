//! Plugin statements on SQLite, run on the caller's thread: the plugin pool's connections are
//! SQLite handles of their own (not sqlx's), each with the authorizer, the value-size limit, a
//! deadline checked by a progress handler, and a cache of compiled statements.
//!
//! Why not sqlx: a sqlx SQLite connection lives on a thread of its own, so one plugin statement
//! crossed threads about eight times (lock the handle for the authorizer, the statement, its
//! rows, unlock). And sqlx's statement cache is keyed by SQL text alone, while SQLite consults the
//! authorizer only when it compiles: a statement compiled under one plugin's rules must never run
//! for another plugin, or under an older policy of the same plugin.
//!
//! So a compiled statement is reused only for the same plugin, the same scope object (the sandbox
//! compiles a new one for each policy version, so this is the policy generation) and the same
//! checked SQL. The cache holds a weak reference to the scope, so its address cannot be reused by
//! a newer scope while the entry lives. SQLite recompiling a cached statement after a schema
//! change asks the authorizer again, under the rules of the statement being run (the same
//! plugin and scope). Statements that change the schema are never cached.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int, c_void};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use gk_sdk::{HostError, HostResult, TableScope};
use libsqlite3_sys as ffi;
use tokio::sync::Semaphore;

use super::Limits;
use super::results::Collected;
use super::sqlite_authorizer::{ActiveStatement, StatementRules, install};
use super::sqlite_values::{Column, bind_all, read_row};
use super::sqlite_watchdog::Watched;
use super::timed_out;

/// Compiled statements kept per connection (the least recently used one makes way).
const STATEMENTS_PER_CONNECTION: usize = 64;

/// How long a statement waits for a lock another connection holds (as sqlx's default).
const BUSY_TIMEOUT_MS: c_int = 5_000;

/// How often (in SQLite virtual machine steps) a plugin statement checks its deadline.
const DEADLINE_STEPS: c_int = 1000;

/// How long a statement may run in an inline attempt ([`gk_sdk::inline`]), on a thread that
/// must not wait: past it the statement is interrupted (a read changed nothing) and refused.
pub(super) const INLINE_BUDGET: Duration = Duration::from_micros(250);

/// How to open a connection of the pool.
#[derive(Debug)]
struct Target {
    filename: CString,
    flags: c_int,
    memory: bool,
    max_value_bytes: usize,
}

/// The SQLite connections plugin statements run on, opened on first need, at most `size`.
pub(super) struct SqlitePluginPool {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    slots: Arc<Semaphore>,
    size: usize,
}

impl fmt::Debug for SqlitePluginPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlitePluginPool")
            .field("target", &self.target)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl SqlitePluginPool {
    /// A pool on `filename` as sqlx names it (for an in-memory database, the shared-cache name
    /// sqlx gave the platform's pool, so both see the same database).
    pub(super) fn new(
        filename: &str,
        memory: bool,
        size: usize,
        max_value_bytes: usize,
    ) -> Result<Self, String> {
        let filename = CString::new(filename).map_err(|_| "the file name holds a NUL byte")?;
        let cache = if memory {
            ffi::SQLITE_OPEN_MEMORY | ffi::SQLITE_OPEN_SHAREDCACHE
        } else {
            ffi::SQLITE_OPEN_PRIVATECACHE
        };
        let flags = ffi::SQLITE_OPEN_URI
            | ffi::SQLITE_OPEN_READWRITE
            | ffi::SQLITE_OPEN_CREATE
            | ffi::SQLITE_OPEN_NOMUTEX
            | cache;
        let size = size.max(1);
        let pool = Self {
            target: Target {
                filename,
                flags,
                memory,
                max_value_bytes,
            },
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Arc::new(Semaphore::new(size)),
            size,
        };
        // One connection at once: a database that cannot be opened fails the start, and an
        // in-memory database is kept alive by it.
        let first = Connection::open(&pool.target)?;
        if let Ok(mut idle) = pool.idle.lock() {
            idle.push(first);
        }
        Ok(pool)
    }

    /// The most connections the pool opens.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Runs one plugin statement under `scope` on a connection of the pool: on this thread on
    /// a multi-threaded runtime (see [`blocking`]), on a blocking thread otherwise. In an
    /// inline attempt, on this thread at once, or refused (see [`Connection::run`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run(
        self: &Arc<Self>,
        plugin: &str,
        database: &str,
        scope: &Arc<dyn TableScope>,
        sql: &str,
        values: Vec<sea_orm::Value>,
        limits: Limits,
        collect: Collected,
    ) -> HostResult<Collected> {
        let inline = gk_sdk::inline::is_attempt();
        let deadline = if inline {
            let budget = Instant::now() + INLINE_BUDGET;
            gk_sdk::inline::deadline().map_or(budget, |by| by.min(budget))
        } else {
            Instant::now() + limits.query_timeout
        };
        let job = Job {
            plugin: plugin.to_owned(),
            database: database.to_owned(),
            scope: scope.clone(),
            sql: sql.to_owned(),
            values,
            deadline,
            limits,
            inline,
        };
        if inline {
            let Ok(_slot) = self.slots.try_acquire() else {
                return Err(gk_sdk::inline::refuse(
                    format!("every connection to database `{database}` is busy"),
                    false,
                ));
            };
            return self.run_here(&job, collect);
        }
        let slot = tokio::time::timeout(limits.query_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| timed_out(limits.query_timeout))?
            .map_err(|_| HostError::Unavailable("the database is closing".into()))?;
        let pool = Arc::clone(self);
        blocking(move || {
            let _slot = slot;
            pool.run_here(&job, collect)
        })
        .await
    }

    /// Runs `job` on this thread on a connection of the pool (an inline job only on an idle
    /// one: opening one reads files).
    fn run_here(&self, job: &Job, collect: Collected) -> HostResult<Collected> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut connection = match idle {
            Some(connection) => connection,
            None if job.inline => {
                return Err(gk_sdk::inline::refuse(
                    format!(
                        "no connection to database `{}` is open and idle",
                        job.database
                    ),
                    false,
                ));
            }
            None => Connection::open(&self.target).map_err(|problem| {
                HostError::Backend(format!("database `{}`: {problem}", job.database))
            })?,
        };
        let result = connection.run(job, collect);
        // A connection left inside a transaction is not given to the next statement.
        if connection.in_autocommit()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(connection);
        }
        result
    }
}

/// Runs blocking database work. On a worker of a multi-threaded runtime it runs on this thread
/// once the runtime has moved its other tasks to another thread (`block_in_place`); a WASM
/// guest's host call (a blocking thread inside `Handle::block_on`) runs it as it is. A
/// current-thread runtime, which has no thread to spare, gets a blocking thread.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> HostResult<R> + Send + 'static,
) -> HostResult<R> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        Ok(_) => tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
            Err(HostError::Backend(format!(
                "the statement's thread failed: {e}"
            )))
        }),
        Err(_) => work(),
    }
}

/// One statement to run.
struct Job {
    plugin: String,
    database: String,
    scope: Arc<dyn TableScope>,
    sql: String,
    values: Vec<sea_orm::Value>,
    deadline: Instant,
    limits: Limits,
    /// An inline attempt: read-only statements only, no waiting for a lock, interrupted at
    /// `deadline` and then refused.
    inline: bool,
}

/// A compiled statement kept for reuse, and whose it is.
struct Cached {
    plugin: Box<str>,
    /// Keeps the scope's address from being reused while this entry lives.
    scope: Weak<dyn TableScope>,
    statement: NonNull<ffi::sqlite3_stmt>,
    used: u64,
}

/// The cache key: the scope's address and the checked SQL (the plugin is compared on a hit).
type Key = (usize, Box<str>);

/// An open SQLite connection of the plugin pool.
struct Connection {
    handle: NonNull<ffi::sqlite3>,
    /// Read by the progress handler; the statement running stops past it.
    deadline: Box<Cell<Instant>>,
    statements: HashMap<Key, Cached>,
    uses: u64,
    /// Interrupts an inline statement at its deadline; `None` if the watchdog did not start.
    watched: Option<Arc<Watched>>,
}

// SAFETY: the connection is opened in SQLite's multi-thread mode (`SQLITE_OPEN_NOMUTEX`), in
// which a connection may move between threads as long as one thread uses it at a time: it is
// owned by the pool's idle list or by the one statement running on it, never shared.
unsafe impl Send for Connection {}

/// An error of SQLite: its result code and message.
struct Failure {
    code: c_int,
    message: String,
}

impl Connection {
    fn open(target: &Target) -> Result<Self, String> {
        let mut raw = ptr::null_mut();
        // SAFETY: a NUL-terminated file name, an out pointer, no VFS name.
        let code = unsafe {
            ffi::sqlite3_open_v2(
                target.filename.as_ptr(),
                &mut raw,
                target.flags,
                ptr::null(),
            )
        };
        let handle = NonNull::new(raw).ok_or("SQLite could not allocate a connection")?;
        let connection = Self {
            handle,
            deadline: Box::new(Cell::new(Instant::now())),
            statements: HashMap::new(),
            uses: 0,
            watched: Watched::register(handle),
        };
        if code != ffi::SQLITE_OK {
            return Err(connection.failure(code).to_string());
        }
        // SAFETY: an open connection used by this thread only.
        unsafe {
            ffi::sqlite3_extended_result_codes(handle.as_ptr(), 1);
            ffi::sqlite3_busy_timeout(handle.as_ptr(), BUSY_TIMEOUT_MS);
        }
        // As the platform's connections (sqlx's defaults and `sqlite_file_options`); before the
        // authorizer, which denies every pragma.
        connection.setup("PRAGMA foreign_keys = ON")?;
        if !target.memory {
            connection.setup("PRAGMA synchronous = NORMAL")?;
        }
        install(handle, target.max_value_bytes)?;
        let deadline: *const Cell<Instant> = &*connection.deadline;
        // SAFETY: the handler's data is the boxed deadline, which lives until `drop` has closed
        // the connection (the handler is never called after that).
        unsafe {
            ffi::sqlite3_progress_handler(
                handle.as_ptr(),
                DEADLINE_STEPS,
                Some(past_deadline),
                deadline.cast_mut().cast(),
            );
        }
        Ok(connection)
    }

    /// Runs a trusted setup statement.
    fn setup(&self, sql: &str) -> Result<(), String> {
        let sql = CString::new(sql).map_err(|_| "a NUL byte in setup SQL")?;
        // SAFETY: an open connection, a NUL-terminated statement, no callback.
        let code = unsafe {
            ffi::sqlite3_exec(
                self.handle.as_ptr(),
                sql.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if code == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.failure(code).to_string())
        }
    }

    fn in_autocommit(&self) -> bool {
        // SAFETY: an open connection.
        unsafe { ffi::sqlite3_get_autocommit(self.handle.as_ptr()) != 0 }
    }

    fn failure(&self, code: c_int) -> Failure {
        // SAFETY: an open connection; the message is copied before any other call.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.handle.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        Failure { code, message }
    }

    /// Runs `job` under its plugin's rules and sorts out what SQLite said. An inline job
    /// never waits for a lock (SQLite's busy handler is off for it) and is refused when its
    /// statement would write, met a lock, or was interrupted at its short deadline.
    fn run(&mut self, job: &Job, collect: Collected) -> HostResult<Collected> {
        self.deadline.set(job.deadline);
        let rules = Arc::new(StatementRules::new(&job.database, job.scope.clone()));
        let active = ActiveStatement::begin(self.handle, rules.clone());
        let result = if job.inline {
            // One step can outlast the progress handler's checks (a table's count is one): the
            // watchdog interrupts it from outside.
            let Some(watched) = self.watched.clone() else {
                return Err(gk_sdk::inline::refuse(
                    "the SQLite watchdog is not running",
                    true,
                ));
            };
            // SAFETY: an open connection used by this thread only.
            unsafe { ffi::sqlite3_busy_timeout(self.handle.as_ptr(), 0) };
            watched.arm(job.deadline);
            let result = self.execute(job, &rules, collect);
            // After `execute` has reset the statement. An interrupt the watchdog sends between
            // the reset and here is forgotten when the connection's next statement starts
            // (SQLite clears it then when no other statement of the connection is running).
            watched.disarm();
            // SAFETY: as above.
            unsafe { ffi::sqlite3_busy_timeout(self.handle.as_ptr(), BUSY_TIMEOUT_MS) };
            result
        } else {
            self.execute(job, &rules, collect)
        };
        drop(active);
        let refused = rules.refused();
        if !refused.is_empty() {
            tracing::error!(
                database = %job.database,
                sql = %job.sql,
                refused = ?refused,
                "the database engine refused what the SQL guard allowed (a guard defect)"
            );
        }
        let database = &job.database;
        result.map_err(|failure| match failure {
            Err(host) => host,
            Ok(f) if job.inline && f.code & 0xff == ffi::SQLITE_INTERRUPT => {
                gk_sdk::inline::refuse("the statement outlasted the inline budget", false)
            }
            Ok(f)
                if job.inline && matches!(f.code & 0xff, ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED) =>
            {
                gk_sdk::inline::refuse(format!("database `{database}` is locked"), false)
            }
            Ok(f) if f.code & 0xff == ffi::SQLITE_INTERRUPT => timed_out(job.limits.query_timeout),
            // SQLite says `not authorized` with SQLITE_AUTH, or SQLITE_ERROR for a function.
            Ok(f) if f.code & 0xff == ffi::SQLITE_AUTH || f.message.contains("not authorized") => {
                HostError::denied(
                    "db",
                    format!(
                        "the database engine refused the statement ({})",
                        refused.join(", ")
                    ),
                )
            }
            Ok(f) => HostError::Backend(format!("database `{database}`: {f}")),
        })
    }

    /// Prepares (or finds) the statement, binds, steps, collects. The error is SQLite's, or
    /// the host's (a cap, an argument).
    fn execute(
        &mut self,
        job: &Job,
        rules: &StatementRules,
        mut collect: Collected,
    ) -> Result<Collected, Result<Failure, HostError>> {
        self.uses += 1;
        let key: Key = (
            Arc::as_ptr(&job.scope).cast::<()>() as usize,
            job.sql.as_str().into(),
        );
        let cached = self
            .statements
            .get_mut(&key)
            .filter(|c| *c.plugin == *job.plugin && c.scope.strong_count() > 0)
            .map(|c| {
                c.used = self.uses;
                c.statement
            });
        let (statement, keep) = match cached {
            Some(statement) => (statement, true),
            None => {
                // An inline job does not wait for a locked schema.
                let wait_until = if job.inline {
                    Instant::now()
                } else {
                    job.deadline
                };
                let statement = self.prepare(&job.sql, wait_until).map_err(Ok)?;
                // A statement that changed the schema is compiled each time.
                let keep = !rules.changes_schema();
                (statement, keep)
            }
        };
        // SAFETY: a live statement of this connection.
        let writes = unsafe { ffi::sqlite3_stmt_readonly(statement.as_ptr()) } == 0;
        let outcome = if job.inline && writes {
            Err(Err(gk_sdk::inline::refuse(
                "the statement writes to the database",
                true,
            )))
        } else if job.inline && Instant::now() >= job.deadline {
            // Its time went on compiling it: an interrupt sent before the first step is lost.
            Err(Err(gk_sdk::inline::refuse(
                "the statement outlasted the inline budget",
                false,
            )))
        } else {
            self.step_all(statement, job, &mut collect)
        };
        // SAFETY: `statement` is a live statement of this connection; a reset ends its read
        // transaction, and cleared bindings drop the arguments' copies.
        unsafe {
            ffi::sqlite3_reset(statement.as_ptr());
            ffi::sqlite3_clear_bindings(statement.as_ptr());
        }
        if keep && cached.is_none() {
            self.remember(key, job, statement);
        } else if !keep {
            // SAFETY: a statement of this connection that nothing else holds.
            unsafe { ffi::sqlite3_finalize(statement.as_ptr()) };
        }
        outcome.map(|()| collect)
    }

    fn remember(&mut self, key: Key, job: &Job, statement: NonNull<ffi::sqlite3_stmt>) {
        if self.statements.len() >= STATEMENTS_PER_CONNECTION {
            // Statements of replaced policies first, then the least recently used one.
            let dead: Vec<Key> = self
                .statements
                .iter()
                .filter(|(_, c)| c.scope.strong_count() == 0)
                .map(|(k, _)| k.clone())
                .collect();
            let evict = if dead.is_empty() {
                self.statements
                    .iter()
                    .min_by_key(|(_, c)| c.used)
                    .map(|(k, _)| k.clone())
                    .into_iter()
                    .collect()
            } else {
                dead
            };
            for key in evict {
                if let Some(old) = self.statements.remove(&key) {
                    // SAFETY: a statement of this connection, no longer referenced.
                    unsafe { ffi::sqlite3_finalize(old.statement.as_ptr()) };
                }
            }
        }
        let entry = Cached {
            plugin: job.plugin.as_str().into(),
            scope: Arc::downgrade(&job.scope),
            statement,
            used: self.uses,
        };
        if let Some(old) = self.statements.insert(key, entry) {
            // The same SQL and scope address for another plugin (or a dead scope): replaced.
            // SAFETY: as above.
            unsafe { ffi::sqlite3_finalize(old.statement.as_ptr()) };
        }
    }

    /// Compiles one statement (the authorizer judges it now).
    fn prepare(&self, sql: &str, deadline: Instant) -> Result<NonNull<ffi::sqlite3_stmt>, Failure> {
        let length = c_int::try_from(sql.len()).map_err(|_| Failure {
            code: ffi::SQLITE_TOOBIG,
            message: "the statement is too long".into(),
        })?;
        loop {
            let mut raw = ptr::null_mut();
            let mut tail = ptr::null();
            // SAFETY: `sql` is valid for `length` bytes; out pointers are ours.
            let code = unsafe {
                ffi::sqlite3_prepare_v3(
                    self.handle.as_ptr(),
                    sql.as_ptr().cast(),
                    length,
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut raw,
                    &mut tail,
                )
            };
            if code != ffi::SQLITE_OK {
                if code & 0xff == ffi::SQLITE_LOCKED && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                return Err(self.failure(code));
            }
            let Some(statement) = NonNull::new(raw) else {
                return Err(Failure {
                    code: ffi::SQLITE_MISUSE,
                    message: "the statement is empty".into(),
                });
            };
            // SAFETY: SQLite sets `tail` inside the input (or at its end).
            let consumed = (tail as usize).saturating_sub(sql.as_ptr() as usize);
            let rest = sql.get(consumed..).unwrap_or_default();
            if !rest
                .trim_matches(|c: char| c.is_whitespace() || c == ';')
                .is_empty()
            {
                // SAFETY: the statement just compiled, held by nothing else.
                unsafe { ffi::sqlite3_finalize(statement.as_ptr()) };
                return Err(Failure {
                    code: ffi::SQLITE_MISUSE,
                    message: "one statement at a time".into(),
                });
            }
            return Ok(statement);
        }
    }

    /// Binds the arguments and steps the statement to its end.
    fn step_all(
        &self,
        statement: NonNull<ffi::sqlite3_stmt>,
        job: &Job,
        collect: &mut Collected,
    ) -> Result<(), Result<Failure, HostError>> {
        let stmt = statement.as_ptr();
        bind_all(stmt, &job.values).map_err(Err)?;
        let wants_rows = collect.wants_rows();
        let mut columns: Option<Vec<Column>> = None;
        let mut delivered = false;
        loop {
            // SAFETY: a live statement of this connection, used by this thread only.
            let code = unsafe { ffi::sqlite3_step(stmt) };
            match code {
                ffi::SQLITE_ROW if wants_rows => {
                    let columns = columns.get_or_insert_with(|| Column::all(stmt));
                    let row = read_row(stmt, columns)
                        .map_err(|problem| {
                            HostError::Backend(format!("database `{}`: {problem}", job.database))
                        })
                        .map_err(Err)?;
                    delivered = true;
                    collect.push(row, &job.limits).map_err(Err)?;
                }
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => break,
                // Another connection of a shared-cache (in-memory) database holds the table.
                code if code & 0xff == ffi::SQLITE_LOCKED
                    && !delivered
                    && !job.inline
                    && Instant::now() < job.deadline =>
                {
                    // SAFETY: as above; the bindings stay.
                    unsafe { ffi::sqlite3_reset(stmt) };
                    std::thread::sleep(Duration::from_millis(1));
                }
                code => return Err(Ok(self.failure(code))),
            }
        }
        if !wants_rows {
            // SAFETY: an open connection.
            let changes = unsafe { ffi::sqlite3_changes64(self.handle.as_ptr()) };
            collect.set_affected(u64::try_from(changes).unwrap_or(0));
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(watched) = &self.watched {
            watched.close();
        }
        for (_, cached) in self.statements.drain() {
            // SAFETY: statements of this connection, finalized once.
            unsafe { ffi::sqlite3_finalize(cached.statement.as_ptr()) };
        }
        // SAFETY: the connection is closed once; no statement of it is left.
        unsafe { ffi::sqlite3_close(self.handle.as_ptr()) };
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

/// The progress handler: a non-zero answer interrupts the statement.
unsafe extern "C" fn past_deadline(data: *mut c_void) -> c_int {
    // SAFETY: `data` is the connection's boxed deadline, alive while the connection is open.
    let deadline = unsafe { &*data.cast::<Cell<Instant>>() };
    c_int::from(Instant::now() >= deadline.get())
}

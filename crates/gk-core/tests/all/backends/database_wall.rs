//! The database wall, against the real engines: the guard's refusals per dialect, the engine's
//! own enforcement with the guard out of the way (SQLite's authorizer), queries stopped at
//! their deadline inside the engine, and a differential run of generated SQL (whatever the
//! guard lets through, the engine never has to refuse).

use std::sync::Arc;
use std::time::Duration;

use gk_core::host::{
    ConfigValues, DatabaseConfig, Databases, HostServices, HttpClient, HttpConfig, MemoryCache,
    PluginLogs, ProductionHost, Translations,
};
use gk_sandbox::{SandboxConfig, SandboxedHostApi, SqlDialect};
use gk_sdk::{
    Access, CallContext, HostApi, HostError, Permission, PermissionType, PolicyStatus,
    ResourcePolicy, TableAccess, TableScope,
};
use serde_json::json;

use super::databases::Kind;
use crate::common::service_url;

/// A scope of plain table names, for calling the engine layer directly.
#[derive(Debug)]
pub(crate) struct TablesScope {
    read: Vec<String>,
    write: Vec<String>,
}

impl TablesScope {
    pub(crate) fn new(read: &[&str], write: &[&str]) -> Self {
        Self {
            read: read.iter().map(|t| t.to_string()).collect(),
            write: write.iter().map(|t| t.to_string()).collect(),
        }
    }
}

impl TableScope for TablesScope {
    fn allows_table(&self, _database: &str, table: &[&str], access: TableAccess) -> bool {
        let [name] = table else { return false };
        let list = match access {
            TableAccess::Read => &self.read,
            TableAccess::Write => &self.write,
        };
        list.iter().any(|t| t == name)
    }

    fn allows_function(&self, name: &str) -> bool {
        matches!(name, "count" | "max" | "abs" | "length" | "lower")
    }
}

pub(crate) fn scope(read: &[&str], write: &[&str]) -> Arc<dyn TableScope> {
    Arc::new(TablesScope::new(read, write))
}

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

pub(crate) async fn sqlite(dir: &tempfile::TempDir, timeout: Duration) -> Databases {
    let url = format!("sqlite://{}", dir.path().join("wall.db").display());
    Databases::connect(&DatabaseConfig {
        query_timeout: timeout,
        ..DatabaseConfig::single(url)
    })
    .await
    .unwrap()
}

/// With no SQL guard in front, SQLite's authorizer alone keeps a statement inside its scope.
#[tokio::test]
async fn sqlite_engine_alone_keeps_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir, Duration::from_secs(5)).await;
    for setup in [
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)",
        "CREATE TABLE secret (id INTEGER PRIMARY KEY, pw TEXT)",
        "INSERT INTO tickets (title) VALUES ('a'), ('b')",
        "INSERT INTO secret (pw) VALUES ('hunter2')",
    ] {
        db.exec(setup, &[]).await.unwrap();
    }
    let scope = scope(&["tickets"], &["notes", "notes_view"]);
    let plugin = |sql: &'static str| {
        let db = db.clone();
        let scope = scope.clone();
        async move {
            if sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
                db.query_scoped("p", &scope, sql, &[]).await.map(|_| ())
            } else {
                db.exec_scoped("p", &scope, sql, &[]).await.map(|_| ())
            }
        }
    };
    for allowed in [
        "SELECT * FROM tickets",
        "SELECT count(*) AS n FROM tickets WHERE title = 'a'",
        "INSERT INTO notes (text) SELECT title FROM tickets",
        "UPDATE notes SET text = lower(text) WHERE id > 0",
        "DELETE FROM notes WHERE id = 1",
        "WITH t AS (SELECT id FROM tickets) SELECT * FROM t",
    ] {
        plugin(allowed)
            .await
            .unwrap_or_else(|e| panic!("{allowed}: {e}"));
    }
    for (attack, refused) in [
        ("SELECT * FROM secret", "read `secret`"),
        (
            "SELECT * FROM tickets WHERE id IN (SELECT id FROM secret)",
            "read `secret`",
        ),
        (
            "WITH x AS (SELECT * FROM secret) SELECT * FROM x",
            "read `secret`",
        ),
        (
            "INSERT INTO notes (text) SELECT pw FROM secret",
            "read `secret`",
        ),
        ("DELETE FROM tickets", "delete from `tickets`"),
        ("UPDATE secret SET pw = 'x'", "update `secret`"),
        ("SELECT * FROM sqlite_master", "read `sqlite_master`"),
        ("ATTACH DATABASE 'other.db' AS other", "attach"),
        ("PRAGMA table_info(secret)", "pragma"),
        (
            "SELECT load_extension('x')",
            "call function `load_extension`",
        ),
        ("CREATE TEMP TABLE t (x)", "sqlite_temp_master"),
        ("DROP TABLE secret", "drop `secret`"),
        ("CREATE TABLE elsewhere (x)", "create `elsewhere`"),
        (
            "CREATE TRIGGER t AFTER INSERT ON notes BEGIN DELETE FROM secret; END",
            "operation",
        ),
        ("BEGIN", "transaction"),
    ] {
        let err = plugin(attack).await.unwrap_err();
        assert!(
            matches!(&err, HostError::PermissionDenied { .. }) && err.to_string().contains(refused),
            "{attack}: {err}"
        );
    }
    // Placeholder forms the driver numbers differently are errors, never a panic of the
    // connection's thread: the connection keeps working.
    for odd in [
        "SELECT ?2 AS x",
        "SELECT ?99999999999 AS x",
        "SELECT :name AS x",
        "SELECT @name AS x",
        "SELECT $name AS x",
        "SELECT ?, ? AS x",
    ] {
        let result = db.query_scoped("p", &scope, odd, &[json!(1)]).await;
        assert!(result.is_err(), "{odd}: {result:?}");
    }
    plugin("SELECT * FROM tickets").await.unwrap();
    // A view is read through the tables it reads: the plugin may create one over a secret
    // table, but not read the secret through it.
    plugin("CREATE VIEW notes_view AS SELECT pw FROM secret")
        .await
        .unwrap();
    let err = plugin("SELECT * FROM notes_view").await.unwrap_err();
    assert!(err.to_string().contains("read `secret`"), "{err}");
    // Nothing of the secret table changed, and the platform still reads everything.
    let rows = db.query("SELECT pw FROM secret", &[]).await.unwrap();
    assert_eq!(
        rows,
        vec![json!({"pw": "hunter2"}).as_object().unwrap().clone()]
    );
}

/// A query past its deadline is stopped inside the engine; while it runs, the platform and
/// another plugin are answered; right after, the same plugin's next query works.
async fn long_query_is_stopped(kind: Kind, db: Databases) {
    let endless = match kind {
        Kind::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c"
        }
        Kind::Postgres => "SELECT count(*) AS n FROM generate_series(1, 1000000000000)",
        Kind::MySql => {
            // A table of the test's own (the plugin login reads only granted tables).
            db.exec(
                "CREATE TABLE IF NOT EXISTS gk_wall_numbers AS SELECT seq AS x FROM seq_1_to_3000",
                &[],
            )
            .await
            .unwrap();
            "SELECT count(*) AS n FROM gk_wall_numbers a, gk_wall_numbers b, gk_wall_numbers c"
        }
    };
    let everything = Arc::new(EverythingScope);
    let everything: Arc<dyn TableScope> = everything;
    let slow = {
        let db = db.clone();
        let scope = everything.clone();
        tokio::spawn(async move { db.query_scoped("slow", &scope, endless, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    if slow.is_finished() {
        let outcome = slow.await.unwrap();
        panic!("{kind:?}: the endless query ended early: {outcome:?}");
    }
    let other = db
        .query_scoped("other", &everything, "SELECT 1 AS one", &[])
        .await
        .unwrap();
    assert_eq!(other[0]["one"], 1, "{kind:?}");
    db.query("SELECT 1 AS one", &[]).await.unwrap();
    assert!(
        !slow.is_finished(),
        "{kind:?}: answered while the slow query ran"
    );
    let err = slow.await.unwrap().unwrap_err();
    assert!(matches!(err, HostError::Timeout(_)), "{kind:?}: {err:?}");
    let again = db
        .query_scoped("slow", &everything, "SELECT 2 AS two", &[])
        .await
        .unwrap();
    assert_eq!(again[0]["two"], 2, "{kind:?}");
}

/// Allows every table and function: for testing deadlines without a scope in the way.
#[derive(Debug)]
pub(crate) struct EverythingScope;

impl TableScope for EverythingScope {
    fn allows_table(&self, _: &str, _: &[&str], _: TableAccess) -> bool {
        true
    }
    fn allows_function(&self, _: &str) -> bool {
        true
    }
}

/// SQLite builds no string or blob past `max_result_bytes` on a plugin connection.
#[tokio::test]
async fn sqlite_values_are_capped_in_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cap.db").display());
    let db = Databases::connect(&DatabaseConfig {
        max_result_bytes: 1 << 20,
        ..DatabaseConfig::single(url)
    })
    .await
    .unwrap();
    let everything: Arc<dyn TableScope> = Arc::new(EverythingScope);
    let err = db
        .query_scoped("p", &everything, "SELECT zeroblob(100000000) AS z", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too big"), "{err}");
    let rows = db
        .query_scoped("p", &everything, "SELECT length(zeroblob(1000)) AS n", &[])
        .await
        .unwrap();
    assert_eq!(rows[0]["n"], 1000);
}

#[tokio::test]
async fn sqlite_long_query_is_stopped_in_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir, Duration::from_millis(1500)).await;
    long_query_is_stopped(Kind::Sqlite, db).await;
}

#[tokio::test]
async fn server_long_queries_are_stopped_in_the_engine() {
    for (kind, variable) in [
        (Kind::Postgres, "GK_TEST_POSTGRES_URL"),
        (Kind::MySql, "GK_TEST_MYSQL_URL"),
    ] {
        if let Some(url) = service_url(variable) {
            let db = Databases::connect(&DatabaseConfig {
                query_timeout: Duration::from_millis(1500),
                ..DatabaseConfig::single(url)
            })
            .await
            .unwrap();
            long_query_is_stopped(kind, db).await;
        }
    }
}

/// A host over `db` with every service but the database at its default.
pub(crate) fn host(db: Databases) -> Arc<ProductionHost> {
    Arc::new(ProductionHost::new(HostServices {
        databases: db,
        cache: Arc::new(MemoryCache::new(10)),
        logs: Arc::new(PluginLogs::new(10)),
        config: ConfigValues::default(),
        translations: Arc::new(Translations::default()),
        mailer: Arc::new(NoMail),
        http: HttpClient::new(HttpConfig::default()),
    }))
}

#[derive(Debug)]
struct NoMail;

#[async_trait::async_trait]
impl gk_core::host::Mailer for NoMail {
    async fn send(&self, _plugin: &str, _email: &gk_sdk::Email) -> gk_sdk::HostResult<()> {
        Err(HostError::Unavailable("no mail in this test".into()))
    }
}

pub(crate) fn policy(permissions: Vec<Permission>) -> ResourcePolicy {
    let mut policy = ResourcePolicy::default_for("p");
    policy.status = PolicyStatus::Approved;
    policy.permissions = permissions;
    policy.max_calls_per_second = 0;
    policy.max_db_queries_per_min = 0;
    policy
}

/// The attacks that got through the old guard, per dialect, through a plugin's sandbox and
/// the production host: each is refused naming the rule, and the tables stay as they were.
async fn attacks(kind: Kind, db: Databases) {
    let tickets = unique("tickets");
    let secret = unique("secret");
    for setup in [
        format!("CREATE TABLE {tickets} (id INTEGER, title VARCHAR(50))"),
        format!("CREATE TABLE {secret} (id INTEGER, pw VARCHAR(50))"),
        format!("INSERT INTO {tickets} (id, title) VALUES (1, 'a')"),
        format!("INSERT INTO {secret} (id, pw) VALUES (1, 'hunter2')"),
    ] {
        db.exec(&setup, &[]).await.unwrap();
    }
    let dialect = match kind {
        Kind::Sqlite => SqlDialect::Sqlite,
        Kind::Postgres => SqlDialect::Postgres,
        Kind::MySql => SqlDialect::MySql,
    };
    let sandbox = SandboxedHostApi::with_config(
        "p",
        host(db.clone()),
        policy(vec![
            Permission::new(PermissionType::Db, Access::Read).with_scope([tickets.as_str()]),
        ]),
        Arc::new(SandboxConfig::default().with_dialect("default", dialect)),
    )
    .unwrap();
    let ctx = CallContext::for_plugin("p");
    let rows = sandbox
        .db_query(
            &ctx,
            &format!("SELECT title FROM {tickets} WHERE id = ?"),
            &[json!(1)],
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["title"], "a", "{kind:?}");
    let write = "is not in the db write scope";
    let attacks: Vec<(String, &str)> = vec![
        (
            format!("WITH d AS (DELETE FROM {secret} RETURNING *) SELECT * FROM d"),
            "",
        ),
        (
            format!("WITH {secret} AS (SELECT 1 AS id) DELETE FROM {secret}"),
            write,
        ),
        (
            format!("WITH x AS (SELECT 1 AS id) UPDATE {secret} SET pw = 'owned'"),
            write,
        ),
        (
            format!("SELECT * FROM {tickets} -- \n UNION SELECT id, pw FROM {secret}"),
            "read scope",
        ),
        (
            format!("SELECT * FROM {tickets} /* */ ; DELETE FROM {secret}"),
            "2 statements",
        ),
        (format!("SELECT * FROM {tickets} WHERE id = ?1"), ""),
        (format!("SELECT * FROM {tickets} WHERE id = :id"), ""),
        ("ATTACH DATABASE 'x.db' AS x".to_owned(), ""),
        ("PRAGMA writable_schema = 1".to_owned(), ""),
        ("SET ROLE postgres".to_owned(), ""),
        (format!("SELECT * INTO copy_{secret} FROM {tickets}"), ""),
    ];
    let mut attacks = attacks;
    if kind != Kind::MySql {
        // On MySQL `$1` is a column name, for the guard and the server alike.
        attacks.push((
            format!("SELECT * FROM {tickets} WHERE id = $1"),
            "placeholder",
        ));
    }
    for (attack, message) in attacks {
        let err = sandbox
            .db_query(&ctx, &attack, &[])
            .await
            .expect_err(&format!("{kind:?}: db_query {attack} was allowed"));
        assert!(
            matches!(
                err,
                HostError::PermissionDenied { .. } | HostError::InvalidInput(_)
            ),
            "{kind:?} {attack}: {err}"
        );
        let err = sandbox
            .db_exec(&ctx, &attack, &[])
            .await
            .expect_err(&format!("{kind:?}: db_exec {attack} was allowed"));
        assert!(
            matches!(
                err,
                HostError::PermissionDenied { .. } | HostError::InvalidInput(_)
            ) && err.to_string().contains(message),
            "{kind:?} {attack}: {err}"
        );
    }
    let rows = db
        .query(&format!("SELECT pw FROM {secret}"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{kind:?}");
    assert_eq!(rows[0]["pw"], "hunter2", "{kind:?}");
    for table in [tickets, secret] {
        db.exec(&format!("DROP TABLE {table}"), &[]).await.unwrap();
    }
}

#[tokio::test]
async fn the_attacks_are_refused_on_every_database() {
    let dir = tempfile::tempdir().unwrap();
    attacks(Kind::Sqlite, sqlite(&dir, Duration::from_secs(5)).await).await;
    for (kind, variable) in [
        (Kind::Postgres, "GK_TEST_POSTGRES_URL"),
        (Kind::MySql, "GK_TEST_MYSQL_URL"),
    ] {
        if let Some(url) = service_url(variable) {
            let db = Databases::connect(&DatabaseConfig::single(url))
                .await
                .unwrap();
            attacks(kind, db).await;
        }
    }
}

/// With no SQL guard in front, PostgreSQL and MariaDB themselves keep a plugin's statements
/// inside its scope: each runs as the plugin's role, whose grants mirror the scope, and follow
/// it when it changes.
#[tokio::test]
async fn server_engines_alone_keep_the_scope() {
    for (kind, variable) in [
        (Kind::Postgres, "GK_TEST_POSTGRES_URL"),
        (Kind::MySql, "GK_TEST_MYSQL_URL"),
    ] {
        if let Some(url) = service_url(variable) {
            server_engine_alone(kind, url).await;
        }
    }
}

async fn server_engine_alone(kind: Kind, url: String) {
    let db = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap();
    let tickets = unique("tickets");
    let notes = unique("notes");
    let secret = unique("secret");
    for setup in [
        format!("CREATE TABLE {tickets} (id INTEGER, title TEXT)"),
        format!("CREATE TABLE {notes} (id INTEGER, text TEXT)"),
        format!("CREATE TABLE {secret} (id INTEGER, pw TEXT)"),
        format!("INSERT INTO {tickets} VALUES (1, 'a')"),
        format!("INSERT INTO {secret} VALUES (1, 'hunter2')"),
    ] {
        db.exec(&setup, &[]).await.unwrap();
    }
    let plugin = unique("plugin");
    let granted = scope(&[tickets.as_str()], &[notes.as_str()]);
    let run = |sql: String, scope: Arc<dyn TableScope>| {
        let db = db.clone();
        let plugin = plugin.clone();
        async move {
            if sql.starts_with("SELECT") || sql.starts_with("WITH") {
                db.query_scoped(&plugin, &scope, &sql, &[])
                    .await
                    .map(|_| ())
            } else {
                db.exec_scoped(&plugin, &scope, &sql, &[]).await.map(|_| ())
            }
        }
    };
    for allowed in [
        format!("SELECT * FROM {tickets}"),
        format!("INSERT INTO {notes} (id, text) SELECT id, title FROM {tickets}"),
        format!("UPDATE {notes} SET text = 'b' WHERE id = 1"),
        format!("DELETE FROM {notes} WHERE id = 2"),
    ] {
        run(allowed.clone(), granted.clone())
            .await
            .unwrap_or_else(|e| panic!("{allowed}: {e}"));
    }
    for attack in [
        format!("SELECT * FROM {secret}"),
        format!("SELECT * FROM {tickets} WHERE id IN (SELECT id FROM {secret})"),
        format!("INSERT INTO {notes} (id, text) SELECT id, pw FROM {secret}"),
        format!("DELETE FROM {tickets}"),
        format!("UPDATE {secret} SET pw = 'owned'"),
        format!("DROP TABLE {secret}"),
        format!("CREATE TABLE {secret}_copy AS SELECT 1 AS x"),
    ] {
        let err = run(attack.clone(), granted.clone()).await.unwrap_err();
        assert!(
            matches!(err, HostError::PermissionDenied { .. }),
            "{kind:?} {attack}: {err}"
        );
    }
    if kind == Kind::Postgres {
        let attack = format!("WITH d AS (DELETE FROM {secret} RETURNING *) SELECT * FROM d");
        let err = run(attack.clone(), granted.clone()).await.unwrap_err();
        assert!(
            matches!(err, HostError::PermissionDenied { .. }),
            "{attack}: {err}"
        );
    }
    if kind == Kind::Postgres {
        // What a statement sets on its session does not outlive it on the pooled connection.
        let everything: Arc<dyn TableScope> = Arc::new(EverythingScope);
        db.query_scoped(
            &plugin,
            &everything,
            "SELECT set_config('statement_timeout', '0', false) AS x",
            &[],
        )
        .await
        .unwrap();
        for _ in 0..10 {
            let rows = db
                .query_scoped(
                    &plugin,
                    &everything,
                    "SELECT current_setting('statement_timeout') AS t",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(rows[0]["t"], "10s", "{rows:?}");
        }
    }
    // The login cannot become the platform's user.
    let become_admin = match kind {
        Kind::Postgres => "SET ROLE postgres",
        _ => "SET ROLE NONE",
    };
    let _ = run(become_admin.to_owned(), granted.clone()).await;
    let err = run(format!("SELECT * FROM {secret}"), granted.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, HostError::PermissionDenied { .. }),
        "{kind:?}: {err}"
    );
    // A wider scope (a new policy version) is in force at the next statement, and a narrower
    // one takes it back.
    let wider = scope(&[tickets.as_str(), secret.as_str()], &[notes.as_str()]);
    run(format!("SELECT * FROM {secret}"), wider).await.unwrap();
    let narrower = scope(&[tickets.as_str()], &[]);
    let err = run(format!("SELECT * FROM {secret}"), narrower.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::PermissionDenied { .. }), "{err}");
    let err = run(format!("DELETE FROM {notes}"), narrower)
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::PermissionDenied { .. }), "{err}");
    let rows = db
        .query(&format!("SELECT pw FROM {secret}"), &[])
        .await
        .unwrap();
    assert_eq!(rows[0]["pw"], "hunter2");
    for table in [tickets, notes, secret] {
        db.exec(&format!("DROP TABLE {table}"), &[]).await.unwrap();
    }
}

/// SQLite keeps plugin statements compiled, and asks the authorizer only when it compiles: a
/// statement compiled for one plugin never runs for another, nor for the same plugin under a
/// newer policy (a new scope object), on the same connection (an in-memory database has one).
#[tokio::test]
async fn sqlite_compiled_statements_keep_to_their_plugin_and_policy() {
    let db = Databases::connect(&DatabaseConfig::single("sqlite::memory:"))
        .await
        .unwrap();
    for setup in [
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT)",
        "INSERT INTO tickets (title) VALUES ('a'), ('b')",
    ] {
        db.exec(setup, &[]).await.unwrap();
    }
    // A column is read (a bare `count(*)` reads none, which the engine alone allows).
    let sql = "SELECT count(title) AS n FROM tickets";
    let reader = scope(&["tickets"], &[]);
    for _ in 0..3 {
        let rows = db.query_scoped("a", &reader, sql, &[]).await.unwrap();
        assert_eq!(rows[0]["n"], 2);
    }
    // Another plugin, without the table, with the very same SQL.
    let nothing = scope(&[], &[]);
    let err = db.query_scoped("b", &nothing, sql, &[]).await.unwrap_err();
    assert!(
        matches!(&err, HostError::PermissionDenied { .. }) && err.to_string().contains("tickets"),
        "{err}"
    );
    // The same plugin under a newer policy without the table (the old scope dropped).
    drop(reader);
    let err = db.query_scoped("a", &nothing, sql, &[]).await.unwrap_err();
    assert!(matches!(&err, HostError::PermissionDenied { .. }), "{err}");
    // And back: a new scope with the table works again; arguments rebind on a kept statement.
    let reader = scope(&["tickets"], &[]);
    for title in ["a", "b", "c"] {
        let rows = db
            .query_scoped(
                "a",
                &reader,
                "SELECT count(title) AS n FROM tickets WHERE title = ?",
                &[json!(title)],
            )
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], i64::from(title != "c"), "{title}");
    }
    // One statement per call: a second one is refused, not run.
    let err = db
        .query_scoped("a", &reader, "SELECT 1 AS x; DELETE FROM tickets", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one statement"), "{err}");
}

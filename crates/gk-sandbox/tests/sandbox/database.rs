//! Database permissions: reads, writes, administration, and the attempts to get around each rule.
//! Every denied case also checks that nothing reached the inner host.

use gk_sdk::{Access, HostApi, PermissionType};
use pretty_assertions::assert_eq;

use crate::support::{approved, ctx, judge, perm, sandbox};

#[tokio::test]
async fn database_reads() {
    let (sb, host) = sandbox(approved(vec![
        perm(
            PermissionType::Db,
            Access::Read,
            &["ticket*", "queue", "@analytics:orders"],
        ),
        perm(PermissionType::Db, Access::ReadWrite, &["plugin_notes"]),
    ]));
    let cases: &[(&str, Option<&str>)] = &[
        ("SELECT * FROM tickets", None),
        (
            "select t.id from ticket_history t join queue q on q.id = t.queue_id",
            None,
        ),
        (
            "SELECT count(*) AS n, max(id) FROM Tickets WHERE title LIKE '%DROP TABLE users%'",
            None,
        ),
        (
            "SELECT 'DELETE FROM tickets; DROP TABLE users' AS text FROM tickets",
            None,
        ),
        ("SELECT id FROM tickets -- DROP TABLE users", None),
        ("@analytics:SELECT sum(total) FROM orders", None),
        (
            "WITH open AS (SELECT * FROM tickets WHERE state = 'open') SELECT count(*) FROM open",
            None,
        ),
        ("SELECT * FROM plugin_notes", None),
        // tables hidden in joins, subqueries, CTEs and set operations
        (
            "SELECT * FROM users",
            Some("table `users` of database `default` is not in the db read scope"),
        ),
        (
            "SELECT * FROM tickets WHERE owner IN (SELECT id FROM users)",
            Some("table `users`"),
        ),
        (
            "SELECT * FROM tickets t JOIN users u ON u.id = t.owner",
            Some("table `users`"),
        ),
        ("SELECT * FROM tickets, users", Some("table `users`")),
        (
            "SELECT (SELECT pw FROM users LIMIT 1) AS x FROM tickets",
            Some("table `users`"),
        ),
        (
            "SELECT * FROM tickets WHERE EXISTS (SELECT 1 FROM users WHERE users.id = 1)",
            Some("table `users`"),
        ),
        (
            "SELECT id FROM tickets UNION SELECT id FROM users",
            Some("table `users`"),
        ),
        (
            "WITH x AS (SELECT * FROM users) SELECT * FROM x",
            Some("table `users`"),
        ),
        (
            "WITH tickets AS (SELECT * FROM users) SELECT * FROM tickets",
            Some("table `users`"),
        ),
        (
            "WITH users AS (SELECT * FROM users) SELECT * FROM users",
            Some("shadows"),
        ),
        (
            "SELECT * FROM (SELECT * FROM users) AS tickets",
            Some("table `users`"),
        ),
        // quoting and qualification
        ("SELECT * FROM \"users\"", Some("table `users`")),
        ("SELECT * FROM `users`", Some("table `users`")),
        ("SELECT * FROM \"USERS\"", Some("table `users`")),
        (
            "SELECT * FROM public.tickets",
            Some("table `public.tickets`"),
        ),
        (
            "SELECT * FROM ticket_archive.users",
            Some("table `ticket_archive.users`"),
        ),
        ("SELECT * FROM xticket", Some("table `xticket`")),
        ("SELECT * FROM queues", Some("table `queues`")),
        // other databases
        (
            "@otherdb:SELECT * FROM tickets",
            Some("grants no table of database `otherdb`"),
        ),
        (
            "@analytics:SELECT * FROM tickets",
            Some("table `tickets` of database `analytics`"),
        ),
        ("@ANALYTICS :SELECT 1", Some("malformed database prefix")),
        // system catalogs and functions
        (
            "SELECT * FROM information_schema.tables",
            Some("information_schema.tables"),
        ),
        ("SELECT * FROM sqlite_master", Some("table `sqlite_master`")),
        (
            "SELECT pg_read_file('/etc/passwd')",
            Some("function `pg_read_file`"),
        ),
        (
            "SELECT load_file('/etc/passwd') FROM tickets",
            Some("function `load_file`"),
        ),
        (
            "SELECT query_to_xml('select * from users', true, true, '') FROM tickets",
            Some("function `query_to_xml`"),
        ),
        ("SELECT pg_sleep(100)", Some("function `pg_sleep`")),
        // stacked statements and comment tricks
        (
            "SELECT * FROM tickets; DROP TABLE users",
            Some("2 statements in one call"),
        ),
        (
            "SELECT * FROM tickets /* ; */; DELETE FROM tickets",
            Some("2 statements in one call"),
        ),
        (
            "SELECT * FROM tickets -- x\n; DELETE FROM tickets",
            Some("2 statements in one call"),
        ),
        // writes through the read function
        ("DELETE FROM tickets", Some("db_query runs only reads")),
        (
            "INSERT INTO plugin_notes VALUES (1)",
            Some("db_query runs only reads"),
        ),
        (
            "SELECT * INTO tickets_copy FROM tickets",
            Some("db_query runs only reads"),
        ),
        ("DROP TABLE plugin_notes", Some("db_query runs only reads")),
        // what does not parse is refused
        ("SELECT * FROM tickets WHERE (", Some("SQL does not parse")),
        ("", Some("the query is empty")),
    ];
    judge(
        "db_query",
        cases,
        || host.count(),
        |q| {
            let sb = sb.clone();
            async move { sb.db_query(&ctx(), &q, &[]).await.map(|_| ()) }
        },
    )
    .await;
    assert_eq!(
        sb.stats().denied as usize,
        cases.iter().filter(|c| c.1.is_some()).count() - 1,
        "malformed prefix is an input error"
    );
}

#[tokio::test]
async fn database_writes() {
    let (sb, host) = sandbox(approved(vec![
        perm(PermissionType::Db, Access::Read, &["ticket*"]),
        perm(PermissionType::Db, Access::ReadWrite, &["plugin_notes"]),
        perm(PermissionType::Db, Access::Write, &["plugin_log"]),
    ]));
    let cases: &[(&str, Option<&str>)] = &[
        (
            "INSERT INTO plugin_notes (ticket_id, text) VALUES (1, 'a')",
            None,
        ),
        (
            "INSERT INTO plugin_notes SELECT id, title FROM tickets",
            None,
        ),
        (
            "UPDATE plugin_notes SET text = 'x' WHERE ticket_id IN (SELECT id FROM tickets)",
            None,
        ),
        ("DELETE FROM plugin_notes WHERE id = 1", None),
        (
            "INSERT INTO plugin_log (line) VALUES ('DROP TABLE users')",
            None,
        ),
        ("CREATE TABLE plugin_notes (id INT)", None),
        ("SELECT * FROM tickets", None),
        (
            "DELETE FROM tickets",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        (
            "UPDATE tickets SET title = ''",
            Some("not in the db write scope"),
        ),
        (
            "INSERT INTO plugin_notes SELECT * FROM users",
            Some("table `users` of database `default` is not in the db read scope"),
        ),
        (
            "UPDATE plugin_notes SET text = u.pw FROM users u WHERE u.id = plugin_notes.id",
            Some("table `users`"),
        ),
        (
            "DELETE FROM plugin_notes USING users WHERE users.id = plugin_notes.id",
            Some("table `users`"),
        ),
        (
            "INSERT INTO plugin_log (line) VALUES (1) RETURNING *",
            Some("table `plugin_log` of database `default` is not in the db read scope"),
        ),
        (
            "DELETE FROM plugin_log WHERE line IN (SELECT line FROM plugin_log)",
            Some("table `plugin_log` of database `default` is not in the db read scope"),
        ),
        (
            "DROP TABLE tickets",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        ("TRUNCATE TABLE tickets", Some("not in the db write scope")),
        ("ALTER TABLE users ADD COLUMN x INT", Some("table `users`")),
        (
            "CREATE TABLE plugin_notes AS SELECT * FROM users",
            Some("table `users`"),
        ),
        (
            "GRANT ALL ON tickets TO PUBLIC",
            Some(
                "administrative statements (GRANT, SET, PRAGMA, ATTACH, COPY, …) are never allowed",
            ),
        ),
        ("SET search_path TO evil", Some("administrative statements")),
        (
            "ATTACH DATABASE '/tmp/x.db' AS x",
            Some("administrative statements"),
        ),
        ("PRAGMA writable_schema = 1", Some("")),
        // data-changing statements behind WITH, and CTEs named like the table they write
        (
            "WITH d AS (DELETE FROM tickets RETURNING *) SELECT * FROM d",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        (
            "WITH plugin_notes AS (SELECT 1 AS x) DELETE FROM tickets",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        (
            "WITH tickets AS (SELECT 1 AS x) UPDATE tickets SET x = 2",
            Some("table `tickets` of database `default` is not in the db write scope"),
        ),
        (
            "INSERT INTO plugin_notes SELECT * FROM tickets WHERE id = $1",
            Some("placeholder `$1` is not supported"),
        ),
        (
            "COPY tickets TO '/tmp/x'",
            Some("administrative statements"),
        ),
        (
            "INSERT INTO plugin_notes VALUES (1); DROP TABLE tickets",
            Some("2 statements in one call"),
        ),
    ];
    judge(
        "db_exec",
        cases,
        || host.count(),
        |q| {
            let sb = sb.clone();
            async move { sb.db_exec(&ctx(), &q, &[]).await.map(|_| ()) }
        },
    )
    .await;
}

#[tokio::test]
async fn administration_is_never_allowed() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Db,
        Access::ReadWrite,
        &["*"],
    )]));
    for statement in [
        "SET search_path TO public",
        "SET ROLE postgres",
        "ATTACH DATABASE 'data/store.db' AS store",
        "PRAGMA writable_schema = 1",
        "GRANT ALL ON tickets TO PUBLIC",
    ] {
        let err = sb.db_exec(&ctx(), statement, &[]).await.unwrap_err();
        assert!(
            err.to_string().contains("never allowed to plugins"),
            "{statement}: {err}"
        );
    }
    assert_eq!(host.count(), 0);
    sb.db_exec(&ctx(), "DROP TABLE anything", &[])
        .await
        .unwrap();
    let err = sb
        .db_query(&ctx(), "SELECT * FROM pg_catalog.pg_authid", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pg_catalog.pg_authid"), "{err}");
}

/// What reaches the database is the statement printed from the checked tree, never the
/// plugin's text, and every `?` needs its argument.
#[tokio::test]
async fn the_checked_statement_is_what_runs() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Db,
        Access::ReadWrite,
        &["tickets", "@analytics:orders"],
    )]));
    for (sent, args, ran) in [
        (
            "select id from tickets -- ; DROP TABLE users",
            vec![],
            "SELECT id FROM tickets",
        ),
        (
            "SELECT  id\nFROM tickets /* x */ WHERE id = ?",
            vec![serde_json::json!(1)],
            "SELECT id FROM tickets WHERE id = ?",
        ),
        (
            "@Analytics:select sum(total) from orders",
            vec![],
            "@analytics:SELECT sum(total) FROM orders",
        ),
    ] {
        sb.db_query(&ctx(), sent, &args).await.unwrap();
        assert_eq!(host.last().unwrap().subject, ran);
    }
    let err = sb
        .db_query(
            &ctx(),
            "SELECT id FROM tickets WHERE id = ? AND a = ?",
            &[serde_json::json!(1)],
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the query has 2 `?` placeholders but 1 arguments were given"),
        "{err}"
    );
}

#[tokio::test]
async fn decisions_are_cached_per_policy_version() {
    let (sb, host) = sandbox(approved(vec![perm(
        PermissionType::Db,
        Access::Read,
        &["tickets"],
    )]));
    for _ in 0..3 {
        sb.db_query(&ctx(), "SELECT * FROM tickets", &[])
            .await
            .unwrap();
    }
    assert_eq!(host.count(), 3);
    sb.update_policy(approved(vec![perm(
        PermissionType::Db,
        Access::Read,
        &["queue"],
    )]))
    .unwrap();
    let err = sb
        .db_query(&ctx(), "SELECT * FROM tickets", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("table `tickets`"),
        "the cached allow of the old version is not reused: {err}"
    );
}

/// The platform's tables are out of every scope, `*` and exact entries included.
#[tokio::test]
async fn reserved_tables_are_out_of_every_scope() {
    let host = std::sync::Arc::new(crate::support::RecordingHost::default());
    let sb = gk_sandbox::SandboxedHostApi::with_config(
        "me",
        host.clone(),
        approved(vec![perm(
            PermissionType::Db,
            Access::ReadWrite,
            &["*", "sysconfig_modified"],
        )]),
        std::sync::Arc::new(
            gk_sandbox::SandboxConfig::default().with_reserved_tables(["sysconfig_modified"]),
        ),
    )
    .unwrap();
    for statement in [
        "SELECT * FROM sysconfig_modified",
        "UPDATE SYSCONFIG_MODIFIED SET value = '{}'",
        "WITH x AS (SELECT 1) DELETE FROM \"sysconfig_modified\"",
        "INSERT INTO notes SELECT value FROM sysconfig_modified",
    ] {
        let err = sb.db_exec(&ctx(), statement, &[]).await.unwrap_err();
        assert!(
            err.to_string().contains("belongs to the platform"),
            "{statement}: {err}"
        );
    }
    assert_eq!(host.count(), 0);
    sb.db_exec(&ctx(), "DELETE FROM notes", &[]).await.unwrap();
}

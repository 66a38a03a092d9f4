//! The guard's unit tests: classification, refusals, dialects, printing back.
use super::*;

fn names(tables: &[TableRef]) -> Vec<String> {
    let mut names: Vec<String> = tables.iter().map(ToString::to_string).collect();
    names.sort();
    names
}

fn check(sql: &str) -> (StatementClass, Vec<String>, Vec<String>) {
    let a = analyse(sql, SqlDialect::Generic).unwrap_or_else(|e| panic!("{sql}: {e}"));
    (a.class, names(&a.reads), names(&a.writes))
}

#[test]
fn classifies_and_collects_tables() {
    use StatementClass::*;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for (sql, class, reads, writes) in [
        (
            "SELECT * FROM tickets t JOIN queue q ON q.id = t.queue_id",
            Read,
            s(&["queue", "tickets"]),
            s(&[]),
        ),
        (
            "SELECT (SELECT max(id) FROM users) AS m FROM tickets WHERE id IN (SELECT ticket_id FROM history)",
            Read,
            s(&["history", "tickets", "users"]),
            s(&[]),
        ),
        (
            "WITH recent AS (SELECT * FROM tickets) SELECT * FROM recent",
            Read,
            s(&["tickets"]),
            s(&[]),
        ),
        (
            "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b",
            Read,
            s(&[]),
            s(&[]),
        ),
        (
            "SELECT * FROM \"Public\".\"Tickets\"",
            Read,
            s(&["public.tickets"]),
            s(&[]),
        ),
        (
            "SELECT 'DROP TABLE users' AS x FROM tickets",
            Read,
            s(&["tickets"]),
            s(&[]),
        ),
        ("SELECT 1 UNION SELECT * FROM x", Read, s(&["x"]), s(&[])),
        (
            "INSERT INTO archive SELECT * FROM tickets",
            Write,
            s(&["tickets"]),
            s(&["archive"]),
        ),
        (
            "INSERT INTO tickets (a) VALUES (1) RETURNING id",
            Write,
            s(&["tickets"]),
            s(&["tickets"]),
        ),
        (
            "UPDATE tickets SET a = o.a FROM other o WHERE o.id = tickets.id",
            Write,
            s(&["other"]),
            s(&["tickets"]),
        ),
        (
            "DELETE FROM tickets USING users WHERE users.id = tickets.owner",
            Write,
            s(&["users"]),
            s(&["tickets"]),
        ),
        (
            "DELETE FROM tickets WHERE id IN (SELECT id FROM tickets WHERE a = 1)",
            Write,
            s(&["tickets"]),
            s(&["tickets"]),
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
            Write,
            s(&["s", "t"]),
            s(&["t"]),
        ),
        (
            "SELECT * INTO copy FROM tickets",
            Write,
            s(&["tickets"]),
            s(&["copy"]),
        ),
        ("DROP TABLE users", Schema, s(&[]), s(&["users"])),
        (
            "CREATE TABLE t2 AS SELECT * FROM t1",
            Schema,
            s(&[]),
            s(&["t1", "t2"]),
        ),
        ("TRUNCATE TABLE tickets", Schema, s(&[]), s(&["tickets"])),
        (
            "ALTER TABLE tickets ADD COLUMN x INT",
            Schema,
            s(&[]),
            s(&["tickets"]),
        ),
        ("GRANT ALL ON tickets TO bob", Other, s(&[]), s(&[])),
        ("SET search_path = evil", Other, s(&[]), s(&[])),
    ] {
        assert_eq!(check(sql), (class, reads, writes), "{sql}");
    }
}

#[test]
fn refuses_what_it_cannot_judge() {
    for (sql, problem) in [
        ("SELECT 1; DROP TABLE users", "2 statements in one call"),
        ("SELECT * FROM t; ", ""),
        ("", "the query is empty"),
        ("SELEC * FROM t", "SQL does not parse"),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "function `pg_read_file` is not on the sandbox's list",
        ),
        (
            "SELECT pg_catalog.lower('x')",
            "function `pg_catalog.lower`",
        ),
        (
            "SELECT query_to_xml('select * from secret', true, true, '')",
            "function `query_to_xml`",
        ),
        (
            "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
            "the CTE `secret` reads a table named `secret`",
        ),
        (
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
            "reads a table named `b`",
        ),
    ] {
        match analyse(sql, SqlDialect::Generic) {
            Err(e) => assert!(e.contains(problem), "{sql}: {e}"),
            Ok(a) if problem.is_empty() => assert_eq!(a.class, StatementClass::Read),
            Ok(a) => panic!("{sql} was accepted: {a:?}"),
        }
    }
}

#[test]
fn cte_scope_ends_with_its_query() {
    // The inner CTE named `secret` does not hide the outer, real table `secret`.
    let (_, reads, _) =
        check("SELECT * FROM secret, (WITH secret AS (SELECT 1 AS x) SELECT * FROM secret) AS sub");
    assert_eq!(reads, ["secret"]);
}

#[test]
fn recursive_cte_may_reference_itself() {
    let (class, reads, _) = check(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) SELECT * FROM n",
    );
    assert_eq!((class, reads), (StatementClass::Read, Vec::<String>::new()));
}

#[test]
fn table_statements_are_relations_too() {
    let mut parsed = 0;
    for (sql, dialect) in [
        ("TABLE secrets", SqlDialect::Postgres),
        ("SELECT 1 UNION TABLE secrets", SqlDialect::Postgres),
        (
            "SELECT * FROM tickets WHERE id IN (TABLE secrets)",
            SqlDialect::Postgres,
        ),
        ("TABLE secrets", SqlDialect::MySql),
    ] {
        match analyse(sql, dialect) {
            Ok(a) => {
                assert!(
                    a.reads.iter().any(|t| t.table() == "secrets"),
                    "{sql}: {a:?}"
                );
                parsed += 1;
            }
            Err(e) => assert!(e.contains("does not parse"), "{sql}: {e}"),
        }
    }
    assert!(
        parsed > 0,
        "no `TABLE` form parsed, so this test checks nothing"
    );
}

#[test]
fn dialects_parse_their_quoting() {
    let a = analyse("SELECT * FROM `groups` g", SqlDialect::MySql).unwrap();
    assert_eq!(names(&a.reads), ["groups"]);
    let a = analyse("SELECT * FROM `groups` g", SqlDialect::Generic).unwrap();
    assert_eq!(names(&a.reads), ["groups"]);
}

/// Writes behind `WITH`, in CTEs and behind a CTE of the target's name are writes, in
/// every dialect that parses them.
#[test]
fn writes_are_found_at_every_level() {
    let cases = [
        "WITH d AS (DELETE FROM secret RETURNING *) SELECT * FROM d",
        "WITH d AS (UPDATE secret SET a = 1 RETURNING a) SELECT 1",
        "WITH d AS (INSERT INTO secret VALUES (1) RETURNING *) SELECT * FROM tickets",
        "WITH secret AS (SELECT 1 AS x) DELETE FROM secret",
        "WITH secret AS (SELECT 1 AS x) UPDATE secret SET x = 2",
        "WITH secret AS (SELECT 1 AS x) INSERT INTO secret SELECT * FROM secret",
        "WITH t AS (SELECT 1 AS x) INSERT INTO secret SELECT x FROM t",
        "SELECT * INTO secret FROM tickets",
    ];
    let mut parsed = 0;
    for dialect in [
        SqlDialect::Generic,
        SqlDialect::Sqlite,
        SqlDialect::Postgres,
        SqlDialect::MySql,
    ] {
        for sql in cases {
            match analyse(sql, dialect) {
                Ok(a) => {
                    parsed += 1;
                    assert_eq!(a.class, StatementClass::Write, "{dialect:?} {sql}: {a:?}");
                    assert!(
                        a.writes.iter().any(|t| t.table() == "secret"),
                        "{dialect:?} {sql}: {a:?}"
                    );
                }
                Err(e) => assert!(
                    e.contains("does not parse") || e.contains("printed back"),
                    "{dialect:?} {sql}: {e}"
                ),
            }
        }
    }
    assert!(parsed >= cases.len(), "too few cases parse: {parsed}");
}

/// The printed statement is what runs: comments (MySQL runs `/*! … */`), odd quoting and
/// spacing are gone from it, and it parses back to the same tree.
#[test]
fn what_runs_is_printed_from_the_tree() {
    for (sql, dialect, printed) in [
        (
            "SELECT id FROM tickets -- ; DELETE FROM secret",
            SqlDialect::Sqlite,
            "SELECT id FROM tickets",
        ),
        (
            "select   id from\n\t`tickets` where a = ?",
            SqlDialect::MySql,
            "SELECT id FROM `tickets` WHERE a = ?",
        ),
        (
            "SELECT \"id\" FROM tickets WHERE title = 'it''s ?'",
            SqlDialect::Postgres,
            "SELECT \"id\" FROM tickets WHERE title = 'it''s ?'",
        ),
    ] {
        let a = analyse(sql, dialect).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(a.checked_sql, printed, "{dialect:?} {sql}");
        assert!(!a.reads.iter().any(|t| t.table() == "secret"));
    }
    // MySQL runs `/*! … */`: the guard reads it as MySQL does.
    let a = analyse(
        "SELECT id /*! , (SELECT pw FROM secret) */ FROM tickets",
        SqlDialect::MySql,
    )
    .unwrap();
    assert!(a.reads.iter().any(|t| t.table() == "secret"), "{a:?}");
}

#[test]
fn only_question_mark_placeholders() {
    let a = analyse("SELECT * FROM t WHERE a = ? AND b = ?", SqlDialect::Sqlite).unwrap();
    assert_eq!(a.placeholders, 2);
    let a = analyse(
        "SELECT '?' AS q FROM t WHERE a = ? AND b = E'\\'?' AND c = ?",
        SqlDialect::Postgres,
    )
    .unwrap();
    assert_eq!(a.placeholders, 2);
    assert_eq!(
        a.checked_sql,
        "SELECT '?' AS q FROM t WHERE a = $1 AND b = E'\\'?' AND c = $2"
    );
    for (sql, dialect) in [
        ("SELECT * FROM t WHERE a = $1", SqlDialect::Postgres),
        ("SELECT * FROM t WHERE a = ?1", SqlDialect::Sqlite),
        ("SELECT * FROM t WHERE a = :name", SqlDialect::Sqlite),
        ("SELECT * FROM t WHERE a = @name", SqlDialect::Sqlite),
        ("SELECT * FROM t WHERE a = $name", SqlDialect::Sqlite),
    ] {
        match analyse(sql, dialect) {
            Err(e) => assert!(
                e.contains("is not supported: write `?`") || e.contains("does not parse"),
                "{sql}: {e}"
            ),
            Ok(a) => panic!("{sql} was accepted: {a:?}"),
        }
    }
}

/// Table functions run code the function allow-list would not see (`LATERAL
/// set_config('role', …)` switched roles on PostgreSQL).
#[test]
fn table_functions_are_refused() {
    for (sql, dialect) in [
        (
            "SELECT q FROM (SELECT 1) AS x, LATERAL set_config('role', 'other', true) AS s",
            SqlDialect::Postgres,
        ),
        (
            "SELECT * FROM set_config('role', 'other', true)",
            SqlDialect::Postgres,
        ),
        ("SELECT * FROM generate_series(1, 10)", SqlDialect::Postgres),
        (
            "SELECT * FROM pragma_table_info('secret')",
            SqlDialect::Sqlite,
        ),
        ("SELECT * FROM json_each('[1]')", SqlDialect::Sqlite),
    ] {
        match analyse(sql, dialect) {
            Err(e) => assert!(
                e.contains("table function") || e.contains("table source"),
                "{sql}: {e}"
            ),
            Ok(a) => panic!("{sql} was accepted: {a:?}"),
        }
    }
}

/// PostgreSQL keeps quoted names as written: a CTE `"Tickets"` does not hide `tickets`.
#[test]
fn cte_names_compare_as_the_database_compares_them() {
    let a = analyse(
        "WITH \"Tickets\" AS (SELECT 1 AS id) SELECT * FROM tickets",
        SqlDialect::Postgres,
    )
    .unwrap();
    assert_eq!(names(&a.reads), ["tickets"]);
    let a = analyse(
        "WITH Tickets AS (SELECT 1 AS id) SELECT * FROM tickets",
        SqlDialect::Postgres,
    )
    .unwrap();
    assert!(a.reads.is_empty(), "{a:?}");
    let a = analyse(
        "WITH \"Tickets\" AS (SELECT 1 AS id) SELECT * FROM tickets",
        SqlDialect::Sqlite,
    )
    .unwrap();
    assert!(
        a.reads.is_empty(),
        "SQLite compares names without case: {a:?}"
    );
}

#[test]
fn renames_temporary_objects_and_size() {
    let a = analyse(
        "ALTER TABLE plugin_x RENAME TO tickets_archive",
        SqlDialect::Postgres,
    )
    .unwrap();
    assert_eq!(names(&a.writes), ["plugin_x", "tickets_archive"]);
    for sql in [
        "CREATE TEMP TABLE tickets (id INT)",
        "CREATE TEMPORARY VIEW v AS SELECT 1",
    ] {
        let a = analyse(sql, SqlDialect::Postgres).unwrap();
        assert_eq!(a.class, StatementClass::Other, "{sql}");
    }
    // A long flat chain would build a tree as deep as it is long: refused before parsing.
    let chain = format!("SELECT 1{}", "+1".repeat(20_000));
    let e = analyse(&chain, SqlDialect::Sqlite).unwrap_err();
    assert!(e.contains("tokens; the most is"), "{e}");
    let huge = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
    let e = analyse(&huge, SqlDialect::Sqlite).unwrap_err();
    assert!(e.contains("bytes; the most is"), "{e}");
}

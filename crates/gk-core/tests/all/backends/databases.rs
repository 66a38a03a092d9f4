//! The same database behaviour on SQLite, PostgreSQL and MariaDB: one test body, run three times.
//!
//! PostgreSQL and MariaDB come from `GK_TEST_POSTGRES_URL` and `GK_TEST_MYSQL_URL` (`.ci/run`
//! exports them for the machine's services). When a URL is set and the server is not there, the
//! test fails; when it is not set, the backend is skipped with a message, except under CI, where
//! a missing URL fails too.

use std::collections::BTreeMap;
use std::time::Duration;

use gk_core::host::{DatabaseConfig, Databases};
use gk_sdk::HostError;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::common::service_url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

fn unique_table() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("gk_test_{}_{nanos}", std::process::id())
}

async fn connect(
    kind: Kind,
    url: &str,
    max_rows: usize,
    timeout: Duration,
) -> (Databases, tempfile::TempDir) {
    let other = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        urls: BTreeMap::from([
            ("default".to_owned(), url.to_owned()),
            (
                "other".to_owned(),
                format!("sqlite://{}", other.path().join("other.db").display()),
            ),
        ]),
        query_timeout: timeout,
        max_rows,
        ..DatabaseConfig::single(url)
    };
    let databases = Databases::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    (databases, other)
}

/// The whole behaviour, for one backend.
async fn behaviour(kind: Kind, url: &str) {
    let (db, _other) = connect(kind, url, 5, Duration::from_secs(5)).await;
    let t = unique_table();
    let blob = if kind == Kind::Postgres {
        "BYTEA"
    } else {
        "BLOB"
    };
    db.exec(
        &format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name VARCHAR(100), score DOUBLE PRECISION, price DECIMAL(10,2), \
             active BOOLEAN, data {blob}, created TIMESTAMP, day DATE, note VARCHAR(100))"
        ),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{kind:?}: {e}"));

    let run = async {
        let (hi, binary) = if kind == Kind::Postgres {
            ("'\\x6869'", "'\\xff00'")
        } else {
            ("X'6869'", "X'FF00'")
        };
        let inserted = db
            .exec(
                &format!(
                    "INSERT INTO {t} (id, name, score, price, active, data, created, day, note) VALUES \
                     (?, ?, ?, 12.50, ?, {hi}, '2026-11-26 14:00:00', '2026-11-26', ?), \
                     (2, 'Bob ?', 0.25, 3.00, false, {binary}, '2026-01-02 03:04:05', '2026-01-02', 'x')"
                ),
                &[json!(1), json!("Ann"), json!(2.5), json!(true), Value::Null],
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(inserted, 2, "{kind:?}");

        let rows = db.query(&format!("SELECT id, name, score, price, active, data, created, day, note FROM {t} ORDER BY id"), &[]).await.unwrap();
        let rows: Vec<Value> = rows.into_iter().map(Value::Object).collect();
        assert_eq!(
            rows,
            vec![
                json!({"id": 1, "name": "Ann", "score": 2.5, "price": 12.5, "active": true, "data": "hi",
                       "created": "2026-11-26T14:00:00Z", "day": "2026-11-26", "note": null}),
                json!({"id": 2, "name": "Bob ?", "score": 0.25, "price": 3, "active": false, "data": "/wA=",
                       "created": "2026-01-02T03:04:05Z", "day": "2026-01-02", "note": "x"}),
            ],
            "{kind:?}"
        );

        // `?` inside literals stays text; arguments bind with their JSON types.
        let rows = db
            .query(&format!("SELECT name FROM {t} WHERE name <> 'x?' AND active = ? AND score > ? AND id = ?"), &[json!(true), json!(1.5), json!(1)])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{kind:?}");
        assert_eq!(rows[0]["name"], "Ann");

        // Strings go into timestamp, date and number columns, numbers into text columns.
        db.exec(
            &format!("INSERT INTO {t} (id, name, price, created, day) VALUES (?, ?, ?, ?, ?)"),
            &[
                json!(7),
                json!(7),
                json!("1.25"),
                json!("2026-02-03 04:05:06"),
                json!("2026-02-03"),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let typed = db
            .query(
                &format!("SELECT name, price, created, day FROM {t} WHERE created >= ? AND id = ?"),
                &[json!("2026-02-01"), json!(7)],
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(
            Value::Object(typed[0].clone()),
            json!({"name": "7", "price": 1.25, "created": "2026-02-03T04:05:06Z", "day": "2026-02-03"}),
            "{kind:?}"
        );
        db.exec(&format!("DELETE FROM {t} WHERE id = ?"), &[json!(7)])
            .await
            .unwrap();

        // NULL goes into a column of any type.
        db.exec(
            &format!("UPDATE {t} SET score = ?, day = ?, note = ? WHERE id = ?"),
            &[Value::Null, Value::Null, Value::Null, json!(2)],
        )
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let nulls = db
            .query(
                &format!("SELECT score, day, note FROM {t} WHERE id = ?"),
                &[json!(2)],
            )
            .await
            .unwrap();
        assert_eq!(
            Value::Object(nulls[0].clone()),
            json!({"score": null, "day": null, "note": null}),
            "{kind:?}"
        );
        db.exec(
            &format!("UPDATE {t} SET score = ? WHERE id = ?"),
            &[json!(0.25), json!(2)],
        )
        .await
        .unwrap();

        let aggregates = db
            .query(
                &format!("SELECT COUNT(*) AS n, SUM(id) AS total, MAX(score) AS best FROM {t}"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            Value::Object(aggregates[0].clone()),
            json!({"n": 2, "total": 3, "best": 2.5}),
            "{kind:?}"
        );

        let err = db
            .query(&format!("SELECT * FROM {t} WHERE id = ?"), &[])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            HostError::InvalidInput(
                "the query has 1 `?` placeholders but 0 arguments were given".into()
            )
        );
        let err = db
            .query(&format!("SELECT * FROM {t} WHERE id = ?"), &[json!([1])])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("argument 1 is an array or object"),
            "{err}"
        );

        for id in 3..=6 {
            db.exec(
                &format!("INSERT INTO {t} (id, name) VALUES (?, ?)"),
                &[json!(id), json!(format!("n{id}"))],
            )
            .await
            .unwrap();
        }
        let err = db
            .query(&format!("SELECT id FROM {t}"), &[])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            HostError::InvalidInput(
                "the query returned more than 5 rows (max_rows): add a LIMIT".into()
            ),
            "{kind:?}"
        );
        assert_eq!(
            db.exec(
                &format!("UPDATE {t} SET note = ? WHERE id > ?"),
                &[json!("bulk"), json!(2)]
            )
            .await
            .unwrap(),
            4
        );

        let other = db.query("@other:SELECT 1 AS one", &[]).await.unwrap();
        assert_eq!(other[0]["one"], 1);
        let err = db.query("@nowhere:SELECT 1", &[]).await.unwrap_err();
        assert_eq!(
            err,
            HostError::NotFound("database `nowhere` is not configured".into())
        );
        let err = db
            .query(&format!("SELECT * FROM {t}_missing"), &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HostError::Backend(m) if m.starts_with("database `default`: ")),
            "{err:?}"
        );
    };
    run.await;
    db.exec(&format!("DROP TABLE {t}"), &[]).await.unwrap();
}

/// A query running past `query_timeout` is stopped with an error that says so.
async fn timeout(kind: Kind, url: &str) {
    let (db, _other) = connect(kind, url, 1000, Duration::from_millis(300)).await;
    let slow = match kind {
        Kind::Postgres => "SELECT pg_sleep(2) AS slept",
        Kind::MySql => "SELECT SLEEP(2) AS slept",
        Kind::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        }
    };
    let err = db.query(slow, &[]).await.unwrap_err();
    assert_eq!(
        err,
        HostError::Timeout("the query ran longer than 300 ms (query_timeout)".into()),
        "{kind:?}"
    );
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/dir/gk.db").display());
    behaviour(Kind::Sqlite, &url).await;
    assert!(
        dir.path().join("nested/dir/gk.db").is_file(),
        "the file and its directories are created"
    );
}

#[tokio::test]
async fn sqlite_timeout() {
    let dir = tempfile::tempdir().unwrap();
    timeout(
        Kind::Sqlite,
        &format!("sqlite://{}", dir.path().join("t.db").display()),
    )
    .await;
}

#[tokio::test]
async fn postgres() {
    if let Some(url) = service_url("GK_TEST_POSTGRES_URL") {
        behaviour(Kind::Postgres, &url).await;
        timeout(Kind::Postgres, &url).await;
    }
}

#[tokio::test]
async fn mariadb() {
    if let Some(url) = service_url("GK_TEST_MYSQL_URL") {
        behaviour(Kind::MySql, &url).await;
        timeout(Kind::MySql, &url).await;
    }
}

#[tokio::test]
async fn a_database_that_is_not_there_is_a_clear_error() {
    let config = DatabaseConfig::single("postgres://nobody:secret@127.0.0.1:1/none");
    let err = Databases::connect(&config).await.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "database `default` (postgres://nobody:***@127.0.0.1:1/none) cannot be opened:"
        ),
        "{err}"
    );
}

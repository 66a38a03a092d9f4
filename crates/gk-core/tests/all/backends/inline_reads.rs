//! Plugin reads tried inline (`gk_sdk::inline`), as a WASM guest on an async worker tries them:
//! a read-only statement on SQLite answers at the first poll; whatever would write, wait or run
//! long is refused with nothing changed, and a database server is never tried.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use gk_core::host::{DatabaseConfig, Databases};
use gk_sdk::inline::{Refusal, attempt};
use gk_sdk::{HostResult, Row, TableScope};

use super::database_wall::{scope, sqlite};
use crate::common::service_url;

/// Polls `query` once as an inline attempt.
fn poll_inline(
    query: impl Future<Output = HostResult<Vec<Row>>>,
) -> (Poll<HostResult<Vec<Row>>>, Option<Refusal>) {
    let mut query = std::pin::pin!(query);
    let mut context = Context::from_waker(Waker::noop());
    attempt(Instant::now() + Duration::from_millis(1), || {
        query.as_mut().poll(&mut context)
    })
}

async fn tickets(dir: &tempfile::TempDir) -> (Databases, Arc<dyn TableScope>) {
    let db = sqlite(dir, Duration::from_secs(5)).await;
    for setup in [
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)",
        "INSERT INTO tickets (title) VALUES ('a'), ('b'), ('c')",
    ] {
        db.exec(setup, &[]).await.unwrap();
    }
    (db, scope(&["tickets", "notes"], &["notes"]))
}

/// Tries `sql(try)` inline until one try answers at the first poll and returns its rows. A try
/// may outlast the inline budget on a loaded machine: it must then be refused for that passing
/// reason, and at most 49 of 50 may be.
fn answered_inline(
    db: &Databases,
    scope: &Arc<dyn TableScope>,
    sql: impl Fn(usize) -> String,
) -> Vec<Row> {
    for attempt_number in 0..50 {
        let (polled, refusal) = poll_inline(db.query_scoped(
            "p",
            scope,
            &sql(attempt_number),
            &[serde_json::json!("b")],
        ));
        match refusal {
            None => {
                let Poll::Ready(rows) = polled else {
                    panic!("the read waited without a refusal")
                };
                return rows.unwrap();
            }
            Some(refusal) => assert!(
                !refusal.lasting && refusal.reason.contains("outlasted the inline budget"),
                "{refusal:?}"
            ),
        }
    }
    panic!("no read answered inline in 50 tries")
}

#[tokio::test]
async fn a_read_on_sqlite_answers_at_the_first_poll() {
    let dir = tempfile::tempdir().unwrap();
    let (db, scope) = tickets(&dir).await;
    // A new statement (each try's text its own), then a cached one.
    let rows = answered_inline(&db, &scope, |n| {
        format!("SELECT count(*) AS n FROM tickets WHERE title <> ? AND {n} = {n}")
    });
    assert_eq!(rows[0]["n"], 2);
    let cached = "SELECT count(*) AS n FROM tickets WHERE title <> ?";
    db.query_scoped("p", &scope, cached, &[serde_json::json!("b")])
        .await
        .unwrap();
    let rows = answered_inline(&db, &scope, |_| cached.to_owned());
    assert_eq!(rows[0]["n"], 2);
}

#[tokio::test]
async fn a_statement_that_writes_is_refused_inline_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, scope) = tickets(&dir).await;
    let (polled, refusal) = poll_inline(db.query_scoped(
        "p",
        &scope,
        "INSERT INTO notes (text) VALUES ('inline') RETURNING id",
        &[],
    ));
    let refusal = refusal.expect("a write is refused");
    assert!(refusal.lasting, "{refusal:?}");
    assert!(refusal.reason.contains("writes"), "{refusal:?}");
    assert!(matches!(polled, Poll::Ready(Err(_))), "{polled:?}");
    let notes = db
        .query_scoped("p", &scope, "SELECT count(*) AS n FROM notes", &[])
        .await
        .unwrap();
    assert_eq!(notes[0]["n"], 0, "the refused statement stored nothing");
    // Outside an attempt the same statement runs.
    let rows = db
        .query_scoped(
            "p",
            &scope,
            "INSERT INTO notes (text) VALUES ('worker') RETURNING id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn a_read_past_the_inline_budget_is_interrupted_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, scope) = tickets(&dir).await;
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                   SELECT count(*) AS n FROM c";
    let (polled, refusal) = poll_inline(db.query_scoped("p", &scope, endless, &[]));
    let refusal = refusal.expect("an endless read is refused");
    assert!(!refusal.lasting, "a slow spell may pass: {refusal:?}");
    assert!(refusal.reason.contains("budget"), "{refusal:?}");
    assert!(matches!(polled, Poll::Ready(Err(_))), "{polled:?}");
    // The connection it ran on serves the next read.
    let (polled, refusal) =
        poll_inline(db.query_scoped("p", &scope, "SELECT count(*) AS n FROM tickets", &[]));
    assert_eq!(refusal, None);
    assert!(matches!(polled, Poll::Ready(Ok(_))), "{polled:?}");
}

/// `count(*)` of a table is one step of SQLite's virtual machine, which the progress handler
/// does not interrupt: the watchdog does.
#[tokio::test]
async fn a_single_long_step_is_interrupted_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = tickets(&dir).await;
    db.exec("CREATE TABLE big (x INTEGER)", &[]).await.unwrap();
    db.exec(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) \
         INSERT INTO big SELECT x FROM c",
        &[],
    )
    .await
    .unwrap();
    let scope = scope(&["big"], &[]);
    let count = "SELECT count(*) AS n FROM big";
    // Outside an attempt it counts them all.
    let rows = db.query_scoped("p", &scope, count, &[]).await.unwrap();
    assert_eq!(rows[0]["n"], 3_000_000);
    let (polled, refusal) = poll_inline(db.query_scoped("p", &scope, count, &[]));
    let refusal = refusal.expect("a count of three million rows is refused inline");
    assert!(refusal.reason.contains("budget"), "{refusal:?}");
    assert!(matches!(polled, Poll::Ready(Err(_))), "{polled:?}");
    // A statement whose time is over before its first step (here: at once) is not started,
    // since SQLite would forget an interrupt sent before then.
    let fresh = "SELECT count(*) AS n FROM big WHERE x > 0";
    let mut query = std::pin::pin!(db.query_scoped("p", &scope, fresh, &[]));
    let mut context = Context::from_waker(Waker::noop());
    let (polled, refusal) = attempt(Instant::now(), || query.as_mut().poll(&mut context));
    let refusal = refusal.expect("a statement out of time is refused");
    assert!(refusal.reason.contains("budget"), "{refusal:?}");
    assert!(matches!(polled, Poll::Ready(Err(_))), "{polled:?}");
}

#[tokio::test]
async fn a_database_server_is_not_tried_inline() {
    let Some(url) = service_url("GK_TEST_POSTGRES_URL") else {
        return;
    };
    let db = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap();
    let scope = scope(&["anything"], &[]);
    let (polled, refusal) = poll_inline(db.query_scoped("p", &scope, "SELECT 1 AS one", &[]));
    let refusal = refusal.expect("a server is refused");
    assert!(
        refusal.lasting && refusal.reason.contains("server"),
        "{refusal:?}"
    );
    assert!(matches!(polled, Poll::Ready(Err(_))), "{polled:?}");
}

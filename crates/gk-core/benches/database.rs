//! What the database wall costs per statement: the same query through the platform's pool
//! (no engine checks) and through the plugins' pool (SQLite: authorizer, deadline handler, no
//! statement cache; PostgreSQL and MariaDB: a transaction running as the plugin's role).
//!
//! `cargo bench -p gk-core --bench database` prints µs per query for SQLite, and for
//! PostgreSQL and MariaDB when `GK_TEST_POSTGRES_URL` / `GK_TEST_MYSQL_URL` are set.

use std::sync::Arc;
use std::time::Instant;

use gk_core::host::{DatabaseConfig, Databases};
use gk_sdk::{TableAccess, TableScope};

#[derive(Debug)]
struct Tables(String);

impl TableScope for Tables {
    fn allows_table(&self, _: &str, table: &[&str], _: TableAccess) -> bool {
        table == [self.0.as_str()]
    }
    fn allows_function(&self, name: &str) -> bool {
        name == "count"
    }
}

/// Median µs per call over 5 rounds of `n` calls.
async fn measure<F, Fut>(n: u32, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            f().await;
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

async fn bench(label: &str, url: &str) {
    let db = Databases::connect(&DatabaseConfig::single(url))
        .await
        .expect("the database opens");
    let table = format!("gk_bench_{}", std::process::id());
    db.exec(
        &format!("CREATE TABLE {table} (id INTEGER, title VARCHAR(20))"),
        &[],
    )
    .await
    .expect("table");
    for i in 0..100 {
        db.exec(
            &format!("INSERT INTO {table} (id, title) VALUES ({i}, 'a')"),
            &[],
        )
        .await
        .expect("row");
    }
    let scope: Arc<dyn TableScope> = Arc::new(Tables(table.clone()));
    let postgres = url.starts_with("postgres");
    let platform_sql = format!("SELECT id, title FROM {table} WHERE id = ?");
    let plugin_sql = if postgres {
        format!("SELECT id, title FROM {table} WHERE id = $1")
    } else {
        platform_sql.clone()
    };
    let args = [serde_json::json!(7)];
    let platform = measure(2000, || async {
        db.query(&platform_sql, &args)
            .await
            .expect("platform query");
    })
    .await;
    let plugin = measure(2000, || async {
        db.query_scoped("bench", &scope, &plugin_sql, &args)
            .await
            .expect("plugin query");
    })
    .await;
    println!(
        "{label:<12} {platform:>14.1} {plugin:>14.1} {:>14.1}",
        plugin - platform
    );
    db.exec(&format!("DROP TABLE {table}"), &[])
        .await
        .expect("drop");
}

#[tokio::main]
async fn main() {
    println!("gk-core: one indexed-less SELECT of one row out of 100 (median µs of 5 rounds)");
    println!(
        "{:<12} {:>14} {:>14} {:>14}",
        "database", "platform µs", "plugin µs", "wall adds µs"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    bench(
        "SQLite",
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
    )
    .await;
    for (label, variable) in [
        ("PostgreSQL", "GK_TEST_POSTGRES_URL"),
        ("MariaDB", "GK_TEST_MYSQL_URL"),
    ] {
        match std::env::var(variable) {
            Ok(url) if !url.is_empty() => bench(label, &url).await,
            _ => println!("{label:<12} (skipped: {variable} is not set)"),
        }
    }
}

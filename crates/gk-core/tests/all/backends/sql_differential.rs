//! Differential testing of the database wall: generated SQL through a plugin's sandbox onto
//! SQLite. Whatever the guard lets through, the engine (which checks every table it touches
//! against the same policy) never has to refuse.

use std::sync::Arc;
use std::time::Duration;

use gk_sandbox::{SandboxConfig, SandboxedHostApi, SqlDialect};
use gk_sdk::{Access, CallContext, HostApi, HostError, Permission, PermissionType};

use super::database_wall::{host, policy, sqlite};

/// A small deterministic generator of SQL (xorshift), so a failing case can be replayed from
/// its seed.
struct SqlGenerator {
    state: u64,
}

impl SqlGenerator {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }

    fn table(&mut self) -> String {
        let name = self.pick(&["tickets", "notes", "secret", "sqlite_master", "Tickets"]);
        match self.next() % 6 {
            0 => format!("\"{name}\""),
            1 => format!("[{name}]"),
            2 => format!("`{name}`"),
            3 => format!("main.{name}"),
            _ => name.to_owned(),
        }
    }

    fn space(&mut self) -> &'static str {
        match self.next() % 8 {
            0 => " /* x */ ",
            1 => " -- c\n",
            2 => "\n\t",
            _ => " ",
        }
    }

    fn expr(&mut self, depth: u32) -> String {
        match self.next() % 7 {
            0 => "id".to_owned(),
            1 => "'a -- b'".to_owned(),
            2 => "abs(-1)".to_owned(),
            3 if depth > 0 => format!("(SELECT count(*) FROM {})", self.table()),
            4 => "length('x')".to_owned(),
            5 if depth > 0 => format!("(SELECT max(id) FROM ({}) AS s)", self.select(depth - 1)),
            _ => "1".to_owned(),
        }
    }

    fn select(&mut self, depth: u32) -> String {
        let mut sql = format!(
            "SELECT{}{} AS id{}FROM{}{}",
            self.space(),
            self.expr(depth),
            self.space(),
            self.space(),
            self.table()
        );
        if depth > 0 && self.chance(3) {
            sql.push_str(&format!(" WHERE id IN ({})", self.select(depth - 1)));
        }
        if depth > 0 && self.chance(4) {
            sql = format!("{sql} UNION SELECT id FROM {}", self.table());
        }
        if depth > 0 && self.chance(3) {
            let cte = self.pick(&["c", "tickets", "secret", "notes"]);
            sql = format!("WITH {cte} AS ({}) {sql}", self.select(depth - 1));
        }
        sql
    }

    fn statement(&mut self) -> String {
        let target = self.table();
        let select = self.select(2);
        match self.next() % 7 {
            0 => format!("INSERT INTO {target} (id) {select}"),
            1 => format!("UPDATE {target} SET id = id WHERE id IN ({select})"),
            2 => format!("DELETE FROM {target} WHERE id = ({select})"),
            3 => {
                format!("WITH c AS ({select}) DELETE FROM {target} WHERE id IN (SELECT id FROM c)")
            }
            4 => format!("INSERT INTO {target} (id) VALUES (1) RETURNING id"),
            _ => select,
        }
    }
}

/// For every generated statement the guard allows, the engine (which checks every table it
/// touches against the same policy) never has to refuse: the tables SQLite actually touched
/// are within the scope. `GK_SQL_CASES` sets the number of cases (`cargo xtask fuzz` runs many
/// more), `GK_SQL_SEED` the seed.
#[tokio::test]
async fn differential_guard_and_engine_agree() {
    let cases: usize = std::env::var("GK_SQL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("GK_SQL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0042);
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir, Duration::from_secs(5)).await;
    for setup in [
        "CREATE TABLE tickets (id INTEGER)",
        "CREATE TABLE notes (id INTEGER)",
        "CREATE TABLE secret (id INTEGER)",
        "INSERT INTO tickets VALUES (1), (2)",
        "INSERT INTO secret VALUES (7)",
    ] {
        db.exec(setup, &[]).await.unwrap();
    }
    let policies = [
        vec![
            Permission::new(PermissionType::Db, Access::Read).with_scope(["tickets"]),
            Permission::new(PermissionType::Db, Access::ReadWrite).with_scope(["notes"]),
        ],
        vec![Permission::new(PermissionType::Db, Access::ReadWrite).with_scope(["*"])],
    ];
    let sandboxes: Vec<SandboxedHostApi> = policies
        .into_iter()
        .map(|permissions| {
            SandboxedHostApi::with_config(
                "p",
                host(db.clone()),
                policy(permissions),
                Arc::new(SandboxConfig::default().with_dialect("default", SqlDialect::Sqlite)),
            )
            .unwrap()
        })
        .collect();
    let ctx = CallContext::for_plugin("p");
    let mut generator = SqlGenerator { state: seed };
    let mut allowed = 0;
    let mut defects = Vec::new();
    for case in 0..cases {
        if case % 100 == 0 {
            // `INSERT … SELECT` doubles a table: keep them small, as the platform.
            for table in ["tickets", "notes", "secret"] {
                db.exec(&format!("DELETE FROM {table} WHERE rowid > 3"), &[])
                    .await
                    .unwrap();
            }
        }
        let sql = generator.statement();
        let sandbox = &sandboxes[case % sandboxes.len()];
        let result = if sql.starts_with("SELECT") {
            sandbox.db_query(&ctx, &sql, &[]).await.map(|_| 0)
        } else {
            sandbox.db_exec(&ctx, &sql, &[]).await
        };
        match result {
            Ok(_) => allowed += 1,
            Err(e) if e.to_string().contains("the database engine refused") => {
                defects.push(format!("case {case} (seed {seed}): {sql}\n  {e}"));
            }
            Err(HostError::PermissionDenied { .. } | HostError::InvalidInput(_)) => {}
            // The statement was allowed and then failed for a reason of its own (no such
            // column, a constraint): the engine still judged every table it touched.
            Err(HostError::Backend(_) | HostError::Timeout(_)) => allowed += 1,
            Err(e) => panic!("case {case}: {sql}: unexpected {e:?}"),
        }
    }
    assert!(
        defects.is_empty(),
        "{} guard defects:\n{}",
        defects.len(),
        defects.join("\n")
    );
    assert!(
        allowed > cases / 10,
        "only {allowed} of {cases} statements were allowed: the generator tests nothing"
    );
    eprintln!("differential: {cases} cases, {allowed} allowed, seed {seed}");
}

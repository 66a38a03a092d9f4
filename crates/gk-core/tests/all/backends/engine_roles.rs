//! The engines' per-plugin roles kept in step while other sessions (plugins, the platform,
//! other nodes) change tables and roles at the same moment (PostgreSQL and MariaDB).

use std::sync::Arc;

use gk_core::host::{DatabaseConfig, Databases};
use gk_sdk::TableScope;
use serde_json::json;

use super::database_wall::{EverythingScope, scope, unique};
use crate::common::service_url;

/// A plugin's role is synced over the tables listed a moment before; tables other sessions
/// drop meanwhile (other plugins, the platform, other nodes) do not fail the plugin's query.
#[tokio::test]
async fn server_role_syncs_survive_tables_dropped_meanwhile() {
    for variable in ["GK_TEST_POSTGRES_URL", "GK_TEST_MYSQL_URL"] {
        if let Some(url) = service_url(variable) {
            let db = Databases::connect(&DatabaseConfig::single(url))
                .await
                .unwrap();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let churn = {
                let (db, stop) = (db.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut made = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let tables: Vec<String> =
                            (0..4).map(|i| format!("{}_{i}", unique("churn"))).collect();
                        for table in &tables {
                            db.exec(&format!("CREATE TABLE {table} (x INT)"), &[])
                                .await
                                .unwrap();
                        }
                        for table in &tables {
                            db.exec(&format!("DROP TABLE {table}"), &[]).await.unwrap();
                        }
                        made += tables.len();
                    }
                    made
                })
            };
            for round in 0..40 {
                // A new scope each round: the plugin's grants are synced again.
                let scope: Arc<dyn TableScope> = Arc::new(EverythingScope);
                let rows = db
                    .query_scoped("churned", &scope, "SELECT 1 AS one", &[])
                    .await
                    .unwrap_or_else(|e| panic!("{variable}, round {round}: {e}"));
                assert_eq!(rows[0]["one"], 1);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let made = churn.await.unwrap();
            assert!(
                made > 0,
                "{variable}: no table was made and dropped meanwhile"
            );
        }
    }
}

/// A PostgreSQL sync clears what a plugin's role holds beyond its scope however it was given:
/// a column privilege, a privilege with grant option, a table privilege.
#[tokio::test]
async fn postgres_syncs_clear_column_and_grant_option_privileges() {
    let Some(url) = service_url("GK_TEST_POSTGRES_URL") else {
        return;
    };
    let db = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap();
    let (open, closed) = (unique("open"), unique("closed"));
    for table in [&open, &closed] {
        db.exec(&format!("CREATE TABLE {table} (x INT)"), &[])
            .await
            .unwrap();
    }
    let plugin = unique("cleared");
    db.query_scoped(&plugin, &scope(&[&open], &[]), "SELECT 1 AS one", &[])
        .await
        .unwrap();
    let role = db
        .query(
            "SELECT rolname AS r FROM pg_roles WHERE rolname LIKE ?",
            &[json!(format!("gk_plugin_{plugin}_%"))],
        )
        .await
        .unwrap();
    let role = role[0]["r"].as_str().unwrap().to_owned();
    for grant in [
        format!("GRANT SELECT (x) ON {closed} TO \"{role}\""),
        format!("GRANT SELECT ON {open} TO \"{role}\" WITH GRANT OPTION"),
    ] {
        db.exec(&grant, &[]).await.unwrap();
    }
    // A new scope object: the grants are synced again.
    let err = db
        .query_scoped(
            &plugin,
            &scope(&[&open], &[]),
            &format!("SELECT x FROM {closed}"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let left = db
        .query(
            &format!(
                "SELECT has_column_privilege(?, '{closed}', 'x', 'SELECT') AS column_read, \
                 has_table_privilege(?, '{open}', 'SELECT WITH GRANT OPTION') AS grant_option, \
                 has_table_privilege(?, '{open}', 'SELECT') AS read"
            ),
            &[json!(role), json!(role), json!(role)],
        )
        .await
        .unwrap();
    assert_eq!(
        left[0],
        json!({"column_read": false, "grant_option": false, "read": true})
            .as_object()
            .unwrap()
            .clone()
    );
}

/// Nodes (or test binaries) connecting to one server at the same moment each set up the
/// plugins' login and may all run plugin statements: none is left refusing them.
#[tokio::test]
async fn server_nodes_connecting_together_all_get_the_plugin_login() {
    for variable in ["GK_TEST_POSTGRES_URL", "GK_TEST_MYSQL_URL"] {
        if let Some(url) = service_url(variable) {
            let nodes = (0..6).map(|node| {
                let url = url.clone();
                tokio::spawn(async move {
                    let db = Databases::connect(&DatabaseConfig::single(url))
                        .await
                        .unwrap();
                    let scope: Arc<dyn TableScope> = Arc::new(EverythingScope);
                    db.query_scoped(&format!("node{node}"), &scope, "SELECT 1 AS one", &[])
                        .await
                })
            });
            for (node, answer) in futures::future::join_all(nodes)
                .await
                .into_iter()
                .enumerate()
            {
                let rows = answer
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{variable}, node {node}: {e}"));
                assert_eq!(rows[0]["one"], 1);
            }
        }
    }
}

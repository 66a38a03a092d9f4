//! Nodes starting together on a new database: each opens the store (creating its tables) at
//! the same moment, and every one of them opens it.

use chrono::SubsecRound;
use gk_core::{NodeRecord, Store, StoredPackage};
use sea_orm::ConnectionTrait;

use super::unique;
use crate::common::service_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_a_new_database_all_open_the_store() {
    let Some(admin_url) = service_url("GK_TEST_POSTGRES_URL") else {
        return;
    };
    let name = unique("gk_store_race").replace('-', "_");
    let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let opened = futures::future::join_all((0..6).map(|_| {
        let url = url.clone();
        async move {
            let db = sea_orm::Database::connect(&url).await.unwrap();
            Store::open(db).await.map(|_| ())
        }
    }))
    .await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    for result in opened {
        result.expect("every node opens the store");
    }
}

/// What the cluster keeps in the store — packages with their bytes, signatures, seals and
/// tombstones; node heartbeats — reads back the same from SQLite, PostgreSQL and MariaDB,
/// bytes of a 4 MiB package included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_and_nodes_round_trip_in_each_store() {
    let dir = tempfile::tempdir().unwrap();
    let places = super::jobs::store_places(dir.path());
    for (what, url) in places {
        let (store, databases) = super::jobs::store_on(&url).await;
        let name = unique("pkg").replace('-', "_");
        let content: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let changed = chrono::Utc::now().trunc_subsecs(0);
        let package = StoredPackage {
            name: name.clone(),
            file_name: format!("{name}.wasm"),
            sha256: "ab".repeat(32),
            content: content.clone(),
            signature: Some(vec![1, 2, 3]),
            installed: true,
            changed,
            changed_by: "ada".into(),
            seal: "cd".repeat(32),
        };
        store.put_package(&package).await.unwrap();
        assert_eq!(
            store.package(&name).await.unwrap().as_ref(),
            Some(&package),
            "{what}"
        );
        let entry = store.package_entry(&name).await.unwrap().unwrap();
        assert!(
            entry.content.is_empty() && entry.signature.is_none(),
            "{what}: no bytes"
        );
        assert_eq!(
            (entry.seal.as_str(), entry.installed),
            (package.seal.as_str(), true)
        );
        assert!(
            store
                .package_index()
                .await
                .unwrap()
                .iter()
                .any(|p| p.name == name),
            "{what}"
        );
        store
            .remove_package(&name, "bob", &"ef".repeat(32))
            .await
            .unwrap();
        let tombstone = store.package(&name).await.unwrap().unwrap();
        assert!(
            !tombstone.installed && tombstone.content.is_empty(),
            "{what}"
        );
        assert_eq!(
            (tombstone.seal, tombstone.changed_by, tombstone.sha256),
            ("ef".repeat(32), "bob".to_owned(), package.sha256.clone()),
            "{what}"
        );

        let node = NodeRecord {
            id: name.clone(),
            version: "0.1.0".into(),
            address: "10.0.0.1:8080".into(),
            started: changed,
            last_seen: changed,
            plugins_loaded: 3,
            report: r#"{"stats":{"calls":1}}"#.into(),
        };
        store.heartbeat(&node).await.unwrap();
        assert_eq!(
            store.node(&name).await.unwrap().as_ref(),
            Some(&node),
            "{what}"
        );
        let pruned = store
            .prune_nodes(changed + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert!(pruned >= 1, "{what}");
        assert_eq!(store.node(&name).await.unwrap(), None, "{what}");

        databases
            .exec(
                &format!("DELETE FROM gk_packages WHERE name = '{name}'"),
                &[],
            )
            .await
            .unwrap();
    }
}

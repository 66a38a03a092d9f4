//! The store keeps plugin state across restarts (reopening the database), on every backend.

use gk_core::Store;
use gk_core::host::{DatabaseConfig, Databases};
use gk_sdk::{Access, Permission, PermissionType, PolicyStatus, ResourcePolicy};

use super::databases::Kind;
use crate::common::service_url;

async fn open(url: &str) -> Store {
    let databases = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap();
    Store::open(databases.connection("default").unwrap().clone())
        .await
        .unwrap()
}

/// Removes what earlier runs of this test left in a shared database.
async fn forget_earlier_runs(url: &str) {
    let databases = Databases::connect(&DatabaseConfig::single(url))
        .await
        .unwrap();
    for table in ["sysconfig_modified", "sysconfig_default"] {
        databases
            .exec(
                &format!("DELETE FROM {table} WHERE name LIKE 'Plugin::store-test-%'"),
                &[],
            )
            .await
            .unwrap();
    }
}

async fn survives_a_restart(kind: Kind, url: &str) {
    let plugin = format!("store-test-{}-{:?}", std::process::id(), kind).to_lowercase();
    let store = open(url).await;
    forget_earlier_runs(url).await;
    assert!(
        store.plugin_enabled(&plugin).await.unwrap(),
        "{kind:?}: no stored state means enabled"
    );
    assert!(!store.plugin_enabled_is_stored(&plugin).await.unwrap());
    assert_eq!(store.plugin_policy(&plugin).await.unwrap(), None);

    store
        .set_plugin_enabled(&plugin, false, "admin")
        .await
        .unwrap();
    let mut policy = ResourcePolicy::default_for(&plugin);
    policy.status = PolicyStatus::Approved;
    policy
        .permissions
        .push(Permission::new(PermissionType::Http, Access::Read).with_scope(["api.example.com"]));
    store.set_plugin_policy(&policy, "admin").await.unwrap();
    store.set_plugin_policy(&policy, "admin").await.unwrap();
    drop(store);

    // A new connection, as after a restart.
    let store = open(url).await;
    assert!(!store.plugin_enabled(&plugin).await.unwrap(), "{kind:?}");
    assert_eq!(
        store.plugin_policy(&plugin).await.unwrap(),
        Some(policy.clone()),
        "{kind:?}"
    );
    assert!(store.all_policies().await.unwrap().contains(&policy));
    store
        .set_plugin_enabled(&plugin, true, "admin")
        .await
        .unwrap();
    assert!(
        open(url).await.plugin_enabled(&plugin).await.unwrap(),
        "{kind:?}"
    );

    // Defaults apply until a modified value exists; the Go host's `false` disables too.
    let shipped = format!("{plugin}-shipped");
    store
        .set_default(&format!("Plugin::{shipped}::Enabled"), "false")
        .await
        .unwrap();
    assert!(!store.plugin_enabled(&shipped).await.unwrap());
    store
        .set_plugin_enabled(&shipped, true, "admin")
        .await
        .unwrap();
    assert!(store.plugin_enabled(&shipped).await.unwrap());

    // Read at once: a modified value over a default one, a default alone, nothing stored;
    // over more names than one query takes.
    let shipped_off = format!("{plugin}-shipped-off");
    store
        .set_default(&format!("Plugin::{shipped_off}::Enabled"), "0")
        .await
        .unwrap();
    let unstored: Vec<String> = (0..Store::SETTINGS_PER_QUERY + 20)
        .map(|i| format!("{plugin}-unstored-{i}"))
        .collect();
    let mut names = unstored.clone();
    names.extend([plugin.clone(), shipped.clone(), shipped_off.clone()]);
    let enabled = store.plugins_enabled(&names).await.unwrap();
    assert_eq!(enabled.len(), names.len(), "{kind:?}");
    assert!(unstored.iter().all(|name| enabled[name]), "{kind:?}");
    assert!(!enabled[&shipped_off] && enabled[&shipped] && enabled[&plugin]);
    // Names that differ only in case, one of them stored: matched as the database compares
    // names (MariaDB's collation ignores case, SQLite and PostgreSQL do not).
    store
        .set_setting(&format!("Plugin::{plugin}-Case::Enabled"), "0", "admin")
        .await
        .unwrap();
    let cased = [format!("{plugin}-Case"), format!("{plugin}-case")];
    let enabled = store.plugins_enabled(&cased).await.unwrap();
    assert!(!enabled[&cased[0]], "{kind:?}: the name as stored");
    assert_eq!(
        enabled[&cased[1]],
        kind != Kind::MySql,
        "{kind:?}: the name in another case"
    );
    let policies = store.plugin_policies(&names).await.unwrap();
    assert_eq!(
        policies.into_iter().collect::<Vec<_>>(),
        [(plugin.clone(), policy.clone())],
        "{kind:?}: only the stored policy"
    );

    // A corrupt policy is an error naming the key, not a silent default.
    store
        .set_setting(&format!("Plugin::{plugin}::Policy"), "{not json", "admin")
        .await
        .unwrap();
    let err = store.plugin_policy(&plugin).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "store: `Plugin::{plugin}::Policy` holds a value that cannot be read"
        )),
        "{err}"
    );
    let err = store.plugin_policies(&names).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "store: `Plugin::{plugin}::Policy` holds a value that cannot be read"
        )),
        "read at once too: {err}"
    );
    forget_earlier_runs(url).await;
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    survives_a_restart(
        Kind::Sqlite,
        &format!("sqlite://{}", dir.path().join("store.db").display()),
    )
    .await;
}

#[tokio::test]
async fn postgres() {
    if let Some(url) = service_url("GK_TEST_POSTGRES_URL") {
        survives_a_restart(Kind::Postgres, &url).await;
    }
}

#[tokio::test]
async fn mariadb() {
    if let Some(url) = service_url("GK_TEST_MYSQL_URL") {
        survives_a_restart(Kind::MySql, &url).await;
    }
}

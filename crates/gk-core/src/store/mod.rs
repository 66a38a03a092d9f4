//! The store: the platform's own state in the shared database (`sysconfig_default`,
//! `sysconfig_modified`), with typed accessors for plugin state. Identical on SQLite,
//! PostgreSQL and MariaDB; tables are created on open, idempotently.
//!
//! Keys follow the Go host: `Plugin::<name>::Enabled` (`0` or `false` means disabled; no row
//! means enabled) and `Plugin::<name>::Policy` (the policy as JSON). A modified value wins over
//! a default one.

mod cluster;
mod entities;
mod job_claims;
mod outbox;

use std::collections::HashMap;

use chrono::Utc;
use gk_sdk::ResourcePolicy;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    QueryFilter, Schema,
};

use entities::{email_outbox, sysconfig_default, sysconfig_modified};

pub use cluster::{NodeRecord, StoredPackage};
pub use outbox::OutboxMessage;

/// Why the store could not read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// A stored value cannot be read.
    #[error("store: `{key}` holds a value that cannot be read: {problem}")]
    Corrupt {
        /// The setting.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The platform's state.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

fn enabled_key(plugin: &str) -> String {
    format!("Plugin::{plugin}::Enabled")
}

fn policy_key(plugin: &str) -> String {
    format!("Plugin::{plugin}::Policy")
}

/// How many times [`Store::open`] tries to create the tables.
const CREATE_ATTEMPTS: u64 = 6;

impl Store {
    /// Setting names in one `IN (...)` list of [`Store::settings`]: far below every backend's
    /// limit on bound values (SQLite's 32,766, PostgreSQL's 65,535).
    pub const SETTINGS_PER_QUERY: usize = 500;

    /// The platform's tables. No plugin scope reaches them, `*` included.
    pub const TABLES: [&str; 6] = [
        "sysconfig_default",
        "sysconfig_modified",
        "gk_email_outbox",
        cluster::TABLES[0],
        cluster::TABLES[1],
        job_claims::TABLE,
    ];

    /// Connects to the store's own database at `url` (a SQLite file is created with its
    /// directory) and opens the store there.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut url = url.to_owned();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(sea_orm::DbErr::Custom(format!(
                        "cannot create {}: {e}",
                        dir.display()
                    )))
                })?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let file =
            url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains("mode=memory");
        let mut options = sea_orm::ConnectOptions::new(url);
        options.sqlx_logging(false);
        if file {
            // WAL: the store's reads do not wait for its writes (nor for each other), and a
            // commit with `synchronous = NORMAL` waits for no fsync of the database file.
            options.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
            });
        }
        Self::open(sea_orm::Database::connect(options).await?).await
    }

    /// Opens the store on `db`, creating its tables when they do not exist. Nodes of a cluster
    /// starting together on a new database race to create them: PostgreSQL can refuse one of
    /// two simultaneous `CREATE TABLE IF NOT EXISTS` (a duplicate type), so a failed creation
    /// is tried again, up to six times, and then finds the tables made.
    pub async fn open(db: DatabaseConnection) -> Result<Self, StoreError> {
        let mut attempt = 1;
        loop {
            match Self::create_tables(&db).await {
                Ok(()) => return Ok(Self { db }),
                Err(error) if attempt < CREATE_ATTEMPTS => {
                    tracing::debug!(%error, attempt, "store tables not created; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn create_tables(db: &DatabaseConnection) -> Result<(), StoreError> {
        let schema = Schema::new(db.get_database_backend());
        for statement in [
            schema
                .create_table_from_entity(sysconfig_default::Entity)
                .if_not_exists()
                .to_owned(),
            schema
                .create_table_from_entity(sysconfig_modified::Entity)
                .if_not_exists()
                .to_owned(),
            schema
                .create_table_from_entity(email_outbox::Entity)
                .if_not_exists()
                .to_owned(),
        ] {
            db.execute(&statement).await?;
        }
        cluster::create_tables(db).await?;
        job_claims::create_table(db).await?;
        Ok(())
    }

    /// A setting: the modified value if there is a valid one, else the default.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.settings(&[key.to_owned()]).await?.remove(key))
    }

    /// The settings named in `keys` that have a value, each the modified value if there is a
    /// valid one, else the default; two queries per [`Store::SETTINGS_PER_QUERY`] keys.
    ///
    /// A row is matched to the keys it answers as the database compares names: MariaDB's
    /// collation ignores case (so `Plugin::Foo::Enabled` answers `Plugin::foo::Enabled` there,
    /// as a lookup by `=` always did), SQLite and PostgreSQL do not.
    pub async fn settings(&self, keys: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let ignores_case = self.db.get_database_backend() == DatabaseBackend::MySql;
        let compared = |name: &str| {
            if ignores_case {
                name.to_ascii_lowercase()
            } else {
                name.to_owned()
            }
        };
        let mut asked: HashMap<String, Vec<&String>> = HashMap::new();
        for key in keys {
            asked.entry(compared(key)).or_default().push(key);
        }
        let mut found = HashMap::new();
        let mut keep = |name: &str, value: String| {
            for key in asked.get(&compared(name)).into_iter().flatten() {
                found.insert((*key).clone(), value.clone());
            }
        };
        for chunk in keys.chunks(Self::SETTINGS_PER_QUERY) {
            let names = || chunk.iter().map(String::as_str);
            let defaults = sysconfig_default::Entity::find()
                .filter(sysconfig_default::Column::Name.is_in(names()))
                .filter(sysconfig_default::Column::Valid.eq(1))
                .all(&self.db)
                .await?;
            for row in defaults {
                keep(&row.name, row.value);
            }
            // Kept after the defaults: a modified value wins.
            let modified = sysconfig_modified::Entity::find()
                .filter(sysconfig_modified::Column::Name.is_in(names()))
                .filter(sysconfig_modified::Column::Valid.eq(1))
                .all(&self.db)
                .await?;
            for row in modified {
                keep(&row.name, row.value);
            }
        }
        Ok(found)
    }

    /// Sets a modified setting (insert or update).
    pub async fn set_setting(&self, key: &str, value: &str, by: &str) -> Result<(), StoreError> {
        let now = Utc::now();
        let row = sysconfig_modified::ActiveModel {
            id: ActiveValue::NotSet,
            name: ActiveValue::Set(key.to_owned()),
            value: ActiveValue::Set(value.to_owned()),
            valid: ActiveValue::Set(1),
            create_time: ActiveValue::Set(now),
            create_by: ActiveValue::Set(by.to_owned()),
            change_time: ActiveValue::Set(now),
            change_by: ActiveValue::Set(by.to_owned()),
        };
        sysconfig_modified::Entity::insert(row)
            .on_conflict(
                OnConflict::column(sysconfig_modified::Column::Name)
                    .update_columns([
                        sysconfig_modified::Column::Value,
                        sysconfig_modified::Column::Valid,
                        sysconfig_modified::Column::ChangeTime,
                        sysconfig_modified::Column::ChangeBy,
                    ])
                    .to_owned(),
            )
            // An update that changes nothing affects no row on MariaDB: not an error.
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Runs `sql` (one or more statements) on `target` unless SQL with the same SHA-256
    /// already ran under `label`; remembers it in the store. Returns whether it ran. For schema
    /// and seed files of the plugins' database run at start.
    pub async fn run_sql_once(
        &self,
        target: &DatabaseConnection,
        label: &str,
        sql: &str,
    ) -> Result<bool, StoreError> {
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, sql.as_bytes()));
        let key = format!("GoatKit::InitSql::{label}");
        if self.setting(&key).await?.as_deref() == Some(digest.as_str()) {
            return Ok(false);
        }
        target.execute_unprepared(sql).await?;
        self.set_setting(&key, &digest, "init_sql").await?;
        Ok(true)
    }

    /// Moves the store's tables out of `old` (a plugins' database that held them before the
    /// store had a database of its own) into this store, unless this store holds settings
    /// already. Returns the number of rows moved; `old` keeps nothing of the platform's.
    pub async fn adopt_tables_from(&self, old: &DatabaseConnection) -> Result<usize, StoreError> {
        let Ok(modified) = sysconfig_modified::Entity::find().all(old).await else {
            return Ok(0); // no store tables there
        };
        if sysconfig_modified::Entity::find()
            .one(&self.db)
            .await?
            .is_some()
        {
            tracing::warn!(
                "the plugins' database still holds store tables, and the store is not empty: left as they are"
            );
            return Ok(0);
        }
        let defaults = sysconfig_default::Entity::find().all(old).await?;
        let outbox = email_outbox::Entity::find()
            .all(old)
            .await
            .unwrap_or_default();
        let moved = modified.len() + defaults.len() + outbox.len();
        for row in modified {
            sysconfig_modified::Entity::insert(sysconfig_modified::ActiveModel::from(row))
                .exec_without_returning(&self.db)
                .await?;
        }
        for row in defaults {
            sysconfig_default::Entity::insert(sysconfig_default::ActiveModel::from(row))
                .exec_without_returning(&self.db)
                .await?;
        }
        for row in outbox {
            email_outbox::Entity::insert(email_outbox::ActiveModel::from(row))
                .exec_without_returning(&self.db)
                .await?;
        }
        for table in Self::TABLES {
            old.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        tracing::info!(
            rows = moved,
            "store tables moved out of the plugins' database"
        );
        Ok(moved)
    }

    /// Sets a shipped default (insert or update), e.g. for the bundled example plugins.
    pub async fn set_default(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let now = Utc::now();
        let row = sysconfig_default::ActiveModel {
            id: ActiveValue::NotSet,
            name: ActiveValue::Set(key.to_owned()),
            value: ActiveValue::Set(value.to_owned()),
            valid: ActiveValue::Set(1),
            create_time: ActiveValue::Set(now),
            create_by: ActiveValue::Set("system".to_owned()),
            change_time: ActiveValue::Set(now),
            change_by: ActiveValue::Set("system".to_owned()),
        };
        sysconfig_default::Entity::insert(row)
            .on_conflict(
                OnConflict::column(sysconfig_default::Column::Name)
                    .update_columns([
                        sysconfig_default::Column::Value,
                        sysconfig_default::Column::ChangeTime,
                    ])
                    .to_owned(),
            )
            // An update that changes nothing affects no row on MariaDB: not an error.
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Whether a plugin is enabled: no stored state means enabled.
    pub async fn plugin_enabled(&self, plugin: &str) -> Result<bool, StoreError> {
        let plugin = plugin.to_owned();
        let mut enabled = self.plugins_enabled(std::slice::from_ref(&plugin)).await?;
        Ok(enabled.remove(&plugin).unwrap_or(true))
    }

    /// Whether each of `plugins` is enabled, read at once. A stored state is read as the Go
    /// host reads it: `0`, `false`, `no` or `off` disable; no state means enabled.
    pub async fn plugins_enabled(
        &self,
        plugins: &[String],
    ) -> Result<HashMap<String, bool>, StoreError> {
        let keys: Vec<String> = plugins.iter().map(|plugin| enabled_key(plugin)).collect();
        let stored = self.settings(&keys).await?;
        Ok(plugins
            .iter()
            .zip(&keys)
            .map(|(plugin, key)| {
                let enabled = stored.get(key).is_none_or(|value| {
                    !matches!(
                        value.trim().to_ascii_lowercase().as_str(),
                        "0" | "false" | "no" | "off"
                    )
                });
                (plugin.clone(), enabled)
            })
            .collect())
    }

    /// Whether a plugin has any stored enabled state.
    pub async fn plugin_enabled_is_stored(&self, plugin: &str) -> Result<bool, StoreError> {
        Ok(self.setting(&enabled_key(plugin)).await?.is_some())
    }

    /// Stores a plugin's enabled state.
    pub async fn set_plugin_enabled(
        &self,
        plugin: &str,
        enabled: bool,
        by: &str,
    ) -> Result<(), StoreError> {
        self.set_setting(&enabled_key(plugin), if enabled { "1" } else { "0" }, by)
            .await
    }

    /// A plugin's stored policy, if it has one.
    pub async fn plugin_policy(&self, plugin: &str) -> Result<Option<ResourcePolicy>, StoreError> {
        let plugin = plugin.to_owned();
        Ok(self
            .plugin_policies(std::slice::from_ref(&plugin))
            .await?
            .remove(&plugin))
    }

    /// The stored policies of those of `plugins` that have one, read at once.
    pub async fn plugin_policies(
        &self,
        plugins: &[String],
    ) -> Result<HashMap<String, ResourcePolicy>, StoreError> {
        let keys: Vec<String> = plugins.iter().map(|plugin| policy_key(plugin)).collect();
        let mut stored = self.settings(&keys).await?;
        let mut policies = HashMap::new();
        for (plugin, key) in plugins.iter().zip(keys) {
            let Some(json) = stored.remove(&key) else {
                continue;
            };
            let policy = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                key,
                problem: e.to_string(),
            })?;
            policies.insert(plugin.clone(), policy);
        }
        Ok(policies)
    }

    /// Stores a plugin's policy (as JSON under `Plugin::<name>::Policy`).
    pub async fn set_plugin_policy(
        &self,
        policy: &ResourcePolicy,
        by: &str,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt {
            key: policy_key(&policy.plugin_name),
            problem: e.to_string(),
        })?;
        self.set_setting(&policy_key(&policy.plugin_name), &json, by)
            .await
    }

    /// Every stored policy.
    pub async fn all_policies(&self) -> Result<Vec<ResourcePolicy>, StoreError> {
        let rows = sysconfig_modified::Entity::find()
            .filter(sysconfig_modified::Column::Name.like("Plugin::%::Policy"))
            .filter(sysconfig_modified::Column::Valid.eq(1))
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|row| {
                serde_json::from_str(&row.value).map_err(|e| StoreError::Corrupt {
                    key: row.name.clone(),
                    problem: e.to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use super::Store;

    #[tokio::test]
    async fn a_sqlite_file_store_is_in_wal_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = Store::connect(&url).await.expect("connect");
        let row = store
            .db
            .query_one_raw(Statement::from_string(
                store.db.get_database_backend(),
                "PRAGMA journal_mode",
            ))
            .await
            .expect("pragma")
            .expect("a row");
        assert_eq!(row.try_get_by_index::<String>(0).expect("text"), "wal");
    }
}

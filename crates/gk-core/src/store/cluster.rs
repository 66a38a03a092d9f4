//! The store's cluster tables: the installed packages (the source every node installs from)
//! and the nodes' heartbeats.
//!
//! `gk_packages` holds one row per plugin installed through the platform (an upload): its file
//! name, the SHA-256 of its bytes, the bytes themselves and their signature. Removing a plugin
//! keeps the row as a tombstone (`installed = false`, no content), so a node that missed the
//! removal still learns of it. `gk_nodes` holds each node's last heartbeat and its report.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait,
    QueryFilter, QuerySelect, Schema,
};

use super::{Store, StoreError};

/// `gk_packages`: the plugins installed through the platform, with their bytes.
pub(crate) mod packages {
    #![allow(unreachable_pub)] // the entity macros generate public items
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "gk_packages")]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(64))"
        )]
        pub name: String,
        #[sea_orm(column_type = "String(StringLen::N(255))")]
        pub file_name: String,
        #[sea_orm(column_type = "String(StringLen::N(64))")]
        pub sha256: String,
        #[sea_orm(column_type = "Blob")]
        pub content: Vec<u8>,
        #[sea_orm(column_type = "Blob", nullable)]
        pub signature: Option<Vec<u8>>,
        pub installed: bool,
        pub change_time: DateTimeUtc,
        #[sea_orm(column_type = "String(StringLen::N(200))")]
        pub change_by: String,
        /// The writing node's seal (`cluster::PackageSeal`), in hex.
        #[sea_orm(column_type = "String(StringLen::N(64))")]
        pub seal: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// `gk_nodes`: each node's heartbeat.
pub(crate) mod nodes {
    #![allow(unreachable_pub)] // the entity macros generate public items
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "gk_nodes")]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(200))"
        )]
        pub id: String,
        #[sea_orm(column_type = "String(StringLen::N(64))")]
        pub version: String,
        #[sea_orm(column_type = "String(StringLen::N(255))")]
        pub address: String,
        pub started: DateTimeUtc,
        pub last_seen: DateTimeUtc,
        pub plugins_loaded: i32,
        #[sea_orm(column_type = "Text")]
        pub report: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A plugin installed through the platform, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPackage {
    /// The plugin's name.
    pub name: String,
    /// The file it was uploaded as (`<name>.wasm`, `<name>.zip`).
    pub file_name: String,
    /// The SHA-256 of `content`, in hex.
    pub sha256: String,
    /// The bytes (empty for a removed plugin).
    pub content: Vec<u8>,
    /// The detached signature uploaded with it.
    pub signature: Option<Vec<u8>>,
    /// `false`: it was uninstalled (a tombstone, so that every node removes it).
    pub installed: bool,
    /// When it was installed or removed.
    pub changed: DateTime<Utc>,
    /// Who installed or removed it.
    pub changed_by: String,
    /// The HMAC of the node that wrote it (`cluster::PackageSeal`), in hex: a node installs
    /// or removes nothing whose seal is not its cluster's.
    pub seal: String,
}

/// What a node last said of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    /// The node's id (`--node-id`).
    pub id: String,
    /// The GoatKit version it runs.
    pub version: String,
    /// Where it serves HTTP.
    pub address: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// How many plugins it has loaded.
    pub plugins_loaded: u32,
    /// Its report (JSON: per-plugin stats), as it wrote it.
    pub report: String,
}

/// The tables of this module, created by [`Store::open`].
pub(super) const TABLES: [&str; 2] = ["gk_packages", "gk_nodes"];

/// Creates the cluster tables unless they exist.
pub(super) async fn create_tables(db: &DatabaseConnection) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    let schema = Schema::new(backend);
    for statement in [
        schema
            .create_table_from_entity(packages::Entity)
            .if_not_exists()
            .to_owned(),
        schema
            .create_table_from_entity(nodes::Entity)
            .if_not_exists()
            .to_owned(),
    ] {
        db.execute(&statement).await?;
    }
    // Tables made before packages were sealed lack the column: added, empty, so that their
    // rows are refused until uploaded again.
    if db
        .execute_unprepared("SELECT seal FROM gk_packages WHERE 1 = 0")
        .await
        .is_err()
    {
        db.execute_unprepared(
            "ALTER TABLE gk_packages ADD COLUMN seal VARCHAR(64) NOT NULL DEFAULT ''",
        )
        .await?;
        tracing::warn!(
            "gk_packages had no seal column: added; packages stored before are refused by every node until uploaded again"
        );
    }
    if backend == DatabaseBackend::MySql {
        // A MariaDB BLOB holds 64 KiB; a plugin package is larger.
        db.execute_unprepared(
            "ALTER TABLE gk_packages MODIFY content LONGBLOB NOT NULL, MODIFY signature BLOB NULL",
        )
        .await?;
    }
    Ok(())
}

impl From<packages::Model> for StoredPackage {
    fn from(row: packages::Model) -> Self {
        Self {
            name: row.name,
            file_name: row.file_name,
            sha256: row.sha256,
            content: row.content,
            signature: row.signature,
            installed: row.installed,
            changed: row.change_time,
            changed_by: row.change_by,
            seal: row.seal,
        }
    }
}

impl From<nodes::Model> for NodeRecord {
    fn from(row: nodes::Model) -> Self {
        Self {
            id: row.id,
            version: row.version,
            address: row.address,
            started: row.started,
            last_seen: row.last_seen,
            plugins_loaded: u32::try_from(row.plugins_loaded).unwrap_or(0),
            report: row.report,
        }
    }
}

impl Store {
    /// Stores a package (insert or replace).
    pub async fn put_package(&self, package: &StoredPackage) -> Result<(), StoreError> {
        let row = packages::ActiveModel {
            name: ActiveValue::Set(package.name.clone()),
            file_name: ActiveValue::Set(package.file_name.clone()),
            sha256: ActiveValue::Set(package.sha256.clone()),
            content: ActiveValue::Set(package.content.clone()),
            signature: ActiveValue::Set(package.signature.clone()),
            installed: ActiveValue::Set(package.installed),
            change_time: ActiveValue::Set(package.changed),
            change_by: ActiveValue::Set(package.changed_by.clone()),
            seal: ActiveValue::Set(package.seal.clone()),
        };
        packages::Entity::insert(row)
            .on_conflict(
                OnConflict::column(packages::Column::Name)
                    .update_columns([
                        packages::Column::FileName,
                        packages::Column::Sha256,
                        packages::Column::Content,
                        packages::Column::Signature,
                        packages::Column::Installed,
                        packages::Column::ChangeTime,
                        packages::Column::ChangeBy,
                        packages::Column::Seal,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// One stored package, with its bytes.
    pub async fn package(&self, name: &str) -> Result<Option<StoredPackage>, StoreError> {
        Ok(packages::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(StoredPackage::from))
    }

    /// One stored package without its bytes (`content` and `signature` empty).
    pub async fn package_entry(&self, name: &str) -> Result<Option<StoredPackage>, StoreError> {
        Ok(self.package_rows(Some(name)).await?.into_iter().next())
    }

    /// Every stored package (tombstones included) without its bytes: `content` and
    /// `signature` are empty; [`Store::package`] reads them.
    pub async fn package_index(&self) -> Result<Vec<StoredPackage>, StoreError> {
        self.package_rows(None).await
    }

    async fn package_rows(&self, name: Option<&str>) -> Result<Vec<StoredPackage>, StoreError> {
        let mut query = packages::Entity::find();
        if let Some(name) = name {
            query = query.filter(packages::Column::Name.eq(name));
        }
        type Row = (String, String, String, bool, DateTime<Utc>, String, String);
        let rows: Vec<Row> = query
            .select_only()
            .columns([
                packages::Column::Name,
                packages::Column::FileName,
                packages::Column::Sha256,
                packages::Column::Installed,
                packages::Column::ChangeTime,
                packages::Column::ChangeBy,
                packages::Column::Seal,
            ])
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, file_name, sha256, installed, changed, changed_by, seal)| StoredPackage {
                    name,
                    file_name,
                    sha256,
                    content: Vec::new(),
                    signature: None,
                    installed,
                    changed,
                    changed_by,
                    seal,
                },
            )
            .collect())
    }

    /// Marks a package removed, dropping its bytes (the row stays as a tombstone, with
    /// `seal`, the writing node's seal of the removal).
    pub async fn remove_package(&self, name: &str, by: &str, seal: &str) -> Result<(), StoreError> {
        packages::Entity::update_many()
            .col_expr(packages::Column::Seal, seal.to_owned().into())
            .col_expr(packages::Column::Installed, false.into())
            .col_expr(packages::Column::Content, Vec::<u8>::new().into())
            .col_expr(packages::Column::Signature, Option::<Vec<u8>>::None.into())
            .col_expr(packages::Column::ChangeTime, Utc::now().into())
            .col_expr(packages::Column::ChangeBy, by.to_owned().into())
            .filter(packages::Column::Name.eq(name))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Records a node's heartbeat (insert or update).
    pub async fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let row = nodes::ActiveModel {
            id: ActiveValue::Set(node.id.clone()),
            version: ActiveValue::Set(node.version.clone()),
            address: ActiveValue::Set(node.address.clone()),
            started: ActiveValue::Set(node.started),
            last_seen: ActiveValue::Set(node.last_seen),
            plugins_loaded: ActiveValue::Set(
                i32::try_from(node.plugins_loaded).unwrap_or(i32::MAX),
            ),
            report: ActiveValue::Set(node.report.clone()),
        };
        nodes::Entity::insert(row)
            .on_conflict(
                OnConflict::column(nodes::Column::Id)
                    .update_columns([
                        nodes::Column::Version,
                        nodes::Column::Address,
                        nodes::Column::Started,
                        nodes::Column::LastSeen,
                        nodes::Column::PluginsLoaded,
                        nodes::Column::Report,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Every node that ever sent a heartbeat (see [`NodeRecord::last_seen`]).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(nodes::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(NodeRecord::from)
            .collect())
    }

    /// One node's last heartbeat.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        Ok(nodes::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(NodeRecord::from))
    }

    /// Forgets the nodes last seen before `before` (gone for good); how many.
    pub async fn prune_nodes(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(nodes::Entity::delete_many()
            .filter(nodes::Column::LastSeen.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Forgets a node (one that stopped cleanly).
    pub async fn forget_node(&self, id: &str) -> Result<(), StoreError> {
        nodes::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Sends `payload` on the PostgreSQL notification channel `channel` (`pg_notify`); `false`
    /// when the store is not on PostgreSQL.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<bool, StoreError> {
        if self.db.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(false);
        }
        self.db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [channel.into(), payload.into()],
            ))
            .await?;
        Ok(true)
    }

    /// The store database's engine.
    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }
}

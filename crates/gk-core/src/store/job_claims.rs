//! `gk_job_claims`: which node runs each occurrence of a plugin job, one row per occurrence
//! (`plugin`, `job`, `tick` are the primary key). The first node to insert the row runs the
//! occurrence; the others' inserts fail on the key and they leave it. Rows older than a day are
//! pruned. The same on SQLite, PostgreSQL and MariaDB.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    Schema, SqlErr,
};

use super::{Store, StoreError};

/// `gk_job_claims`: one row per job occurrence claimed.
pub(crate) mod claims {
    #![allow(unreachable_pub)] // the entity macros generate public items
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "gk_job_claims")]
    pub struct Model {
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(64))"
        )]
        pub plugin: String,
        #[sea_orm(
            primary_key,
            auto_increment = false,
            column_type = "String(StringLen::N(200))"
        )]
        pub job: String,
        /// The occurrence, in milliseconds since the Unix epoch.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tick: i64,
        #[sea_orm(column_type = "String(StringLen::N(200))")]
        pub node: String,
        pub claimed_at: DateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// The table's name, reserved from plugins.
pub(super) const TABLE: &str = "gk_job_claims";

/// The longest job id or node id kept as it is; longer ones are kept as their SHA-256.
const MAX_ID_LEN: usize = 200;

/// Creates the table unless it exists. Nodes starting together on a new database may race to
/// create it (PostgreSQL's `IF NOT EXISTS` is not atomic): a failure is tried once more.
pub(super) async fn create_table(db: &DatabaseConnection) -> Result<(), StoreError> {
    let statement = Schema::new(db.get_database_backend())
        .create_table_from_entity(claims::Entity)
        .if_not_exists()
        .to_owned();
    if db.execute(&statement).await.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        db.execute(&statement).await?;
    }
    Ok(())
}

/// `id` as a column value: itself, or its SHA-256 when it is too long for the column.
fn bounded(id: &str) -> String {
    if id.len() <= MAX_ID_LEN {
        id.to_owned()
    } else {
        format!(
            "sha256:{}",
            hex::encode(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()))
        )
    }
}

impl Store {
    /// Claims occurrence `tick` of `plugin`'s job `job` for `node`: `true` when this insert
    /// made the claim, `false` when a row for that occurrence exists (another node, or this one,
    /// claimed it first).
    pub(crate) async fn claim_job(
        &self,
        plugin: &str,
        job: &str,
        tick: DateTime<Utc>,
        node: &str,
    ) -> Result<bool, StoreError> {
        let row = claims::ActiveModel {
            plugin: ActiveValue::Set(plugin.to_owned()),
            job: ActiveValue::Set(bounded(job)),
            tick: ActiveValue::Set(tick.timestamp_millis()),
            node: ActiveValue::Set(bounded(node)),
            claimed_at: ActiveValue::Set(Utc::now()),
        };
        match claims::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Forgets the claims of occurrences before `before`; returns how many.
    pub(crate) async fn prune_job_claims(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(claims::Entity::delete_many()
            .filter(claims::Column::Tick.lt(before.timestamp_millis()))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

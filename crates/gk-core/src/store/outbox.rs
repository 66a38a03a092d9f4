//! The email outbox table: what the embedded mailer keeps instead of sending, for the admin
//! to read. The row type lives here, with the store that writes it; the host's
//! [`Outbox`](crate::host::Outbox) mailer only builds it.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue, EntityTrait, QueryOrder, QuerySelect};
use serde::Serialize;

use super::entities::email_outbox;
use super::{Store, StoreError};

/// A message kept in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    /// When it was sent.
    pub time: DateTime<Utc>,
    /// The plugin that sent it.
    pub plugin: String,
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Whether the body is HTML.
    pub html: bool,
}

impl Store {
    /// Keeps a message in the outbox table.
    pub async fn record_outbox(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        let row = email_outbox::ActiveModel {
            id: ActiveValue::NotSet,
            plugin: ActiveValue::Set(message.plugin.clone()),
            recipient: ActiveValue::Set(message.to.clone()),
            subject: ActiveValue::Set(message.subject.clone()),
            body: ActiveValue::Set(message.body.clone()),
            html: ActiveValue::Set(message.html),
            created: ActiveValue::Set(message.time),
        };
        email_outbox::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// The newest `limit` outbox messages, newest first.
    pub async fn outbox(&self, limit: u64) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = email_outbox::Entity::find()
            .order_by_desc(email_outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| OutboxMessage {
                time: row.created,
                plugin: row.plugin,
                to: row.recipient,
                subject: row.subject,
                body: row.body,
                html: row.html,
            })
            .collect())
    }
}

//! `send_email`: validation, and the outbox the embedded default writes to instead of SMTP.

use async_trait::async_trait;
use chrono::Utc;
use gk_sdk::{Email, HostError, HostResult};

use crate::store::OutboxMessage;

/// The longest subject accepted.
const MAX_SUBJECT: usize = 998;
/// The largest body accepted.
const MAX_BODY: usize = 1 << 20;

/// Delivers email for plugins.
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends (or queues) one message on behalf of `plugin`; it has been [validated](validate).
    async fn send(&self, plugin: &str, email: &Email) -> HostResult<()>;
}

/// Refuses a message the platform must not send: more or other than one address, header
/// injection through CR/LF in the recipient or subject, oversized parts.
pub fn validate(email: &Email) -> HostResult<()> {
    let to = email.to.trim();
    if to.is_empty()
        || to.contains(['\r', '\n', ',', ';', '<', '>'])
        || to.matches('@').count() != 1
    {
        return Err(HostError::InvalidInput(format!(
            "recipient `{}` is not one email address",
            email.to.escape_debug()
        )));
    }
    if email.subject.contains(['\r', '\n']) {
        return Err(HostError::InvalidInput(
            "the subject contains a line break".into(),
        ));
    }
    if email.subject.len() > MAX_SUBJECT {
        return Err(HostError::InvalidInput(format!(
            "the subject is longer than {MAX_SUBJECT} bytes"
        )));
    }
    if email.body.len() > MAX_BODY {
        return Err(HostError::InvalidInput(format!(
            "the body is larger than {MAX_BODY} bytes"
        )));
    }
    Ok(())
}

/// The embedded default: messages are kept in the store's outbox table, for the admin to read,
/// and written to the log; nothing leaves the machine.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: crate::Store,
}

impl Outbox {
    /// An outbox in `store`.
    pub fn new(store: crate::Store) -> Self {
        Self { store }
    }

    /// The newest `limit` messages, newest first.
    pub async fn messages(&self, limit: u64) -> HostResult<Vec<OutboxMessage>> {
        self.store
            .outbox(limit)
            .await
            .map_err(|e| HostError::Backend(e.to_string()))
    }
}

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, plugin: &str, email: &Email) -> HostResult<()> {
        let message = OutboxMessage {
            time: Utc::now(),
            plugin: plugin.to_owned(),
            to: email.to.trim().to_owned(),
            subject: email.subject.clone(),
            body: email.body.clone(),
            html: email.html,
        };
        self.store
            .record_outbox(&message)
            .await
            .map_err(|e| HostError::Backend(e.to_string()))?;
        tracing::info!(plugin, to = %email.to, subject = %email.subject, "email kept in the outbox (no SMTP configured)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &str, subject: &str) -> Email {
        Email {
            to: to.into(),
            subject: subject.into(),
            body: "b".into(),
            html: false,
        }
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(validate(&email("a@example.com", "Hi")).is_ok());
        for (to, subject) in [
            ("a@example.com\r\nBcc: x@evil.org", "Hi"),
            ("a@example.com", "Hi\r\nBcc: x@evil.org"),
            ("a@example.com, b@example.com", "Hi"),
            ("Ann <a@example.com>", "Hi"),
            ("", "Hi"),
        ] {
            assert!(
                matches!(
                    validate(&email(to, subject)),
                    Err(HostError::InvalidInput(_))
                ),
                "{to:?} {subject:?}"
            );
        }
    }
}

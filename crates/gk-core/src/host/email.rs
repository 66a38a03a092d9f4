//! `send_email`: validation, and the outbox the embedded default writes to instead of SMTP.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gk_sdk::{Email, HostError, HostResult};
use serde::Serialize;

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

/// A message kept in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
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

/// The embedded default: messages are kept for the admin to read and written to the log; nothing
/// leaves the machine.
#[derive(Debug, Default)]
pub struct Outbox {
    messages: Mutex<Vec<OutboxMessage>>,
}

impl Outbox {
    /// Every message, oldest first.
    pub fn messages(&self) -> Vec<OutboxMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, plugin: &str, email: &Email) -> HostResult<()> {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tracing::info!(plugin, to = %email.to, subject = %email.subject, "email kept in the outbox (no SMTP configured)");
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(OutboxMessage {
                time_ms,
                plugin: plugin.to_owned(),
                to: email.to.trim().to_owned(),
                subject: email.subject.clone(),
                body: email.body.clone(),
                html: email.html,
            });
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

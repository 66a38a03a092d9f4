//! SMTP delivery with lettre: STARTTLS, implicit TLS or plain (for a local relay), with
//! authentication when configured.

use std::time::Duration;

use async_trait::async_trait;
use gk_sdk::{Email, HostError, HostResult};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::email::Mailer;
use crate::{CoreError, CoreResult};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection, upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// No encryption: only for a relay on the same machine or network.
    None,
}

/// Where and how to send mail.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub security: SmtpSecurity,
    /// User name, when the server wants authentication.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// The sender address, e.g. `GoatFlow <noreply@example.com>`.
    pub from: String,
    /// Longest a delivery may take.
    pub timeout: Duration,
}

/// Sends plugin email through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Prepares the transport (connections are opened when mail is sent).
    pub fn new(config: &SmtpConfig) -> CoreResult<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| CoreError::Config(format!("email from `{}`: {e}", config.from)))?;
        let builder = match config.security {
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &config.host,
            )),
        }
        .map_err(|e| CoreError::Config(format!("smtp host `{}`: {e}", config.host)))?;
        let mut builder = builder.port(config.port).timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            host: config.host.clone(),
        })
    }
}

impl SmtpMailer {
    /// Connects to the server and greets it (with the TLS and login the configuration asks
    /// for), so that a server that cannot be reached is known at start, not at the first email.
    pub async fn check(&self) -> CoreResult<()> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(CoreError::Config(format!(
                "the SMTP server {} did not answer the greeting",
                self.host
            ))),
            Err(error) => Err(CoreError::Config(format!(
                "the SMTP server {} cannot be reached: {error}",
                self.host
            ))),
        }
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, plugin: &str, email: &Email) -> HostResult<()> {
        let to: Mailbox = email
            .to
            .trim()
            .parse()
            .map_err(|e| HostError::InvalidInput(format!("recipient `{}`: {e}", email.to)))?;
        let content_type = if email.html {
            ContentType::TEXT_HTML
        } else {
            ContentType::TEXT_PLAIN
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .header(content_type)
            .body(email.body.clone())
            .map_err(|e| HostError::InvalidInput(format!("the message cannot be built: {e}")))?;
        self.transport
            .send(message)
            .await
            .map(|_| tracing::info!(plugin, to = %email.to, "email sent"))
            .map_err(|e| HostError::Backend(format!("SMTP {}: {e}", self.host)))
    }
}

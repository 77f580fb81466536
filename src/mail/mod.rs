//! Email: one [`Mailer`] over four transports, templates, and the split
//! between "their" failures (retry later) and permanent ones (dead at once).
//!
//! Owns how a message leaves allot. It knows the outbox's handler contract
//! (a family of job kinds that become letters is run by a [`Mailroom`]) but
//! no capability: what a letter says is its family's business.
//!
//! - `letter`: the one path from a job to a sent email (compose, render, send);
//! - `file`: one `.eml` per message, the default, for development and audits;
//! - `smtp`: lettre, pooled connections, STARTTLS or implicit TLS;
//! - `providers`: the Postmark and SendGrid HTTP APIs.
//!
//! Every message has a plain-text and an HTML part and a Message-ID derived
//! from its job, so retries of one job carry the same id.

mod file;
mod letter;
mod providers;
mod smtp;
pub mod templates;

use std::time::Duration;

use lettre::message::{Mailbox, Message, MultiPart};

use crate::config::{MailSettings, MailTransport};

pub use letter::{Compose, Letter, Mailroom, Postman};

/// A rendered message, ready for any transport.
#[derive(Debug, Clone)]
pub struct Email {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Without angle brackets: `allot.job-12.1700000000000@example.com`.
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The other side failed or refused for now (4xx, 429, 5xx from an
    /// HTTP API, timeouts, connection refused): retry on schedule.
    #[error("{error}")]
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (SMTP 5xx, a provider rejecting the message or
    /// the credentials, an address that does not parse).
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub fn transient(error: impl Into<String>) -> Self {
        Self::Transient {
            error: error.into(),
            retry_after: None,
        }
    }
}

pub enum Mailer {
    File(file::FileMailer),
    Smtp(smtp::SmtpMailer),
    Postmark(providers::Postmark),
    SendGrid(providers::SendGrid),
}

impl Mailer {
    pub fn from_settings(settings: &MailSettings) -> anyhow::Result<Self> {
        let timeout = settings.send_timeout;
        Ok(match &settings.transport {
            MailTransport::File { dir } => Mailer::File(file::FileMailer::new(dir.clone())),
            MailTransport::Smtp { url } => {
                Mailer::Smtp(smtp::SmtpMailer::new(url.expose(), timeout)?)
            }
            MailTransport::Postmark { token, base_url } => {
                Mailer::Postmark(providers::Postmark::new(token.clone(), base_url, timeout)?)
            }
            MailTransport::SendGrid { api_key, base_url } => Mailer::SendGrid(
                providers::SendGrid::new(api_key.clone(), base_url, timeout)?,
            ),
        })
    }

    /// The transport's name, as `ALLOT_MAIL_TRANSPORT` spells it.
    pub fn transport(&self) -> &'static str {
        match self {
            Mailer::File(_) => "file",
            Mailer::Smtp(_) => "smtp",
            Mailer::Postmark(_) => "postmark",
            Mailer::SendGrid(_) => "sendgrid",
        }
    }

    /// Sends `email`, counted per transport and outcome
    /// (`allot_mail_sends_total`) and timed (`allot_mail_send_duration_seconds`).
    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let started = std::time::Instant::now();
        let sent = match self {
            Mailer::File(mailer) => match mime_message(email) {
                Ok(message) => mailer.send(&message, &email.message_id).await,
                Err(error) => Err(error),
            },
            Mailer::Smtp(mailer) => match mime_message(email) {
                Ok(message) => mailer.send(message).await,
                Err(error) => Err(error),
            },
            Mailer::Postmark(mailer) => mailer.send(email).await,
            Mailer::SendGrid(mailer) => mailer.send(email).await,
        };
        let transport = self.transport();
        let outcome = match &sent {
            Ok(()) => "sent",
            Err(SendError::Transient { .. }) => "transient",
            Err(SendError::Permanent(_)) => "permanent",
        };
        metrics::counter!("allot_mail_sends_total", "transport" => transport, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("allot_mail_send_duration_seconds", "transport" => transport)
            .record(started.elapsed().as_secs_f64());
        sent
    }
}

/// The MIME message: multipart/alternative with text first (the fallback)
/// and HTML last (preferred by clients that can show it).
fn mime_message(email: &Email) -> Result<Message, SendError> {
    let from: Mailbox = parse_mailbox("sender", &email.from)?;
    let to: Mailbox = parse_mailbox("recipient", &email.to)?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(&email.subject)
        .message_id(Some(format!("<{}>", email.message_id)))
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
}

fn parse_mailbox(role: &str, value: &str) -> Result<Mailbox, SendError> {
    value
        .trim()
        .parse()
        .map_err(|e| SendError::Permanent(format!("invalid {role} address {value:?}: {e}")))
}

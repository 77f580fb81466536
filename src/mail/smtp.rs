//! The `smtp` transport (lettre). `smtp://host:port` sends in clear,
//! `smtp://…?tls=required` upgrades with STARTTLS, `smtps://…` is implicit
//! TLS; credentials go in the URL. Connections are pooled and every command
//! is bounded by `ALLOT_SEND_TIMEOUT`.

use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::SendError;

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("ALLOT_SMTP_URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self { transport })
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the server refused for good (unknown mailbox, policy).
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
            // 4xx, timeouts, refused connections, TLS trouble: try again later.
            Err(e) => Err(SendError::transient(format!("SMTP: {e}"))),
        }
    }
}

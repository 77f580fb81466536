//! Postmark and SendGrid over their HTTP APIs.
//!
//! Their answers sort into: 2xx delivered; 429 and 5xx (and 408, timeouts,
//! connection failures) retry later, honouring `Retry-After`; any other 4xx
//! is permanent — a bad token, a rejected recipient or payload will not
//! change by itself (fix it, then `allot jobs retry`).

use std::time::Duration;

use reqwest::{Response, StatusCode, header};
use serde_json::json;

use super::{Email, SendError, parse_mailbox};
use crate::config::Secret;

fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()?)
}

/// Sorts a provider's HTTP answer. `provider` names it in errors.
async fn classify(provider: &str, result: reqwest::Result<Response>) -> Result<(), SendError> {
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            return Err(SendError::transient(format!(
                "{provider}: {}",
                without_url(&e)
            )));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = retry_after(&response);
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(500).collect();
    let error = format!("{provider} answered {status}: {body}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(SendError::Transient { error, retry_after })
    } else {
        Err(SendError::Permanent(error))
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from these APIs and
/// falls back to the retry schedule).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// reqwest errors name the URL; ours carry no secret in it, but keep the
/// message short and stable.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_string(),
    }
}

pub struct Postmark {
    client: reqwest::Client,
    token: Secret,
    url: String,
}

impl Postmark {
    pub fn new(token: Secret, base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: client(timeout)?,
            token,
            url: format!("{base_url}/email"),
        })
    }

    /// <https://postmarkapp.com/developer/api/email-api#send-a-single-email>
    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let body = json!({
            "From": email.from,
            "To": email.to,
            "Subject": email.subject,
            "TextBody": email.text,
            "HtmlBody": email.html,
            "MessageStream": "outbound",
            "Headers": [{"Name": "Message-ID", "Value": format!("<{}>", email.message_id)}],
        });
        let result = self
            .client
            .post(&self.url)
            .header(header::ACCEPT, "application/json")
            .header("X-Postmark-Server-Token", self.token.expose())
            .json(&body)
            .send()
            .await;
        classify("Postmark", result).await
    }
}

pub struct SendGrid {
    client: reqwest::Client,
    api_key: Secret,
    url: String,
}

impl SendGrid {
    pub fn new(api_key: Secret, base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: client(timeout)?,
            api_key,
            url: format!("{base_url}/v3/mail/send"),
        })
    }

    /// <https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send>
    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let from = parse_mailbox("sender", &email.from)?;
        let mut sender = json!({"email": from.email.to_string()});
        if let Some(name) = &from.name {
            sender["name"] = json!(name);
        }
        let body = json!({
            "personalizations": [{"to": [{"email": email.to}]}],
            "from": sender,
            "subject": email.subject,
            "content": [
                {"type": "text/plain", "value": email.text},
                {"type": "text/html", "value": email.html},
            ],
            // SendGrid sets its own Message-ID; ours travels as a custom
            // argument so duplicates can be matched in its event webhooks.
            "custom_args": {"allot_message_id": email.message_id},
        });
        let result = self
            .client
            .post(&self.url)
            .bearer_auth(self.api_key.expose())
            .json(&body)
            .send()
            .await;
        classify("SendGrid", result).await
    }
}

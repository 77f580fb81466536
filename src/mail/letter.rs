//! The one path from a job to a sent email: a family's [`Compose`] says
//! what to write (read at send time), the [`Postman`] renders it with the
//! built-in templates and hands it to the transport, and a [`Mailroom`] is
//! the outbox handler that ties the two together for one family.

use std::{marker::PhantomData, sync::Arc};

use serde_json::Value;

use super::{Email, Mailer, SendError, templates};
use crate::{
    config::MailSettings,
    jobs::{self, BoxFuture, Handler, JobError, Leased, Payload},
    text::EmailAddress,
};

/// A message to render and send: template `template` with `context`, to `to`.
#[derive(Debug)]
pub struct Letter {
    pub to: String,
    pub template: String,
    pub context: Value,
}

/// A family of job kinds that become letters.
pub trait Compose: Payload + 'static {
    /// What the family reads to compose (a database handle, the admin's
    /// address…), given once to its [`Mailroom`].
    type Context: Send + Sync + 'static;

    /// The letter for this job, read when it is sent, so that nothing secret
    /// sits in a payload and nothing stale is said. `None`: there is nothing
    /// to say any more, or nobody to tell.
    fn compose(
        self,
        context: &Self::Context,
    ) -> impl Future<Output = Result<Option<Letter>, JobError>> + Send;
}

/// Renders letters and sends them through the configured transport.
pub struct Postman {
    mailer: Mailer,
    from: EmailAddress,
    logo_url: Option<String>,
}

impl Postman {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        Ok(Self {
            mailer: Mailer::from_settings(settings)?,
            from: settings.from.clone(),
            logo_url: settings.logo_url.clone(),
        })
    }

    /// Renders `letter` and sends it with `message_id`. A template that does
    /// not render is our bug: permanent.
    pub async fn send(&self, letter: Letter, message_id: String) -> Result<(), SendError> {
        let Letter {
            to,
            template,
            mut context,
        } = letter;
        // Read at send time, so a new logo applies to queued mail too.
        if let Some(context) = context.as_object_mut() {
            context
                .entry("logo_url")
                .or_insert_with(|| serde_json::json!(self.logo_url));
        }
        let rendered = templates::render(&template, &context)
            .map_err(|e| SendError::Permanent(format!("rendering template {template:?}: {e}")))?;
        let email = Email {
            from: self.from.as_str().to_string(),
            to,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            message_id,
        };
        self.mailer.send(&email).await
    }

    /// The sender's domain, for Message-IDs of mail that is not a job.
    pub fn from_domain(&self) -> &str {
        self.from.domain()
    }

    /// Stable across retries of one job, unique across jobs and databases.
    pub fn message_id(&self, job: &Leased) -> String {
        format!(
            "allot.job-{}.{}@{}",
            job.id,
            job.created_at,
            self.from.domain()
        )
    }
}

/// The outbox handler for family `P`: decode, compose, send.
pub struct Mailroom<P: Compose> {
    postman: Arc<Postman>,
    context: P::Context,
    family: PhantomData<fn() -> P>,
}

impl<P: Compose> Mailroom<P> {
    pub fn new(postman: Arc<Postman>, context: P::Context) -> Self {
        Self {
            postman,
            context,
            family: PhantomData,
        }
    }
}

impl<P: Compose> Handler for Mailroom<P> {
    fn kinds(&self) -> &'static [&'static str] {
        P::KINDS
    }

    fn run<'a>(&'a self, job: &'a Leased) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let notice: P = jobs::decode(job)?;
            let Some(letter) = notice.compose(&self.context).await? else {
                return Ok(());
            };
            let message_id = self.postman.message_id(job);
            self.postman
                .send(letter, message_id)
                .await
                .map_err(into_job_error)
        })
    }
}

/// Their temporary failure is a retry; anything else is final.
fn into_job_error(error: SendError) -> JobError {
    match error {
        SendError::Transient { error, retry_after } => JobError::Retry { error, retry_after },
        SendError::Permanent(error) => JobError::Permanent(error),
    }
}

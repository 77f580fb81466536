//! Settings: built-in defaults, then an optional `allot.toml`, then `ALLOT_*`
//! environment variables (later layers win). Everything is validated once at
//! start-up, and every error names the setting the user has to fix.
//!
//! Owns the settings types and where they come from (this file) and how a
//! user's text becomes them (`raw`). It reads settings types that belong to
//! plumbing ([`DatabaseSettings`]) and parsing rules from `text`; it must not
//! import any capability.

mod raw;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};

use crate::{db::DatabaseSettings, text::EmailAddress};
use raw::RawSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings. Construct with [`Settings::load`] or, in tests, [`Settings::default`]
/// and field updates.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    /// `host:port`; `:PORT` keeps the default host (127.0.0.1); port 0 picks a free port.
    pub listen: String,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, and then its
    /// body; slower clients are answered 408 and disconnected.
    pub read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub mail: MailSettings,
    pub jobs: JobSettings,
    pub intake: IntakeSettings,
    pub control: ControlSettings,
    pub payments: PaymentSettings,
    pub endpoints: EndpointSettings,
}

/// Payments in: Stripe and any provider that signs per Standard Webhooks.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// Checks `Stripe-Signature` on `/v1/webhooks/stripe`; unset, that route answers 503.
    pub stripe_webhook_secret: Option<Secret>,
    /// Stripe price or product id → SKU, for sessions whose metadata names none.
    pub stripe_skus: BTreeMap<String, String>,
    /// `whsec_…`: checks `/v1/webhooks/payments`; unset, that route answers 503.
    pub payment_webhook_secret: Option<Secret>,
}

/// Merchant webhooks out.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// One delivery attempt, connect to last byte.
    pub timeout: Duration,
    /// An endpoint that fails for this long without a success is disabled.
    pub disable_after: Duration,
}

/// The operator's control channel (`allot ctl`, `/v1/admin/*`).
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Required on `/v1/admin/*`; without it those routes answer 503.
    pub admin_token: Option<Secret>,
    /// How often a process writes its registry row; silent for three
    /// intervals, it is shown as gone.
    pub heartbeat_interval: Duration,
    /// How often a process looks for commands (PostgreSQL also wakes it at once).
    pub poll_interval: Duration,
    /// The longest `calculate` a process accepts.
    pub calculate_max: Duration,
}

/// Order intake and the key bank's safety nets.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// Required on `/v1/webhooks/*`; without it those routes answer 503.
    pub webhook_token: Option<Secret>,
    /// Verifies `X-WC-Webhook-Signature` when set.
    pub woocommerce_secret: Option<Secret>,
    /// Service (Amelia, Bookly) id → SKU, for payloads that name no SKU.
    pub service_skus: BTreeMap<String, String>,
    pub low_stock_threshold: i64,
    /// When the low-stock check runs (UTC).
    pub low_stock_cron: croner::Cron,
}

/// A credential: usable, but never printed by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// One `.eml` file per message in this directory.
    File {
        dir: PathBuf,
    },
    /// `smtp://…` (STARTTLS when the server offers it), `smtps://…` (implicit TLS).
    Smtp {
        url: Secret,
    },
    Postmark {
        token: Secret,
        base_url: String,
    },
    SendGrid {
        api_key: Secret,
        base_url: String,
    },
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    pub transport: MailTransport,
    pub from: EmailAddress,
    pub admin_email: Option<EmailAddress>,
    /// A transparent PNG shown at the top of customer emails.
    pub logo_url: Option<String>,
    /// Upper bound for one delivery attempt (connect + send).
    pub send_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Delays between attempts; its length + 1 is the attempt limit.
    pub retry_schedule: Vec<Duration>,
    /// How long a claimed job stays invisible to other workers.
    pub lease: Duration,
    /// Jobs one worker process runs at the same time.
    pub concurrency: usize,
    /// How often an idle worker looks for due jobs (PostgreSQL also wakes it at once).
    pub poll_interval: Duration,
    /// Dead-letter alerts are batched into one digest per interval; an alert
    /// that cannot be sent tries again at least this often.
    pub alert_interval: Duration,
    /// Done jobs (with their attempts) are deleted this long after they
    /// finished.
    pub retention: Duration,
}

impl JobSettings {
    pub fn max_attempts(&self) -> i32 {
        self.retry_schedule.len() as i32 + 1
    }
}

impl Settings {
    /// Risky but valid combinations, logged at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.jobs.lease <= self.mail.send_timeout {
            warnings.push(format!(
                "ALLOT_JOB_LEASE ({:?}) is not longer than ALLOT_SEND_TIMEOUT ({:?}): a slow send can outlive its lease and the job may be delivered twice",
                self.jobs.lease, self.mail.send_timeout
            ));
        }
        if self.mail.admin_email.is_none() {
            warnings.push(
                "ALLOT_ADMIN_EMAIL is not set: dead letters are logged but nobody is emailed"
                    .into(),
            );
        }
        if self.intake.webhook_token.is_none() {
            warnings.push(
                "ALLOT_WEBHOOK_TOKEN is not set: /v1/webhooks/* and /v1/orders/* answer 503".into(),
            );
        }
        warnings
    }
}

impl Settings {
    /// The defaults, on the database at `url` (tests, benchmarks).
    pub fn for_database(url: impl Into<String>) -> Self {
        let mut settings = Self::default();
        settings.database.url = url.into();
        settings
    }
}

impl Default for Settings {
    fn default() -> Self {
        RawSettings::default()
            .validate()
            .expect("built-in defaults are valid")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid settings: {0}")]
    Parse(String),
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl Settings {
    /// Loads settings from the layers. `file` is an explicit settings file
    /// (`--config` / `ALLOT_CONFIG`), which must then exist; without it,
    /// `./allot.toml` is read if present.
    pub fn load(file: Option<PathBuf>) -> Result<Self, SettingsError> {
        let file = match file {
            Some(path) if !path.exists() => return Err(SettingsError::MissingFile(path)),
            Some(path) => path,
            None => PathBuf::from("allot.toml"),
        };
        let raw: RawSettings = Figment::from(Serialized::defaults(RawSettings::default()))
            .merge(Toml::file(&file))
            .merge(Serialized::defaults(environment()))
            .extract_lossy()
            .map_err(|e| SettingsError::Parse(describe_figment_error(e)))?;
        raw.validate()
    }
}

/// `ALLOT_*` variables as plain strings. figment's own `Env` provider guesses
/// types ("8080" becomes a number, so a digits-only token would no longer be
/// a string); lossy extraction instead converts a string only where the
/// setting is a number or a boolean.
/// Only variables naming a setting are taken, so other `ALLOT_*` variables
/// (`ALLOT_CONFIG`, test URLs) never collide with the check that rejects
/// unknown keys in the settings file.
fn environment() -> BTreeMap<String, String> {
    let known = serde_json::to_value(RawSettings::default()).expect("settings serialise");
    std::env::vars()
        .filter_map(|(key, value)| {
            let key = key.strip_prefix("ALLOT_")?.to_ascii_lowercase();
            known.get(&key).is_some().then_some((key, value))
        })
        .collect()
}

/// Names the place to fix: the variable for environment values, the key and
/// file for settings-file values.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let file = e.metadata.as_ref().and_then(|m| match &m.source {
                Some(figment::Source::File(path)) => Some(path.display().to_string()),
                _ => None,
            });
            match file {
                Some(file) => format!("`{key}` in {file}: {}", e.kind),
                None if !key.is_empty() => format!("ALLOT_{}: {}", key.to_uppercase(), e.kind),
                None => e.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

//! The settings exactly as a user writes them, and their validation into
//! [`Settings`]. Every error names the variable to fix.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    ControlSettings, IntakeSettings, JobSettings, LogFormat, MailSettings, MailTransport, Secret,
    Settings, SettingsError,
};
use crate::{
    db::{Backend, DatabaseSettings},
    text::{BoundedText, EmailAddress},
};

/// The settings exactly as a user writes them (strings for durations), before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSettings {
    database_url: String,
    /// `None`: the backend's default (see [`default_max_connections`]).
    database_max_connections: Option<u32>,
    database_acquire_timeout: String,
    listen: String,
    max_body_bytes: usize,
    read_timeout: String,
    shutdown_grace: String,
    log_format: String,
    mail_transport: String,
    mail_dir: PathBuf,
    smtp_url: Option<String>,
    postmark_token: Option<String>,
    postmark_url: String,
    sendgrid_api_key: Option<String>,
    sendgrid_url: String,
    mail_from: String,
    admin_email: Option<String>,
    mail_logo_url: Option<String>,
    send_timeout: String,
    retry_schedule: String,
    job_lease: String,
    worker_concurrency: usize,
    worker_poll_interval: String,
    alert_interval: String,
    job_retention: String,
    webhook_token: Option<String>,
    woocommerce_secret: Option<String>,
    service_skus: String,
    low_stock_threshold: i64,
    low_stock_cron: String,
    admin_token: Option<String>,
    heartbeat_interval: String,
    control_poll_interval: String,
    calculate_max: String,
    stripe_webhook_secret: Option<String>,
    stripe_skus: String,
    payment_webhook_secret: Option<String>,
    endpoint_timeout: String,
    endpoint_disable_after: String,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://allot.db".into(),
            database_max_connections: None,
            database_acquire_timeout: "5s".into(),
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            read_timeout: "30s".into(),
            shutdown_grace: "30s".into(),
            log_format: "text".into(),
            mail_transport: "file".into(),
            mail_dir: PathBuf::from("./var/mail"),
            smtp_url: None,
            postmark_token: None,
            postmark_url: "https://api.postmarkapp.com".into(),
            sendgrid_api_key: None,
            sendgrid_url: "https://api.sendgrid.com".into(),
            mail_from: "allot@localhost".into(),
            admin_email: None,
            mail_logo_url: None,
            send_timeout: "30s".into(),
            retry_schedule: "10s,1m,5m,30m,2h,6h,12h".into(),
            job_lease: "60s".into(),
            worker_concurrency: 8,
            worker_poll_interval: "2s".into(),
            alert_interval: "5m".into(),
            job_retention: "7d".into(),
            webhook_token: None,
            woocommerce_secret: None,
            service_skus: String::new(),
            low_stock_threshold: 10,
            low_stock_cron: "0 * * * *".into(),
            admin_token: None,
            heartbeat_interval: "5s".into(),
            control_poll_interval: "250ms".into(),
            calculate_max: "1h".into(),
            stripe_webhook_secret: None,
            stripe_skus: String::new(),
            payment_webhook_secret: None,
            endpoint_timeout: "10s".into(),
            endpoint_disable_after: "5d".into(),
        }
    }
}

impl RawSettings {
    pub(super) fn validate(self) -> Result<Settings, SettingsError> {
        let database_url = self.database_url.trim().to_string();
        let Some(backend) = Backend::from_url(&database_url) else {
            return Err(invalid(
                "ALLOT_DATABASE_URL",
                "must start with sqlite://, postgres://, postgresql://, mysql:// or mariadb://",
            ));
        };
        let max_connections = self
            .database_max_connections
            .unwrap_or_else(|| default_max_connections(backend));
        if max_connections == 0 {
            return Err(invalid(
                "ALLOT_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("ALLOT_MAX_BODY_BYTES", "must be at least 1024"));
        }
        let log_format = match self.log_format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "ALLOT_LOG_FORMAT",
                    format!("{other:?} is not one of text, json"),
                ));
            }
        };
        let mail = self.mail_settings()?;
        let jobs = self.job_settings()?;
        let intake = self.intake_settings()?;
        let payments = self.payment_settings()?;
        let endpoints = self.endpoint_settings()?;
        let control = ControlSettings {
            admin_token: optional_secret(&self.admin_token),
            heartbeat_interval: positive("ALLOT_HEARTBEAT_INTERVAL", &self.heartbeat_interval)?,
            poll_interval: positive("ALLOT_CONTROL_POLL_INTERVAL", &self.control_poll_interval)?,
            calculate_max: duration("ALLOT_CALCULATE_MAX", &self.calculate_max)?,
        };
        Ok(Settings {
            database: DatabaseSettings {
                url: database_url,
                max_connections,
                acquire_timeout: duration(
                    "ALLOT_DATABASE_ACQUIRE_TIMEOUT",
                    &self.database_acquire_timeout,
                )?,
            },
            listen: listen_address(&self.listen)?,
            max_body_bytes: self.max_body_bytes,
            read_timeout: positive("ALLOT_READ_TIMEOUT", &self.read_timeout)?,
            shutdown_grace: duration("ALLOT_SHUTDOWN_GRACE", &self.shutdown_grace)?,
            log_format,
            mail,
            jobs,
            intake,
            control,
            payments,
            endpoints,
        })
    }

    fn mail_settings(&self) -> Result<MailSettings, SettingsError> {
        let required = |var: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| Secret(v.to_string()))
                .ok_or_else(|| {
                    invalid(
                        var,
                        format!("required when ALLOT_MAIL_TRANSPORT={}", self.mail_transport),
                    )
                })
        };
        let transport = match self.mail_transport.trim().to_ascii_lowercase().as_str() {
            "file" => MailTransport::File {
                dir: self.mail_dir.clone(),
            },
            "smtp" => {
                let url = required("ALLOT_SMTP_URL", &self.smtp_url)?;
                if !(url.0.starts_with("smtp://") || url.0.starts_with("smtps://")) {
                    return Err(invalid(
                        "ALLOT_SMTP_URL",
                        "must start with smtp:// or smtps://",
                    ));
                }
                MailTransport::Smtp { url }
            }
            "postmark" => MailTransport::Postmark {
                token: required("ALLOT_POSTMARK_TOKEN", &self.postmark_token)?,
                base_url: base_url("ALLOT_POSTMARK_URL", &self.postmark_url)?,
            },
            "sendgrid" => MailTransport::SendGrid {
                api_key: required("ALLOT_SENDGRID_API_KEY", &self.sendgrid_api_key)?,
                base_url: base_url("ALLOT_SENDGRID_URL", &self.sendgrid_url)?,
            },
            other => {
                return Err(invalid(
                    "ALLOT_MAIL_TRANSPORT",
                    format!("{other:?} is not one of file, smtp, postmark, sendgrid"),
                ));
            }
        };
        let from = mailbox("ALLOT_MAIL_FROM", &self.mail_from)?;
        let admin_email = match self.admin_email.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(address) => Some(mailbox("ALLOT_ADMIN_EMAIL", address)?),
        };
        let logo_url = match self.mail_logo_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(base_url("ALLOT_MAIL_LOGO_URL", url)?),
        };
        Ok(MailSettings {
            transport,
            from,
            admin_email,
            logo_url,
            send_timeout: duration("ALLOT_SEND_TIMEOUT", &self.send_timeout)?,
        })
    }

    fn job_settings(&self) -> Result<JobSettings, SettingsError> {
        let retry_schedule = self
            .retry_schedule
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| duration("ALLOT_RETRY_SCHEDULE", part))
            .collect::<Result<Vec<_>, _>>()?;
        if self.worker_concurrency == 0 {
            return Err(invalid("ALLOT_WORKER_CONCURRENCY", "must be at least 1"));
        }
        Ok(JobSettings {
            retry_schedule,
            lease: positive("ALLOT_JOB_LEASE", &self.job_lease)?,
            concurrency: self.worker_concurrency,
            poll_interval: positive("ALLOT_WORKER_POLL_INTERVAL", &self.worker_poll_interval)?,
            alert_interval: positive("ALLOT_ALERT_INTERVAL", &self.alert_interval)?,
            retention: positive("ALLOT_JOB_RETENTION", &self.job_retention)?,
        })
    }
}

impl RawSettings {
    fn intake_settings(&self) -> Result<IntakeSettings, SettingsError> {
        let service_skus = sku_map(
            "ALLOT_SERVICE_SKUS",
            &self.service_skus,
            "SERVICE_ID=SKU (for example 3=course-101,4=course-102)",
        )?;
        if self.low_stock_threshold < 0 {
            return Err(invalid("ALLOT_LOW_STOCK_THRESHOLD", "must not be negative"));
        }
        let low_stock_cron = croner::parser::CronParser::new()
            .parse(self.low_stock_cron.trim())
            .map_err(|e| {
                invalid(
                    "ALLOT_LOW_STOCK_CRON",
                    format!(
                        "{:?} is not a cron expression like \"0 * * * *\" ({e})",
                        self.low_stock_cron
                    ),
                )
            })?;
        Ok(IntakeSettings {
            webhook_token: optional_secret(&self.webhook_token),
            woocommerce_secret: optional_secret(&self.woocommerce_secret),
            service_skus,
            low_stock_threshold: self.low_stock_threshold,
            low_stock_cron,
        })
    }
}

/// `ID=SKU,ID=SKU`: ids a payload names, mapped to the SKU they sell.
fn sku_map(
    var: &'static str,
    text: &str,
    shape: &str,
) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair
            .split_once('=')
            .map(|(id, sku)| (id.trim(), sku.trim()))
            .filter(|(id, sku)| !id.is_empty() && BoundedText::identifier("SKU", sku).is_ok());
        let Some((id, sku)) = parsed else {
            return Err(invalid(var, format!("{pair:?} is not {shape}")));
        };
        map.insert(id.to_string(), sku.to_string());
    }
    Ok(map)
}

/// Connections per pool when `ALLOT_DATABASE_MAX_CONNECTIONS` is unset. On
/// SQLite they are the readers, each a thread of this process on its cores
/// with its own page and statement caches: beyond a few they add memory,
/// not throughput (a soak served 175 requests/s with 3 readers, 140 with 10).
fn default_max_connections(backend: Backend) -> u32 {
    match backend {
        Backend::Sqlite => 4,
        Backend::Postgres | Backend::MySql => 10,
    }
}

/// A secret setting: blank is unset.
fn optional_secret(value: &Option<String>) -> Option<Secret> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| Secret(v.to_string()))
}

fn base_url(var: &'static str, value: &str) -> Result<String, SettingsError> {
    let value = value.trim().trim_end_matches('/');
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(invalid(var, format!("{value:?} is not an http(s) URL")));
    }
    Ok(value.to_string())
}

/// An address or `Name <address>`, as lettre accepts it.
fn mailbox(var: &'static str, value: &str) -> Result<EmailAddress, SettingsError> {
    EmailAddress::parse_mailbox(value).map_err(|e| invalid(var, e.problem))
}

fn invalid(var: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        var,
        reason: reason.into(),
    }
}

fn duration(var: &'static str, value: &str) -> Result<Duration, SettingsError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            var,
            format!("{value:?} is not a duration like 30s or 5m ({e})"),
        )
    })
}

/// A duration that must not be zero (a zero timeout would refuse everything).
fn positive(var: &'static str, value: &str) -> Result<Duration, SettingsError> {
    let parsed = duration(var, value)?;
    if parsed.is_zero() {
        return Err(invalid(var, "must be longer than zero"));
    }
    Ok(parsed)
}

/// Accepts `host:port` and the `:port` shorthand (default host kept).
fn listen_address(value: &str) -> Result<String, SettingsError> {
    let value = value.trim();
    let full = match value.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => value.to_string(),
    };
    let port_ok = full
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(invalid(
            "ALLOT_LISTEN",
            format!(
                "{value:?} is not host:port (for example 127.0.0.1:8080, or :0 for any free port)"
            ),
        ));
    }
    Ok(full)
}

#[path = "raw_commerce.rs"]
mod commerce;

#[cfg(test)]
#[path = "raw_tests.rs"]
mod tests;

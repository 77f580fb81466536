//! Background loops that cannot fail silently. Every loop a process runs
//! (the job worker, the scheduler's work, the outage alarm, metrics upkeep)
//! is started under [`Loops::supervise`]: a loop that panics, or returns
//! while the process is not stopping, is logged, counted, reported to the
//! admin (an urgent email through the outbox, once per alert window and
//! loop) and started again after a short back-off. While it is down,
//! `/readyz` answers 503 `background_loop_down`, so a load balancer stops
//! sending traffic to a process that cannot do its work.
//!
//! Loops report each round through a [`Pulse`]: the last success and the
//! last error per loop are in `/readyz`'s answer and in `/metrics`
//! (`allot_background_last_success_timestamp_seconds{loop}`,
//! `allot_background_errors_total{loop}`,
//! `allot_background_restarts_total{loop}`). State is one small map entry
//! per loop name: nothing grows with traffic.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use serde_json::json;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    clock::{as_optional_rfc3339, now_ms, window},
    db::Db,
    jobs, notices,
    text::EmailAddress,
};

/// How one loop is doing.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Health {
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success: Option<i64>,
    #[serde(serialize_with = "as_optional_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
    pub restarts: u32,
    /// Crashed and not started again yet.
    pub down: bool,
}

/// Who hears of a crashed loop.
#[derive(Clone)]
pub struct Alerts {
    pub db: Db,
    pub admin: Option<EmailAddress>,
    pub interval: Duration,
    pub max_attempts: i32,
}

/// The loops of one process. Cheap to clone.
#[derive(Clone)]
pub struct Loops {
    health: Arc<Mutex<BTreeMap<&'static str, Health>>>,
    alerts: Option<Alerts>,
}

/// The slowest back-off between two restarts of a loop.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Loops {
    pub fn new(alerts: Option<Alerts>) -> Self {
        Self {
            health: Arc::default(),
            alerts,
        }
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut Health)) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        change(health.entry(name).or_default());
    }

    /// How each loop is doing.
    pub fn snapshot(&self) -> BTreeMap<&'static str, Health> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The loops that crashed and are waiting to be started again.
    pub fn down(&self) -> Vec<&'static str> {
        self.snapshot()
            .into_iter()
            .filter(|(_, h)| h.down)
            .map(|(name, _)| name)
            .collect()
    }

    /// The handle loop `name` reports its rounds through.
    pub fn pulse(&self, name: &'static str) -> Pulse {
        self.update(name, |_| {});
        Pulse {
            name,
            loops: self.clone(),
        }
    }

    /// Runs `start()` on `tasks` until `shutdown`, starting it again
    /// whenever it panics or ends early.
    pub fn supervise<F, Fut>(
        &self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        name: &'static str,
        start: F,
    ) where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let loops = self.clone();
        loops.update(name, |_| {});
        tasks.spawn(async move {
            let mut restarts = 0u32;
            loop {
                let ended = tokio::spawn(start()).await;
                if shutdown.is_cancelled() {
                    return;
                }
                let why = match ended {
                    Ok(()) => "it stopped on its own".to_string(),
                    Err(error) if error.is_panic() => {
                        let panic = error.into_panic();
                        let text = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into());
                        format!("it panicked: {text}")
                    }
                    Err(error) => format!("it was cancelled: {error}"),
                };
                restarts += 1;
                tracing::error!(background_loop = name, %why, restarts, "a background loop failed; starting it again");
                metrics::counter!("allot_background_restarts_total", "loop" => name).increment(1);
                loops.update(name, |h| {
                    h.down = true;
                    h.restarts = restarts;
                    h.last_error = Some(why.clone());
                    h.last_error_at = Some(now_ms());
                });
                loops.alert(name, &why).await;
                let backoff = Duration::from_secs(1 << (restarts - 1).min(5)).min(MAX_BACKOFF);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                loops.update(name, |h| h.down = false);
            }
        });
    }

    /// An urgent email to the admin, once per alert window and loop, through
    /// the outbox (so it survives this process); logged if that fails too.
    async fn alert(&self, name: &'static str, why: &str) {
        let Some(alerts) = &self.alerts else { return };
        let Some(admin) = &alerts.admin else {
            tracing::warn!(
                "ALLOT_ADMIN_EMAIL is not set: nobody is told that a background loop failed"
            );
            return;
        };
        let now = now_ms();
        let (from, _) = window(now, alerts.interval);
        let job = notices::email_job(
            admin.as_str(),
            "background_failure",
            json!({"loop": name, "why": why, "host": crate::telemetry::hostname()}),
            alerts.max_attempts,
        )
        .dedupe_key(format!("background_failure:{name}:{from}"));
        if let Err(error) = jobs::enqueue_now(&alerts.db, &job).await {
            tracing::error!(%error, "could not queue the admin's alert about a failed background loop");
        }
    }
}

/// What a loop reports each round.
#[derive(Clone)]
pub struct Pulse {
    name: &'static str,
    loops: Loops,
}

impl Pulse {
    pub fn ok(&self) {
        let now = now_ms();
        self.loops.update(self.name, |h| h.last_success = Some(now));
        metrics::gauge!("allot_background_last_success_timestamp_seconds", "loop" => self.name)
            .set(now as f64 / 1000.0);
    }

    pub fn failed(&self, error: &str) {
        let now = now_ms();
        self.loops.update(self.name, |h| {
            h.last_error = Some(error.chars().take(500).collect());
            h.last_error_at = Some(now);
        });
        metrics::counter!("allot_background_errors_total", "loop" => self.name).increment(1);
    }
}

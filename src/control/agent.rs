//! The part of every `allot serve` and `allot worker` that answers the
//! operator: it keeps the process's registry row fresh, reads its inbox
//! (at once on a PostgreSQL notification, else every
//! `ALLOT_CONTROL_POLL_INTERVAL`), and runs the state machine
//!
//! ```text
//!   ready ──stop──► unready ──start──► ready
//!   ready | unready ──terminate──► stopping ──(work finished)──► stopped
//! ```
//!
//! Data commands (`ping`, `calculate`) are refused unless ready; `status`
//! is answered in every state. A long `calculate` runs on a thread of its
//! own, so the inbox keeps being read while it runs.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    channel::{self, COMMANDS_CHANNEL, Delivery, ReplyStatus},
    message::{Command, Role, State, printable},
    registry::{self, Process},
};
use crate::{clock::now_ms, config::ControlSettings, db::Db, jobs::Steering};

/// Prune old registry rows and commands about once an hour per process.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    identity: Process,
    steering: Steering,
    settings: ControlSettings,
    state: Mutex<State>,
    calculating: AtomicBool,
    heartbeat_failing: AtomicBool,
    /// Cancelled when the process exits: cuts running calculations off.
    exiting: CancellationToken,
    calculations: TaskTracker,
}

impl Agent {
    /// The agent of the process whose job worker is `worker_id` (the
    /// registry id is the lease owner's name, so a lease names its process)
    /// and is steered through `steering`.
    pub fn new(
        db: Db,
        worker_id: &str,
        role: Role,
        steering: Steering,
        settings: &ControlSettings,
    ) -> Self {
        let now = now_ms();
        let identity = Process {
            id: worker_id.to_string(),
            host: crate::telemetry::hostname(),
            pid: i64::from(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: role.as_str().to_string(),
            state: State::Ready,
            started_at: now,
            heartbeat_at: now,
            heartbeat_ms: settings.heartbeat_interval.as_millis() as i64,
            stopped_at: None,
            jobs_in_flight: 0,
            jobs_done: 0,
            last_error: None,
        };
        publish_state(State::Ready);
        Self {
            inner: Arc::new(Inner {
                db,
                identity,
                steering,
                settings: settings.clone(),
                state: Mutex::new(State::Ready),
                calculating: AtomicBool::new(false),
                heartbeat_failing: AtomicBool::new(false),
                exiting: CancellationToken::new(),
                calculations: TaskTracker::new(),
            }),
        }
    }

    /// Answers commands until `finished` (after [`Agent::register`]). `shutdown` is the process's stop
    /// signal: once it fires (a signal, or `terminate`), the state is
    /// `stopping` and commands are still answered while work winds down;
    /// the caller cancels `finished` when the work is done. The row is then
    /// marked `stopped`.
    /// Writes the registry row. The process awaits this before it serves
    /// or works, so that a command sent once it is up reaches it.
    pub async fn register(&self) {
        if let Err(error) = registry::register(&self.inner.db, &self.inner.identity).await {
            // The heartbeat writes the row once the database answers.
            tracing::warn!(%error, "could not register this process; retrying with the heartbeat");
        }
    }

    pub async fn run(self, shutdown: CancellationToken, finished: CancellationToken) {
        let inner = self.inner;
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(crate::db::listen(
            inner.db.clone(),
            COMMANDS_CHANNEL,
            wake.clone(),
            finished.clone(),
        ));
        let mut poll = tokio::time::interval(inner.settings.poll_interval);
        let mut beat = tokio::time::interval(inner.settings.heartbeat_interval);
        for timer in [&mut poll, &mut beat] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut next_prune = Instant::now();
        let mut stopping = false;
        let mut inbox_failing = false;
        tracing::info!(process = %inner.identity.id, "answering control commands");
        loop {
            tokio::select! {
                () = finished.cancelled() => break,
                () = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    inner.set_state(State::Stopping);
                    inner.heartbeat(None).await;
                }
                _ = beat.tick() => {
                    inner.heartbeat(None).await;
                    if Instant::now() >= next_prune {
                        next_prune = Instant::now() + PRUNE_EVERY;
                        if let Err(error) = registry::prune(&inner.db, now_ms()).await {
                            tracing::warn!(%error, "could not prune old processes and commands");
                        }
                    }
                }
                _ = poll.tick() => {}
                () = wake.notified() => {}
            }
            match channel::inbox(&inner.db, &inner.identity.id).await {
                Ok(deliveries) => {
                    inbox_failing = false;
                    for delivery in deliveries {
                        inner.handle(delivery, &shutdown).await;
                    }
                }
                Err(error) if !inbox_failing => {
                    inbox_failing = true;
                    tracing::warn!(%error, "cannot read control commands; retrying");
                }
                Err(_) => {}
            }
        }
        inner.exiting.cancel();
        inner.calculations.close();
        inner.calculations.wait().await;
        let _ = listener.await;
        inner.set_state(State::Stopped);
        inner.heartbeat(Some(now_ms())).await;
    }
}

impl Inner {
    fn state(&self) -> State {
        *self.state.lock().unwrap()
    }

    fn set_state(&self, state: State) {
        *self.state.lock().unwrap() = state;
        publish_state(state);
    }

    /// The registry row as it is now.
    fn snapshot(&self, stopped_at: Option<i64>) -> Process {
        Process {
            state: self.state(),
            heartbeat_at: now_ms(),
            stopped_at,
            jobs_in_flight: self.steering.in_flight() as i64,
            jobs_done: self.steering.done() as i64,
            last_error: self.steering.last_error(),
            ..self.identity.clone()
        }
    }

    /// Writes the row. During a database outage this fails every interval:
    /// said once when it starts and once when it ends, not every time.
    async fn heartbeat(&self, stopped_at: Option<i64>) {
        let written = registry::heartbeat(&self.db, &self.snapshot(stopped_at)).await;
        let was_failing = self
            .heartbeat_failing
            .swap(written.is_err(), Ordering::Relaxed);
        match written {
            Err(error) if !was_failing => {
                tracing::warn!(%error, "could not write this process's heartbeat; retrying every interval")
            }
            Ok(()) if was_failing => tracing::info!("heartbeat written again"),
            _ => {}
        }
    }

    async fn handle(self: &Arc<Self>, delivery: Delivery, shutdown: &CancellationToken) {
        let id = delivery.command_id;
        if delivery.expires_at < now_ms() {
            let reply = self.reply("arrived after its deadline; not done", Value::Null);
            return self.answer(id, "?", ReplyStatus::Expired, reply).await;
        }
        let command = match Command::parse(&delivery.message, self.settings.calculate_max) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(command_id = id, %error, "refused a malformed control message");
                let reply = self.reply(&error, Value::Null);
                return self.answer(id, "?", ReplyStatus::Error, reply).await;
            }
        };
        let name = command.name();
        let state = self.state();
        if command.is_data() && state != State::Ready {
            let why = format!(
                "{}: {name} is a data command, refused unless ready (send start)",
                state.as_str()
            );
            return self
                .answer(
                    id,
                    name,
                    ReplyStatus::Refused,
                    self.reply(&why, Value::Null),
                )
                .await;
        }
        match command {
            Command::Status => {
                let row = self.snapshot(None).as_written();
                let reply = self.reply("live registry row", json!({ "process": row }));
                self.answer(id, name, ReplyStatus::Ok, reply).await
            }
            Command::Start | Command::Stop if state == State::Stopping => {
                let reply = self.reply("stopping: the process is shutting down", Value::Null);
                self.answer(id, name, ReplyStatus::Refused, reply).await
            }
            Command::Start => {
                let changed = self.steering.resume() | (state != State::Ready);
                self.set_state(State::Ready);
                self.heartbeat(None).await;
                let text = if changed {
                    "ready: leasing jobs and accepting data commands"
                } else {
                    "already ready"
                };
                self.answer(id, name, ReplyStatus::Ok, self.reply(text, Value::Null))
                    .await
            }
            Command::Stop => {
                let changed = self.steering.pause() | (state != State::Unready);
                self.set_state(State::Unready);
                self.heartbeat(None).await;
                let text = if changed {
                    format!(
                        "unready: leasing no new jobs; {} in flight will finish",
                        self.steering.in_flight()
                    )
                } else {
                    "already unready".to_string()
                };
                self.answer(id, name, ReplyStatus::Ok, self.reply(&text, Value::Null))
                    .await
            }
            Command::Terminate => {
                let text = if state == State::Stopping {
                    "already stopping"
                } else {
                    "terminating: in-flight jobs finish or go back to the queue, then exit"
                };
                self.set_state(State::Stopping);
                // Answered before the shutdown starts, so the reply is in
                // even if the process exits quickly.
                self.answer(id, name, ReplyStatus::Ok, self.reply(text, Value::Null))
                    .await;
                shutdown.cancel();
            }
            Command::Ping => {
                let now = chrono::Utc::now().timestamp();
                let reply = self.reply(&format!("pong {now}"), json!({ "timestamp": now }));
                self.answer(id, name, ReplyStatus::Ok, reply).await
            }
            Command::Calculate { x, msg } => self.calculate(id, x, msg).await,
        }
    }

    async fn calculate(self: &Arc<Self>, id: i64, seconds: f64, msg: String) {
        if self.calculating.swap(true, Ordering::SeqCst) {
            let reply = self.reply("busy: a calculate is already running", Value::Null);
            return self
                .answer(id, "calculate", ReplyStatus::Refused, reply)
                .await;
        }
        if let Err(error) = channel::start(&self.db, id, &self.identity.id, now_ms()).await {
            self.calculating.store(false, Ordering::SeqCst);
            tracing::warn!(%error, command_id = id, "could not start calculate; it will be read again");
            return;
        }
        let inner = self.clone();
        self.calculations.spawn(async move {
            let cancel = inner.exiting.clone();
            let work = tokio::task::spawn_blocking(move || compute(seconds, &cancel));
            let iterations = work.await.ok().flatten();
            inner.calculating.store(false, Ordering::SeqCst);
            let msg = printable(&msg);
            let data = json!({ "seconds": seconds, "msg": msg, "iterations": iterations });
            match iterations {
                Some(_) => {
                    tracing::info!(command_id = id, seconds, msg = %msg, "calculate finished");
                    let reply = inner.reply(&format!("calculated for {seconds}s: {msg}"), data);
                    inner.answer(id, "calculate", ReplyStatus::Ok, reply).await
                }
                None => {
                    let reply = inner.reply("cut off: the process is exiting", data);
                    inner
                        .answer(id, "calculate", ReplyStatus::Cancelled, reply)
                        .await
                }
            }
        });
    }

    fn reply(&self, message: &str, data: Value) -> Value {
        let mut reply = json!({ "state": self.state().as_str(), "message": message });
        if let Value::Object(extra) = data {
            reply.as_object_mut().expect("an object").extend(extra);
        }
        reply
    }

    async fn answer(&self, id: i64, name: &'static str, outcome: ReplyStatus, reply: Value) {
        let text = reply.to_string();
        metrics::counter!("allot_control_commands_total", "command" => name, "outcome" => outcome.as_str())
            .increment(1);
        tracing::info!(
            command_id = id,
            command = name,
            outcome = outcome.as_str(),
            "control command answered"
        );
        let written =
            channel::answer(&self.db, id, &self.identity.id, outcome, &text, now_ms()).await;
        if let Err(error) = written {
            tracing::warn!(%error, command_id = id, "could not write a control reply");
        }
    }
}

/// Busy work for `seconds` on this thread, checking `cancel` as it goes.
/// Returns the iterations done, or `None` if cut off.
fn compute(seconds: f64, cancel: &CancellationToken) -> Option<u64> {
    // `seconds` was checked against ALLOT_CALCULATE_MAX; a maximum too
    // large for the clock still must not panic.
    let deadline = Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
    let (mut iterations, mut state) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
    while Instant::now() < deadline {
        if cancel.is_cancelled() {
            return None;
        }
        for _ in 0..10_000 {
            // A step of a linear congruential generator: work the optimiser
            // cannot skip, because the result is kept.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            iterations += 1;
        }
        std::hint::black_box(state);
    }
    Some(iterations)
}

/// `allot_process_state{state}`: 1 for this process's state, 0 for the
/// others, so a dashboard can count processes per state across a fleet.
fn publish_state(current: State) {
    for state in [
        State::Ready,
        State::Unready,
        State::Stopping,
        State::Stopped,
    ] {
        let value = if state == current { 1.0 } else { 0.0 };
        metrics::gauge!("allot_process_state", "state" => state.as_str()).set(value);
    }
}

//! The composition root: settings → database → routes → workers and timed
//! work, started together and stopped together.
//!
//! Owns the wiring and nothing else: which routers make the API, which
//! handlers run which job kinds, which background tasks a process runs, and
//! the order they stop in. Everything may be imported here; nothing imports
//! this module but the CLI (and tests, through [`Application`]).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    background::{Alerts, Loops},
    config::Settings,
    control::{self, Agent, Role},
    coupons, dashboard,
    db::Db,
    http::{self, AdminSecret},
    jobs::{Handlers, Worker},
    keys::IssuedKeys,
    mail::{Mailroom, Postman},
    merchant::{self, Courier, DeliverySettings},
    notices::{self, Notice},
    openapi, ops, orders,
    orders::Fulfilment,
    outage::{self, OutageAlarm},
    payments::{self, Payments},
    scheduler, stats,
};

/// `allot serve`: the HTTP API, a job worker and the timed work in one
/// process. Build it (binds the listener, port 0 in tests), then run it.
pub struct Application {
    listener: TcpListener,
    db: Db,
    settings: Settings,
    fulfilment: Fulfilment,
    worker: Worker,
    postman: Arc<Postman>,
}

impl Application {
    /// Connects to the database, applies migrations and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::open(&settings.database).await?;
        let postman = Arc::new(Postman::new(&settings.mail)?);
        let worker = worker_with(db.clone(), &settings, postman.clone())?;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("ALLOT_LISTEN: cannot listen on {}", settings.listen))?;
        let fulfilment = Fulfilment::new(db.clone(), &settings).handing_to(worker.handoff());
        Ok(Self {
            listener,
            db,
            settings,
            fulfilment,
            worker,
            postman,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves HTTP and runs the worker and the timed work until `shutdown`
    /// is cancelled, then lets in-flight requests and jobs finish for up to
    /// `ALLOT_SHUTDOWN_GRACE`, waits for every task, and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            db,
            settings,
            fulfilment,
            worker,
            postman,
        } = self;
        let addr = listener.local_addr().context("reading the bound address")?;
        let grace = settings.shutdown_grace;
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
        ops::install_metrics();
        let tasks = TaskTracker::new();
        let loops = Loops::new(Some(alerts(&db, &settings)));
        {
            let (db, settings, fulfilment, stop) = (
                db.clone(),
                settings.clone(),
                fulfilment.clone(),
                shutdown.clone(),
            );
            let pulses = scheduler::Pulses::new(&loops);
            loops.supervise(&tasks, shutdown.clone(), "scheduler", move || {
                scheduler::run(
                    db.clone(),
                    settings.clone(),
                    fulfilment.clone(),
                    pulses.clone(),
                    stop.clone(),
                )
            });
        }
        let stop = shutdown.clone();
        loops.supervise(&tasks, shutdown.clone(), "metrics_upkeep", move || {
            ops::metrics_upkeep(stop.clone())
        });
        let agent = Agent::new(
            db.clone(),
            worker.id(),
            Role::Serve,
            worker.steering(),
            &settings.control,
        );
        agent.register().await;
        let finished = CancellationToken::new();
        let answering = tokio::spawn(agent.run(shutdown.clone(), finished.clone()));
        supervise_worker(&loops, &tasks, worker, &shutdown, grace);
        let alarm = OutageAlarm::default();
        {
            let (alarm, admin, interval, stop) = (
                alarm.clone(),
                settings.mail.admin_email.clone(),
                settings.jobs.alert_interval,
                shutdown.clone(),
            );
            loops.supervise(&tasks, shutdown.clone(), "outage_alarm", move || {
                alarm
                    .clone()
                    .run(postman.clone(), admin.clone(), interval, stop.clone())
            });
        }

        let app = router(db.clone(), fulfilment, &settings, alarm, loops, &tasks);
        tracing::info!(%addr, backend = db.backend().name(), "listening");
        http::serve(listener, app, settings.read_timeout, &shutdown, grace).await;
        tasks.close();
        tasks.wait().await;
        // The agent answers (`stopping`) until the work is done.
        finished.cancel();
        let _ = answering.await;
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every capability's routes and the OpenAPI document they make, wrapped in
/// the HTTP plumbing; answers that a database outage caused are reported to
/// `alarm`.
fn router(
    db: Db,
    fulfilment: Fulfilment,
    settings: &Settings,
    alarm: OutageAlarm,
    loops: Loops,
    tasks: &TaskTracker,
) -> Router {
    let (routes, document) = OpenApiRouter::with_openapi(openapi::contract())
        .merge(coupons::router(db.clone(), tasks.clone()))
        .merge(orders::routes::router(
            db.clone(),
            fulfilment.clone().grouped(tasks.clone()),
            settings,
        ))
        .merge(payments::routes::router(
            Payments::new(db.clone(), fulfilment.clone(), settings.jobs.max_attempts()),
            &settings.payments,
        ))
        .merge(control::routes::router(db.clone(), &settings.control))
        .merge(merchant::routes::router(
            db.clone(),
            AdminSecret(settings.control.admin_token.clone()),
            settings.jobs.max_attempts(),
        ))
        .merge(stats::router(
            db.clone(),
            AdminSecret(settings.control.admin_token.clone()),
        ))
        .merge(dashboard::router(
            db.clone(),
            fulfilment,
            &settings.control,
            settings.intake.low_stock_threshold,
            settings.jobs.max_attempts(),
        ))
        .merge(ops::router(db, loops))
        .split_for_parts();
    let routes = routes.merge(openapi::router(openapi::with_request_ids(document)));
    // Key files uploaded on the dashboard are larger than any request body.
    const UPLOADS: &[(&str, usize)] = &[(dashboard::KEY_IMPORT_PATH, dashboard::KEY_FILE_LIMIT)];
    let limits = http::BodyLimits {
        max_bytes: settings.max_body_bytes,
        uploads: UPLOADS,
        read_timeout: settings.read_timeout,
    };
    http::with_plumbing(routes, limits)
        .layer(axum::middleware::from_fn_with_state(alarm, outage::watch))
}

/// Which handler runs which job kind, and the admin's digest when one dies.
fn handlers(db: &Db, settings: &Settings, postman: Arc<Postman>) -> anyhow::Result<Handlers> {
    let keys = IssuedKeys::new(db.clone());
    let context = || notices::Context {
        db: db.clone(),
        admin: settings.mail.admin_email.clone(),
        keys: keys.clone(),
    };
    let (interval, max_attempts) = (settings.jobs.alert_interval, settings.jobs.max_attempts());
    let courier = Courier::new(
        db.clone(),
        DeliverySettings {
            timeout: settings.endpoints.timeout,
            disable_after: settings.endpoints.disable_after,
            max_attempts,
        },
        settings.mail.admin_email.clone(),
    )?;
    Ok(Handlers::new()
        .with(Mailroom::<Notice>::new(postman.clone(), context()))
        .with(Mailroom::<orders::notices::Notice>::new(postman, context()))
        .with(courier)
        .alert_dead_with(move |kind, now| notices::digest_for(kind, now, interval, max_attempts)))
}

/// A job worker with every handler, as `serve` and `allot worker` run it
/// (tests drive its `run_once`).
pub fn worker(db: Db, settings: &Settings) -> anyhow::Result<Worker> {
    let postman = Arc::new(Postman::new(&settings.mail)?);
    worker_with(db, settings, postman)
}

fn worker_with(db: Db, settings: &Settings, postman: Arc<Postman>) -> anyhow::Result<Worker> {
    let handlers = handlers(&db, settings, postman)?;
    // One attempt is bounded by the longest send timeout: every job kind
    // sends one message, an email or a merchant webhook.
    let attempt_limit = settings.mail.send_timeout.max(settings.endpoints.timeout);
    Ok(Worker::new(db, &settings.jobs, attempt_limit, handlers))
}

/// Who is told when a background loop fails.
fn alerts(db: &Db, settings: &Settings) -> Alerts {
    Alerts {
        db: db.clone(),
        admin: settings.mail.admin_email.clone(),
        interval: settings.jobs.alert_interval,
        max_attempts: settings.jobs.max_attempts(),
    }
}

/// The job worker, started again if it ever panics or stops early.
fn supervise_worker(
    loops: &Loops,
    tasks: &TaskTracker,
    worker: Worker,
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) {
    let stop = shutdown.clone();
    loops.supervise(tasks, shutdown.clone(), "worker", move || {
        worker.clone().run(stop.clone(), grace)
    });
}

/// `allot worker`: job workers only, until `shutdown`.
pub async fn run_worker(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = Db::open(&settings.database).await?;
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let worker = worker(db.clone(), &settings)?;
    let tasks = TaskTracker::new();
    let loops = Loops::new(Some(alerts(&db, &settings)));
    let agent = Agent::new(
        db.clone(),
        worker.id(),
        Role::Worker,
        worker.steering(),
        &settings.control,
    );
    agent.register().await;
    let finished = CancellationToken::new();
    let answering = tokio::spawn(agent.run(shutdown.clone(), finished.clone()));
    supervise_worker(&loops, &tasks, worker, &shutdown, settings.shutdown_grace);
    tasks.close();
    tasks.wait().await;
    finished.cancel();
    let _ = answering.await;
    db.close().await;
    Ok(())
}

//! Background loops cannot fail silently: a loop that panics or stops is
//! started again, its error is kept and shown, and the admin is mailed.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use allot::background::{Alerts, Loops};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    helpers::{Backend, World, eventually},
    on_every_backend,
};

on_every_backend!(a_loop_that_panics_or_stops_is_restarted_and_reported);

async fn a_loop_that_panics_or_stops_is_restarted_and_reported(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let loops = Loops::new(Some(Alerts {
        db: world.db.clone(),
        admin: world.settings.mail.admin_email.clone(),
        // A window of a day: both failures fall in one window unless the
        // test runs across midnight (with the one-minute default, a run
        // across a minute boundary saw two windows and two alerts).
        interval: std::time::Duration::from_secs(24 * 3600),
        max_attempts: 3,
    }));
    let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let runs = Arc::new(AtomicUsize::new(0));
    {
        let (runs, stop) = (runs.clone(), shutdown.clone());
        loops.supervise(&tasks, shutdown.clone(), "flaky", move || {
            let (runs, stop) = (runs.clone(), stop.clone());
            async move {
                match runs.fetch_add(1, Ordering::SeqCst) {
                    0 => panic!("the disk is on fire"),
                    1 => {} // returns on its own: also a failure
                    _ => stop.cancelled().await,
                }
            }
        });
    }
    eventually("the crashed loop to be shown down", async || {
        loops.down() == ["flaky"]
    })
    .await;
    eventually("the loop to run a third time", async || {
        runs.load(Ordering::SeqCst) >= 3 && loops.down().is_empty()
    })
    .await;
    let health = loops.snapshot()["flaky"].clone();
    assert_eq!(health.restarts, 2);
    assert!(health.last_error.unwrap().contains("stopped on its own"));

    // The admin hears of it once for the window, through the outbox.
    let alerts: Vec<_> = allot::jobs::list(&world.db, None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == "email")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    let mails = world.mails();
    assert!(
        mails
            .iter()
            .any(|m| m.contains("admin@shop.test") && m.contains("the disk is on fire")),
        "{mails:?}"
    );

    // Stopping the process stops the loop for good.
    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait())
        .await
        .expect("the supervised loop ends with the process");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

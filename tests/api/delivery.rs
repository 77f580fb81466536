//! The outbox and its workers, driven one step at a time with a test clock.

use std::collections::HashSet;

use allot::{
    config::{MailTransport, Secret},
    jobs::{self, JobState, WorkerEvent},
};
use serde_json::json;

use crate::{
    helpers::{Backend, World, free_port, race},
    on_every_backend,
};

on_every_backend!(
    a_queued_email_is_delivered_once,
    a_dedupe_key_enqueued_concurrently_makes_one_job,
    a_job_rolled_back_with_its_transaction_never_runs,
    transient_failures_follow_the_retry_schedule_then_the_job_dies,
    jobs_our_code_cannot_handle_die_at_once_and_the_admin_is_told_once_then_in_a_digest,
    the_key_email_carries_the_configured_logo,
    an_admin_alert_overtakes_a_backlog_of_buyer_emails,
);

async fn a_queued_email_is_delivered_once(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let id = world
        .queue_email(
            "buyer@example.com",
            "test",
            json!({"address": "buyer@example.com"}),
        )
        .await;
    let worker = world.worker();
    let now = allot::clock::now_ms();
    assert_eq!(
        worker.run_once(now).await.unwrap(),
        vec![WorkerEvent::Done { job_id: id }]
    );
    assert!(
        worker.run_once(now).await.unwrap().is_empty(),
        "a done job ran again"
    );

    let mails = world.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("To: buyer@example.com"), "{mail}");
    assert!(mail.contains("Subject: allot test message"), "{mail}");
    assert!(
        mail.contains("Content-Type: text/plain"),
        "no text part: {mail}"
    );
    assert!(
        mail.contains("Content-Type: text/html"),
        "no HTML part: {mail}"
    );
    assert!(
        mail.contains(&format!("Message-ID: <allot.job-{id}.")),
        "{mail}"
    );

    let job = world.job(id).await;
    assert_eq!((job.state.as_str(), job.attempts), ("done", 1));
    let attempts = jobs::attempts(&world.db, id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("done"));
}

async fn a_dedupe_key_enqueued_concurrently_makes_one_job(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let db = world.db.clone();
    let results = race(20, |_| {
        let db = db.clone();
        async move {
            let job =
                allot::notices::email_job("buyer@example.com", "test", json!({"address": "x"}), 3)
                    .dedupe_key("order-42:confirmation");
            jobs::enqueue_now(&db, &job).await.unwrap()
        }
    })
    .await;
    let created: Vec<i64> = results.into_iter().flatten().collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(jobs::list(&world.db, None, 100).await.unwrap().len(), 1);
}

async fn a_job_rolled_back_with_its_transaction_never_runs(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let mut tx = world.db.begin().await.unwrap();
    let job = allot::notices::email_job("buyer@example.com", "test", json!({"address": "x"}), 3);
    jobs::enqueue(&mut tx, &job, allot::clock::now_ms())
        .await
        .unwrap();
    drop(tx); // the business change failed: nothing of it may remain
    assert!(jobs::list(&world.db, None, 10).await.unwrap().is_empty());
    assert!(
        world
            .worker()
            .run_once(allot::clock::now_ms())
            .await
            .unwrap()
            .is_empty()
    );
}

/// SMTP on a port where nothing listens: connection refused, a failure of
/// theirs, retried on the schedule (10s, 60s, 300s ±20 %), then dead.
async fn transient_failures_follow_the_retry_schedule_then_the_job_dies(backend: Backend) {
    let port = free_port();
    let world = World::new(backend, |s| {
        s.mail.transport = MailTransport::Smtp {
            url: Secret::from(format!("smtp://127.0.0.1:{port}")),
        };
    })
    .await;
    let id = world
        .queue_email("buyer@example.com", "test", json!({"address": "x"}))
        .await;
    let worker = world.worker();
    let mut now = allot::clock::now_ms();
    for base_secs in [10, 60, 300] {
        let events = worker.run_once(now).await.unwrap();
        let [WorkerEvent::Retry { job_id, at }] = events[..] else {
            panic!("expected one retry, got {events:?}");
        };
        assert_eq!(job_id, id);
        let delay = at - now;
        assert!(
            (base_secs * 800..=base_secs * 1200 + 1000).contains(&delay),
            "delay {delay} ms is not {base_secs}s ±20%"
        );
        // Not due yet: nothing runs a millisecond early.
        assert!(worker.run_once(at - 1).await.unwrap().is_empty());
        let job = world.job(id).await;
        assert_eq!(job.state.as_str(), "queued");
        assert!(
            job.last_error.as_deref().unwrap_or("").contains("SMTP"),
            "{job:?}"
        );
        now = at;
    }
    let events = worker.run_once(now).await.unwrap();
    let job = world.job(id).await;
    assert_eq!(
        events,
        vec![WorkerEvent::Dead { job_id: id }],
        "the last attempt at {now}, the job after it: {job:?}"
    );
    assert_eq!((job.state.as_str(), job.attempts), ("dead", 4));
    assert!(
        job.last_error
            .unwrap()
            .starts_with("gave up after 4 attempts")
    );
    let outcomes: Vec<_> = jobs::attempts(&world.db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome.unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "dead"]);
    // The death queued the admin's alert and the window's digest.
    let mut alerts: Vec<String> = jobs::list(&world.db, Some(JobState::Queued), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.kind)
        .collect();
    alerts.sort();
    assert_eq!(alerts, ["dead_letter_alert", "dead_letter_digest"]);
}

async fn jobs_our_code_cannot_handle_die_at_once_and_the_admin_is_told_once_then_in_a_digest(
    backend: Backend,
) {
    let world = World::new(backend, |_| {}).await;
    let mut ids = HashSet::new();
    for n in 0..5 {
        ids.insert(
            world
                .queue_email(&format!("b{n}@example.com"), "no_such_template", json!({}))
                .await,
        );
    }
    let worker = world.worker();
    let now = allot::clock::now_ms();
    let events = worker.run_once(now).await.unwrap();
    assert_eq!(events.len(), 5);
    assert!(
        events.iter().all(|e| matches!(e, WorkerEvent::Dead { .. })),
        "{events:?}"
    );
    let dead = jobs::list(&world.db, Some(JobState::Dead), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 5);
    assert!(
        dead.iter().all(|j| j.attempts == 1),
        "permanent failures must not be retried"
    );
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no_such_template")
    );

    // The first death is told at once, the storm in one digest when the
    // alert window closes.
    let queued = jobs::list(&world.db, Some(JobState::Queued), 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 2, "{queued:?}");
    let alert = queued
        .iter()
        .find(|j| j.kind == "dead_letter_alert")
        .unwrap();
    let digest = queued
        .iter()
        .find(|j| j.kind == "dead_letter_digest")
        .unwrap();
    // "At once": due the moment the job whose death enqueued it died. A
    // death is stamped with its lease time plus the attempt's duration, so
    // that can be a few ms after `now`.
    assert!(
        dead.iter().any(|j| j.finished_at == Some(alert.run_at)),
        "{alert:?} {dead:?}"
    );
    assert_eq!(
        worker.run_once(alert.run_at).await.unwrap(),
        vec![WorkerEvent::Done { job_id: alert.id }]
    );
    let mails = world.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("To: admin@shop.test"));
    assert!(
        mails[0].contains("A job failed permanently"),
        "{}",
        mails[0]
    );
    assert!(worker.run_once(digest.run_at - 1).await.unwrap().is_empty());
    assert_eq!(
        worker.run_once(digest.run_at).await.unwrap(),
        vec![WorkerEvent::Done { job_id: digest.id }]
    );
    let mails = world.mails();
    assert_eq!(
        mails.len(),
        2,
        "one alert and one digest, not one mail per dead job"
    );
    assert!(
        mails
            .iter()
            .any(|m| m.contains("4 more job(s) failed permanently")),
        "{mails:?}"
    );
}

async fn the_key_email_carries_the_configured_logo(backend: Backend) {
    let world = World::new(backend, |s| {
        s.mail.logo_url = Some("https://shop.example/logo.png".into());
    })
    .await;
    let context = json!({"key": "ABCD-0O0O-1l1I", "product": "Course 101", "order_id": "WC-7"});
    let id = world
        .queue_email("buyer@example.com", "license_key", context)
        .await;
    let events = world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(events, vec![WorkerEvent::Done { job_id: id }]);
    // Undo quoted-printable soft line breaks to read the HTML part.
    let mail = world
        .mails()
        .remove(0)
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        mail.contains("Subject: Your license key for Course 101"),
        "{mail}"
    );
    assert!(mail.contains("shop.example&#x2f;logo.png"), "{mail}");
    assert!(mail.contains("ABCD-0O0O-1l1I"), "{mail}");
}

/// An urgent admin alert enqueued after a backlog of buyer emails runs in
/// the very next batch, not after the backlog drains.
async fn an_admin_alert_overtakes_a_backlog_of_buyer_emails(backend: Backend) {
    let world = World::new(backend, |s| s.jobs.concurrency = 4).await;
    for i in 0..40 {
        world
            .queue_email(
                &format!("b{i}@example.com"),
                "test",
                json!({"address": "x"}),
            )
            .await;
    }
    let alert = allot::notices::low_stock_job("course-101", 2, 10, 1, 3);
    let alert = jobs::enqueue_now(&world.db, &alert).await.unwrap().unwrap();
    let events = world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(events.len(), 4);
    assert!(
        events.contains(&WorkerEvent::Done { job_id: alert }),
        "the alert ran in the first batch: {events:?}"
    );
    assert!(
        world
            .mails()
            .iter()
            .any(|m| m.contains("To: admin@shop.test"))
    );
}

//! Delivery through a real SMTP server process.

use allot::{
    config::{MailTransport, Secret},
    jobs::{self, JobState, WorkerEvent},
};
use serde_json::json;

use crate::{
    helpers::{Backend, SmtpServer, World, free_port},
    on_every_backend,
};

on_every_backend!(
    mail_waits_while_the_smtp_server_is_down_and_arrives_once_when_it_is_up,
    smtp_550_is_dead_at_once_and_the_error_is_kept,
    dead_mail_is_redriven_and_delivered,
    the_admin_hears_of_mail_that_died_in_an_outage_once_mail_works,
);

fn smtp(port: u16) -> impl FnOnce(&mut allot::config::Settings) {
    move |s| {
        s.mail.transport = MailTransport::Smtp {
            url: Secret::from(format!("smtp://127.0.0.1:{port}")),
        };
    }
}

async fn mail_waits_while_the_smtp_server_is_down_and_arrives_once_when_it_is_up(backend: Backend) {
    let port = free_port();
    let world = World::new(backend, smtp(port)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            world
                .queue_email(
                    &format!("buyer{n}@example.com"),
                    "test",
                    json!({"address": "x"}),
                )
                .await,
        );
    }
    let worker = world.worker();
    let now = allot::clock::now_ms();
    let events = worker.run_once(now).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, WorkerEvent::Retry { .. })),
        "{events:?}"
    );

    // The server comes up; the same worker (no restart) delivers at the retry time.
    let Some(server) = SmtpServer::start(port) else {
        return;
    };
    let later = now + 13_000;
    let events = worker.run_once(later).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events.iter().all(|e| matches!(e, WorkerEvent::Done { .. })),
        "{events:?}"
    );
    assert!(worker.run_once(later + 3_600_000).await.unwrap().is_empty());

    let messages = server.messages();
    assert_eq!(messages.len(), 3, "each mail exactly once");
    for id in ids {
        let needle = format!("Message-ID: <allot.job-{id}.");
        assert_eq!(
            messages.iter().filter(|m| m.contains(&needle)).count(),
            1,
            "job {id}"
        );
        assert_eq!(world.job(id).await.state.as_str(), "done");
    }
}

async fn smtp_550_is_dead_at_once_and_the_error_is_kept(backend: Backend) {
    let port = free_port();
    let Some(server) = SmtpServer::start(port) else {
        return;
    };
    let world = World::new(backend, smtp(port)).await;
    let id = world
        .queue_email("reject-me@example.com", "test", json!({"address": "x"}))
        .await;
    let events = world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(events, vec![WorkerEvent::Dead { job_id: id }]);
    let job = world.job(id).await;
    assert_eq!((job.state.as_str(), job.attempts), ("dead", 1));
    let error = job.last_error.unwrap();
    assert!(error.contains("550"), "{error}");
    assert!(error.contains("mailbox unavailable"), "{error}");
    assert!(server.messages().is_empty());
}

async fn dead_mail_is_redriven_and_delivered(backend: Backend) {
    let port = free_port();
    let world = World::new(backend, smtp(port)).await;
    let id = world
        .queue_email("buyer@example.com", "test", json!({"address": "x"}))
        .await;
    let worker = world.worker();
    // Exhaust the schedule while the server is down.
    let mut now = allot::clock::now_ms();
    loop {
        match worker.run_once(now).await.unwrap()[..] {
            [WorkerEvent::Retry { at, .. }] => now = at,
            [WorkerEvent::Dead { .. }] => break,
            ref other => panic!("{other:?}"),
        }
    }
    assert_eq!(world.job(id).await.state.as_str(), "dead");

    let Some(server) = SmtpServer::start(port) else {
        return;
    };
    let requeued = jobs::retry_dead(&world.db, None, world.settings.jobs.max_attempts())
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    // (The digest about the death may run in the same step; it finds no
    // dead job any more and sends nothing.)
    let events = worker
        .run_once(allot::clock::now_ms().max(now))
        .await
        .unwrap();
    assert!(
        events.contains(&WorkerEvent::Done { job_id: id }),
        "{events:?}"
    );
    assert_eq!(server.messages().len(), 1);
    let job = world.job(id).await;
    assert_eq!(
        (job.state.as_str(), job.attempts),
        ("done", 1),
        "a fresh budget"
    );
    // The dead run's history is kept, in order.
    let outcomes: Vec<_> = jobs::attempts(&world.db, id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome.unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "dead", "done"]);
    assert!(
        jobs::list(&world.db, Some(JobState::Dead), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An outage long enough to kill a mail also fails the digest that reports
/// it. The digest has no attempt budget: it keeps trying, at least once per
/// alert window, and reaches the admin when the server is back.
async fn the_admin_hears_of_mail_that_died_in_an_outage_once_mail_works(backend: Backend) {
    let port = free_port();
    let world = World::new(backend, smtp(port)).await;
    let id = world
        .queue_email("buyer@example.com", "test", json!({"address": "x"}))
        .await;
    let worker = world.worker();
    let mut now = allot::clock::now_ms();
    loop {
        match worker.run_once(now).await.unwrap()[..] {
            [WorkerEvent::Retry { at, .. }] => now = at,
            [WorkerEvent::Dead { .. }] => break,
            ref other => panic!("{other:?}"),
        }
    }
    let queued = jobs::list(&world.db, Some(JobState::Queued), 10)
        .await
        .unwrap();
    let kinds: Vec<&str> = queued.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds.len(), 2, "the alert and the digest: {kinds:?}");
    let alert = queued
        .iter()
        .find(|j| j.kind == "dead_letter_alert")
        .unwrap();
    let digest = queued
        .iter()
        .find(|j| j.kind == "dead_letter_digest")
        .unwrap();

    // Twice the mail's budget of failures, and the alert is still queued.
    now = now.max(digest.run_at - 1) + 1;
    let budget = world.settings.jobs.max_attempts();
    let window = world.settings.jobs.alert_interval.as_millis() as i64;
    for _ in 0..2 * budget {
        let events = worker.run_once(now).await.unwrap();
        assert!(!events.is_empty());
        let mut next = now;
        for event in events {
            match event {
                WorkerEvent::Retry { job_id, at } if job_id == digest.id || job_id == alert.id => {
                    // (plus the attempt's own duration, counted from the lease)
                    assert!(
                        at - now <= window + 1_000,
                        "retried within the alert window"
                    );
                    next = next.max(at);
                }
                // The digest has no other death to report: done, unsent.
                WorkerEvent::Done { job_id } if job_id == digest.id => {}
                other => panic!("the alert must retry, not die: {other:?}"),
            }
        }
        now = next;
    }

    let Some(server) = SmtpServer::start(port) else {
        return;
    };
    let events = worker.run_once(now).await.unwrap();
    assert_eq!(events, vec![WorkerEvent::Done { job_id: alert.id }]);
    // The alert names the job; the digest has no other death to report.
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("admin@shop.test"));
    assert!(
        messages[0].contains(&format!("job {id} (email)")),
        "{}",
        messages[0]
    );
}

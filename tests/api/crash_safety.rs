//! A server killed or stopped in the middle of sending loses no mail.

use std::path::Path;

use allot::jobs::{self, JobState};

use crate::{
    helpers::{Backend, ServeProcess, SmtpServer, TestDb, allot_command, eventually, free_port},
    on_every_backend,
};

on_every_backend!(
    a_sigkilled_server_loses_no_queued_or_in_flight_mail,
    sigterm_releases_stuck_deliveries_back_to_the_queue,
);

fn count_files(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .count()
}

fn queue_test_mails(dir: &Path, db_url: &str, numbers: std::ops::Range<usize>) {
    for i in numbers {
        let out = allot_command(dir)
            .args(["mail", "test", &format!("buyer{i}@example.com")])
            .env("ALLOT_DATABASE_URL", db_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn smtp_env(smtp: &SmtpServer) -> Vec<(&'static str, String)> {
    vec![
        ("ALLOT_MAIL_TRANSPORT", "smtp".into()),
        ("ALLOT_SMTP_URL", smtp.url()),
        ("ALLOT_JOB_LEASE", "3s".into()),
        ("ALLOT_SEND_TIMEOUT", "2s".into()),
        ("ALLOT_WORKER_POLL_INTERVAL", "100ms".into()),
        ("ALLOT_SHUTDOWN_GRACE", "1s".into()),
    ]
}

/// An SMTP server whose deliveries hang inside DATA (until `hang` is
/// removed), a fresh database and a working directory.
struct StuckDeliveries {
    smtp: SmtpServer,
    hang: std::path::PathBuf,
    db: TestDb,
    dir: tempfile::TempDir,
}

async fn stuck_deliveries(backend: Backend) -> Option<StuckDeliveries> {
    let smtp = SmtpServer::start(free_port())?;
    let hang = smtp.dir.path().join("hang");
    std::fs::write(&hang, "").unwrap();
    Some(StuckDeliveries {
        smtp,
        hang,
        db: TestDb::create(backend).await,
        dir: tempfile::tempdir().unwrap(),
    })
}

fn start(dir: &Path, db_url: &str, env: &[(&'static str, String)]) -> ServeProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ServeProcess::start_with(dir, db_url, &env)
}

async fn a_sigkilled_server_loses_no_queued_or_in_flight_mail(backend: Backend) {
    let Some(StuckDeliveries {
        smtp,
        hang,
        db: test_db,
        dir,
    }) = stuck_deliveries(backend).await
    else {
        return;
    };
    let env = smtp_env(&smtp);

    let first = start(dir.path(), &test_db.url, &env);
    queue_test_mails(dir.path(), &test_db.url, 0..3);
    // All three are inside SMTP DATA when the process dies.
    eventually("three deliveries in flight", async || {
        count_files(smtp.dir.path(), "receiving-") == 3
    })
    .await;
    first.signal("KILL");
    let (code, _) = first.wait();
    assert_eq!(code, None, "killed by a signal");
    std::fs::remove_file(&hang).unwrap();
    queue_test_mails(dir.path(), &test_db.url, 3..5);

    let second = start(dir.path(), &test_db.url, &env);
    let db = allot::db::Db::connect(
        &allot::config::Settings::for_database(test_db.url.clone()).database,
    )
    .await
    .unwrap();
    eventually("every job done", async || {
        let done = jobs::list(&db, Some(JobState::Done), 100).await.unwrap();
        done.iter().filter(|j| j.kind == "email").count() == 5
    })
    .await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 5, "each mail exactly once");
    for i in 0..5 {
        let to = format!("To: buyer{i}@example.com");
        assert_eq!(
            messages.iter().filter(|m| m.contains(&to)).count(),
            1,
            "{to}"
        );
    }
    // The three in flight at the kill show the expired lease in their history.
    let mut expired = 0;
    for job in jobs::list(&db, Some(JobState::Done), 100).await.unwrap() {
        let attempts = jobs::attempts(&db, job.id).await.unwrap();
        if attempts
            .iter()
            .any(|a| a.outcome.as_deref() == Some("lease_expired"))
        {
            assert_eq!(attempts.len(), 2);
            // Logged from the job's row: the killed process wrote nothing.
            let first = &attempts[0];
            assert_eq!(first.outcome.as_deref(), Some("lease_expired"));
            assert!(!first.worker.is_empty(), "{first:?}");
            assert!(first.started_at <= attempts[1].started_at, "{attempts:?}");
            expired += 1;
        }
    }
    assert_eq!(expired, 3);
    let (code, log) = second.terminate();
    assert_eq!(code, Some(0), "{log:?}");
}

async fn sigterm_releases_stuck_deliveries_back_to_the_queue(backend: Backend) {
    let Some(StuckDeliveries {
        smtp,
        hang,
        db: test_db,
        dir,
    }) = stuck_deliveries(backend).await
    else {
        return;
    };
    let mut env = smtp_env(&smtp);
    // Longer than the grace period, so the send is still stuck when it ends.
    env.push(("ALLOT_SEND_TIMEOUT", "20s".into()));
    env.push(("ALLOT_JOB_LEASE", "30s".into()));

    let server = start(dir.path(), &test_db.url, &env);
    queue_test_mails(dir.path(), &test_db.url, 0..2);
    eventually("two deliveries in flight", async || {
        count_files(smtp.dir.path(), "receiving-") == 2
    })
    .await;
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("released an unfinished job")),
        "{log:?}"
    );

    let db = allot::db::Db::connect(
        &allot::config::Settings::for_database(test_db.url.clone()).database,
    )
    .await
    .unwrap();
    let queued = jobs::list(&db, Some(JobState::Queued), 10).await.unwrap();
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(
        queued.iter().all(|j| j.attempts == 0),
        "a released attempt must not count: {queued:?}"
    );
    std::fs::remove_file(&hang).unwrap();
}

/// An order answered 200 must survive a power loss on the default backend
/// too: SQLite commits with `synchronous = FULL` (in WAL mode NORMAL may
/// lose the last commits), on the connection every write goes through.
#[tokio::test]
async fn sqlite_commits_reach_the_disk_before_the_answer() {
    let test_db = TestDb::create(Backend::Sqlite).await;
    let db =
        allot::db::Db::open(&allot::config::Settings::for_database(test_db.url.clone()).database)
            .await
            .unwrap();
    let allot::db::Db::Sqlite { writer, .. } = &db else {
        unreachable!("a SQLite URL")
    };
    let synchronous: i64 = sqlx::query_scalar("pragma synchronous")
        .fetch_one(writer)
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "2 is FULL");
    let journal: String = sqlx::query_scalar("pragma journal_mode")
        .fetch_one(writer)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    db.close().await;
}

//! Faults under load, each against a real `allot serve` while a shop streams
//! orders and, like WordPress, retries whatever got no 200. Afterwards every
//! order exists once, every buyer has exactly one key and exactly one key
//! email, no key went twice, and nothing is left running:
//!
//! - the server SIGKILLed at random moments (every backend);
//! - the database restarted mid-load: a private PostgreSQL stopped the way
//!   a failover does, then started again (clients get 503 + `Retry-After`,
//!   the same server process recovers, the admin is told);
//! - the SQLite disk full: 503 + `Retry-After`, the admin told, no
//!   corruption, and orders taken again once there is room; a read-only
//!   one: `allot serve` refuses to start and says why;
//! - SMTP down, then back: every buyer's email arrives exactly once.
//!
//! `ALLOT_FAULT_SCALE=N` multiplies the orders and kills (the long form that
//! `scripts/chaos.sh` runs); the seed of the random kill points is printed
//! and taken from `ALLOT_FAULT_SEED` to replay a run.

use std::{net::SocketAddr, path::Path};

use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::{
    helpers::{
        Backend, OrderStream, PrivatePostgres, Seen, ServeProcess, SmallDisk, SmtpServer, TOKEN,
        TestDb, allot_command, assert_all_fulfilled, assert_no_server_error,
        assert_one_key_email_each, eventually, free_port, read_eml_files, send_until,
    },
    on_every_backend,
};

on_every_backend!(
    sigkills_during_an_order_stream_lose_and_duplicate_nothing,
    mail_held_up_by_an_smtp_outage_arrives_exactly_once,
);

fn scale() -> usize {
    std::env::var("ALLOT_FAULT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn seeded_rng(test: &str) -> StdRng {
    let seed = std::env::var("ALLOT_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: ALLOT_FAULT_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A directory with `keys.txt` imported into `database_url` for SKU
/// `course-101`; the keys.
fn imported_keys(dir: &Path, database_url: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("FAULT-{i:05}")).collect();
    std::fs::write(dir.join("keys.txt"), keys.join("\n")).unwrap();
    let imported = allot_command(dir)
        .args(["keys", "import", "keys.txt", "--sku", "course-101"])
        .env("ALLOT_DATABASE_URL", database_url)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    keys
}

/// `allot serve` for a shop: webhook token, the admin, mail into `mail_dir`,
/// short leases so that mail a killed process held is taken over within the
/// test; `extra` settings on top.
async fn shop_server(
    dir: &Path,
    database_url: &str,
    mail_dir: &Path,
    extra: &[(&str, &str)],
) -> ServeProcess {
    let mut env: Vec<(String, String)> = vec![
        ("ALLOT_WEBHOOK_TOKEN".into(), TOKEN.into()),
        ("ALLOT_ADMIN_EMAIL".into(), "admin@shop.test".into()),
        ("ALLOT_MAIL_DIR".into(), mail_dir.display().to_string()),
        ("ALLOT_JOB_LEASE".into(), "2s".into()),
        ("ALLOT_SEND_TIMEOUT".into(), "1s".into()),
        ("ALLOT_WORKER_POLL_INTERVAL".into(), "100ms".into()),
        ("ALLOT_DATABASE_ACQUIRE_TIMEOUT".into(), "1s".into()),
        // A key email composed while the database is down is retried; on
        // the default schedule the second retry would come a minute later.
        ("ALLOT_RETRY_SCHEDULE".into(), ["200ms"; 100].join(",")),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (dir, url) = (dir.to_path_buf(), database_url.to_string());
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServeProcess::start_with(&dir, &url, &env)
    })
    .await
    .unwrap()
}

/// Waits until no job is `running` (a killed process's leases expired and
/// were taken over).
async fn until_nothing_runs(dir: &Path, database_url: &str) {
    eventually("no job left running", async || {
        let running = allot_command(dir)
            .args([
                "jobs", "list", "--state", "running", "--json", "--limit", "1000000",
            ])
            .env("ALLOT_DATABASE_URL", database_url)
            .output()
            .unwrap();
        let running: serde_json::Value = serde_json::from_slice(&running.stdout).unwrap();
        running == json!([])
    })
    .await;
}

fn stock(dir: &Path, database_url: &str) -> serde_json::Value {
    let stock = allot_command(dir)
        .args(["keys", "stock", "--json"])
        .env("ALLOT_DATABASE_URL", database_url)
        .output()
        .unwrap();
    serde_json::from_slice(&stock.stdout).unwrap()
}

fn admin_outage_mails(mail_dir: &Path) -> Vec<String> {
    read_eml_files(mail_dir)
        .into_iter()
        .filter(|m| m.contains("The database is refusing requests"))
        .collect()
}

async fn sigkills_during_an_order_stream_lose_and_duplicate_nothing(backend: Backend) {
    let (orders, kills) = (60 * scale(), 3 * scale());
    let mut rng = seeded_rng("sigkills");
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let keys = imported_keys(dir.path(), &db.url, orders + 20);
    let mut server = shop_server(dir.path(), &db.url, &mail_dir, &[]).await;
    let shop = OrderStream::start(server.addr, "F", orders, 6);

    // The faults: a SIGKILL at a random point of each stretch of orders.
    let stretch = orders / (kills + 1);
    for kill in 0..kills {
        let at = kill * stretch + rng.random_range(1..=stretch);
        eventually("orders to be answered", async || shop.answered() >= at).await;
        server.signal("KILL");
        drop(server);
        server = shop_server(dir.path(), &db.url, &mail_dir, &[]).await;
        shop.point_at(server.addr);
    }
    let seen = shop.finish().await;
    assert_no_server_error(&seen, &server);

    assert_all_fulfilled(server.addr, "F", orders).await;
    assert_one_key_email_each(&mail_dir, "F", orders, &keys).await;
    let stock = stock(dir.path(), &db.url);
    assert_eq!(stock[0]["assigned"], orders, "{stock}");
    assert_eq!(stock[0]["available"], 20, "{stock}");
    // Jobs a killed process held are taken back once their lease expires,
    // and sent again under the same Message-ID: still one mail per order.
    until_nothing_runs(dir.path(), &db.url).await;
    assert_one_key_email_each(&mail_dir, "F", orders, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restarted_mid_load_is_503_then_recovers_without_a_restart() {
    let Some(postgres) = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap()
    else {
        return;
    };
    let (orders, restarts) = (60 * scale(), scale());
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let url = postgres.url();
    let keys = imported_keys(dir.path(), &url, orders + restarts);
    let server = shop_server(dir.path(), &url, &mail_dir, &[]).await;
    let pid = server.child.id();
    let shop = OrderStream::start(server.addr, "R", orders, 6);

    // Each outage: the stream may or may not be mid-flight, so a probe
    // order is sent until it is refused (it must be a 503 with
    // Retry-After), then, with the database back, until it is taken.
    let mut probes = Vec::new();
    for restart in 0..restarts {
        let at = (restart + 1) * orders / (restarts + 1);
        eventually("orders to be answered", async || shop.answered() >= at).await;
        postgres.stop_fast();
        probes
            .extend(send_until(&server, "PROBE", restart, |s| s != Seen::Status(200, false)).await);
        assert_eq!(probes.last(), Some(&Seen::Status(503, true)), "{probes:?}");
        postgres.start_again();
        probes
            .extend(send_until(&server, "PROBE", restart, |s| s == Seen::Status(200, false)).await);
    }
    let seen = shop.finish().await;
    assert_no_server_error(&seen, &server);
    assert_no_server_error(&probes, &server);
    assert!(!seen.contains(&Seen::NoAnswer), "the server stayed up");
    assert!(!probes.contains(&Seen::NoAnswer), "the server stayed up");
    assert_eq!(server.child.id(), pid);

    assert_all_fulfilled(server.addr, "R", orders).await;
    assert_all_fulfilled(server.addr, "PROBE", restarts).await;
    assert_one_key_email_each(&mail_dir, "R", orders, &keys).await;
    assert_one_key_email_each(&mail_dir, "PROBE", restarts, &keys).await;
    assert_eq!(stock(dir.path(), &url)[0]["assigned"], orders + restarts);
    eventually("the admin told of the outage", async || {
        !admin_outage_mails(&mail_dir).is_empty()
    })
    .await;
    until_nothing_runs(dir.path(), &url).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sqlite_disk_is_503_and_an_admin_alert_without_corruption() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let orders = 40 * scale();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let url = format!("sqlite://{}", disk.path().join("allot.db").display());
    let keys = imported_keys(dir.path(), &url, orders + 2_000);
    let server = shop_server(dir.path(), &url, &mail_dir, &[]).await;

    // Orders taken while there is room.
    let before = OrderStream::start(server.addr, "D", orders, 4);
    let seen = before.finish().await;
    assert_no_server_error(&seen, &server);

    // The disk fills up: orders are refused with 503, never half-stored.
    disk.fill();
    let client = crate::helpers::client();
    let url_of = |addr: SocketAddr| {
        format!("http://{addr}/v1/webhooks/generic?token={TOKEN}&sku=course-101")
    };
    let mut refused = Vec::new();
    for n in 0..2_000 {
        let body = crate::helpers::order_body("FULL", n);
        let response = client
            .post(url_of(server.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let answer: serde_json::Value = response.json().await.unwrap();
        if status != 200 && status != 503 {
            let log = server.log.lock().unwrap().clone();
            panic!("{status} {answer}; the server logged: {log:#?}");
        }
        if status == 503 {
            assert!(retry_after);
            assert_eq!(answer["error"], "database_unavailable", "{answer}");
            refused.push(n);
            if refused.len() >= 5 {
                break;
            }
        }
    }
    assert!(!refused.is_empty(), "a full disk refused no order");
    eventually("the admin told of the full disk", async || {
        admin_outage_mails(&mail_dir)
            .iter()
            .any(|m| m.contains("full"))
    })
    .await;
    let healthy = client
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);

    // Room again: the shop's retries are taken, by the same process.
    disk.free();
    for n in refused {
        let seen = send_until(&server, "FULL", n, |s| s == Seen::Status(200, false)).await;
        assert_no_server_error(&seen, &server);
    }
    assert_all_fulfilled(server.addr, "D", orders).await;
    drop(server);

    // The file is sound, and every answered order kept its one key.
    let db = allot::db::Db::connect(&allot::config::Settings::for_database(url.clone()).database)
        .await
        .unwrap();
    let allot::db::Db::Sqlite { reader, .. } = &db else {
        unreachable!()
    };
    let check: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(reader)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let (assigned, orders_stored): (i64, i64) = sqlx::query_as(
        "select (select count(*) from license_keys where status = 'assigned'),
                (select count(*) from orders where state = 'fulfilled')",
    )
    .fetch_one(reader)
    .await
    .unwrap();
    assert_eq!(assigned, orders_stored);
    assert!(orders_stored >= orders as i64);
    let _ = keys;
}

#[test]
fn a_read_only_sqlite_file_is_refused_at_start_with_the_reason() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = disk.path().join("allot.db");
    let url = format!("sqlite://{}", file.display());
    let migrated = allot_command(dir.path())
        .arg("migrate")
        .env("ALLOT_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    disk.make_read_only();

    let serve = allot_command(dir.path())
        .arg("serve")
        .env("ALLOT_DATABASE_URL", &url)
        .env("ALLOT_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("Read-only file system"),
        "{stderr}"
    );
}

async fn mail_held_up_by_an_smtp_outage_arrives_exactly_once(backend: Backend) {
    let orders = 20 * scale();
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = imported_keys(dir.path(), &db.url, orders);
    let port = free_port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let server = shop_server(
        dir.path(),
        &db.url,
        &dir.path().join("unused"),
        &[
            ("ALLOT_MAIL_TRANSPORT", "smtp"),
            ("ALLOT_SMTP_URL", &smtp_url),
        ],
    )
    .await;

    // SMTP is down while the orders come in: each is answered 200 and its
    // email waits in the outbox.
    let shop = OrderStream::start(server.addr, "M", orders, 4);
    let seen = shop.finish().await;
    assert!(
        seen.iter().all(|s| *s == Seen::Status(200, false)),
        "{seen:?}"
    );
    assert_all_fulfilled(server.addr, "M", orders).await;
    eventually("deliveries retried against the closed port", async || {
        let retried = allot_command(dir.path())
            .args(["jobs", "list", "--state", "queued", "--json"])
            .env("ALLOT_DATABASE_URL", &db.url)
            .output()
            .unwrap();
        let queued: serde_json::Value = serde_json::from_slice(&retried.stdout).unwrap();
        queued
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["attempts"].as_i64() >= Some(2)))
    })
    .await;

    // Back up: every buyer gets their key once.
    let Some(smtp) = SmtpServer::start(port) else {
        return;
    };
    assert_one_key_email_each(smtp.dir.path(), "M", orders, &keys).await;
    until_nothing_runs(dir.path(), &db.url).await;
    let done = allot_command(dir.path())
        .args([
            "jobs", "list", "--state", "done", "--json", "--limit", "1000000",
        ])
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let done: Vec<serde_json::Value> = serde_json::from_slice(&done.stdout).unwrap();
    let key_emails = done.iter().filter(|j| j["kind"] == "key_email").count();
    assert_eq!(key_emails, orders, "each key email job done once: {done:?}");
    assert_one_key_email_each(smtp.dir.path(), "M", orders, &keys).await;
    drop(server);
}

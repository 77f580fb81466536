//! `GET /v1/stats`: zeros and nulls on an empty database, numbers that
//! follow the database while orders pour in, the same figures before and
//! after the roll-up, and what housekeeping keeps from growing: done jobs
//! after the retention, SQLite's write-ahead log under constant reads.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN, Backend, TOKEN, TestApp, World, count, race, seed_keys, status_and_json},
    on_every_backend,
};

on_every_backend!(
    an_empty_database_gives_zeros_and_nulls,
    stats_follow_orders_placed_concurrently,
    hours_minutes_and_live_counts_add_up_the_same,
    done_jobs_are_pruned_after_the_retention,
);

async fn stats(app: &TestApp) -> (u16, Value, String) {
    let response = app
        .client
        .get(app.url("/v1/stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, text)
}

async fn an_empty_database_gives_zeros_and_nulls(backend: Backend) {
    let off = TestApp::shop(backend, |_| {}).await;
    let (status, body) =
        status_and_json(off.client.get(off.url("/v1/stats")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("admin_disabled"))
    );

    let app = TestApp::admin_shop(backend).await;
    let wrong = app
        .client
        .get(app.url("/v1/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let (status, body, text) = stats(&app).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    assert_eq!(body["orders"]["total"], 0);
    assert_eq!(body["orders"]["by_state"]["fulfilled"], 0);
    assert!(body["orders"]["fulfilment_rate"].is_null());
    assert_eq!(body["keys"], json!([]));
    assert_eq!(
        body["jobs"]["by_state"],
        json!({"queued": 0, "running": 0, "dead": 0})
    );
    for window in ["5m", "1h", "1d"] {
        let w = &body["windows"][window];
        assert_eq!(w["deliveries"]["succeeded"], 0, "{w}");
        assert!(w["success_rate"].is_null());
        assert!(w["latency_ms"]["p50"].is_null() && w["latency_ms"]["p99"].is_null());
        assert_eq!(w["throughput_per_s"], 0.0);
    }
}

async fn stats_follow_orders_placed_concurrently(backend: Backend) {
    let app = Arc::new(TestApp::admin_shop(backend).await);
    let db = app.connect().await;
    let keys: Vec<String> = (0..150).map(|i| format!("KEY-STATS-{i}")).collect();
    seed_keys(&db, "course-101", &keys).await;
    const ORDERS: usize = 200;
    // Orders pour in while the stats are read again and again.
    let reader = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut last_total = 0;
            let mut reads = 0;
            while last_total < ORDERS as i64 {
                let (status, body, text) = stats(&app).await;
                assert_eq!(status, 200, "{text}");
                assert!(!text.contains("NaN"), "{text}");
                let total = body["orders"]["total"].as_i64().unwrap();
                assert!(
                    total >= last_total,
                    "the total went back: {total} < {last_total}"
                );
                if let Some(rate) = body["orders"]["fulfilment_rate"].as_f64() {
                    assert!((0.0..=1.0).contains(&rate), "{rate}");
                }
                let assigned = body["keys"][0]["assigned"].as_i64().unwrap_or(0);
                assert!(assigned <= 150);
                last_total = total;
                reads += 1;
            }
            reads
        })
    };
    let answers = race(ORDERS, |i| {
        let app = app.clone();
        async move {
            let body = json!({"order_id": format!("S-{i}"), "email": format!("b{i}@example.com")});
            app.webhook("generic?sku=course-101", body.to_string())
                .await
        }
    })
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    let reads = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(reads >= 1);

    app.wait_for_mails(150, |m| m.contains("KEY-STATS-")).await;
    // A delivery's outcome is recorded just after its mail is written.
    crate::helpers::eventually("every key email recorded as delivered", async || {
        let (_, body, _) = stats(&app).await;
        body["windows"]["5m"]["deliveries"]["by_kind"]["key_email"]["succeeded"] == 150
    })
    .await;
    let (_, body, _) = stats(&app).await;
    assert_eq!(body["orders"]["by_state"]["fulfilled"], 150, "{body}");
    assert_eq!(body["orders"]["by_state"]["awaiting_stock"], 50);
    assert_eq!(body["orders"]["fulfilment_rate"], 0.75);
    assert_eq!(body["keys"][0]["available"], 0);
    assert_eq!(body["keys"][0]["assigned"], 150);
    let recent = &body["windows"]["5m"];
    let key_emails = recent["deliveries"]["by_kind"]["key_email"]["succeeded"]
        .as_i64()
        .unwrap();
    assert_eq!(key_emails, 150, "{recent}");
    let p50 = recent["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = recent["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{recent}");
    assert!(recent["throughput_per_s"].as_f64().unwrap() > 0.0);

    // Rolling the minutes up changes no figure: the live and the rolled
    // counts are the same attempts. The alerts about the sell-out are still
    // being sent; once nothing due is left, nothing finishes in between.
    let due = "select count(*) from jobs where state = 'running'
                  or (state = 'queued' and run_at <= {now})";
    crate::helpers::eventually("the due jobs to finish", async || {
        let now = allot::clock::now_ms();
        count(&db, &due.replace("{now}", &now.to_string())).await == 0
    })
    .await;
    let now = allot::clock::now_ms();
    let before = allot::stats::compute(&db, now + 120_000).await.unwrap();
    allot::scheduler::keep_house(&db, Duration::from_secs(7 * 86_400), now + 120_000)
        .await
        .unwrap();
    assert!(count(&db, "select count(*) from job_stats").await > 0);
    let after = allot::stats::compute(&db, now + 120_000).await.unwrap();
    assert_eq!(before["windows"], after["windows"]);
}

/// A day of deliveries counted live, then from minutes and whole hours
/// after one roll-up, then after a later one: every window gives the same
/// figures, and the day counts exactly the attempts that finished in it.
async fn hours_minutes_and_live_counts_add_up_the_same(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let db = &world.db;
    let now = allot::clock::now_ms();
    let (minute, day) = (60_000, 86_400_000);
    // One job every 13 minutes over 26 hours, some slow, every fifth dead.
    let jobs: Vec<(i64, i64, &str)> = (0..120)
        .map(|i| {
            let finished = now - i * 13 * minute - 7_000;
            let latency = [30, 300, 3_000, 40_000][i as usize % 4];
            (finished, latency, if i % 5 == 0 { "dead" } else { "done" })
        })
        .collect();
    let rows: Vec<String> = jobs
        .iter()
        .map(|(finished, latency, state)| {
            let created = finished - latency;
            format!(
                "('merchant_webhook', '{{}}', '{state}', 1, 8, {created}, {created}, {finished}, {finished})"
            )
        })
        .collect();
    crate::helpers::execute(
        db,
        &format!(
            "insert into jobs (kind, payload, state, attempts, max_attempts, run_at, created_at,
                updated_at, finished_at) values {}",
            rows.join(", ")
        ),
    )
    .await;
    crate::helpers::execute(
        db,
        "insert into job_attempts (job_id, attempt, worker, started_at, finished_at, outcome,
            duration_ms)
         select id, 1, 'test', created_at, finished_at, state, finished_at - created_at from jobs",
    )
    .await;
    let from = (now - day) - (now - day).rem_euclid(minute);
    let in_day = |state: &str| {
        jobs.iter()
            .filter(|(finished, _, s)| *finished >= from && *s == state)
            .count() as i64
    };

    let live = allot::stats::compute(db, now).await.unwrap();
    let deliveries = &live["windows"]["1d"]["deliveries"];
    assert_eq!(deliveries["succeeded"], in_day("done"), "{deliveries}");
    assert_eq!(deliveries["failed"], in_day("dead"), "{deliveries}");

    let progress = allot::jobs::rollup::roll_up(db, now).await.unwrap();
    assert!(progress.hours > now - 2 * 3_600_000 && progress.hours <= progress.minutes);
    assert!(count(db, "select count(*) from job_stats_hourly").await >= 24);
    let rolled = allot::stats::compute(db, now).await.unwrap();
    assert_eq!(live["windows"], rolled["windows"]);

    // Three hours on, the same attempts seen from later: rolled once more
    // or not, the windows agree.
    let later = now + 3 * 3_600_000;
    let before = allot::stats::compute(db, later).await.unwrap();
    allot::jobs::rollup::roll_up(db, later).await.unwrap();
    let after = allot::stats::compute(db, later).await.unwrap();
    assert_eq!(before["windows"], after["windows"]);
    assert_ne!(
        before["windows"]["1d"], live["windows"]["1d"],
        "the day moved on"
    );
}

async fn done_jobs_are_pruned_after_the_retention(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let done = world
        .queue_email("a@example.com", "test", json!({"address": "a@example.com"}))
        .await;
    let now = allot::clock::now_ms();
    world.worker().run_once(now).await.unwrap();
    assert_eq!(world.job(done).await.state.as_str(), "done");
    // A job that died long ago is kept all the same.
    let dead = world
        .queue_email("b@example.com", "test", json!({"address": "b@example.com"}))
        .await;
    crate::helpers::execute(
        &world.db,
        &format!("update jobs set state = 'dead', finished_at = {now} where id = {dead}"),
    )
    .await;
    let week = Duration::from_secs(7 * 86_400);
    allot::scheduler::keep_house(&world.db, week, now + 86_400_000)
        .await
        .unwrap();
    assert!(
        allot::jobs::find(&world.db, done).await.unwrap().is_some(),
        "kept within the retention"
    );
    allot::scheduler::keep_house(&world.db, week, now + 8 * 86_400_000)
        .await
        .unwrap();
    assert!(
        allot::jobs::find(&world.db, done).await.unwrap().is_none(),
        "pruned after it"
    );
    assert!(
        allot::jobs::find(&world.db, dead).await.unwrap().is_some(),
        "dead jobs wait for a person"
    );
    assert_eq!(
        count(
            &world.db,
            &format!("select count(*) from job_attempts where job_id = {done}")
        )
        .await,
        0
    );
}

/// Readers never stop during a flash sale, so SQLite's own checkpoints
/// can never start the log again and it grows by every write; the
/// housekeeping tick truncates it while the readers go on reading.
#[tokio::test]
async fn the_write_ahead_log_is_cut_back_while_readers_read() {
    let world = World::new(Backend::Sqlite, |_| {}).await;
    let path = world.settings.database.url["sqlite://".len()..].to_string();
    let wal = move || std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (db, stop) = (world.db.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    count(&db, "select count(*) from jobs").await;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..400 {
        let to = format!("b{i}@example.com");
        world.queue_email(&to, "test", json!({"address": to})).await;
    }
    let grown = wal();
    assert!(grown > 400 * 4096, "every commit adds to the log: {grown}");

    let week = Duration::from_secs(7 * 86_400);
    let mut ticks = 0;
    while wal() > 0 {
        ticks += 1;
        assert!(ticks <= 20, "still {} bytes after {ticks} ticks", wal());
        allot::scheduler::keep_house(&world.db, week, allot::clock::now_ms())
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "the readers went on reading");
    }
}

//! After the sale: waiting orders fulfilled oldest first when keys arrive,
//! sell-out alerts at once then batched, the low-stock check, and no key
//! ever in a log.

use allot::{intake::normalize::Source, keys::Sku, orders::Fulfilment, scheduler::check_low_stock};
use serde_json::json;

use crate::{
    helpers::{
        Backend, ServeProcess, TOKEN, TestApp, TestDb, World, allot_command, eventually, seed_keys,
    },
    on_every_backend,
};

on_every_backend!(
    a_restock_fulfils_waiting_orders_oldest_first,
    sell_out_alerts_come_at_once_then_batched,
    the_low_stock_check_alerts_once_per_sku_per_run,
    serve_runs_the_low_stock_cron_and_the_restock_sweep,
    no_license_key_ever_reaches_a_log,
    a_key_email_queued_by_an_earlier_version_is_still_sent,
);

const MINUTE: i64 = 60_000;

/// A time at the start of an alert window (the World's window is 60 s).
fn window_start() -> i64 {
    let now = allot::clock::now_ms();
    now - now % MINUTE
}

async fn order(fulfilment: &Fulfilment, id: &str, sku: &str, at: i64) -> String {
    let body = json!({"order_id": id, "email": format!("{id}@example.com")}).to_string();
    let receipt = fulfilment
        .receive(
            Source::Generic,
            body.as_bytes(),
            Some(&Sku::parse(sku).unwrap()),
            at,
        )
        .await
        .unwrap();
    serde_json::to_value(receipt.status)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn import(world: &World, dir: &std::path::Path, sku: &str, keys: &[&str]) -> String {
    let file = dir.join(format!("{sku}-{}.txt", keys[0]));
    std::fs::write(&file, keys.join("\n")).unwrap();
    let out = allot_command(dir)
        .args(["keys", "import", file.to_str().unwrap(), "--sku", sku])
        .env("ALLOT_DATABASE_URL", &world.settings.database.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Who holds which key, in key order.
async fn holders(world: &World, ids: &[&str]) -> Vec<(String, String)> {
    let mut held = Vec::new();
    for id in ids {
        let order = allot::orders::find(&world.db, Source::Generic, id)
            .await
            .unwrap()
            .unwrap();
        held.push((id.to_string(), order.state));
    }
    held
}

async fn a_restock_fulfils_waiting_orders_oldest_first(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings);
    let t = allot::clock::now_ms();
    let ids = ["w-0", "w-1", "w-2", "w-3", "w-4"];
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            order(&fulfilment, id, "course-1", t + i as i64).await,
            "awaiting_stock"
        );
    }

    let out = import(&world, dir.path(), "course-1", &["K-1", "K-2", "K-3"]);
    assert!(out.contains("fulfilled 3 waiting order(s)"), "{out}");
    let states = holders(&world, &ids).await;
    assert_eq!(
        states.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        [
            "fulfilled",
            "fulfilled",
            "fulfilled",
            "awaiting_stock",
            "awaiting_stock"
        ]
    );

    // A key appears without `keys import` (the server's sweep would serve
    // it): a new order still queues behind the older ones.
    seed_keys(&world.db, "course-1", &["K-4".to_string()]).await;
    assert_eq!(
        order(&fulfilment, "w-5", "course-1", t + 10).await,
        "awaiting_stock"
    );
    let out = import(&world, dir.path(), "course-1", &["K-5"]);
    assert!(out.contains("fulfilled 2 waiting order(s)"), "{out}");
    let (_, w5) = &holders(&world, &["w-5"]).await[0];
    assert_eq!(w5, "awaiting_stock");

    // Oldest order, oldest key; each buyer is emailed theirs.
    let worker = world.worker();
    while !worker
        .run_once(allot::clock::now_ms())
        .await
        .unwrap()
        .is_empty()
    {}
    let mails = world.mails();
    for (i, id) in ids.iter().enumerate() {
        let mail = mails
            .iter()
            .find(|m| m.contains(&format!("To: {id}@example.com")))
            .unwrap_or_else(|| panic!("no mail for {id}"));
        assert!(
            mail.contains(&format!("K-{}", i + 1)),
            "{id} should hold K-{}",
            i + 1
        );
    }
    let order = allot::orders::find(&world.db, Source::Generic, "w-0")
        .await
        .unwrap()
        .unwrap();
    let history: Vec<_> = order.history.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(history, ["awaiting_stock", "fulfilled"]);
    assert!(order.history[1].detail.contains("keys arrived"));
    assert_eq!(order.email_delivery.unwrap().state, "done");
}

async fn sell_out_alerts_come_at_once_then_batched(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings);
    let worker = world.worker();
    seed_keys(&world.db, "course-1", &["ONLY-KEY".to_string()]).await;
    let t0 = window_start() + 1_000;
    assert_eq!(order(&fulfilment, "a", "course-1", t0).await, "fulfilled");
    for (i, id) in ["b", "c", "d"].iter().enumerate() {
        assert_eq!(
            order(&fulfilment, id, "course-1", t0 + 1 + i as i64).await,
            "awaiting_stock"
        );
    }
    worker.run_once(t0 + 10).await.unwrap();
    let admin = |world: &World| -> Vec<String> {
        world
            .mails()
            .into_iter()
            .filter(|m| m.contains("To: admin@shop.test"))
            .collect()
    };
    let mails = admin(&world);
    assert_eq!(mails.len(), 1, "one urgent mail for three waiting orders");
    assert!(mails[0].contains("Subject: [allot] URGENT: course-1 is sold out"));
    assert!(mails[0].contains("Orders waiting now: 3"));

    // More orders in the same window: nothing more until the window closes.
    assert_eq!(
        order(&fulfilment, "e", "course-1", t0 + 20).await,
        "awaiting_stock"
    );
    worker.run_once(t0 + 30).await.unwrap();
    assert_eq!(admin(&world).len(), 1);
    worker.run_once(t0 + MINUTE).await.unwrap();
    let mails = admin(&world);
    assert_eq!(mails.len(), 2, "one digest for the window");
    assert!(
        mails[1].contains("course-1 still sold out: 4 order(s) waiting"),
        "{}",
        mails[1]
    );

    // Orders in the next window, then a restock before it closes: the
    // digest has nothing left to say and is not sent.
    assert_eq!(
        order(&fulfilment, "f", "course-1", t0 + MINUTE + 5).await,
        "awaiting_stock"
    );
    seed_keys(
        &world.db,
        "course-1",
        &(1..=5).map(|i| format!("NEW-{i}")).collect::<Vec<_>>(),
    )
    .await;
    let served = fulfilment
        .fulfil_waiting(&Sku::parse("course-1").unwrap(), t0 + MINUTE + 10)
        .await
        .unwrap();
    assert_eq!(served, 5);
    worker.run_once(t0 + 2 * MINUTE).await.unwrap();
    worker.run_once(t0 + 2 * MINUTE).await.unwrap();
    assert_eq!(admin(&world).len(), 2);
}

async fn the_low_stock_check_alerts_once_per_sku_per_run(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let keys = |sku: &str, n: usize| (0..n).map(|i| format!("{sku}-{i}")).collect::<Vec<_>>();
    seed_keys(&world.db, "low", &keys("low", 3)).await;
    seed_keys(&world.db, "plenty", &keys("plenty", 20)).await;
    seed_keys(&world.db, "edge", &keys("edge", 10)).await;
    let max = world.settings.jobs.max_attempts();
    let hour = 3_600_000;
    let run = window_start();
    assert_eq!(
        check_low_stock(&world.db, 10, run, max).await.unwrap(),
        ["low"]
    );
    // The same run again (a second process, a restart): nothing new.
    assert!(
        check_low_stock(&world.db, 10, run, max)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        check_low_stock(&world.db, 10, run + hour, max)
            .await
            .unwrap(),
        ["low"]
    );
    let worker = world.worker();
    while !worker.run_once(run + hour).await.unwrap().is_empty() {}
    let mails: Vec<_> = world
        .mails()
        .into_iter()
        .filter(|m| m.contains("Low stock"))
        .collect();
    assert_eq!(mails.len(), 2, "one per run");
    assert!(
        mails
            .iter()
            .all(|m| m.contains("Subject: [allot] Low stock: 3 key(s) left for low"))
    );
    assert!(mails[0].contains("To: admin@shop.test"));
}

async fn serve_runs_the_low_stock_cron_and_the_restock_sweep(backend: Backend) {
    let app = TestApp::shop(backend, |s| {
        s.intake.low_stock_cron = "* * * * * *".parse().unwrap(); // every second
    })
    .await;
    let db = app.connect().await;
    // The metrics are the process's, shared by the tests running in it: a
    // SKU of this test's own.
    let sku = format!("course-9-{backend:?}").to_lowercase();
    // An order waits; keys are added behind the server's back (not through
    // `keys import`, which would fulfil it itself).
    let (_, answer) = app
        .webhook(
            &format!("generic?sku={sku}"),
            json!({"order_id": 1, "email": "gus@example.com"}).to_string(),
        )
        .await;
    assert_eq!(answer["status"], "awaiting_stock");
    // The sweep finds it waiting and says so in /metrics.
    let gauge = |n: u32| format!("allot_orders_awaiting_stock{{sku=\"{sku}\"}} {n}\n");
    eventually("/metrics to show the waiting order", async || {
        app.metrics().await.contains(&gauge(1))
    })
    .await;
    seed_keys(&db, &sku, &["SWEPT-KEY".to_string()]).await;
    let mails = app
        .wait_for_mails(1, |m| m.contains("To: gus@example.com"))
        .await;
    assert!(mails[0].contains("SWEPT-KEY"));
    eventually("/metrics to show no order waiting", async || {
        app.metrics().await.contains(&gauge(0))
    })
    .await;
    // The pool is now empty: the check, running every second, says so.
    let low = format!("Low stock: 0 key(s) left for {sku}");
    app.wait_for_mails(1, |m| m.contains(&low)).await;
}

async fn no_license_key_ever_reaches_a_log(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..5).map(|i| format!("SECRET-{i}-QX7Z")).collect();
    std::fs::write(dir.path().join("keys.txt"), keys.join("\n")).unwrap();
    let cli = allot_command(dir.path())
        .args(["keys", "import", "keys.txt", "--sku", "course-1"])
        .env("ALLOT_DATABASE_URL", &test_db.url)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(cli.status.success());
    let server = ServeProcess::start_with(
        dir.path(),
        &test_db.url,
        &[
            ("ALLOT_WEBHOOK_TOKEN", TOKEN),
            ("ALLOT_ADMIN_EMAIL", "admin@shop.test"),
            ("ALLOT_WORKER_POLL_INTERVAL", "100ms"),
            ("RUST_LOG", "debug"),
        ],
    );
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}/v1/webhooks/generic?token={TOKEN}&sku=course-1",
        server.addr
    );
    for i in 0..7 {
        let body = json!({"order_id": i, "email": format!("b{i}@example.com")}).to_string();
        let response = client.post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let mail_dir = dir.path().join("var/mail");
    eventually("the buyers' mails", async || {
        allot_mails(&mail_dir)
            .iter()
            .filter(|m| m.contains("Your license key"))
            .count()
            >= 5
    })
    .await;
    // A refund: the operator revokes a key.
    let revoke = allot_command(dir.path())
        .args(["keys", "revoke", &keys[4]])
        .env("ALLOT_DATABASE_URL", &test_db.url)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let mails = allot_mails(&mail_dir);
    for key in &keys {
        assert!(
            mails.iter().any(|m| m.contains(key.as_str())),
            "{key} was mailed"
        );
    }
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0));
    let mut everything = log.join("\n");
    for output in [&cli, &revoke] {
        everything.push_str(&String::from_utf8_lossy(&output.stdout));
        everything.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert!(everything.contains("job done"), "the log is the real one");
    for key in &keys {
        assert!(
            !everything.contains(key.as_str()),
            "{key} appeared in a log or CLI output"
        );
    }
}

fn allot_mails(dir: &std::path::Path) -> Vec<String> {
    crate::helpers::read_eml_files(dir)
}

/// Key emails queued before their payload named the key (`{"order": id}`
/// only) survive an upgrade: the worker finds the key through the order.
async fn a_key_email_queued_by_an_earlier_version_is_still_sent(backend: Backend) {
    use allot::jobs::{self, JobState, NewJob, WorkerEvent};

    let world = World::new(backend, |_| {}).await;
    seed_keys(&world.db, "course-1", &["K-EARLIER".to_string()]).await;
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings);
    let now = allot::clock::now_ms();
    assert_eq!(
        order(&fulfilment, "e-1", "course-1", now).await,
        "fulfilled"
    );

    // Swap today's job for one in the earlier shape.
    let queued = jobs::list(&world.db, Some(JobState::Queued), 10)
        .await
        .unwrap();
    let [today] = &queued[..] else {
        panic!("one key email expected: {queued:?}")
    };
    let dedupe = today.dedupe_key.as_deref().unwrap();
    let order_row: i64 = dedupe.split(':').nth(1).unwrap().parse().unwrap();
    assert_eq!(
        jobs::discard(&world.db, today.id).await.unwrap(),
        jobs::Discarded::Yes
    );
    let earlier = NewJob::new("key_email", json!({"order": order_row}), 3);
    let id = jobs::enqueue_now(&world.db, &earlier)
        .await
        .unwrap()
        .unwrap();

    let events = world
        .worker()
        .run_once(allot::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(events, vec![WorkerEvent::Done { job_id: id }]);
    let mails = world.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("K-EARLIER") && mails[0].contains("e-1@example.com"));
}

//! The control channel: processes register and heartbeat, `allot ctl` and
//! `/v1/admin/commands` send commands through the database, every target
//! answers, and the state machine holds (data commands only when ready).

use std::time::{Duration, Instant};

use allot::db::Db;
use serde_json::{Value, json};

use crate::{
    helpers::{
        ADMIN, Backend, ServeProcess, TOKEN, TestApp, TestDb, assert_invariant, claim, client,
        eventually, get_coupon, race, status_and_json,
    },
    on_every_backend,
};

on_every_backend!(
    the_state_machine_of_the_brief,
    long_calculate_does_not_block_control,
    admin_routes_need_the_token_and_refuse_bad_messages,
    a_malformed_message_in_the_database_gets_an_error_reply,
    ctl_collects_replies_from_several_processes,
    a_killed_process_is_shown_as_gone,
    terminate_during_delivery_loses_nothing,
    a_cluster_pauses_and_resumes_delivery,
);

async fn app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |settings| {
        settings.control.admin_token = Some(ADMIN.to_string().into());
    })
    .await
}

/// POST /v1/admin/commands with the admin token.
async fn command(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/admin/commands"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

/// The one reply of a command sent to a single process.
async fn only_reply(app: &TestApp, body: Value) -> Value {
    let (status, answer) = command(app, body.clone()).await;
    assert_eq!(status, 200, "{body}: {answer}");
    let replies = answer["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 1, "{answer}");
    replies[0].clone()
}

fn assert_reply(reply: &Value, status: &str, state: &str) {
    assert_eq!(reply["status"], status, "{reply}");
    assert_eq!(reply["state"], state, "{reply}");
}

/// `allot ctl ARGS` without blocking the test's runtime.
async fn ctl(dir: &std::path::Path, url: &str, args: &[&str]) -> (i32, Value, String) {
    let (dir, url) = (dir.to_path_buf(), url.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::helpers::ctl(&dir, &url, &args)
    })
    .await
    .unwrap()
}

/// Every transition of the brief's diagram, through the HTTP form:
/// ready ⇄ unready with start/stop, data commands refused when unready,
/// status answered in every state, terminate → exit, row `stopped`.
async fn the_state_machine_of_the_brief(backend: Backend) {
    let app = app(backend).await;
    let reply = only_reply(&app, json!({"command": "ping"})).await;
    assert_reply(&reply, "ok", "ready");
    let timestamp = reply["reply"]["timestamp"].as_i64().unwrap();
    assert!(
        (timestamp - chrono::Utc::now().timestamp()).abs() <= 2,
        "{reply}"
    );

    assert_reply(
        &only_reply(&app, json!({"command": "start"})).await,
        "ok",
        "ready",
    );
    let stop = only_reply(&app, json!({"command": "stop"})).await;
    assert_reply(&stop, "ok", "unready");
    assert!(
        stop["message"]
            .as_str()
            .unwrap()
            .contains("leasing no new jobs")
    );
    assert_reply(
        &only_reply(&app, json!({"command": "stop"})).await,
        "ok",
        "unready",
    );
    for data in [
        json!({"command": "ping"}),
        json!({"command": "calculate", "x": 0, "msg": "no"}),
    ] {
        let refused = only_reply(&app, data).await;
        assert_reply(&refused, "refused", "unready");
        assert!(refused["message"].as_str().unwrap().contains("send start"));
    }
    let status = only_reply(&app, json!({"command": "status"})).await;
    assert_reply(&status, "ok", "unready");
    assert_eq!(status["reply"]["process"]["state"], "unready");
    assert_eq!(status["reply"]["process"]["role"], "serve");

    assert_reply(
        &only_reply(&app, json!({"command": "start"})).await,
        "ok",
        "ready",
    );
    let done = only_reply(
        &app,
        json!({"command": "calculate", "x": 0.2, "msg": "hello"}),
    )
    .await;
    assert_reply(&done, "ok", "ready");
    assert_eq!(done["reply"]["msg"], "hello");

    // An unready process's worker leases nothing: a queued email stays queued.
    assert_reply(
        &only_reply(&app, json!({"command": "stop"})).await,
        "ok",
        "unready",
    );
    let db = app.connect().await;
    let job = allot::notices::email_job("a@example.com", "test", json!({"address": "x"}), 8);
    let id = allot::jobs::enqueue_now(&db, &job).await.unwrap().unwrap();
    // A negative check needs some time: several worker polls (100 ms) pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        allot::jobs::find(&db, id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "queued"
    );
    assert_reply(
        &only_reply(&app, json!({"command": "start"})).await,
        "ok",
        "ready",
    );
    eventually("the email is sent once the worker is ready", async || {
        allot::jobs::find(&db, id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str()
            == "done"
    })
    .await;

    let process = status["process"].as_str().unwrap().to_string();
    let bye = only_reply(&app, json!({"command": "terminate", "target": process})).await;
    assert_reply(&bye, "ok", "stopping");
    eventually("the process marks itself stopped", async || {
        allot::control::list(&db).await.unwrap()[0].state.as_str() == "stopped"
    })
    .await;
    assert!(
        app.client.get(app.url("/healthz")).send().await.is_err(),
        "the server stopped listening"
    );
}

/// The brief: the client keeps accepting messages during long work.
async fn long_calculate_does_not_block_control(backend: Backend) {
    let app = app(backend).await;
    let (status, started) = command(
        &app,
        json!({"command": "calculate", "x": 30, "msg": "long", "timeout": "100ms"}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let calculate_id = started["command_id"].as_i64().unwrap();
    eventually("the calculation runs", async || {
        let db = app.connect().await;
        let replies = allot::control::replies(&db, calculate_id).await.unwrap();
        replies[0].status.as_str() == "running"
    })
    .await;
    for body in [json!({"command": "ping"}), json!({"command": "status"})] {
        let sent = Instant::now();
        let reply = only_reply(&app, body.clone()).await;
        let took = sent.elapsed();
        assert_reply(&reply, "ok", "ready");
        assert!(took < Duration::from_secs(1), "{body} took {took:?}");
    }
    let busy = only_reply(&app, json!({"command": "calculate", "x": 1, "msg": "2nd"})).await;
    assert_reply(&busy, "refused", "ready");
    assert!(busy["message"].as_str().unwrap().contains("busy"));

    // Terminating cuts the calculation off; its reply says so.
    let db = app.connect().await;
    only_reply(&app, json!({"command": "terminate"})).await;
    eventually("the calculation is cancelled", async || {
        allot::control::replies(&db, calculate_id).await.unwrap()[0]
            .status
            .as_str()
            == "cancelled"
    })
    .await;
}

async fn admin_routes_need_the_token_and_refuse_bad_messages(backend: Backend) {
    let closed = TestApp::spawn(backend).await;
    let response = closed
        .client
        .get(closed.url("/v1/admin/processes"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("admin_disabled"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("ALLOT_ADMIN_TOKEN")
    );

    let app = app(backend).await;
    for auth in [None, Some("wrong"), Some("")] {
        let mut request = app.client.post(app.url("/v1/admin/commands"));
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        let response = request
            .json(&json!({"command": "terminate"}))
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(response).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{auth:?}"
        );
    }

    let long_msg = "x".repeat(allot::control::MAX_MSG_CHARS + 1);
    let padding = "p".repeat(5000);
    for (body, says) in [
        (
            json!({"command": "exec", "cmd": "rm -rf /"}),
            "unknown command",
        ),
        (json!({"command": "ping", "shell": "id"}), "takes no field"),
        (
            json!({"command": "calculate", "x": -1, "msg": ""}),
            "x must be",
        ),
        (
            json!({"command": "calculate", "x": 1e9, "msg": ""}),
            "x must be",
        ),
        (
            json!({"command": "calculate", "x": "5", "msg": ""}),
            "calculate",
        ),
        (
            json!({"command": "calculate", "x": 1, "msg": long_msg}),
            "msg is",
        ),
        (json!({"command": "ping", "pad": padding}), "bytes"),
        (json!({"command": "ping", "target": "role=admin"}), "role"),
        (json!(["ping"]), "JSON object"),
    ] {
        let (status, answer) = command(&app, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_command");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (status, answer) = command(&app, json!({"command": "ping", "target": "nobody:1:ff"})).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("no_such_process"))
    );

    // Refused commands are on the record with their reason.
    let response = app
        .client
        .get(app.url("/v1/admin/commands?limit=500"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (status, history) = status_and_json(response).await;
    assert_eq!(status, 200);
    let refused: Vec<&Value> = history["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["error"].is_null())
        .collect();
    assert_eq!(refused.len(), 9, "{history}");
    assert!(
        refused
            .iter()
            .any(|c| c["message"].as_str().unwrap().contains("rm -rf"))
    );
    // The process is unharmed.
    assert_reply(
        &only_reply(&app, json!({"command": "ping"})).await,
        "ok",
        "ready",
    );
}

/// What a target reads from the database is untrusted too: someone may
/// write rows by hand. It answers with an error and carries on.
async fn a_malformed_message_in_the_database_gets_an_error_reply(backend: Backend) {
    let app = app(backend).await;
    let db = app.connect().await;
    // The app registers as it starts serving: wait for its row.
    let mut process = String::new();
    eventually("the app is registered", async || {
        let list = allot::control::list(&db).await.unwrap();
        process = list.first().map(|p| p.id.clone()).unwrap_or_default();
        !process.is_empty()
    })
    .await;
    let huge = format!(r#"{{"command":"ping","x":"{}"}}"#, "y".repeat(10_000));
    for message in [
        "not json at all \u{1b}[2J",
        r#"{"command":"format_disk"}"#,
        r#"{"command":"calculate","x":1e308,"msg":"big"}"#,
        huge.as_str(),
    ] {
        let id = insert_raw_command(&db, &process, message, 60_000).await;
        let mut replies = Vec::new();
        eventually("the target answers", async || {
            replies = allot::control::replies(&db, id).await.unwrap();
            replies[0].status.as_str() != "pending"
        })
        .await;
        assert_eq!(replies[0].status.as_str(), "error", "{message:.80}");
    }
    // A command read after its deadline is not done.
    let late = insert_raw_command(&db, &process, r#"{"command":"stop"}"#, -1).await;
    eventually("the late command is answered", async || {
        allot::control::replies(&db, late).await.unwrap()[0]
            .status
            .as_str()
            == "expired"
    })
    .await;
    assert_reply(
        &only_reply(&app, json!({"command": "ping"})).await,
        "ok",
        "ready",
    );
}

async fn insert_raw_command(db: &Db, process: &str, message: &str, expires_in: i64) -> i64 {
    let now = allot::clock::now_ms();
    let expires = now + expires_in;
    match db {
        Db::Sqlite { writer, .. } => {
            let id: i64 = sqlx::query_scalar(
                "insert into control_commands (message, target, sent_by, sent_at, expires_at)
                 values (?, ?, 'test', ?, ?) returning id",
            )
            .bind(message)
            .bind(process)
            .bind(now)
            .bind(expires)
            .fetch_one(writer)
            .await
            .unwrap();
            sqlx::query("insert into control_replies (command_id, process_id) values (?, ?)")
                .bind(id)
                .bind(process)
                .execute(writer)
                .await
                .unwrap();
            id
        }
        Db::Postgres(pool) => {
            let id: i64 = sqlx::query_scalar(
                "insert into control_commands (message, target, sent_by, sent_at, expires_at)
                 values ($1, $2, 'test', $3, $4) returning id",
            )
            .bind(message)
            .bind(process)
            .bind(now)
            .bind(expires)
            .fetch_one(pool)
            .await
            .unwrap();
            sqlx::query("insert into control_replies (command_id, process_id) values ($1, $2)")
                .bind(id)
                .bind(process)
                .execute(pool)
                .await
                .unwrap();
            id
        }
        Db::MySql(pool) => {
            let id = sqlx::query(
                "insert into control_commands (message, target, sent_by, sent_at, expires_at)
                 values (?, ?, 'test', ?, ?)",
            )
            .bind(message)
            .bind(process)
            .bind(now)
            .bind(expires)
            .execute(pool)
            .await
            .unwrap()
            .last_insert_id() as i64;
            sqlx::query("insert into control_replies (command_id, process_id) values (?, ?)")
                .bind(id)
                .bind(process)
                .execute(pool)
                .await
                .unwrap();
            id
        }
    }
}

const QUICK: [(&str, &str); 2] = [
    ("ALLOT_WORKER_POLL_INTERVAL", "100ms"),
    ("ALLOT_HEARTBEAT_INTERVAL", "200ms"),
];

fn ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("replies: {answer}"))
        .iter()
        .map(|r| r["process"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A serve and two workers, one database: `ctl` reaches each of them, by
/// role and all at once, and says who refused.
async fn ctl_collects_replies_from_several_processes(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &db.url, &QUICK);
    let workers = [
        ServeProcess::worker(dir.path(), &db.url, &QUICK),
        ServeProcess::worker(dir.path(), &db.url, &QUICK),
    ];
    let mut all = vec![serve.process_id.clone()];
    all.extend(workers.iter().map(|w| w.process_id.clone()));
    all.sort();

    let (code, answer, stderr) = ctl(dir.path(), &db.url, &["ping", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&answer), all);
    for reply in answer["replies"].as_array().unwrap() {
        assert_reply(reply, "ok", "ready");
    }

    let (code, answer, stderr) = ctl(
        dir.path(),
        &db.url,
        &["stop", "--target", "role=worker", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(answer["replies"].as_array().unwrap().len(), 2);
    let (code, answer, stderr) = ctl(dir.path(), &db.url, &["ping", "--json"]).await;
    assert_eq!(code, 1, "two refused: {answer}");
    assert!(stderr.contains("2 of 3 did not do it"), "{stderr}");
    for reply in answer["replies"].as_array().unwrap() {
        let worker = reply["role"] == "worker";
        assert_eq!(
            reply["status"],
            if worker { "refused" } else { "ok" },
            "{reply}"
        );
    }

    // The table form, and a target that does not exist.
    let (code, _, _) = ctl(dir.path(), &db.url, &["start"]).await;
    assert_eq!(code, 0);
    let (code, _, stderr) = ctl(dir.path(), &db.url, &["ping", "--target", "ghost:1:ab"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no process \"ghost:1:ab\" is known"),
        "{stderr}"
    );
    for x in ["nan", "inf", "-1", "1e400"] {
        let (code, _, stderr) = ctl(dir.path(), &db.url, &["calculate", x, "m"]).await;
        assert_eq!(code, 1, "{x}: {stderr}");
        assert!(
            stderr.contains("x must be a number of seconds"),
            "{x}: {stderr}"
        );
    }
    let (code, _, stderr) = ctl(dir.path(), &db.url, &["terminate"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("terminate needs --target"), "{stderr}");
    let (code, history, _) = ctl(dir.path(), &db.url, &["history", "--json"]).await;
    assert_eq!(code, 0);
    assert!(
        history[0]["command"]["error"]
            .as_str()
            .unwrap()
            .contains("ghost")
    );
}

async fn a_killed_process_is_shown_as_gone(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = ServeProcess::worker(dir.path(), &db.url, &QUICK);
    let id = worker.process_id.clone();
    worker.child.kill().unwrap();
    worker.child.wait().unwrap();
    let mut rows = Value::Null;
    eventually("the registry shows it gone", async || {
        rows = ctl(dir.path(), &db.url, &["processes", "--json"]).await.1;
        rows[0]["state"] == "gone"
    })
    .await;
    assert_eq!(rows[0]["id"], id.as_str());
    let (code, _, stderr) = ctl(dir.path(), &db.url, &["ping", "--target", &id]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("is gone"), "{stderr}");
    let (code, _, stderr) = ctl(dir.path(), &db.url, &["ping"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no live process matches"), "{stderr}");
}

/// `terminate` while a worker is mid-send: it finishes what it holds,
/// exits 0, and every email goes out exactly once.
async fn terminate_during_delivery_loses_nothing(backend: Backend) {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    let postmark = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(500))
                .set_body_json(json!({"ErrorCode": 0, "Message": "OK"})),
        )
        .mount(&postmark)
        .await;
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = QUICK.to_vec();
    let uri = postmark.uri();
    env.extend([
        ("ALLOT_MAIL_TRANSPORT", "postmark"),
        ("ALLOT_POSTMARK_TOKEN", "pm"),
        ("ALLOT_POSTMARK_URL", uri.as_str()),
    ]);
    let worker = ServeProcess::worker(dir.path(), &db.url, &env);
    let conn = db.connect().await;
    const N: usize = 48;
    for n in 0..N {
        let job = allot::notices::email_job(
            &format!("b{n}@example.com"),
            "test",
            json!({"address": "x"}),
            8,
        );
        allot::jobs::enqueue_now(&conn, &job).await.unwrap();
    }
    eventually("some emails are out", async || {
        postmark.received_requests().await.unwrap().len() >= 8
    })
    .await;
    let (code, answer, stderr) = ctl(
        dir.path(),
        &db.url,
        &["terminate", "--target", &worker.process_id, "--json"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_reply(&answer["replies"][0], "ok", "stopping");
    let (exit, log) = worker.wait();
    assert_eq!(exit, Some(0), "{log:?}");
    let running = allot::jobs::list(&conn, Some(allot::jobs::JobState::Running), 100)
        .await
        .unwrap();
    assert!(running.is_empty(), "nothing left leased: {running:?}");

    // A second worker takes up the rest.
    let _second = ServeProcess::worker(dir.path(), &db.url, &env);
    eventually("every email is sent", async || {
        let done = allot::jobs::list(&conn, Some(allot::jobs::JobState::Done), 100)
            .await
            .unwrap();
        done.len() == N
    })
    .await;
    let mut to: Vec<String> = postmark
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["To"].to_string())
        .collect();
    to.sort();
    let sent = to.len();
    to.dedup();
    assert_eq!((sent, to.len()), (N, N), "each email sent once");
}

/// The compose topology, natively: two `serve` and two `worker` processes
/// on one database. Races on one coupon and one SKU oversell nothing;
/// `ctl stop` pauses delivery everywhere, `ctl start` resumes it, and every
/// buyer gets one email.
async fn a_cluster_pauses_and_resumes_delivery(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let mail_dir = mail.to_str().unwrap();
    let mut env = QUICK.to_vec();
    env.extend([("ALLOT_WEBHOOK_TOKEN", TOKEN), ("ALLOT_MAIL_DIR", mail_dir)]);
    let servers = [
        ServeProcess::start_with(dir.path(), &db.url, &env),
        ServeProcess::start_with(dir.path(), &db.url, &env),
    ];
    let _workers = [
        ServeProcess::worker(dir.path(), &db.url, &env),
        ServeProcess::worker(dir.path(), &db.url, &env),
    ];
    let conn = db.connect().await;
    let keys: Vec<String> = (0..20).map(|n| format!("CLUSTER-KEY-{n:04}")).collect();
    crate::helpers::seed_keys(&conn, "course-101", &keys).await;

    let (code, answer, stderr) = ctl(dir.path(), &db.url, &["stop", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(answer["replies"].as_array().unwrap().len(), 4);

    // While paused: the coupon race and the orders are taken as usual.
    let http = client();
    let created = http
        .post(format!("http://{}/api/coupons", servers[0].addr))
        .json(&json!({"name": "CLUSTER", "amount": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let granted = race(60, |n| {
        let (http, addr) = (http.clone(), addrs[n % 2]);
        async move {
            claim(&http, addr, &format!("buyer-{n}"), "CLUSTER")
                .await
                .status()
        }
    })
    .await
    .into_iter()
    .filter(|status| status.as_u16() == 200)
    .count();
    assert_eq!(granted, 10);
    let coupon = status_and_json(get_coupon(&http, addrs[1], "CLUSTER").await)
        .await
        .1;
    assert_invariant(&coupon);
    assert_eq!(coupon["remaining_amount"], 0);

    let orders = race(30, |n| {
        let (http, addr) = (http.clone(), addrs[n % 2]);
        async move {
            let url = format!("http://{addr}/v1/webhooks/generic?token={TOKEN}&sku=course-101");
            let body = crate::helpers::order_body("C", n);
            status_and_json(http.post(url).json(&body).send().await.unwrap()).await
        }
    })
    .await;
    let fulfilled = orders
        .iter()
        .filter(|(_, body)| body["status"] == "fulfilled")
        .count();
    let waiting = orders
        .iter()
        .filter(|(_, body)| body["status"] == "awaiting_stock")
        .count();
    assert_eq!((fulfilled, waiting), (20, 10), "{orders:?}");

    // A negative check needs some time: several worker polls (100 ms) pass.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        crate::helpers::read_eml_files(&mail).is_empty(),
        "nothing is delivered while paused"
    );

    let (code, _, stderr) = ctl(dir.path(), &db.url, &["start"]).await;
    assert_eq!(code, 0, "{stderr}");
    let sent: Vec<usize> = orders
        .iter()
        .enumerate()
        .filter(|(_, (_, body))| body["status"] == "fulfilled")
        .map(|(n, _)| n)
        .collect();
    assert_fulfilled_mailed_once(&mail, &sent, &keys).await;
}

/// One key email per fulfilled order `C-n`, no key twice.
async fn assert_fulfilled_mailed_once(mail: &std::path::Path, orders: &[usize], keys: &[String]) {
    let key_emails = || -> Vec<String> {
        crate::helpers::read_eml_files(mail)
            .into_iter()
            .filter(|m| m.contains("Subject: Your license key"))
            .collect()
    };
    let mut mails = Vec::new();
    eventually("one key email per fulfilled order", async || {
        mails = key_emails();
        mails.len() >= orders.len()
    })
    .await;
    assert_eq!(mails.len(), orders.len(), "no order mailed twice");
    for n in orders {
        let id = format!("order C-{n}.");
        assert_eq!(mails.iter().filter(|m| m.contains(&id)).count(), 1, "{id}");
    }
    for key in keys {
        assert!(
            mails.iter().filter(|m| m.contains(key.as_str())).count() <= 1,
            "{key} went to one buyer"
        );
    }
}

/// The interactive console reads commands line by line (here from a pipe,
/// as from a terminal): same commands, same output, errors shown and the
/// console carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_takes_commands_line_by_line() {
    use std::io::Write;
    let db = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(dir.path(), &db.url, &QUICK);
    let (dir_path, url) = (dir.path().to_path_buf(), db.url.clone());
    let output = tokio::task::spawn_blocking(move || {
        let mut console = crate::helpers::allot_command(&dir_path)
            .arg("ctl")
            .env("ALLOT_DATABASE_URL", &url)
            .env("HOME", &dir_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = "processes\nping\nstop\nping --json\nbogus\ncalculate 1 \"two words\"\nstart\ncalculate 0 \"two words\"\nquit\n";
        console.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        console.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&serve.process_id),
        "processes lists the server: {stdout}"
    );
    assert!(stdout.contains("pong "), "{stdout}");
    assert!(
        stdout.contains("\"status\": \"refused\""),
        "ping --json while unready: {stdout}"
    );
    assert!(
        stdout.contains("unrecognized subcommand 'bogus'"),
        "{stdout}"
    );
    assert!(stdout.contains("calculated for 0s: two words"), "{stdout}");
    assert!(
        stdout.contains("error: 1 of 1 did not do it"),
        "the unready calculate: {stdout}"
    );
}

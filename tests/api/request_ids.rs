//! One request followed through the logs of a real `allot serve` with JSON
//! logs: the id a shop sends in `x-request-id` (or the one the server makes
//! when it sends none) comes back in the answer, and one search for it
//! finds the delivery, the batch that placed its order and the attempt
//! that emailed its key, each of whose lines names it. A job keeps its
//! request in the table, for whichever worker leases it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use allot::jobs::{self, BoxFuture, Handler, Handlers, JobError, Leased, NewJob, WorkerEvent};
use serde_json::{Value, json};

use crate::{
    helpers::{
        Backend, ServeProcess, TOKEN, TestDb, World, allot_command, client, eventually, race,
    },
    on_every_backend,
};

on_every_backend!(
    one_id_follows_an_order_from_its_webhook_to_its_key_email,
    a_leased_job_names_the_request_that_enqueued_it,
);

/// Orders sent at once, so that several may share a batch.
const ORDERS: usize = 4;

/// What the test knows of one order's delivery.
struct Delivery {
    order_id: String,
    request_id: String,
}

async fn one_id_follows_an_order_from_its_webhook_to_its_key_email(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..ORDERS).map(|i| format!("FOLLOW-{i}-KEY")).collect();
    std::fs::write(dir.path().join("keys.txt"), keys.join("\n")).unwrap();
    let import = allot_command(dir.path())
        .args(["keys", "import", "keys.txt", "--sku", "course-1"])
        .env("ALLOT_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let server = ServeProcess::start_with(
        dir.path(),
        &db.url,
        &[
            ("ALLOT_WEBHOOK_TOKEN", TOKEN),
            ("ALLOT_WORKER_POLL_INTERVAL", "100ms"),
        ],
    );
    let client = client();
    let addr = server.addr;

    // Every delivery names its own id but the last, which gets one made
    // by the server.
    let deliveries = race(ORDERS, |i| {
        let client = client.clone();
        async move {
            let order_id = format!("follow-{i}");
            let body =
                serde_json::json!({"order_id": order_id, "email": format!("b{i}@example.com")});
            let mut request = client
                .post(format!(
                    "http://{addr}/v1/webhooks/generic?token={TOKEN}&sku=course-1"
                ))
                .json(&body);
            let sent = (i + 1 < ORDERS).then(|| format!("shop-delivery/{i}"));
            if let Some(id) = &sent {
                request = request.header("x-request-id", id);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let answered = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_string();
            let receipt: Value = response.json().await.unwrap();
            assert_eq!(receipt["status"], "fulfilled", "{receipt}");
            match sent {
                Some(sent) => assert_eq!(answered, sent, "the client's id is echoed"),
                None => assert!(
                    uuid::Uuid::parse_str(&answered).is_ok(),
                    "a new id is a UUID: {answered}"
                ),
            }
            Delivery {
                order_id,
                request_id: answered,
            }
        }
    })
    .await;

    // Each order's key email, as its order shows it.
    let mut email_jobs = Vec::new();
    for delivery in &deliveries {
        let order: Value = client
            .get(format!(
                "http://{addr}/v1/orders/generic/{}?token={TOKEN}",
                delivery.order_id
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job = order["email_delivery"]["job_id"].as_i64();
        email_jobs.push(job.unwrap_or_else(|| panic!("no key email: {order}")));
    }
    eventually("every key email's attempt to be done", async || {
        let log = lines(&server.log.lock().unwrap());
        email_jobs.iter().all(|&job| {
            log.iter().any(|line| {
                line["message"] == "job done"
                    && span(line, "job").is_some_and(|s| s["job_id"] == job)
            })
        })
    })
    .await;
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log:#?}");

    for (delivery, &job) in deliveries.iter().zip(&email_jobs) {
        let id = delivery.request_id.as_str();
        // `grep ID`: the delivery, its batch and its key email's attempt.
        let found: Vec<Value> = lines(&log)
            .into_iter()
            .filter(|line| line.to_string().contains(id))
            .collect();
        let said = |message: &str| {
            found
                .iter()
                .filter(|line| line["message"] == message)
                .collect::<Vec<_>>()
        };
        let intake = said("webhook delivery received");
        assert_eq!(intake.len(), 1, "{id}: {found:#?}");
        assert_eq!(intake[0]["order_ids"], delivery.order_id.as_str());
        let request = span(intake[0], "request").expect("the request's span");
        assert_eq!(request["request_id"], id);
        assert_eq!(request["method"], "POST");
        assert_eq!(request["path"], "/v1/webhooks/generic");
        let batch = said("order batch placed");
        assert_eq!(batch.len(), 1, "{id}: {found:#?}");
        let batch = span(batch[0], "order_batch").expect("the batch's span");
        assert_eq!(batch["sku"], "course-1");
        let batched: Vec<&str> = batch["request_ids"].as_str().unwrap().split(',').collect();
        assert!(batched.contains(&id), "{batch}");
        let done = said("job done");
        assert_eq!(done.len(), 1, "{id}: {found:#?}");
        let attempt = span(done[0], "job").expect("the attempt's span");
        assert_eq!(attempt["job_id"], job);
        assert_eq!(attempt["kind"], "key_email");
        assert!(attempt["order"].is_i64(), "the order it serves: {attempt}");
    }

    // No line of a delivery, a batch or a key email's attempt goes
    // without a request id.
    for line in lines(&log) {
        if let Some(request) = span(&line, "request") {
            assert!(request["request_id"].is_string(), "{line}");
        }
        if let Some(batch) = span(&line, "order_batch") {
            assert!(
                !batch["request_ids"].as_str().unwrap_or_default().is_empty(),
                "{line}"
            );
        }
        if let Some(attempt) = span(&line, "job").filter(|s| s["kind"] == "key_email") {
            assert!(attempt["request_id"].is_string(), "{line}");
        }
    }
    // The webhook token travels in the query string, which no line shows;
    // keys never reach a log.
    let everything = log.join("\n");
    assert!(!everything.contains(TOKEN), "the token was logged");
    assert!(!everything.contains("FOLLOW-"), "a key was logged");
}

/// Notes the request each of its jobs names.
struct Requests(Arc<Mutex<Vec<Option<String>>>>);

impl Handler for Requests {
    fn kinds(&self) -> &'static [&'static str] {
        &["requests"]
    }

    fn run<'a>(&'a self, job: &'a Leased) -> BoxFuture<'a, Result<(), JobError>> {
        self.0.lock().unwrap().push(job.request_id.clone());
        Box::pin(async { Ok(()) })
    }
}

/// A job built while a request is served names it, and keeps it in the
/// table: the worker that leases it (rather than taking it at birth)
/// reads it back. A job of no request names none.
async fn a_leased_job_names_the_request_that_enqueued_it(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handlers = Handlers::new().with(Requests(seen.clone()));
    let worker = jobs::Worker::new(
        world.db.clone(),
        &world.settings.jobs,
        Duration::from_secs(5),
        handlers,
    );
    let job = |n: i32| NewJob::new("requests", json!({ "n": n }), 3);
    let during = allot::telemetry::serving(Some(Arc::from("shop-delivery/7")), async { job(1) });
    let during = during.await;
    assert_eq!(during.request_id.as_deref(), Some("shop-delivery/7"));
    let outside = job(2);
    assert_eq!(outside.request_id, None);
    for job in [&during, &outside] {
        jobs::enqueue_now(&world.db, job)
            .await
            .unwrap()
            .expect("new job");
    }
    let events = worker.run_once(allot::clock::now_ms()).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| matches!(e, WorkerEvent::Done { .. })));
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [None, Some("shop-delivery/7".to_string())]);
}

/// The log's JSON lines.
fn lines(log: &[String]) -> Vec<Value> {
    log.iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The span named `name` that encloses `line`, with its fields.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == name)
}

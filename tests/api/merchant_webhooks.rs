//! Merchant webhooks out: events signed per Standard Webhooks (checked with
//! the reference `standardwebhooks` library), retried or dead-lettered by
//! the answer, endpoints disabled after failing too long, managed over the
//! admin API and the CLI.

use std::time::Duration;

use allot::{
    jobs::WorkerEvent,
    merchant::{self, Event, NewEndpoint, endpoints},
};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{method, path},
};

use crate::{
    helpers::{ADMIN, Backend, TOKEN, TestApp, World, allot_command, count, seed_keys},
    on_every_backend,
};

on_every_backend!(
    order_events_reach_endpoints_signed_and_without_keys_unless_asked,
    answers_decide_between_retry_and_dead_letter,
    an_endpoint_failing_too_long_is_disabled_and_the_admin_told,
    endpoints_are_managed_over_the_admin_api,
);

/// Checks a received request with the reference implementation.
fn verify(secret: &str, request: &Request) -> Value {
    let hook = standardwebhooks::Webhook::new(secret).unwrap();
    hook.verify(&request.body, &request.headers)
        .unwrap_or_else(|e| panic!("signature does not verify: {e:?}"));
    serde_json::from_slice(&request.body).unwrap()
}

async fn requests_to(server: &MockServer, route: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == route)
        .collect()
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn order_events_reach_endpoints_signed_and_without_keys_unless_asked(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let app = TestApp::admin_shop(backend).await;
    let (status, crm) = admin(&app, reqwest::Method::POST, "/v1/admin/endpoints",
        Some(json!({"url": format!("{}/crm", server.uri()), "events": ["order.*"], "description": "CRM"}))).await;
    assert_eq!(status, 201, "{crm}");
    let (_, lms) = admin(&app, reqwest::Method::POST, "/v1/admin/endpoints",
        Some(json!({"url": format!("{}/lms", server.uri()), "events": "order.fulfilled", "include_keys": true}))).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &["KEY-MERCHANT-1".into()]).await;

    let (_, first) = app
        .webhook(
            "generic?sku=course-101",
            json!({"order_id": "A-1", "email": "ana@example.com"}).to_string(),
        )
        .await;
    assert_eq!(first["status"], "fulfilled");
    let (_, second) = app
        .webhook(
            "generic?sku=course-101",
            json!({"order_id": "A-2", "email": "bo@example.com"}).to_string(),
        )
        .await;
    assert_eq!(second["status"], "awaiting_stock");

    crate::helpers::eventually("three deliveries", async || {
        server.received_requests().await.unwrap_or_default().len() >= 3
    })
    .await;
    let crm_secret = crm["secret"].as_str().unwrap();
    let to_crm = requests_to(&server, "/crm").await;
    let bodies: Vec<Value> = to_crm.iter().map(|r| verify(crm_secret, r)).collect();
    let mut kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["order.awaiting_stock", "order.fulfilled"]);
    for (request, body) in to_crm.iter().zip(&bodies) {
        assert!(
            !String::from_utf8_lossy(&request.body).contains("KEY-MERCHANT-1"),
            "{body}"
        );
        assert!(
            request
                .headers
                .get("webhook-id")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("msg_")
        );
    }
    let fulfilled = bodies
        .iter()
        .find(|b| b["type"] == "order.fulfilled")
        .unwrap();
    assert_eq!(fulfilled["data"]["order"]["order_id"], "A-1");
    assert_eq!(fulfilled["data"]["order"]["email"], "ana@example.com");

    let to_lms = requests_to(&server, "/lms").await;
    assert_eq!(
        to_lms.len(),
        1,
        "the LMS subscribed to order.fulfilled only"
    );
    let body = verify(lms["secret"].as_str().unwrap(), &to_lms[0]);
    assert_eq!(body["data"]["license_key"], "KEY-MERCHANT-1");
    // The key never sits in the stored event either.
    let stored = count(
        &db,
        "select count(*) from merchant_events where payload like '%KEY-MERCHANT%'",
    )
    .await;
    assert_eq!(stored, 0);
}

async fn emit(world: &World, kind: &'static str, data: Value, now: i64) {
    let mut tx = world.db.begin().await.unwrap();
    merchant::emit(
        &mut tx,
        &Event::new(kind, data),
        now,
        world.settings.jobs.max_attempts(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn add_endpoint(world: &World, url: String, events: &str) -> (i64, String) {
    let new = NewEndpoint::parse(&url, Some(events), None, false).unwrap();
    endpoints::add(&world.db, &new, allot::clock::now_ms())
        .await
        .unwrap()
}

async fn answers_decide_between_retry_and_dead_letter(backend: Backend) {
    let server = MockServer::start().await;
    let flaky = || Mock::given(method("POST")).and(path("/flaky"));
    flaky()
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    flaky()
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    flaky()
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&server)
        .await;
    flaky()
        .respond_with(ResponseTemplate::new(200))
        .with_priority(4)
        .mount(&server)
        .await;
    Mock::given(path("/gone"))
        .respond_with(ResponseTemplate::new(410).set_body_string("endpoint removed"))
        .mount(&server)
        .await;
    let world = World::new(backend, |s| s.endpoints.timeout = Duration::from_secs(1)).await;
    let (flaky_id, secret) =
        add_endpoint(&world, format!("{}/flaky", server.uri()), "stock.*").await;
    let (gone_id, _) = add_endpoint(&world, format!("{}/gone", server.uri()), "*").await;
    let mut now = allot::clock::now_ms();
    emit(
        &world,
        "stock.low",
        json!({"sku": "course-101", "available": 2, "threshold": 10}),
        now,
    )
    .await;
    let worker = world.worker();

    let mut outcomes = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..4 {
        let events = worker.run_once(now).await.unwrap();
        let mut next = None;
        for event in events {
            match event {
                WorkerEvent::Retry { at, .. } => next = Some(at),
                other => outcomes.push(other),
            }
        }
        let Some(at) = next else { break };
        waits.push(at - now);
        now = at;
    }
    // The retry after the 429 honoured its Retry-After (the schedule alone
    // would say about a minute).
    assert!(waits[1] >= 120_000, "{waits:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|e| matches!(e, WorkerEvent::Dead { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );

    let flaky_log = endpoints::attempts(&world.db, flaky_id, 10).await.unwrap();
    let mut log: Vec<(Option<i32>, String)> = flaky_log
        .iter()
        .map(|a| (a.status, a.outcome.clone()))
        .collect();
    log.reverse();
    assert_eq!(
        log,
        [
            (Some(500), "retry".into()),
            (Some(429), "retry".into()),
            (None, "retry".into()),
            (Some(200), "delivered".into())
        ]
    );
    assert!(flaky_log.iter().any(|a| a.response.contains("boom")));
    assert!(
        flaky_log[1].response.contains("timed out"),
        "{:?}",
        flaky_log[1]
    );
    let requests = requests_to(&server, "/flaky").await;
    assert_eq!(requests.len(), 4);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.headers.get("webhook-id").unwrap().clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one webhook-id across retries: {ids:?}"
    );
    verify(&secret, requests.last().unwrap());

    let gone_log = endpoints::attempts(&world.db, gone_id, 10).await.unwrap();
    assert_eq!(gone_log.len(), 1, "a 410 is not retried");
    assert_eq!(
        (gone_log[0].status, gone_log[0].outcome.as_str()),
        (Some(410), "dead")
    );
}

async fn an_endpoint_failing_too_long_is_disabled_and_the_admin_told(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let world = World::new(backend, |_| {}).await;
    let (id, _) = add_endpoint(&world, format!("{}/down", server.uri()), "*").await;
    let worker = world.worker();
    let now = allot::clock::now_ms();
    emit(&world, "stock.sold_out", json!({"sku": "a"}), now).await;
    worker.run_once(now).await.unwrap();
    let endpoint = endpoints::find(&world.db, id).await.unwrap().unwrap();
    assert!(endpoint.enabled.0, "one failure does not disable");
    assert!(endpoint.failing_since.is_some());

    // Failing for longer than ALLOT_ENDPOINT_DISABLE_AFTER (5 days)…
    let six_days_ago = now - 6 * 24 * 3600 * 1000;
    crate::helpers::execute(
        &world.db,
        &format!("update endpoints set failing_since = {six_days_ago}"),
    )
    .await;
    emit(&world, "stock.sold_out", json!({"sku": "b"}), now).await;
    let later = now + 3_600_000;
    worker.run_once(later).await.unwrap();
    let endpoint = endpoints::find(&world.db, id).await.unwrap().unwrap();
    assert!(!endpoint.enabled.0, "disabled after failing for too long");
    assert!(
        endpoint
            .disabled_reason
            .as_deref()
            .unwrap_or_default()
            .contains("503")
    );
    // …the admin hears of it,
    worker.run_once(later).await.unwrap();
    let mails = world.mails();
    assert!(
        mails
            .iter()
            .any(|m| m.contains("admin@shop.test") && m.contains("disabled")),
        "{mails:?}"
    );
    // and new events are not sent to it.
    emit(&world, "stock.sold_out", json!({"sku": "c"}), later).await;
    assert_eq!(
        count(&world.db, "select count(*) from merchant_events").await,
        2
    );

    // Deliveries still queued for it die without being sent…
    let next_day = later + 24 * 3_600_000;
    worker.run_once(next_day).await.unwrap();
    let dead = allot::jobs::list(&world.db, Some(allot::jobs::JobState::Dead), 100)
        .await
        .unwrap();
    let dead: Vec<_> = dead
        .iter()
        .filter(|j| j.kind == "merchant_webhook")
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead[0].last_error.as_deref().unwrap().contains("disabled"));

    // …and once the receiver works: enable, redrive, delivered.
    assert!(
        endpoints::set_enabled(&world.db, id, true, None, later)
            .await
            .unwrap()
    );
    let requeued = endpoints::redrive(&world.db, id, 4).await.unwrap();
    assert_eq!(requeued, 2, "the dead deliveries are requeued");
    // The two run side by side and either may meet the receiver's last
    // 503; that one is retried later, a day apart being past any delay.
    let mut at = next_day + 60_000;
    for _ in 0..3 {
        worker.run_once(at).await.unwrap();
        at += 24 * 3_600_000;
    }
    let log = endpoints::attempts(&world.db, id, 10).await.unwrap();
    for event in [1, 2] {
        let last = log.iter().find(|a| a.event_id == event).unwrap();
        assert_eq!(last.outcome, "delivered", "event {event}: {log:?}");
    }
    assert!(
        endpoints::find(&world.db, id)
            .await
            .unwrap()
            .unwrap()
            .failing_since
            .is_none()
    );
}

async fn endpoints_are_managed_over_the_admin_api(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let off = TestApp::shop(backend, |_| {}).await;
    let (status, body) = admin(&off, reqwest::Method::GET, "/v1/admin/endpoints", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("admin_disabled"))
    );
    let app = TestApp::admin_shop(backend).await;
    let wrong = app
        .client
        .get(app.url("/v1/admin/endpoints"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);

    let bad = [
        json!({"url": "ftp://example.com/x"}),
        json!({"url": "not a url"}),
        json!({"url": "https://example.com", "events": ["order.shipped"]}),
        json!({"url": "https://example.com", "colour": "red"}),
    ];
    for body in bad {
        let (status, answer) = admin(
            &app,
            reqwest::Method::POST,
            "/v1/admin/endpoints",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body} → {answer}");
    }
    let (status, added) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/admin/endpoints",
        Some(
            json!({"url": format!("{}/hook", server.uri()), "events": ["stock.*", "key.revoked"]}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    let id = added["endpoint"]["id"].as_i64().unwrap();
    let old_secret = added["secret"].as_str().unwrap().to_string();
    assert!(old_secret.starts_with("whsec_"));
    let (_, list) = admin(&app, reqwest::Method::GET, "/v1/admin/endpoints", None).await;
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(&old_secret),
        "a listing shows no secret"
    );
    let (_, shown) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/v1/admin/endpoints/{id}/secret"),
        None,
    )
    .await;
    assert_eq!(shown["secret"], old_secret.as_str());
    for missing in ["999", "abc"] {
        let (status, _) = admin(
            &app,
            reqwest::Method::GET,
            &format!("/v1/admin/endpoints/{missing}"),
            None,
        )
        .await;
        assert_eq!(status, 404);
    }

    // After a rotation both secrets verify, so receivers switch at leisure.
    let (_, rotated) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/v1/admin/endpoints/{id}/rotate-secret"),
        None,
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, old_secret);
    let dir = tempfile::tempdir().unwrap();
    let db = app.connect().await;
    seed_keys(&db, "course-9", &["KEY-LEAK-1".into()]).await;
    let out = allot_command(dir.path())
        .args(["keys", "revoke", "KEY-LEAK-1"])
        .env("ALLOT_DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::helpers::eventually("the key.revoked delivery", async || {
        !requests_to(&server, "/hook").await.is_empty()
    })
    .await;
    let request = requests_to(&server, "/hook").await.remove(0);
    let body = verify(&old_secret, &request);
    verify(&new_secret, &request);
    assert_eq!(body["type"], "key.revoked");
    assert!(!String::from_utf8_lossy(&request.body).contains("KEY-LEAK-1"));

    let (_, disabled) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/v1/admin/endpoints/{id}/disable"),
        None,
    )
    .await;
    assert_eq!(disabled["endpoint"]["enabled"], false);
    let (status, _) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/v1/admin/endpoints/{id}/explode"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/admin/endpoints/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/admin/endpoints/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

//! Payments in: Stripe Checkout events and any provider's signed payment
//! events, made into orders, refunds and emails; bad signatures refused
//! with nothing stored.

use allot::keys::Sku;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, TestApp, count, race, seed_keys, status_and_json},
    on_every_backend,
};

on_every_backend!(
    stripe_signatures_are_checked_before_anything_is_stored,
    a_paid_checkout_session_is_fulfilled_once,
    a_refund_revokes_the_key_and_tells_buyer_and_admin,
    a_refund_that_arrives_before_its_order_still_wins,
    a_payment_and_its_refund_racing_always_end_refunded,
    unknown_and_unpaid_stripe_events_are_acknowledged_and_recorded,
    payment_events_from_any_provider_follow_the_same_path,
);

const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const PAYMENT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn shop(backend: Backend) -> TestApp {
    TestApp::shop(backend, |s| {
        s.payments.stripe_webhook_secret = Some(STRIPE_SECRET.to_string().into());
        s.payments.payment_webhook_secret = Some(PAYMENT_SECRET.to_string().into());
    })
    .await
}

fn now_secs() -> i64 {
    allot::clock::now_ms() / 1000
}

/// `t=…,v1=…` as Stripe signs: hex HMAC-SHA256 of "t.body" keyed with the
/// secret as text.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

async fn post_stripe(app: &TestApp, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    status_and_json(request.send().await.unwrap()).await
}

async fn stripe(app: &TestApp, event: &Value) -> (u16, Value) {
    let body = event.to_string();
    let signature = stripe_signature(STRIPE_SECRET, now_secs(), &body);
    post_stripe(app, &body, Some(&signature)).await
}

fn session_event(event_id: &str, kind: &str, session: &str, email: &str) -> Value {
    json!({
        "id": event_id, "object": "event", "type": kind, "created": now_secs(),
        "data": {"object": {
            "id": session, "object": "checkout.session",
            "payment_status": "paid", "payment_intent": format!("pi_{session}"),
            "amount_total": 4900, "currency": "eur",
            "customer_details": {"email": email},
            "metadata": {"sku": "course-101"},
        }}
    })
}

fn refund_event(event_id: &str, session: &str) -> Value {
    json!({
        "id": event_id, "object": "event", "type": "charge.refunded",
        "data": {"object": {
            "id": format!("ch_{session}"), "object": "charge",
            "payment_intent": format!("pi_{session}"),
            "amount": 4900, "amount_refunded": 4900, "refunded": true,
        }}
    })
}

async fn stripe_signatures_are_checked_before_anything_is_stored(backend: Backend) {
    let off = TestApp::shop(backend, |_| {}).await;
    let (status, body) = post_stripe(&off, "{}", Some("t=1,v1=00")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("stripe_disabled"))
    );

    let app = shop(backend).await;
    let event = session_event(
        "evt_sig",
        "checkout.session.completed",
        "cs_sig",
        "ana@example.com",
    );
    let body = event.to_string();
    let stale = stripe_signature(STRIPE_SECRET, now_secs() - 301, &body);
    let wrong = stripe_signature("whsec_someone_else", now_secs(), &body);
    let cases = [
        (None, 400, "invalid_signature"),
        (Some("v1=abcd".to_string()), 400, "invalid_signature"),
        (Some(stale), 401, "stale_signature"),
        (Some(wrong), 401, "bad_signature"),
    ];
    for (signature, want_status, want_code) in cases {
        let (status, answer) = post_stripe(&app, &body, signature.as_deref()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (want_status, Some(want_code)),
            "{answer}"
        );
    }
    // The signature of another body does not carry over.
    let signed_other = stripe_signature(STRIPE_SECRET, now_secs(), "{}");
    let (status, _) = post_stripe(&app, &body, Some(&signed_other)).await;
    assert_eq!(status, 401);
    let db = app.connect().await;
    assert_eq!(count(&db, "select count(*) from payment_events").await, 0);
    assert_eq!(count(&db, "select count(*) from orders").await, 0);

    // While Stripe rolls a secret it sends one v1 per secret: any may match.
    seed_keys(&db, "course-101", &["KEY-SIG-1".into()]).await;
    let t = now_secs();
    let old = stripe_signature("whsec_previous", t, &body);
    let current = stripe_signature(STRIPE_SECRET, t, &body);
    let both = format!("{old},v1={}", current.split("v1=").nth(1).unwrap());
    let (status, answer) = post_stripe(&app, &body, Some(&both)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("fulfilled")),
        "{answer}"
    );
}

async fn a_paid_checkout_session_is_fulfilled_once(backend: Backend) {
    let app = shop(backend).await;
    let db = app.connect().await;
    seed_keys(
        &db,
        "course-101",
        &["KEY-PAID-1".into(), "KEY-PAID-2".into()],
    )
    .await;
    let completed = session_event(
        "evt_1",
        "checkout.session.completed",
        "cs_1",
        "ana@example.com",
    );
    let (status, first) = stripe(&app, &completed).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (200, Some("fulfilled")),
        "{first}"
    );
    assert_eq!(first["order_id"], "cs_1");
    // The same event again, and the same session by another event type.
    let (_, again) = stripe(&app, &completed).await;
    assert_eq!(again["status"], "duplicate");
    let async_paid = session_event(
        "evt_2",
        "checkout.session.async_payment_succeeded",
        "cs_1",
        "ana@example.com",
    );
    let (_, other) = stripe(&app, &async_paid).await;
    assert_eq!(other["status"], "duplicate");

    let (status, order) = app.order("stripe", "cs_1").await;
    assert_eq!(
        (status, order["state"].as_str()),
        (200, Some("fulfilled")),
        "{order}"
    );
    let mails = app.wait_for_mails(1, |m| m.contains("KEY-PAID-")).await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("ana@example.com"));
    let stock = allot::keys::stock(&db).await.unwrap();
    assert_eq!((stock[0].available, stock[0].assigned), (1, 1));
    assert_eq!(count(&db, "select count(*) from payment_events").await, 2);
}

async fn a_refund_revokes_the_key_and_tells_buyer_and_admin(backend: Backend) {
    let app = shop(backend).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &["KEY-REFUND-1".into()]).await;
    let (_, paid) = stripe(
        &app,
        &session_event(
            "evt_p",
            "checkout.session.completed",
            "cs_r",
            "bo@example.com",
        ),
    )
    .await;
    assert_eq!(paid["status"], "fulfilled");
    app.wait_for_mails(1, |m| m.contains("KEY-REFUND-1")).await;

    let (status, refunded) = stripe(&app, &refund_event("evt_r", "cs_r")).await;
    assert_eq!(
        (status, refunded["status"].as_str()),
        (200, Some("refunded")),
        "{refunded}"
    );
    assert_eq!(refunded["order_id"], "cs_r");
    let (_, again) = stripe(&app, &refund_event("evt_r2", "cs_r")).await;
    assert_eq!(again["status"], "duplicate", "{again}");

    let stock = allot::keys::stock(&db).await.unwrap();
    assert_eq!((stock[0].assigned, stock[0].revoked), (0, 1));
    let (_, order) = app.order("stripe", "cs_r").await;
    assert_eq!(order["state"], "refunded", "{order}");
    let buyer = app
        .wait_for_mails(1, |m| {
            m.contains("was refunded")
                && m.contains("bo@example.com")
                && !m.contains("admin@shop.test")
        })
        .await;
    assert!(
        !buyer[0].contains("KEY-REFUND-1"),
        "the refund email names no key"
    );
    app.wait_for_mails(1, |m| {
        m.contains("admin@shop.test") && m.contains("refunded")
    })
    .await;
    // The revoked key is never handed out again.
    let (_, next) = stripe(
        &app,
        &session_event(
            "evt_n",
            "checkout.session.completed",
            "cs_n",
            "cy@example.com",
        ),
    )
    .await;
    assert_eq!(next["status"], "awaiting_stock", "{next}");
}

async fn a_refund_that_arrives_before_its_order_still_wins(backend: Backend) {
    let app = shop(backend).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &["KEY-EARLY-1".into()]).await;
    let (_, early) = stripe(&app, &refund_event("evt_r", "cs_e")).await;
    assert_eq!(early["status"], "recorded", "{early}");
    let (_, paid) = stripe(
        &app,
        &session_event(
            "evt_p",
            "checkout.session.completed",
            "cs_e",
            "di@example.com",
        ),
    )
    .await;
    assert_eq!(paid["status"], "refunded", "{paid}");
    let (_, order) = app.order("stripe", "cs_e").await;
    assert_eq!(order["state"], "refunded", "{order}");
    app.wait_for_mails(1, |m| {
        m.contains("was refunded") && m.contains("di@example.com")
    })
    .await;
    // No key was vended for it: the pool keeps it for the next buyer.
    let key_emails = allot::jobs::list(&db, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == "key_email")
        .count();
    assert_eq!(key_emails, 0);
    let stock = allot::keys::stock(&db).await.unwrap();
    assert_eq!((stock[0].available, stock[0].revoked), (1, 0));
    // A repeat of the paid event changes nothing.
    let (_, again) = stripe(
        &app,
        &session_event(
            "evt_p",
            "checkout.session.completed",
            "cs_e",
            "di@example.com",
        ),
    )
    .await;
    assert_eq!(again["status"], "duplicate");
}

async fn a_payment_and_its_refund_racing_always_end_refunded(backend: Backend) {
    let app = std::sync::Arc::new(shop(backend).await);
    let db = app.connect().await;
    let keys: Vec<String> = (0..12).map(|i| format!("KEY-RACE-{i}")).collect();
    seed_keys(&db, "course-101", &keys).await;
    let answers = race(24, |i| {
        let app = app.clone();
        async move {
            let session = format!("cs_race_{}", i / 2);
            let event = if i % 2 == 0 {
                session_event(
                    &format!("evt_p{i}"),
                    "checkout.session.completed",
                    &session,
                    "race@example.com",
                )
            } else {
                refund_event(&format!("evt_r{i}"), &session)
            };
            stripe(&app, &event).await
        }
    })
    .await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    for i in 0..12 {
        let (_, order) = app.order("stripe", &format!("cs_race_{i}")).await;
        assert_eq!(order["state"], "refunded", "{order}");
    }
    let stock = allot::keys::stock(&db).await.unwrap();
    assert_eq!(
        stock[0].assigned, 0,
        "no refunded buyer keeps a key: {:?}",
        stock[0]
    );
}

async fn unknown_and_unpaid_stripe_events_are_acknowledged_and_recorded(backend: Backend) {
    let app = shop(backend).await;
    let db = app.connect().await;
    let unknown =
        json!({"id": "evt_u", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
    let (status, answer) = stripe(&app, &unknown).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("recorded")),
        "{answer}"
    );
    let mut unpaid = session_event(
        "evt_w",
        "checkout.session.completed",
        "cs_w",
        "el@example.com",
    );
    unpaid["data"]["object"]["payment_status"] = json!("unpaid");
    let (_, answer) = stripe(&app, &unpaid).await;
    assert_eq!(answer["status"], "recorded");
    let mut no_sku = session_event(
        "evt_x",
        "checkout.session.completed",
        "cs_x",
        "fa@example.com",
    );
    no_sku["data"]["object"]["metadata"] = json!({});
    let (_, answer) = stripe(&app, &no_sku).await;
    assert_eq!(answer["status"], "needs_attention", "{answer}");
    // Signed, but not an event at all: kept for a person, still 200.
    let body = "[1, 2, 3]";
    let signature = stripe_signature(STRIPE_SECRET, now_secs(), body);
    let (status, answer) = post_stripe(&app, body, Some(&signature)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("needs_attention")),
        "{answer}"
    );
    assert_eq!(count(&db, "select count(*) from payment_events").await, 3);
    assert_eq!(
        count(&db, "select count(*) from orders where state = 'fulfilled'").await,
        0
    );
}

/// Signs like a provider would, with the reference Standard Webhooks library.
fn provider_signed(app: &TestApp, id: &str, body: &str) -> reqwest::RequestBuilder {
    let hook = standardwebhooks::Webhook::new(PAYMENT_SECRET).unwrap();
    let t = now_secs();
    let signature = hook.sign(id, t, body.as_bytes()).unwrap();
    app.client
        .post(app.url("/v1/webhooks/payments"))
        .header("webhook-id", id)
        .header("webhook-timestamp", t.to_string())
        .header("webhook-signature", signature)
        .body(body.to_string())
}

/// Sends `body` as a provider would, and the answer.
async fn from_provider(app: &TestApp, id: &str, body: &str) -> (u16, Value) {
    status_and_json(provider_signed(app, id, body).send().await.unwrap()).await
}

async fn payment_events_from_any_provider_follow_the_same_path(backend: Backend) {
    let app = shop(backend).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &["KEY-GEN-1".into()]).await;
    let paid = json!({"id": "evt_g1", "type": "payment.succeeded", "data": {
        "reference": "order-77", "amount": 1999, "currency": "usd",
        "email": "gi@example.com", "sku": Sku::parse("course-101").unwrap().as_str()}})
    .to_string();
    let (status, answer) = from_provider(&app, "msg_1", &paid).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("fulfilled")),
        "{answer}"
    );
    let (_, again) = from_provider(&app, "msg_1", &paid).await;
    assert_eq!(again["status"], "duplicate");
    app.wait_for_mails(1, |m| m.contains("KEY-GEN-1")).await;

    let failed =
        json!({"id": "evt_g2", "type": "payment.failed", "data": {"reference": "order-78"}})
            .to_string();
    let (_, answer) = from_provider(&app, "msg_2", &failed).await;
    assert_eq!(answer["status"], "recorded");
    let refunded =
        json!({"id": "evt_g3", "type": "payment.refunded", "data": {"reference": "order-77"}})
            .to_string();
    let (_, answer) = from_provider(&app, "msg_3", &refunded).await;
    assert_eq!(answer["status"], "refunded", "{answer}");
    let (_, order) = app.order("payments", "order-77").await;
    assert_eq!(order["state"], "refunded");

    // Refusals: a wrong signature, missing headers, an unusable event.
    let tampered = provider_signed(&app, "msg_4", &paid).body(paid.replace("gi@", "mallory@"));
    let (status, answer) = status_and_json(tampered.send().await.unwrap()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature"))
    );
    let bare = app
        .client
        .post(app.url("/v1/webhooks/payments"))
        .body(paid.clone());
    let (status, answer) = status_and_json(bare.send().await.unwrap()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_signature"))
    );
    let unusable = json!({"type": "payment.refunded", "data": {}}).to_string();
    let (status, answer) = from_provider(&app, "msg_5", &unusable).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_event")),
        "{answer}"
    );
    assert_eq!(count(&db, "select count(*) from payment_events").await, 3);
}

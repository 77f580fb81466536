//! Order intake over HTTP: every source and payload shape, tokens and
//! signatures, duplicates racing, a sell-out race, garbage bodies.

use std::collections::HashSet;

use allot::{db::Db, keys};
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, TOKEN, TestApp, eventually, race, seed_keys, status_and_json},
    on_every_backend,
};

on_every_backend!(
    every_source_and_shape_becomes_an_emailed_key,
    nothing_is_stored_without_the_right_token,
    woocommerce_ping_and_signatures,
    twenty_deliveries_of_one_order_assign_one_key,
    a_sell_out_race_fulfils_exactly_the_stock,
    garbage_is_kept_and_the_admin_alerted,
    an_order_without_a_sku_is_taken_up_again_when_redelivered,
    unpaid_orders_wait_for_payment,
    several_bookings_make_several_orders,
    fields_no_column_can_hold_are_set_aside_not_failed,
);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys_for(sku: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{sku}-KEY-{i:04}")).collect()
}

/// Assigned keys as (key, email, order id), in key order.
async fn assigned(db: &Db) -> Vec<(String, String, String)> {
    let rows: Vec<(String, Option<String>, Option<String>)> = match db {
        Db::Sqlite { reader, .. } => sqlx::query_as(
            "select license_key, assigned_to_email, assigned_order_id from license_keys where status = 'assigned' order by id",
        )
        .fetch_all(reader)
        .await
        .unwrap(),
        Db::Postgres(pool) => sqlx::query_as(
            "select license_key, assigned_to_email, assigned_order_id from license_keys where status = 'assigned' order by id",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Db::MySql(pool) => sqlx::query_as(
            "select license_key, assigned_to_email, assigned_order_id from license_keys where status = 'assigned' order by id",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    rows.into_iter()
        .map(|(k, e, o)| (k, e.unwrap_or_default(), o.unwrap_or_default()))
        .collect()
}

async fn count_orders(db: &Db) -> i64 {
    let sql = "select count(*) from orders";
    match db {
        Db::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::MySql(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn jobs_of_kind(db: &Db, kind: &str) -> Vec<allot::jobs::Job> {
    allot::jobs::list(db, None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == kind)
        .collect()
}

async fn every_source_and_shape_becomes_an_emailed_key(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &keys_for("course-101", 10)).await;
    seed_keys(&db, "rqi_bls", &keys_for("rqi_bls", 10)).await;

    // (path, body, order id, email, coupon)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        // The plugins' own shapes; Amelia's SKU comes from the service map.
        ("amelia", fixture("amelia-booking-added.json"), "1534", "ana@example.com", Some("SPRING10")),
        ("woocommerce", fixture("woocommerce-order-created.json"), "4750", "ana@example.com", Some("promo10")),
        // Amelia with real arrays instead of "0"-keyed objects, SKU in the URL.
        (
            "amelia?sku=course-101",
            json!({"appointment": {"bookings": [{"id": 2001, "customer": {"email": "  Zoe@Example.ORG "},
                   "customFields": [{"label": "Discount Code", "value": "ZOE5"}]}]}})
            .to_string()
            .into_bytes(),
            "2001",
            "Zoe@example.org",
            Some("ZOE5"),
        ),
        // A Bookly bridge: flat, coupon in a custom field found by its label.
        (
            "bookly?sku=course-101",
            json!({"booking_id": 88, "customer_email": "Bob@Example.com",
                   "custom_fields": [{"id": 4, "label": "Coupon code", "value": "BOB-20"}]})
            .to_string()
            .into_bytes(),
            "88",
            "Bob@example.com",
            Some("BOB-20"),
        ),
        // A bridge that sends the coupon as an object, and one that labels
        // its custom field in words.
        (
            "bookly?sku=course-101",
            json!({"booking_id": 89, "customer_email": "eve@example.com",
                   "coupon": {"id": 3, "code": "NEST-5"}})
            .to_string()
            .into_bytes(),
            "89",
            "eve@example.com",
            Some("NEST-5"),
        ),
        (
            "bookly?sku=course-101",
            json!({"booking_id": 90, "customer_email": "fay@example.com",
                   "custom_fields": [{"label": "Discount / coupon", "value": "SLASH"}]})
            .to_string()
            .into_bytes(),
            "90",
            "fay@example.com",
            Some("SLASH"),
        ),
        // Generic: the customer JSON-encoded inside a string, SKU in the payload.
        (
            "generic",
            json!({"order": {"order_id": "G-7", "sku": "rqi_bls",
                   "customer": "{\"email\": \"carol@example.com\", \"promo_code\": \"CAROL\"}"}})
            .to_string()
            .into_bytes(),
            "G-7",
            "carol@example.com",
            Some("CAROL"),
        ),
        // WooCommerce with the coupon only in meta_data and no coupon_lines.
        (
            "woocommerce",
            json!({"id": 4751, "status": "completed", "billing": {"email": "DAN@example.com"},
                   "line_items": [{"sku": "rqi_bls"}], "meta_data": [{"key": "_coupon_code", "value": "META"}]})
            .to_string()
            .into_bytes(),
            "4751",
            "DAN@example.com",
            Some("META"),
        ),
    ];
    for (path, body, order_id, email, coupon) in &cases {
        let (status, answer) = app.webhook(path, body.clone()).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["status"], "fulfilled", "{path}: {answer}");
        assert_eq!(answer["orders"][0]["order_id"], *order_id, "{path}");
        let source = path.split('?').next().unwrap();
        let (status, order) = app.order(source, order_id).await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(order["state"], "fulfilled");
        assert_eq!(order["email"], *email, "{path}");
        assert_eq!(order["coupon_code"].as_str(), *coupon, "{path}");
        assert!(
            order["history"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("assigned")
        );
        assert!(
            !order.to_string().contains("-KEY-"),
            "the order view shows no key"
        );
    }

    // Each buyer gets exactly their key, by email.
    let keys = assigned(&db).await;
    assert_eq!(keys.len(), cases.len());
    let mails = app
        .wait_for_mails(cases.len(), |m| m.contains("Subject: Your license key"))
        .await;
    for (key, email, order_id) in &keys {
        let mail = mails
            .iter()
            .find(|m| {
                m.contains(&format!("To: {email}")) && m.contains(&format!("order {order_id}"))
            })
            .unwrap_or_else(|| panic!("no mail to {email} for {order_id}"));
        assert!(mail.contains(key.as_str()), "the mail carries the key");
    }
    // The mail file is written before the worker records the job as done.
    eventually("the key email recorded as delivered", async || {
        let (_, order) = app.order("woocommerce", "4750").await;
        order["email_delivery"]["state"] == "done"
    })
    .await;
    // The coupon recorded on the key, too.
    let stock = keys::stock(&db).await.unwrap();
    assert_eq!(
        stock.iter().map(|s| s.assigned).sum::<i64>(),
        cases.len() as i64
    );
}

async fn nothing_is_stored_without_the_right_token(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "rqi_bls", &keys_for("rqi_bls", 2)).await;
    let body = fixture("woocommerce-order-created.json");
    for query in [
        "",
        "?token=",
        "?token=wrong",
        &format!("?token={TOKEN}x"),
        "?sku=rqi_bls",
    ] {
        let response = app
            .client
            .post(app.url(&format!("/v1/webhooks/woocommerce{query}")))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, answer) = status_and_json(response).await;
        assert_eq!(status, 401, "{query}: {answer}");
        assert_eq!(answer["error"], "unauthorized");
    }
    // Unknown sources and bad bodies are not even looked at without a token.
    let response = app
        .client
        .post(app.url("/v1/webhooks/shopify"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(count_orders(&db).await, 0);
    assert!(assigned(&db).await.is_empty());
    // Orders hold addresses: reading them needs the token too.
    let response = app
        .client
        .get(app.url("/v1/orders/woocommerce/4750"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // With it: unknown sources are 404, a bad SKU in the URL is 400.
    let (status, answer) = app.webhook("shopify", "{}").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_source"))
    );
    let (status, answer) = app.webhook("generic?sku=%20padded", "{}").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_sku"))
    );
    let (status, _) = app.order("woocommerce", "4750").await;
    assert_eq!(status, 404);
    // A header works as well as the query.
    let response = app
        .client
        .post(app.url("/v1/webhooks/woocommerce"))
        .header("x-allot-token", TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Without a configured token, intake is off and says why.
    let closed = TestApp::spawn(backend).await;
    let response = closed
        .client
        .post(closed.url("/v1/webhooks/generic?token=anything"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, answer) = status_and_json(response).await;
    assert_eq!(status, 503);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("ALLOT_WEBHOOK_TOKEN")
    );
}

async fn woocommerce_ping_and_signatures(backend: Backend) {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let app = TestApp::shop(backend, |s| {
        s.intake.woocommerce_secret = Some("wc-secret".to_string().into());
    })
    .await;
    let db = app.connect().await;
    seed_keys(&db, "rqi_bls", &keys_for("rqi_bls", 2)).await;

    // The setup ping is a form body and unsigned.
    let response = app
        .client
        .post(app.url(&format!("/v1/webhooks/woocommerce?token={TOKEN}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("webhook_id=17")
        .send()
        .await
        .unwrap();
    let (status, answer) = status_and_json(response).await;
    assert_eq!((status, answer), (200, json!({"status": "ping"})));

    let body = fixture("woocommerce-order-created.json");
    let sign = |body: &[u8], secret: &[u8]| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let deliver = async |signature: Option<String>| {
        let mut request = app
            .client
            .post(app.url(&format!("/v1/webhooks/woocommerce?token={TOKEN}")))
            .header("x-wc-webhook-topic", "order.created")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("x-wc-webhook-signature", signature);
        }
        status_and_json(request.send().await.unwrap()).await
    };
    for signature in [None, Some(sign(&body, b"other")), Some("garbage".into())] {
        let (status, answer) = deliver(signature).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("bad_signature"))
        );
    }
    assert_eq!(count_orders(&db).await, 0);
    let (status, answer) = deliver(Some(sign(&body, b"wc-secret"))).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("fulfilled"))
    );
}

async fn twenty_deliveries_of_one_order_assign_one_key(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "rqi_bls", &keys_for("rqi_bls", 5)).await;
    let body = fixture("woocommerce-order-created.json");
    let url = app.url(&format!("/v1/webhooks/woocommerce?token={TOKEN}"));
    let answers = race(20, |_| {
        let (client, url, body) = (app.client.clone(), url.clone(), body.clone());
        async move { status_and_json(client.post(url).body(body).send().await.unwrap()).await }
    })
    .await;
    let mut statuses: Vec<&str> = answers
        .iter()
        .map(|(code, answer)| {
            assert_eq!(*code, 200, "{answer}");
            answer["status"].as_str().unwrap()
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == "fulfilled").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "duplicate").count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(assigned(&db).await.len(), 1);
    assert_eq!(jobs_of_kind(&db, "key_email").await.len(), 1);
    // And later, one at a time: still a duplicate.
    let (_, answer) = app.webhook("woocommerce", body).await;
    assert_eq!(answer["status"], "duplicate");
}

async fn a_sell_out_race_fulfils_exactly_the_stock(backend: Backend) {
    let app = TestApp::shop(backend, |s| {
        s.jobs.alert_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &keys_for("course-101", 10)).await;
    let url = app.url(&format!(
        "/v1/webhooks/generic?token={TOKEN}&sku=course-101"
    ));
    let answers = race(30, |i| {
        let (client, url) = (app.client.clone(), url.clone());
        let body =
            json!({"order_id": format!("race-{i}"), "email": format!("buyer{i}@example.com")});
        async move {
            status_and_json(
                client
                    .post(url)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    })
    .await;
    let count = |status: &str| {
        answers
            .iter()
            .filter(|(c, a)| *c == 200 && a["status"] == status)
            .count()
    };
    assert_eq!(count("fulfilled"), 10, "{answers:?}");
    assert_eq!(count("awaiting_stock"), 20, "{answers:?}");

    let keys = assigned(&db).await;
    assert_eq!(keys.len(), 10);
    let distinct_orders: HashSet<_> = keys.iter().map(|(_, _, order)| order).collect();
    assert_eq!(distinct_orders.len(), 10, "no order got two keys");
    let stock = keys::stock(&db).await.unwrap();
    assert_eq!((stock[0].available, stock[0].assigned), (0, 10));

    // One urgent mail for the sell-out, however many buyers raced into it;
    // the rest are batched into the window's digest.
    let alerts = jobs_of_kind(&db, "out_of_stock_alert").await;
    let urgent = alerts.iter().filter(|j| j.run_at <= j.created_at).count();
    assert_eq!(urgent, 1, "{alerts:?}");
    assert!(alerts.len() <= 3, "{alerts:?}");
    let mails = app
        .wait_for_mails(1, |m| m.contains("URGENT: course-101 is sold out"))
        .await;
    assert!(mails[0].contains("To: admin@shop.test"));
}

async fn garbage_is_kept_and_the_admin_alerted(backend: Backend) {
    let app = TestApp::shop(backend, |s| s.max_body_bytes = 4096).await;
    let db = app.connect().await;
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("generic", b"<html>not json</html>".to_vec()),
        ("amelia", b"".to_vec()),
        ("bookly", b"[1, 2, 3]".to_vec()),
        ("generic", br#"{"order_id": 5}"#.to_vec()),
        (
            "woocommerce",
            br#"{"id": 9, "billing": {"email": "not an address"}}"#.to_vec(),
        ),
        ("generic", vec![0xff, 0xfe, 0x00, 0x81]),
        (
            "generic",
            br#"{"email": "x@example.com", "order_id": {"nested": true}}"#.to_vec(),
        ),
    ];
    let mut references = Vec::new();
    for (source, body) in &bodies {
        let (status, answer) = app.webhook(source, body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "needs_attention", "{answer}");
        assert!(!answer["orders"][0]["detail"].as_str().unwrap().is_empty());
        references.push((
            source,
            answer["orders"][0]["order_id"]
                .as_str()
                .unwrap()
                .to_string(),
            body,
        ));
    }
    for (source, reference, body) in &references {
        let (status, order) = app.order(source, reference).await;
        assert_eq!(status, 200);
        assert_eq!(order["state"], "needs_attention");
        assert_eq!(
            order["raw_body"],
            String::from_utf8_lossy(body).as_ref(),
            "the body is kept"
        );
        assert!(order["problem"].as_str().is_some());
    }
    // The same garbage again is the same record, not a new one.
    let (_, again) = app.webhook("generic", &b"<html>not json</html>"[..]).await;
    assert_eq!(again["orders"][0]["order_id"], references[0].1);
    assert_eq!(count_orders(&db).await, bodies.len() as i64);

    // Too large: refused, nothing stored.
    let (status, answer) = app.webhook("generic", vec![b'x'; 8192]).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(count_orders(&db).await, bodies.len() as i64);

    // The admin hears of the first at once; the rest come in the digest.
    let mails = app
        .wait_for_mails(1, |m| {
            m.contains("Subject: [allot] An order could not be processed")
        })
        .await;
    assert!(mails[0].contains("To: admin@shop.test"));
    assert!(mails[0].contains("not JSON"), "the problem is named");
    let alerts = jobs_of_kind(&db, "needs_attention_alert").await;
    assert!(alerts.len() <= 3, "batched, not one per body: {alerts:?}");
}

async fn an_order_without_a_sku_is_taken_up_again_when_redelivered(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "course-202", &keys_for("course-202", 1)).await;
    let body = json!({"bookings": {"0": {"id": 501, "customer": {"email": "eve@example.com"}}},
                      "appointment": {"serviceId": 99}})
    .to_string();
    let (_, answer) = app.webhook("amelia", body.clone()).await;
    assert_eq!(answer["status"], "needs_attention");
    let detail = answer["orders"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("service 99") && detail.contains("sku="),
        "{detail}"
    );
    let (_, order) = app.order("amelia", "501").await;
    assert_eq!(
        (order["state"].as_str(), order["email"].as_str()),
        (Some("needs_attention"), Some("eve@example.com"))
    );

    // The shop fixes the webhook URL; WordPress delivers again.
    let (_, answer) = app.webhook("amelia?sku=course-202", body.clone()).await;
    assert_eq!(answer["status"], "fulfilled", "{answer}");
    let (_, order) = app.order("amelia", "501").await;
    assert_eq!(order["state"], "fulfilled");
    assert_eq!(
        order["raw_body"],
        Value::Null,
        "kept only while it needs attention"
    );
    let states: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["needs_attention", "fulfilled"]);
    let (_, answer) = app.webhook("amelia?sku=course-202", body).await;
    assert_eq!(answer["status"], "duplicate");
}

async fn unpaid_orders_wait_for_payment(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "rqi_bls", &keys_for("rqi_bls", 2)).await;
    let order = |status: &str| {
        json!({"id": 900, "status": status, "billing": {"email": "fay@example.com"},
               "line_items": [{"sku": "rqi_bls"}]})
        .to_string()
    };
    let (status, answer) = app.webhook("woocommerce", order("pending")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")));
    assert!(
        answer["orders"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("pending")
    );
    assert!(assigned(&db).await.is_empty());
    let (_, answer) = app.webhook("woocommerce", order("processing")).await;
    assert_eq!(answer["status"], "fulfilled");
    assert_eq!(assigned(&db).await.len(), 1);
}

async fn several_bookings_make_several_orders(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &keys_for("course-101", 5)).await;
    let body = json!({"appointment": {"serviceId": 3, "bookings": {
        "0": {"id": 11, "customer": {"email": "a@example.com"}},
        "1": {"id": 12, "customer": {"email": "b@example.com"}},
        "2": {"id": 13, "customer": {"firstName": "no email"}},
    }}});
    let (status, answer) = app.webhook("amelia", body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["status"], "needs_attention",
        "the worst speaks for the delivery"
    );
    let statuses: Vec<&str> = answer["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["fulfilled", "fulfilled", "needs_attention"],
        "{answer}"
    );
    let keys = assigned(&db).await;
    assert_eq!(
        keys.iter()
            .map(|(_, e, o)| (e.as_str(), o.as_str()))
            .collect::<Vec<_>>(),
        [("a@example.com", "11"), ("b@example.com", "12")]
    );
}

/// NUL (PostgreSQL refuses it in text), values longer than their column
/// (MariaDB refuses them), invisible and bidirectional characters: each is
/// a 200 `needs_attention` with the reason and the body kept, never a 5xx,
/// and no key leaves the pool for it.
async fn fields_no_column_can_hold_are_set_aside_not_failed(backend: Backend) {
    let app = TestApp::shop(backend, |_| {}).await;
    let db = app.connect().await;
    seed_keys(&db, "course-101", &keys_for("course-101", 3)).await;
    let long = "C".repeat(300);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"order_id": "A\u{0}B", "email": "a@example.com"}),
            "order id",
        ),
        (
            json!({"order_id": "N-2", "email": "b@example.com", "coupon_code": "SPRING\u{0}"}),
            "coupon code",
        ),
        (
            json!({"order_id": "N-3", "email": "c@example.com", "coupon_code": long}),
            "coupon code",
        ),
        (
            json!({"order_id": "N-4", "email": "d\u{0}@example.com"}),
            "customer email",
        ),
        (
            json!({"order_id": "N-5\u{202E}", "email": "e@example.com"}),
            "order id",
        ),
        (
            json!({"order_id": "N-6", "email": "f@example.com", "sku": "course\u{200B}101"}),
            "SKU",
        ),
        (
            json!({"order_id": "x".repeat(256), "email": "g@example.com"}),
            "order id",
        ),
    ];
    for (body, field) in &cases {
        let body = body.to_string();
        // A SKU in the URL wins over the payload's, so the SKU case has none.
        let path = match *field {
            "SKU" => "generic",
            _ => "generic?sku=course-101",
        };
        let (status, answer) = app.webhook(path, body.clone()).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["status"], "needs_attention", "{body}: {answer}");
        let detail = answer["orders"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{field}: {detail}");
        let reference = answer["orders"][0]["order_id"].as_str().unwrap();
        let (status, order) = app.order("generic", reference).await;
        assert_eq!(status, 200, "{order}");
        assert_eq!(order["raw_body"], body, "the body is kept as sent");
    }
    let stock = keys::stock(&db).await.unwrap();
    assert_eq!(stock[0].available, 3, "no key was handed out: {stock:?}");
    // An unusable SKU in the payload does not matter when the URL names one.
    let body = json!({"order_id": "N-7", "email": "h@example.com", "sku": "course\u{200B}101"});
    let (_, answer) = app
        .webhook("generic?sku=course-101", body.to_string())
        .await;
    assert_eq!(answer["status"], "fulfilled", "{answer}");
    // Looking such an id up is a 404, not a database error.
    for id in ["A%00B", "N-5%E2%80%AE"] {
        let (status, body) = app.order("generic", id).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("order_not_found")),
            "{id}"
        );
    }
}

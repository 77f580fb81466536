//! The flash-sale coupon contract, route by route and status by status.

use serde_json::json;

use crate::{
    helpers::{Backend, TestApp, status_and_json},
    on_every_backend,
};

on_every_backend!(
    creating_a_coupon_answers_201_with_the_coupon,
    a_second_coupon_with_the_same_name_is_409,
    bad_create_bodies_are_400_with_a_reason,
    wrong_content_type_is_400,
    a_two_megabyte_body_is_413,
    non_ascii_names_round_trip,
    names_are_case_sensitive,
    claim_answers_every_contract_status,
    already_claimed_is_decided_before_stock,
    bad_claim_bodies_are_400,
    show_lists_claimers_in_claim_order,
    a_coupon_named_claim_can_be_shown,
    unknown_routes_and_methods_answer_json,
    names_that_look_alike_are_one_name,
);

async fn creating_a_coupon_answers_201_with_the_coupon(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = status_and_json(app.create_coupon("PROMO_SUPER", 100).await).await;
    assert_eq!(status, 201);
    assert_eq!(
        body,
        json!({"name": "PROMO_SUPER", "amount": 100, "remaining_amount": 100, "claimed_by": []})
    );
    let (status, body) = status_and_json(app.coupon("PROMO_SUPER").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"name": "PROMO_SUPER", "amount": 100, "remaining_amount": 100, "claimed_by": []})
    );
}

async fn a_second_coupon_with_the_same_name_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.create_coupon("PROMO", 5).await.status(), 201);
    let (status, body) = status_and_json(app.create_coupon("PROMO", 7).await).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "already_exists");
    // The first coupon is untouched.
    let (_, coupon) = status_and_json(app.coupon("PROMO").await).await;
    assert_eq!(coupon["amount"], 5);
}

async fn bad_create_bodies_are_400_with_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_name = "x".repeat(300);
    let cases = [
        (
            "malformed JSON",
            r#"{"name": "PROMO", "amount": 1"#.to_string(),
            "malformed_json",
        ),
        (
            "not JSON at all",
            "name=PROMO&amount=1".to_string(),
            "malformed_json",
        ),
        ("empty body", String::new(), "malformed_json"),
        ("a JSON array", "[]".to_string(), "invalid_request"),
        (
            "amount as string",
            r#"{"name": "P1", "amount": "5"}"#.to_string(),
            "invalid_request",
        ),
        (
            "amount as float",
            r#"{"name": "P2", "amount": 1.5}"#.to_string(),
            "invalid_request",
        ),
        (
            "amount too big",
            r#"{"name": "P3", "amount": 1e30}"#.to_string(),
            "invalid_request",
        ),
        (
            "name as number",
            r#"{"name": 42, "amount": 5}"#.to_string(),
            "invalid_request",
        ),
        (
            "name null",
            r#"{"name": null, "amount": 5}"#.to_string(),
            "invalid_request",
        ),
        (
            "missing amount",
            r#"{"name": "P4"}"#.to_string(),
            "invalid_request",
        ),
        (
            "missing name",
            r#"{"amount": 5}"#.to_string(),
            "invalid_request",
        ),
        (
            "empty name",
            r#"{"name": "", "amount": 5}"#.to_string(),
            "invalid_request",
        ),
        (
            "300-char name",
            format!(r#"{{"name": "{long_name}", "amount": 5}}"#),
            "invalid_request",
        ),
        (
            "amount 0",
            r#"{"name": "P5", "amount": 0}"#.to_string(),
            "invalid_request",
        ),
        (
            "negative amount",
            r#"{"name": "P6", "amount": -3}"#.to_string(),
            "invalid_request",
        ),
        (
            "NUL in name",
            r#"{"name": "P\u0000", "amount": 5}"#.to_string(),
            "invalid_request",
        ),
        (
            "padded name",
            r#"{"name": " P7 ", "amount": 5}"#.to_string(),
            "invalid_request",
        ),
    ];
    for (case, body, code) in cases {
        let response = app.post_raw("/api/coupons", body).await;
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 400, "{case}: {body}");
        assert_eq!(body["error"], code, "{case}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: no message in {body}"
        );
    }
    // Nothing was created by any of them.
    for name in ["P1", "P2", "P3", "P4", "P5", "P6", "P7", " P7 "] {
        assert_eq!(app.coupon(name).await.status(), 404, "{name}");
    }
    // The limits themselves are accepted.
    assert_eq!(app.create_coupon(&"x".repeat(255), 1).await.status(), 201);
    assert_eq!(app.create_coupon("ONE", 1).await.status(), 201);
}

async fn wrong_content_type_is_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .client
            .post(app.url("/api/coupons"))
            .body(r#"{"name": "PROMO", "amount": 5}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, body) = status_and_json(request.send().await.unwrap()).await;
        assert_eq!(status, 400, "{content_type:?}");
        assert_eq!(body["error"], "invalid_content_type");
    }
    assert_eq!(app.coupon("PROMO").await.status(), 404);
}

async fn a_two_megabyte_body_is_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = format!(
        r#"{{"name": "{}", "amount": 5}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    for path in ["/api/coupons", "/api/coupons/claim"] {
        let response = app.post_raw(path, huge.clone()).await;
        assert_eq!(response.headers()["connection"], "close", "{path}");
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 413, "{path}");
        assert_eq!(body["error"], "payload_too_large");
    }
    // The server is still serving.
    assert_eq!(app.create_coupon("AFTER", 1).await.status(), 201);
}

async fn non_ascii_names_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // 255 four-byte characters: the limit is in characters, on every backend.
    let emoji_name = "🎉".repeat(255);
    for name in ["Скидка-50", "café crème", "大促销", emoji_name.as_str()] {
        let (status, body) = status_and_json(app.create_coupon(name, 2).await).await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!(app.claim("user_ü", name).await.status(), 200, "{name}");
        let (status, body) = status_and_json(app.coupon(name).await).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(body["name"], name);
        assert_eq!(body["claimed_by"], json!(["user_ü"]));
    }
    assert_eq!(app.create_coupon(&"🎉".repeat(256), 2).await.status(), 400);
}

async fn names_are_case_sensitive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.create_coupon("promo", 1).await.status(), 201);
    assert_eq!(app.create_coupon("PROMO", 1).await.status(), 201);
    assert_eq!(app.claim("u1", "promo").await.status(), 200);
    assert_eq!(app.claim("u1", "PROMO").await.status(), 200);
    assert_eq!(app.claim("U1", "PROMO").await.status(), 409);
    let (_, upper) = status_and_json(app.coupon("PROMO").await).await;
    assert_eq!(upper["claimed_by"], json!(["u1"]));
}

async fn claim_answers_every_contract_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("PROMO_SUPER", 1).await;

    let (status, body) = status_and_json(app.claim("user_12345", "PROMO_SUPER").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "claimed");

    let (status, body) = status_and_json(app.claim("user_12345", "PROMO_SUPER").await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_claimed"))
    );

    let (status, body) = status_and_json(app.claim("user_67890", "PROMO_SUPER").await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("out_of_stock"))
    );

    let (status, body) = status_and_json(app.claim("user_67890", "NO_SUCH_COUPON").await).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let (_, coupon) = status_and_json(app.coupon("PROMO_SUPER").await).await;
    assert_eq!(coupon["remaining_amount"], 0);
    assert_eq!(coupon["claimed_by"], json!(["user_12345"]));
}

async fn already_claimed_is_decided_before_stock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("LAST_ONE", 1).await;
    assert_eq!(app.claim("early", "LAST_ONE").await.status(), 200);
    // Stock is now 0, but "early" must hear that they already have one.
    let (status, body) = status_and_json(app.claim("early", "LAST_ONE").await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_claimed"))
    );
}

async fn bad_claim_bodies_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("PROMO", 10).await;
    let long = "u".repeat(300);
    let cases = [
        r#"{"user_id": "u1", "coupon_name": "PROMO""#.to_string(),
        r#"{"user_id": "u1"}"#.to_string(),
        r#"{"coupon_name": "PROMO"}"#.to_string(),
        r#"{"user_id": 12345, "coupon_name": "PROMO"}"#.to_string(),
        r#"{"user_id": "u1", "coupon_name": ["PROMO"]}"#.to_string(),
        r#"{"user_id": "", "coupon_name": "PROMO"}"#.to_string(),
        r#"{"user_id": "u1", "coupon_name": ""}"#.to_string(),
        format!(r#"{{"user_id": "{long}", "coupon_name": "PROMO"}}"#),
        "null".to_string(),
    ];
    for body in cases {
        let response = app.post_raw("/api/coupons/claim", body.clone()).await;
        let (status, answer) = status_and_json(response).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, coupon) = status_and_json(app.coupon("PROMO").await).await;
    assert_eq!(
        coupon["remaining_amount"], 10,
        "a bad request consumed stock"
    );
}

async fn show_lists_claimers_in_claim_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_coupon("ORDERED", 10).await;
    let users = ["zoe", "adam", "mia", "bob"];
    for user in users {
        assert_eq!(app.claim(user, "ORDERED").await.status(), 200);
    }
    let (status, coupon) = status_and_json(app.coupon("ORDERED").await).await;
    assert_eq!(status, 200);
    assert_eq!(coupon["claimed_by"], json!(users));
    assert_eq!(coupon["remaining_amount"], 6);

    let (status, body) = status_and_json(app.coupon("UNKNOWN").await).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

async fn a_coupon_named_claim_can_be_shown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.coupon("claim").await.status(), 404);
    app.create_coupon("claim", 3).await;
    let (status, body) = status_and_json(app.coupon("claim").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "claim");
}

async fn unknown_routes_and_methods_answer_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = status_and_json(
        app.client
            .get(app.url("/api/nothing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = status_and_json(
        app.client
            .delete(app.url("/api/coupons"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

/// Invisible and direction-changing characters are refused; a name typed
/// with a combining accent is the same coupon as the precomposed one (NFC),
/// and so is the user who claims it.
async fn names_that_look_alike_are_one_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for sneaky in [
        "PROMO\u{200B}",
        "PRO\u{202E}MO",
        "\u{FEFF}PROMO",
        "PRO\u{2060}MO",
    ] {
        let (status, body) = status_and_json(app.create_coupon(sneaky, 5).await).await;
        assert_eq!(status, 400, "{sneaky:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("invisible"),
            "{body}"
        );
        let (status, _) = status_and_json(app.claim(sneaky, "PROMO").await).await;
        assert_eq!(status, 400, "user id {sneaky:?}");
    }
    assert_eq!(app.create_coupon("CAF\u{c9}", 5).await.status(), 201);
    let (status, body) = status_and_json(app.create_coupon("CAFE\u{301}", 5).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_exists")),
        "{body}"
    );
    assert_eq!(app.claim("Jos\u{e9}", "CAFE\u{301}").await.status(), 200);
    let (status, body) = status_and_json(app.claim("Jose\u{301}", "CAF\u{c9}").await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_claimed")),
        "{body}"
    );
    let (_, coupon) = status_and_json(app.coupon("CAFE\u{301}").await).await;
    assert_eq!(coupon["name"], "CAF\u{c9}");
    assert_eq!(coupon["claimed_by"], json!(["Jos\u{e9}"]));
}

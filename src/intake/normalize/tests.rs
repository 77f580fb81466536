//! Each source's payloads, from the fixtures and from hand-written edge cases.

use serde_json::json;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    // Copies of the shared sample payloads, kept with the tests.
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn one(source: Source, payload: Value) -> Order {
    let mut orders = normalize(source, payload.to_string().as_bytes())
        .unwrap()
        .orders;
    assert_eq!(orders.len(), 1, "{orders:?}");
    orders.remove(0)
}

#[test]
fn amelia_fixture_gives_the_booking() {
    let orders = normalize(Source::Amelia, &fixture("amelia-booking-added.json"))
        .unwrap()
        .orders;
    assert_eq!(
        orders,
        vec![Order {
            order_id: "1534".into(),
            email: EmailAddress::parse("ana@example.com").unwrap(),
            coupon_code: Some("SPRING10".into()),
            sku: None,
            service_id: Some("3".into()),
            hold: None,
        }]
    );
}

#[test]
fn amelia_with_several_bookings_gives_several_orders() {
    let payload = json!({"appointment": {"serviceId": 9, "bookings": {
        "0": {"id": 1, "customer": {"email": "a@example.com"}},
        "1": {"id": 2, "customer": {"email": " B@Example.COM "},
              "customFields": {"3": {"label": "Coupon code", "value": "VIP"}}},
    }}});
    let orders = normalize(Source::Amelia, payload.to_string().as_bytes())
        .unwrap()
        .orders;
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[1].email.as_str(), "B@example.com");
    assert_eq!(orders[1].coupon_code.as_deref(), Some("VIP"));
    assert_eq!(orders[0].service_id.as_deref(), Some("9"));
}

#[test]
fn woocommerce_fixture_gives_the_order() {
    let orders = normalize(
        Source::WooCommerce,
        &fixture("woocommerce-order-created.json"),
    )
    .unwrap()
    .orders;
    assert_eq!(
        orders,
        vec![Order {
            order_id: "4750".into(),
            email: EmailAddress::parse("ana@example.com").unwrap(),
            coupon_code: Some("promo10".into()),
            sku: Some("rqi_bls".into()),
            service_id: None,
            hold: None,
        }]
    );
}

#[test]
fn woocommerce_coupon_in_meta_data() {
    let order = one(
        Source::WooCommerce,
        json!({"id": 9, "billing": {"email": "x@example.com"}, "meta_data": [{"key": "_discount_code", "value": "META5"}]}),
    );
    assert_eq!(order.coupon_code.as_deref(), Some("META5"));
}

#[test]
fn bookly_bridge_with_custom_fields_and_json_in_strings() {
    let order = one(
        Source::Bookly,
        json!({"booking_id": 55, "details": "{\"customer_email\": \"Eve@Example.com\"}",
               "custom_fields": [{"id": 1, "label": "Discount code", "value": "BOOK20"}]}),
    );
    assert_eq!(order.order_id, "55");
    assert_eq!(order.email.as_str(), "Eve@example.com");
    assert_eq!(order.coupon_code.as_deref(), Some("BOOK20"));
}

#[test]
fn generic_prefers_an_explicit_order_id() {
    let order = one(
        Source::Generic,
        json!({"customer": {"id": 7, "email": "g@example.com"}, "order_id": "ORD-1", "sku": "course-1"}),
    );
    assert_eq!(order.order_id, "ORD-1");
    assert_eq!(order.sku.as_deref(), Some("course-1"));
}

#[test]
fn what_is_missing_is_said() {
    let err = normalize(Source::Generic, br#"{"order_id": 1}"#).unwrap_err();
    assert_eq!(err.0, vec!["no customer email found"]);
    let err = normalize(Source::Generic, br#"{"email": "not an address", "foo": 1}"#).unwrap_err();
    assert!(err.0.contains(&"no order id found".to_string()), "{err}");
    assert!(
        err.0
            .iter()
            .any(|p| p.contains("customer email") && p.contains("not a valid address")),
        "{err}"
    );
    assert!(
        normalize(Source::WooCommerce, b"webhook_id=12")
            .unwrap_err()
            .0[0]
            .starts_with("the body is not JSON")
    );
    assert!(normalize(Source::Generic, b"[1, 2]").is_err());
    let err = normalize(Source::Amelia, br#"{"bookings": {"0": {"id": 1}}}"#).unwrap_err();
    assert_eq!(err.0, vec!["booking 0: no customer email found"]);
}

#[test]
fn a_huge_unusable_value_is_quoted_in_part() {
    let huge = "x".repeat(60_000);
    let body = json!({"order_id": huge, "email": "a@example.com", "coupon_code": huge});
    let err = normalize(Source::Generic, body.to_string().as_bytes()).unwrap_err();
    let said = err.to_string();
    assert!(said.len() < 500, "{} bytes", said.len());
    assert!(said.contains("… (60000 characters) is unusable"), "{said}");
}

#[test]
fn a_broken_booking_among_good_ones_is_reported_not_dropped() {
    let payload = json!({"bookings": [
        {"id": 1, "customer": {"email": "a@example.com"}},
        {"id": 2, "customer": {"firstName": "No Email"}},
    ]});
    let normalized = normalize(Source::Amelia, payload.to_string().as_bytes()).unwrap();
    assert_eq!(normalized.orders.len(), 1);
    assert_eq!(
        normalized.problems,
        vec!["booking 1: no customer email found"]
    );
}

#[test]
fn unpaid_and_cancelled_orders_are_held() {
    let woo = |status: &str| {
        one(
            Source::WooCommerce,
            json!({"id": 5, "status": status, "billing": {"email": "a@example.com"}}),
        )
        .hold
    };
    assert_eq!(woo("processing"), None);
    assert_eq!(woo("completed"), None);
    assert!(woo("pending").unwrap().contains("pending"));
    assert!(woo("refunded").is_some());
    let amelia = one(
        Source::Amelia,
        json!({"bookings": {"0": {"id": 3, "status": "canceled", "customer": {"email": "a@example.com"}}}}),
    );
    assert!(amelia.hold.is_some());
}

#[test]
fn coupons_in_nested_objects_and_worded_labels_are_found() {
    let nested = one(
        Source::Bookly,
        json!({"booking_id": 1, "customer_email": "a@example.com",
               "coupon": {"id": 3, "code": "NEST-5"}}),
    );
    assert_eq!(nested.coupon_code.as_deref(), Some("NEST-5"));
    let labelled = one(
        Source::Bookly,
        json!({"booking_id": 2, "customer_email": "a@example.com",
               "custom_fields": [{"label": "Discount / coupon", "value": "SLASH"}]}),
    );
    assert_eq!(labelled.coupon_code.as_deref(), Some("SLASH"));
    let voucher = one(
        Source::Amelia,
        json!({"bookings": [{"id": 3, "customer": {"email": "a@example.com"},
               "customFields": {"1": {"label": "Your voucher:", "value": "V-1"}}}]}),
    );
    assert_eq!(voucher.coupon_code.as_deref(), Some("V-1"));
}

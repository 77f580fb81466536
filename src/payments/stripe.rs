//! Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "t.body" keyed with the endpoint secret>` (several `v1` while a secret
//! is being rolled; `v0` and unknown schemes ignored), checked within five
//! minutes of `t`; and the event types that matter to a key shop.
//! <https://docs.stripe.com/webhooks#verify-manually>

use std::{collections::BTreeMap, time::Duration};

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{Action, PaymentEvent};
use crate::{
    intake::normalize::{self, Source},
    keys::Sku,
    merchant::signing::Refused,
};

/// Stripe's own libraries refuse signatures older than this.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// Checks `header` (the `Stripe-Signature` value) for `body`. `Malformed`:
/// no header, or no `t=` or `v1=` in it.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => signatures.extend(hex(sig)),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refused::Malformed)?;
    if signatures.is_empty() {
        return Err(Refused::Malformed);
    }
    if now_secs.abs_diff(timestamp) > TOLERANCE.as_secs() {
        return Err(Refused::Stale);
    }
    let mac = || {
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    };
    // verify_slice compares in constant time.
    if signatures.iter().any(|sig| mac().verify_slice(sig).is_ok()) {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A string field, or the `id` of an expanded object in its place.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty())
}

/// Reads a verified event. `Err`: the body is not a Stripe event at all.
pub fn parse(body: &[u8], skus: &BTreeMap<String, String>) -> Result<PaymentEvent, String> {
    let event: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let event_id = text(event.get("id")).ok_or("the event has no id")?;
    let event_type = text(event.get("type")).ok_or("the event has no type")?;
    let object = event
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or("the event has no data.object")?;
    let mut parsed = PaymentEvent {
        provider: Source::Stripe,
        event_id: bounded(event_id),
        event_type: bounded(event_type.clone()),
        action: Action::Record(format!("{event_type} is not used by allot")),
        payment_ref: None,
        order_id: None,
        amount: None,
        currency: text(object.get("currency")),
    };
    match event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            parsed.order_id = text(object.get("id"));
            parsed.payment_ref = id_of(object.get("payment_intent"));
            parsed.amount = object.get("amount_total").and_then(Value::as_i64);
            let status = object.get("payment_status").and_then(Value::as_str);
            parsed.action = match status {
                Some("paid" | "no_payment_required") => session_order(object, skus),
                other => Action::Record(format!(
                    "checkout session not paid yet (payment_status {}); a key is sent on async_payment_succeeded",
                    other.unwrap_or("missing")
                )),
            };
        }
        "checkout.session.async_payment_failed" => {
            parsed.order_id = text(object.get("id"));
            parsed.payment_ref = id_of(object.get("payment_intent"));
            parsed.amount = object.get("amount_total").and_then(Value::as_i64);
            parsed.action = Action::Failed;
        }
        "payment_intent.payment_failed" => {
            parsed.payment_ref = text(object.get("id"));
            parsed.amount = object.get("amount").and_then(Value::as_i64);
            parsed.action = Action::Failed;
        }
        "charge.refunded" => {
            parsed.payment_ref = id_of(object.get("payment_intent"));
            parsed.amount = object.get("amount_refunded").and_then(Value::as_i64);
            let full = object.get("refunded").and_then(Value::as_bool) == Some(true);
            parsed.action = if full && parsed.payment_ref.is_some() {
                Action::Refunded
            } else if full {
                Action::Record(
                    "refund of a charge without a payment intent: no order to find".into(),
                )
            } else {
                Action::Record("partial refund: the key is kept".into())
            };
        }
        _ => {}
    }
    parsed.order_id = parsed.order_id.map(bounded);
    parsed.payment_ref = parsed.payment_ref.map(bounded);
    parsed.currency = parsed.currency.map(bounded);
    Ok(parsed)
}

/// Ids go into 255-character columns; Stripe's are far shorter, so a
/// longer one is cut rather than refused.
fn bounded(value: String) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect()
}

/// The order a paid Checkout Session is: its id, the buyer's email, the
/// coupon, and the SKU from `metadata.sku` or `ALLOT_STRIPE_SKUS`.
fn session_order(session: &Value, skus: &BTreeMap<String, String>) -> Action {
    let email = text(session.pointer("/customer_details/email"))
        .or_else(|| text(session.get("customer_email")));
    let coupon = session
        .get("discounts")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(|d| id_of(d.get("promotion_code")).or_else(|| id_of(d.get("coupon"))))
        .or_else(|| {
            let discount = session.pointer("/total_details/breakdown/discounts/0/discount")?;
            text(discount.pointer("/coupon/name")).or_else(|| text(discount.pointer("/coupon/id")))
        });
    let order =
        normalize::paid_order(text(session.get("id")), email, coupon).map_err(|e| e.to_string());
    let sku = sku_of(session, skus);
    Action::Paid { order, sku }
}

fn sku_of(session: &Value, skus: &BTreeMap<String, String>) -> Result<Sku, String> {
    if let Some(sku) = text(session.pointer("/metadata/sku")) {
        return Sku::parse(sku.trim()).map_err(|e| format!("metadata.sku is unusable: {e}"));
    }
    let items = session
        .pointer("/line_items/data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in &items {
        let price = item.get("price");
        let ids = [id_of(price), price.and_then(|p| id_of(p.get("product")))];
        for id in ids.into_iter().flatten() {
            if let Some(sku) = skus.get(&id) {
                return Sku::parse(sku).map_err(|e| e.to_string());
            }
        }
    }
    Err("no SKU: set metadata.sku on the Checkout Session, or map its price or product in ALLOT_STRIPE_SKUS (with line_items expanded)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={t},v1={sig}")
    }

    #[test]
    fn signatures_are_checked_with_tolerance_and_rotation() {
        let body = br#"{"id":"evt_1"}"#;
        let good = signed("whsec_a", 1000, body);
        assert_eq!(verify("whsec_a", Some(&good), body, 1100), Ok(()));
        assert_eq!(
            verify("whsec_b", Some(&good), body, 1100),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify("whsec_a", Some(&good), body, 1400),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify("whsec_a", Some(&good), b"{}", 1000),
            Err(Refused::Mismatch)
        );
        // During a roll Stripe signs with both secrets.
        let old = signed("whsec_old", 1000, body);
        let both = format!("{good},v1={},v0=ignored", old.split("v1=").nth(1).unwrap());
        assert_eq!(verify("whsec_old", Some(&both), body, 1000), Ok(()));
        assert_eq!(
            verify("whsec_a", Some("t=1000"), body, 1000),
            Err(Refused::Malformed)
        );
        assert_eq!(
            verify("whsec_a", Some("v1=00"), body, 1000),
            Err(Refused::Malformed)
        );
        assert_eq!(verify("whsec_a", None, body, 1000), Err(Refused::Malformed));
    }

    #[test]
    fn a_paid_session_is_an_order() {
        let body = serde_json::json!({
            "id": "evt_1", "type": "checkout.session.completed",
            "data": {"object": {
                "id": "cs_test_1", "payment_status": "paid", "payment_intent": "pi_1",
                "amount_total": 4900, "currency": "eur",
                "customer_details": {"email": " Ana@Example.com "},
                "discounts": [{"coupon": "SUMMER", "promotion_code": null}],
                "line_items": {"data": [{"price": {"id": "price_9", "product": "prod_9"}}]}
            }}
        });
        let skus = BTreeMap::from([("prod_9".to_string(), "course-101".to_string())]);
        let event = parse(body.to_string().as_bytes(), &skus).unwrap();
        assert_eq!(event.payment_ref.as_deref(), Some("pi_1"));
        let Action::Paid { order, sku } = event.action else {
            panic!("not paid")
        };
        let order = order.unwrap();
        assert_eq!(order.order_id, "cs_test_1");
        assert_eq!(order.email.as_str(), "Ana@example.com");
        assert_eq!(order.coupon_code.as_deref(), Some("SUMMER"));
        assert_eq!(sku.unwrap().as_str(), "course-101");
    }

    #[test]
    fn refunds_and_unknown_types_are_read() {
        let refund = serde_json::json!({"id": "evt_2", "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "payment_intent": "pi_1", "refunded": true}}});
        let event = parse(refund.to_string().as_bytes(), &BTreeMap::new()).unwrap();
        assert!(matches!(event.action, Action::Refunded));
        let partial = serde_json::json!({"id": "evt_3", "type": "charge.refunded",
            "data": {"object": {"payment_intent": "pi_1", "refunded": false}}});
        let event = parse(partial.to_string().as_bytes(), &BTreeMap::new()).unwrap();
        assert!(matches!(event.action, Action::Record(_)));
        let other =
            serde_json::json!({"id": "evt_4", "type": "customer.created", "data": {"object": {}}});
        let event = parse(other.to_string().as_bytes(), &BTreeMap::new()).unwrap();
        assert!(matches!(event.action, Action::Record(_)));
        assert!(parse(b"[]", &BTreeMap::new()).is_err());
    }
}

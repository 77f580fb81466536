//! Payment events from any provider (or a shop's own backend), signed per
//! Standard Webhooks with `ALLOT_PAYMENT_WEBHOOK_SECRET`:
//!
//! ```json
//! {"id": "evt_1001", "type": "payment.succeeded",
//!  "data": {"reference": "order-1001", "amount": 4900, "currency": "EUR",
//!           "email": "ana@example.com", "sku": "course-101",
//!           "coupon_code": "SUMMER"}}
//! ```
//!
//! `type` is `payment.succeeded` (fulfil order `reference`: `email` and
//! `sku` required), `payment.failed` or `payment.refunded` (revoke its
//! key); anything else is logged. `id` makes a repeat a duplicate (the
//! `webhook-id` header stands in when it is missing).

use serde_json::Value;

use super::{Action, PaymentEvent};
use crate::{
    intake::normalize::{self, Source},
    keys::Sku,
    text::BoundedText,
};

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a verified event; `webhook_id` is the signed message id.
/// `Err`: not an event of this shape.
pub(super) fn parse(body: &[u8], webhook_id: &str) -> Result<PaymentEvent, String> {
    let event: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !event.is_object() {
        return Err("the body must be a JSON object with id, type and data".into());
    }
    let event_id = text(event.get("id")).unwrap_or_else(|| webhook_id.to_string());
    let event_id = BoundedText::identifier("id", &event_id).map_err(|e| e.to_string())?;
    let event_type = text(event.get("type")).ok_or("the event has no type")?;
    let event_type = BoundedText::identifier("type", &event_type).map_err(|e| e.to_string())?;
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    let reference = text(data.get("reference"))
        .map(|r| BoundedText::identifier("data.reference", &r).map(|r| r.as_str().to_string()))
        .transpose()
        .map_err(|e| e.to_string())?;
    let amount = match data.get("amount") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .ok_or("data.amount must be an integer in minor units (cents)")?,
        ),
    };
    let currency = text(data.get("currency"))
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| c.len() <= 16 && c.chars().all(|c| c.is_ascii_alphabetic()));
    let needs_reference = || -> Result<(), String> {
        if reference.is_none() {
            return Err(format!("{} needs data.reference", event_type.as_str()));
        }
        Ok(())
    };
    let action = match event_type.as_str() {
        "payment.succeeded" => {
            needs_reference()?;
            let order = normalize::paid_order(
                reference.clone(),
                text(data.get("email")),
                text(data.get("coupon_code")),
            )
            .map_err(|e| e.to_string());
            let sku = match text(data.get("sku")) {
                Some(sku) => Sku::parse(&sku).map_err(|e| format!("data.sku is unusable: {e}")),
                None => Err("no SKU: data.sku is required".to_string()),
            };
            Action::Paid { order, sku }
        }
        "payment.failed" => {
            needs_reference()?;
            Action::Failed
        }
        "payment.refunded" => {
            needs_reference()?;
            Action::Refunded
        }
        other => Action::Record(format!("{other} is not used by allot")),
    };
    Ok(PaymentEvent {
        provider: Source::Payments,
        event_id: event_id.as_str().to_string(),
        event_type: event_type.as_str().to_string(),
        action,
        payment_ref: reference.clone(),
        order_id: reference,
        amount,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape() {
        let body = br#"{"id": "evt_1", "type": "payment.succeeded",
            "data": {"reference": "order-1", "amount": 4900, "currency": "eur",
                     "email": "ana@example.com", "sku": "course-101"}}"#;
        let event = parse(body, "msg_1").unwrap();
        assert_eq!(event.event_id, "evt_1");
        assert_eq!(event.currency.as_deref(), Some("EUR"));
        let Action::Paid { order, sku } = event.action else {
            panic!("not paid")
        };
        assert_eq!(order.unwrap().order_id, "order-1");
        assert_eq!(sku.unwrap().as_str(), "course-101");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(parse(br#"{"type": "payment.refunded", "data": {}}"#, "m").is_err());
        assert!(
            parse(
                br#"{"type": "payment.succeeded", "data": {"reference": "r", "amount": 1.5}}"#,
                "m"
            )
            .is_err()
        );
        assert!(parse(b"[1]", "m").is_err());
        let unknown = parse(br#"{"type": "payout.paid"}"#, "msg_9").unwrap();
        assert_eq!(unknown.event_id, "msg_9");
        assert!(matches!(unknown.action, Action::Record(_)));
        let no_email = parse(
            br#"{"type": "payment.succeeded", "data": {"reference": "r", "sku": "s"}}"#,
            "m",
        )
        .unwrap();
        assert!(matches!(
            no_email.action,
            Action::Paid { order: Err(_), .. }
        ));
    }
}

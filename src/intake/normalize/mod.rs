//! Payload normalisation: whatever shape a plugin sends, find the customer
//! email, the order id, the coupon code and the SKU, or say clearly what
//! could not be found.
//!
//! Real payloads are messy: Amelia sends PHP lists as objects keyed "0",
//! "1", … (`JSON_FORCE_OBJECT`), custom fields are found by their label,
//! some values are JSON encoded inside strings, WooCommerce spreads an order
//! over `billing`, `coupon_lines`, `line_items` and `meta_data`.
//!
//! - this file: each source's shape, and the input boundary every field
//!   passes before it leaves as an [`Order`];
//! - `search`: finding a field wherever it hides.

mod search;

use serde_json::Value;

use crate::text::{BoundedText, EmailAddress, Invalid, excerpt};
use search::{as_list, custom_field, find, find_preferring, meta_data, scalar};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Amelia,
    Bookly,
    WooCommerce,
    Generic,
    /// Stripe Checkout sessions (`POST /v1/webhooks/stripe`); not normalised here.
    Stripe,
    /// Any provider's payment events (`POST /v1/webhooks/payments`); not normalised here.
    Payments,
}

impl Source {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "amelia" => Some(Self::Amelia),
            "bookly" => Some(Self::Bookly),
            "woocommerce" => Some(Self::WooCommerce),
            "generic" => Some(Self::Generic),
            "stripe" => Some(Self::Stripe),
            "payments" => Some(Self::Payments),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amelia => "amelia",
            Self::Bookly => "bookly",
            Self::WooCommerce => "woocommerce",
            Self::Generic => "generic",
            Self::Stripe => "stripe",
            Self::Payments => "payments",
        }
    }

    /// A shop plugin whose payloads [`normalize`] reads (the payment
    /// sources have routes and parsers of their own).
    pub fn is_shop(self) -> bool {
        !matches!(self, Self::Stripe | Self::Payments)
    }
}

/// One order, as every source reduces to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    /// Trimmed, lower-cased, validated.
    pub email: EmailAddress,
    pub coupon_code: Option<String>,
    /// The SKU the payload names, if any (the URL and settings may supply one).
    pub sku: Option<String>,
    /// Amelia's service id, for a service → SKU mapping in settings.
    pub service_id: Option<String>,
    /// Why the order must not be fulfilled (yet): the payload says it is
    /// unpaid, cancelled or refunded. A later delivery may fulfil it.
    pub hold: Option<String>,
}

/// What a payload held: its orders, and what could not be read in the
/// parts that gave none (one broken booking among several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub orders: Vec<Order>,
    pub problems: Vec<String>,
}

/// Why a payload gave no orders: every problem, in words for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Unparseable(pub Vec<String>);

/// Keys under which a coupon code hides, and labels of custom fields that
/// hold one (compared case-insensitively, ignoring spaces, `_` and `-`).
const COUPON_NAMES: &[&str] = &[
    "coupon",
    "couponcode",
    "discountcode",
    "promocode",
    "voucher",
    "vouchercode",
];
const EMAIL_NAMES: &[&str] = &[
    "email",
    "customeremail",
    "billingemail",
    "emailaddress",
    "useremail",
];
const ORDER_ID_NAMES: &[&str] = &[
    "orderid",
    "bookingid",
    "appointmentid",
    "id",
    "number",
    "ordernumber",
];
const SKU_NAMES: &[&str] = &["sku", "productsku"];

pub fn normalize(source: Source, body: &[u8]) -> Result<Normalized, Unparseable> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Unparseable(vec!["the body is not UTF-8 text".into()]))?;
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|e| Unparseable(vec![format!("the body is not JSON: {e}")]))?;
    if !value.is_object() {
        return Err(Unparseable(vec![
            "the body is JSON but not an object".into(),
        ]));
    }
    let whole = |order: Order| Normalized {
        orders: vec![order],
        problems: Vec::new(),
    };
    match source {
        Source::Amelia => amelia(&value),
        Source::WooCommerce => woocommerce(&value).map(whole),
        Source::Bookly | Source::Generic => generic(&value).map(whole),
        Source::Stripe | Source::Payments => Err(Unparseable(vec![format!(
            "{} events are read by the payments intake",
            source.as_str()
        )])),
    }
}

/// Amelia booking states that mean "do not hand out a key".
const AMELIA_HOLD: &[&str] = &["canceled", "cancelled", "rejected", "no-show"];
/// WooCommerce order states before payment or after a refund; `processing`
/// and `completed` are paid.
const WOOCOMMERCE_HOLD: &[&str] = &[
    "pending",
    "on-hold",
    "failed",
    "cancelled",
    "refunded",
    "checkout-draft",
    "trash",
];

fn hold_for(status: Option<&Value>, unpaid: &[&str]) -> Option<String> {
    let status = status.and_then(Value::as_str)?.trim().to_lowercase();
    unpaid
        .contains(&status.as_str())
        .then(|| format!("the order's status is {status:?}"))
}

/// Amelia: one order per booking of `bookings` (or `appointment.bookings`).
fn amelia(payload: &Value) -> Result<Normalized, Unparseable> {
    let bookings = payload
        .get("bookings")
        .or_else(|| payload.pointer("/appointment/bookings"))
        .map(as_list)
        .unwrap_or_default();
    if bookings.is_empty() {
        // Not the usual shape: search the whole payload as one order.
        return generic(payload).map(|order| Normalized {
            orders: vec![order],
            problems: Vec::new(),
        });
    }
    let service_id = payload
        .pointer("/appointment/serviceId")
        .or_else(|| payload.get("serviceId"))
        .and_then(scalar);
    let mut orders = Vec::new();
    let mut problems = Vec::new();
    for (n, booking) in bookings.iter().enumerate() {
        let email = booking
            .pointer("/customer/email")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| find(booking, EMAIL_NAMES));
        let order_id = booking.get("id").and_then(scalar);
        let coupon = booking
            .pointer("/coupon/code")
            .and_then(scalar)
            .or_else(|| custom_field(booking, COUPON_NAMES))
            .or_else(|| find(booking, COUPON_NAMES));
        match build(
            order_id,
            email,
            coupon,
            find(booking, SKU_NAMES),
            service_id.clone(),
        ) {
            Ok(order) => orders.push(Order {
                hold: hold_for(booking.get("status"), AMELIA_HOLD),
                ..order
            }),
            Err(Unparseable(why)) => {
                problems.extend(why.into_iter().map(|w| format!("booking {n}: {w}")))
            }
        }
    }
    if orders.is_empty() {
        return Err(Unparseable(problems));
    }
    Ok(Normalized { orders, problems })
}

/// WooCommerce order webhooks (`order.created`, `order.updated`).
fn woocommerce(order: &Value) -> Result<Order, Unparseable> {
    let email = order
        .pointer("/billing/email")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| find(order, EMAIL_NAMES));
    let order_id = order
        .get("id")
        .and_then(scalar)
        .or_else(|| order.get("number").and_then(scalar));
    let coupon = order
        .get("coupon_lines")
        .map(as_list)
        .unwrap_or_default()
        .iter()
        .find_map(|line| line.get("code").and_then(scalar))
        .or_else(|| meta_data(order, COUPON_NAMES))
        .or_else(|| find(order, COUPON_NAMES));
    let sku = order
        .get("line_items")
        .map(as_list)
        .unwrap_or_default()
        .iter()
        .find_map(|item| item.get("sku").and_then(scalar));
    let hold = hold_for(order.get("status"), WOOCOMMERCE_HOLD);
    let order = build(order_id, email, coupon, sku, None)?;
    Ok(Order { hold, ..order })
}

/// Bookly bridges and anything else: look everywhere, by name and by label.
fn generic(payload: &Value) -> Result<Order, Unparseable> {
    let email = find(payload, EMAIL_NAMES);
    let order_id = find_preferring(payload, ORDER_ID_NAMES);
    let coupon = custom_field(payload, COUPON_NAMES).or_else(|| find(payload, COUPON_NAMES));
    build(order_id, email, coupon, find(payload, SKU_NAMES), None)
}

/// An order from a payment provider's fields, through the same input
/// boundary as every shop's (the provider's intake finds the SKU).
pub fn paid_order(
    order_id: Option<String>,
    email: Option<String>,
    coupon: Option<String>,
) -> Result<Order, Unparseable> {
    build(order_id, email, coupon, None, None)
}

fn build(
    order_id: Option<String>,
    email: Option<String>,
    coupon: Option<String>,
    sku: Option<String>,
    service_id: Option<String>,
) -> Result<Order, Unparseable> {
    let mut problems = Vec::new();
    let identifier = |field| move |v: &str| BoundedText::identifier(field, v);
    let order_id = checked(&mut problems, order_id, "order id", identifier("order id"));
    let coupon_code = checked(
        &mut problems,
        coupon,
        "coupon code",
        identifier("coupon code"),
    );
    // The payload's SKU is checked when the order is placed: a SKU in the
    // webhook URL wins over it, and then it does not matter.
    let sku = sku.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let email_given = email.as_deref().is_some_and(|e| !e.trim().is_empty());
    let email = checked(&mut problems, email, "customer email", EmailAddress::parse);
    if order_id.is_none() && !problems.iter().any(|p| p.contains("order id")) {
        problems.push("no order id found".to_string());
    }
    if !email_given {
        problems.push("no customer email found".to_string());
    }
    match (order_id, email) {
        (Some(order_id), Some(email)) if problems.is_empty() => Ok(Order {
            order_id: order_id.as_str().to_string(),
            email,
            coupon_code: coupon_code.map(|c| c.as_str().to_string()),
            sku,
            service_id,
            hold: None,
        }),
        _ => Err(Unparseable(problems)),
    }
}

/// The input boundary for one field: trimmed, absent if empty, else parsed;
/// what fails is named in `problems`, and the order is then set aside with
/// its body rather than reaching a bounded column.
fn checked<T>(
    problems: &mut Vec<String>,
    value: Option<String>,
    what: &str,
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Option<T> {
    let value = value?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match parse(value) {
        Ok(parsed) => Some(parsed),
        Err(invalid) => {
            // The body is kept whole: the problem quotes enough to find
            // the value in it, not a 60,000-character order id.
            problems.push(format!(
                "the {what} {} is unusable: {}",
                excerpt(value, 80),
                invalid.problem
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests;

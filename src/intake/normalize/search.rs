//! Finding a field in a payload of unknown shape: by key name at any depth,
//! by a custom field's label, in WooCommerce `meta_data`, inside JSON
//! encoded in a string, in PHP lists sent as objects.

use serde_json::{Map, Value};

use super::COUPON_NAMES;

/// A PHP list as JSON: an array, or an object keyed "0", "1", … in order.
pub(super) fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) if !map.is_empty() && map.keys().all(|k| k.parse::<u64>().is_ok()) => {
            let mut entries: Vec<(u64, &Value)> = map
                .iter()
                .map(|(k, v)| (k.parse().unwrap_or(0), v))
                .collect();
            entries.sort_by_key(|(k, _)| *k);
            entries.into_iter().map(|(_, v)| v).collect()
        }
        _ => Vec::new(),
    }
}

/// Strings and numbers as text; anything else is not a usable value.
pub(super) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// "Coupon Code", "coupon_code", "coupon-code" and "Coupon code:" are one
/// name: letters and digits only, lower case.
fn canonical(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Words that make a custom field's label (written by a person: "Discount /
/// coupon", "Your voucher") name a coupon code wherever they stand in it.
const COUPON_WORDS: &[&str] = &["coupon", "voucher", "promocode", "discountcode"];

/// A scalar, or the `code` (else `name`) of an object: bridges send a
/// coupon as `{"coupon": {"id": 3, "code": "SPRING"}}`.
fn scalar_or_code(value: &Value) -> Option<String> {
    scalar(value).or_else(|| {
        let object = value.as_object()?;
        ["code", "name"]
            .iter()
            .find_map(|key| object.get(*key).and_then(scalar))
    })
}

/// The first value, depth first, under a key named like one of `names`;
/// strings holding JSON are searched too.
pub(super) fn find(value: &Value, names: &[&str]) -> Option<String> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                // Only coupons come as objects; an `id` object is no id.
                let found = match names == COUPON_NAMES {
                    true => scalar_or_code(child),
                    false => scalar(child),
                };
                if names.contains(&canonical(key).as_str())
                    && let Some(found) = found
                {
                    return Some(found);
                }
            }
            map.values().find_map(|child| find(child, names))
        }
        Value::Array(items) => items.iter().find_map(|child| find(child, names)),
        Value::String(s) => embedded_json(s).and_then(|inner| find(&inner, names)),
        _ => None,
    }
}

/// Like [`find`], but tries the names in order of preference across the
/// whole payload (an `order_id` anywhere beats a nested `id`).
pub(super) fn find_preferring(value: &Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| find(value, &[name]))
}

fn embedded_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    serde_json::from_str(trimmed).ok()
}

/// A custom field (`{label|name|id, value}` in a list anywhere under keys
/// like `customFields` / `custom_fields`) whose label is one of `names`.
pub(super) fn custom_field(value: &Value, names: &[&str]) -> Option<String> {
    let map: &Map<String, Value> = match value {
        Value::Object(map) => map,
        Value::Array(items) => return items.iter().find_map(|v| custom_field(v, names)),
        Value::String(s) => return embedded_json(s).and_then(|v| custom_field(&v, names)),
        _ => return None,
    };
    for (key, child) in map {
        if canonical(key) == "customfields" {
            for field in as_list(child) {
                let label = ["label", "name", "id", "key"]
                    .iter()
                    .find_map(|k| field.get(*k).and_then(scalar));
                if label.is_some_and(|l| label_names(&l, names))
                    && let Some(v) = field.get("value").and_then(scalar)
                {
                    return Some(v);
                }
            }
        }
    }
    map.values().find_map(|child| custom_field(child, names))
}

/// Whether a custom field's label names one of `names`; coupon labels also
/// by any of [`COUPON_WORDS`] inside them.
fn label_names(label: &str, names: &[&str]) -> bool {
    let label = canonical(label);
    names.contains(&label.as_str())
        || (names == COUPON_NAMES && COUPON_WORDS.iter().any(|word| label.contains(word)))
}

/// WooCommerce `meta_data`: `[{key, value}]` at the order or its lines.
pub(super) fn meta_data(order: &Value, names: &[&str]) -> Option<String> {
    order
        .get("meta_data")
        .map(as_list)
        .unwrap_or_default()
        .iter()
        .find_map(|entry| {
            let key = entry.get("key").and_then(Value::as_str)?;
            let key = canonical(key.trim_start_matches('_'));
            names
                .contains(&key.as_str())
                .then(|| entry.get("value").and_then(scalar))
                .flatten()
        })
}

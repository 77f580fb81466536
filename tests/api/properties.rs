//! Properties over generated input: whatever bytes a shop sends, the
//! normaliser neither panics nor lets through a field that would fail the
//! input boundary; whatever a key file holds, every line is accounted for
//! once and only valid keys reach the pool. CI runs a few hundred cases;
//! `PROPTEST_CASES=…` runs more (see docs/reliability.md).

use allot::{
    intake::normalize::{Source, normalize},
    keys::{self, LicenseKey, Sku},
    text::{BoundedText, EmailAddress},
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::helpers::{Backend, World};

const SOURCES: [Source; 4] = [
    Source::Amelia,
    Source::Bookly,
    Source::WooCommerce,
    Source::Generic,
];

fn fixtures() -> Vec<Vec<u8>> {
    [
        "amelia-booking-added.json",
        "woocommerce-order-created.json",
    ]
    .iter()
    .map(|name| {
        let path = format!(
            "{}/tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    })
    .collect()
}

/// Strings that have hurt before: NUL, bidi overrides, zero-width spaces,
/// combining marks, surrogate-free oddities, very long runs, whitespace.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9@._ -]{0,40}",
        Just("\u{0}".to_string()),
        Just("A\u{202E}B".to_string()),
        Just("\u{200B}".to_string()),
        Just("e\u{301}".to_string()),
        Just(" padded ".to_string()),
        Just("x".repeat(300)),
        Just("Ana@Example.COM".to_string()),
        Just("not an address".to_string()),
    ]
}

/// JSON shaped like the payloads plugins send, with hostile leaves.
fn payload() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        nasty_string().prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    let keys = prop_oneof![
        Just("order_id".to_string()),
        Just("id".to_string()),
        Just("email".to_string()),
        Just("customer_email".to_string()),
        Just("coupon".to_string()),
        Just("coupon_code".to_string()),
        Just("code".to_string()),
        Just("sku".to_string()),
        Just("label".to_string()),
        Just("value".to_string()),
        Just("bookings".to_string()),
        Just("customFields".to_string()),
        Just("billing".to_string()),
        Just("line_items".to_string()),
        Just("meta_data".to_string()),
        Just("status".to_string()),
        Just("0".to_string()),
        nasty_string(),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An order in each plugin's shape whose every field is hostile, so that
/// the boundary is reached on most cases rather than by luck.
fn plausible_order() -> impl Strategy<Value = (Source, Value)> {
    let email = prop_oneof![Just("Ana@Example.COM".to_string()), nasty_string()];
    (
        0..3usize,
        nasty_string(),
        email,
        nasty_string(),
        nasty_string(),
    )
        .prop_map(|(shape, id, email, coupon, sku)| match shape {
            0 => (
                Source::Generic,
                json!({"order_id": id, "email": email, "coupon_code": coupon, "sku": sku}),
            ),
            1 => (
                Source::Amelia,
                json!({"bookings": {"0": {"id": id, "customer": {"email": email},
                       "customFields": {"1": {"label": "Coupon", "value": coupon}}}}}),
            ),
            _ => (
                Source::WooCommerce,
                json!({"id": id, "status": "completed", "billing": {"email": email},
                       "coupon_lines": [{"code": coupon}], "line_items": [{"sku": sku}]}),
            ),
        })
}

/// A real payload, cut, flipped or spliced.
fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
    (
        0..2usize,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(which, flips, cut, truncate)| {
            let mut body = fixtures()[which].clone();
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            if truncate {
                body.truncate(cut.index(body.len() + 1));
            }
            body
        })
}

/// What the normaliser returns must pass the boundary as it is.
fn check(source: Source, body: &[u8]) {
    let Ok(normalized) = normalize(source, body) else {
        return;
    };
    for order in normalized.orders {
        let id = BoundedText::identifier("order id", &order.order_id).unwrap();
        assert_eq!(id.as_str(), order.order_id, "stored as normalised");
        EmailAddress::parse(order.email.as_str()).unwrap();
        if let Some(value) = &order.coupon_code {
            let checked = BoundedText::identifier("field", value).unwrap();
            assert_eq!(checked.as_str(), value);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_normalise_without_panicking(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for source in SOURCES {
            check(source, &body);
        }
    }

    #[test]
    fn payload_shaped_json_passes_the_boundary_or_is_refused(value in payload()) {
        let body = value.to_string();
        for source in SOURCES {
            check(source, body.as_bytes());
        }
    }

    #[test]
    fn hostile_fields_in_every_shape_pass_the_boundary_or_are_refused(
        (source, value) in plausible_order()
    ) {
        check(source, value.to_string().as_bytes());
    }

    #[test]
    fn mutated_real_payloads_pass_the_boundary_or_are_refused(body in mutated_fixture()) {
        for source in SOURCES {
            check(source, &body);
        }
    }
}

/// Lines of a key file: keys, blanks, spaces, duplicates, commas, quotes.
fn key_file() -> impl Strategy<Value = (bool, Vec<String>)> {
    let line = prop_oneof![
        "K-[A-Z0-9]{1,6}",
        " K-[A-Z0-9]{1,3} ",
        Just(String::new()),
        Just("   ".to_string()),
        Just("K-DUP".to_string()),
        Just("\"K,Q\"".to_string()),
        Just("K\u{0}NUL".to_string()),
        Just("K\u{200B}ZW".to_string()),
        Just("K".repeat(300)),
        any::<String>().prop_map(|s| s.replace(['\n', '\r'], "")),
    ];
    (any::<bool>(), prop::collection::vec(line, 0..40))
}

#[test]
fn every_line_of_a_key_file_is_accounted_for_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let world = runtime.block_on(World::new(Backend::Sqlite, |_| {}));
    let sku = Sku::parse("prop").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(&key_file(), |(with_header, lines)| {
            let path = dir.path().join("keys.txt");
            let mut text = String::new();
            if with_header {
                text.push_str("license_key\n");
            }
            text.push_str(&lines.join("\n"));
            std::fs::write(&path, &text).unwrap();
            let report = runtime.block_on(keys::import::import_file(
                &world.db,
                &path,
                &sku,
                &indicatif::ProgressBar::hidden(),
            ));
            let Ok(report) = report else {
                // Refused whole (a line that is not UTF-8 text): nothing is
                // half imported.
                return Ok(());
            };
            let accounted = report.imported as usize
                + report.blank.len()
                + report.invalid.len()
                + report.duplicate_in_file.len()
                + report.already_in_pool.len();
            let data_lines = text.lines().count() - usize::from(with_header);
            prop_assert_eq!(accounted, data_lines, "{:?}", report);
            Ok(())
        })
        .unwrap();
    // Only keys that pass the boundary reached the pool.
    let stored: Vec<String> = runtime.block_on(async {
        let allot::db::Db::Sqlite { reader, .. } = &world.db else {
            unreachable!()
        };
        sqlx::query_scalar("select license_key from license_keys")
            .fetch_all(reader)
            .await
            .unwrap()
    });
    for key in stored {
        assert!(LicenseKey::parse(&key).is_ok(), "{key:?}");
    }
}

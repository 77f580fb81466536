//! Any bytes, as every source: normalising never panics, and every order it
//! returns passes the input boundary exactly as it is.

#![no_main]

use allot::{
    intake::normalize::{Source, normalize},
    text::{BoundedText, EmailAddress},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for source in [
        Source::Amelia,
        Source::Bookly,
        Source::WooCommerce,
        Source::Generic,
    ] {
        let Ok(normalized) = normalize(source, body) else {
            continue;
        };
        for order in normalized.orders {
            let id = BoundedText::identifier("order id", &order.order_id).expect("order id");
            assert_eq!(id.as_str(), order.order_id);
            EmailAddress::parse(order.email.as_str()).expect("email");
            if let Some(value) = &order.coupon_code {
                let checked = BoundedText::identifier("field", value).expect("field");
                assert_eq!(checked.as_str(), value);
            }
        }
    }
});

//! What placing an order writes in words, worded once: its history entry
//! and its key email job.
//!
//! Rust fills these templates with [`fill`]; PostgreSQL's
//! `allot_place_orders` (`batch/place_orders.pg.sql`) receives the same
//! templates in its `words` parameter ([`words_for_postgres`]) and fills
//! them with `format()`. Each `%s` takes the next argument, in both.

use std::fmt::Display;

use crate::{intake::normalize::Source, jobs::Priority};

/// How an order came in: its source.
pub const RECEIVED: &str = "received from %s";
/// How it came in; key id, SKU; the email job's id (`-` when none).
pub const FULFILLED: &str = "%s; key #%s of %s assigned, email to the buyer queued (job %s)";
/// How it came in; SKU. The first order of a sell-out.
pub const SOLD_OUT: &str = "%s; %s is out of stock, waiting for keys";
/// How it came in; SKU. Orders after the first of a sell-out.
pub const QUEUED_BEHIND: &str = "%s; queued behind earlier orders waiting for %s";

/// A key email job as `orders::notices::key_email` makes it and
/// PostgreSQL's `allot_place_orders` writes it from these templates (a
/// test checks that they word the job exactly as the Rust does).
pub struct KeyEmailJob {
    pub kind: &'static str,
    /// The key's id, then the order's: the fields in serde's order.
    pub payload: &'static str,
    /// The order's id, then the key's.
    pub dedupe_key: &'static str,
    pub priority: Priority,
}

pub const KEY_EMAIL_JOB: KeyEmailJob = KeyEmailJob {
    kind: "key_email",
    payload: r#"{"key":%s,"order":%s}"#,
    dedupe_key: "key_email:%s:%s",
    priority: Priority::Normal,
};

/// `template` with each `%s` replaced by the next of `args`, as
/// PostgreSQL's `format()` does. An argument's own `%` is not read.
pub fn fill(template: &str, args: &[&dyn Display]) -> String {
    let mut pieces = template.split("%s");
    let mut out = String::from(pieces.next().unwrap_or_default());
    let mut args = args.iter();
    for piece in pieces {
        if let Some(arg) = args.next() {
            out.push_str(&arg.to_string());
        }
        out.push_str(piece);
    }
    out
}

/// "received from `source`".
pub fn received(source: Source) -> String {
    fill(RECEIVED, &[&source.as_str()])
}

/// The history entry of an order that got key `key` of `sku` and email job
/// `job`; `how` it came (see [`received`]).
pub fn fulfilled(how: &str, key: i64, sku: &str, job: Option<i64>) -> String {
    let job = job.map_or_else(|| "-".to_string(), |j| j.to_string());
    fill(FULFILLED, &[&how, &key, &sku, &job])
}

/// The history entry of an order that waits for keys of `sku`: `first`,
/// the first of a sell-out; otherwise queued behind orders already waiting.
pub fn waiting(how: &str, sku: &str, first: bool) -> String {
    fill(if first { SOLD_OUT } else { QUEUED_BEHIND }, &[&how, &sku])
}

/// The `words` argument of `allot_place_orders`: the history's templates
/// and the key email job's kind, payload, dedupe key and priority.
pub fn words_for_postgres() -> &'static str {
    static WORDS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let email = KEY_EMAIL_JOB;
        serde_json::json!({
            "received": RECEIVED,
            "fulfilled": FULFILLED,
            "sold_out": SOLD_OUT,
            "queued_behind": QUEUED_BEHIND,
            "email_kind": email.kind,
            "email_payload": email.payload,
            "email_dedupe_key": email.dedupe_key,
            "email_priority": email.priority as i32,
        })
        .to_string()
    });
    &WORDS
}

/// The key email job of order `order` and key `key` as the templates word
/// it, for the test that Rust's own job is the same.
#[cfg(test)]
fn key_email_from_templates(order: i64, key: i64) -> (String, String, String) {
    let email = KEY_EMAIL_JOB;
    (
        email.kind.to_string(),
        fill(email.payload, &[&key, &order]),
        fill(email.dedupe_key, &[&order, &key]),
    )
}

/// What Rust's `notices::key_email` makes of the same order and key.
#[cfg(test)]
fn key_email_from_rust(order: i64, key: i64) -> (String, String, String) {
    let job: crate::jobs::NewJob = super::notices::key_email(order, key, 5).into_job();
    (
        job.kind,
        serde_json::to_string(&job.payload).unwrap(),
        job.dedupe_key.unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_takes_the_arguments_in_order_and_reads_none_of_them() {
        assert_eq!(
            fulfilled("received from generic", 7, "course-101", Some(42)),
            "received from generic; key #7 of course-101 assigned, email to the buyer queued (job 42)"
        );
        assert_eq!(
            fulfilled("keys arrived", 7, "50%s-off", None),
            "keys arrived; key #7 of 50%s-off assigned, email to the buyer queued (job -)"
        );
        assert_eq!(
            waiting("received from amelia", "course", true),
            "received from amelia; course is out of stock, waiting for keys"
        );
        assert_eq!(
            waiting("received from amelia", "course", false),
            "received from amelia; queued behind earlier orders waiting for course"
        );
    }

    #[test]
    fn the_templates_hold_no_percent_but_their_placeholders() {
        let email = KEY_EMAIL_JOB;
        for template in [
            RECEIVED,
            FULFILLED,
            SOLD_OUT,
            QUEUED_BEHIND,
            email.payload,
            email.dedupe_key,
        ] {
            // PostgreSQL's format() would read `%%`, `%I`, `%L`, `%1$s`.
            assert_eq!(
                template.matches('%').count(),
                template.matches("%s").count(),
                "{template}"
            );
        }
    }

    #[test]
    fn the_key_email_templates_word_the_job_as_rust_does() {
        for (order, key) in [(1, 2), (123_456_789, 9), (0, 0)] {
            assert_eq!(
                key_email_from_templates(order, key),
                key_email_from_rust(order, key)
            );
        }
        let job = super::super::notices::key_email(1, 2, 5);
        assert_eq!(job.priority as i32, KEY_EMAIL_JOB.priority as i32);
    }

    #[test]
    fn postgres_gets_every_template() {
        let words: serde_json::Value = serde_json::from_str(words_for_postgres()).unwrap();
        for name in [
            "received",
            "fulfilled",
            "sold_out",
            "queued_behind",
            "email_kind",
            "email_payload",
            "email_dedupe_key",
            "email_priority",
        ] {
            assert!(!words[name].is_null(), "{name}");
        }
        // Each name the function reads is one given here.
        let function = include_str!("batch/place_orders.pg.sql");
        for (at, _) in function.match_indices("words ->> '") {
            let name = &function[at + "words ->> '".len()..];
            let name = &name[..name.find('\'').unwrap()];
            assert!(!words[name].is_null(), "the function reads {name}");
        }
    }
}

//! Time as allot stores it: Unix epoch milliseconds in `i64` columns on every
//! backend, shown to people as RFC 3339.
//!
//! Owns only the conversions. Business code takes `now` as a parameter
//! rather than calling [`now_ms`] deep inside, so that tests move the clock
//! without sleeping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2026-11-23T15:22:40.000Z`.
pub fn rfc3339(ms: i64) -> String {
    // humantime formats years up to 9999 only (and panics beyond).
    const YEAR_9999_END: i64 = 253_402_300_799_999;
    let time = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, YEAR_9999_END) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `#[serde(serialize_with = "clock::as_rfc3339")]` for millisecond fields.
pub fn as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// [`as_rfc3339`] for optional fields.
pub fn as_optional_rfc3339<S: serde::Serializer>(
    ms: &Option<i64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// The alert window `now` falls in: [start, end), aligned to `interval`.
/// Alerts batch per window so that a storm of failures is one email.
pub fn window(now: i64, interval: Duration) -> (i64, i64) {
    let width = (interval.as_millis() as i64).max(1);
    let start = now - now.rem_euclid(width);
    (start, start + width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_the_interval() {
        let minute = Duration::from_secs(60);
        assert_eq!(window(125_000, minute), (120_000, 180_000));
        assert_eq!(window(180_000, minute), (180_000, 240_000));
    }

    #[test]
    fn times_far_out_format_without_panicking() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert!(rfc3339(i64::MAX).starts_with("9999-12-31"));
    }
}

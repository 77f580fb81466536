//! Text that comes from outside and ends up in a bounded column or an email
//! header: parsed once at the edge into a type that carries the proof. This
//! is allot's one input boundary: no string from a request, a webhook or a
//! file reaches SQL without passing through here.
//!
//! Owns the shared rules ([`BoundedText`]) that coupon names, user ids,
//! SKUs, license keys and order ids obey, and [`EmailAddress`]. It knows no
//! capability and no database; capabilities wrap these types in their own
//! newtypes (`Sku`, `CouponName`, …).

/// The columns these values go into hold 255 characters.
pub const MAX_CHARS: usize = 255;

/// Why a value was refused, naming the field: "SKU must not be empty".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

/// 1..=255 characters; no control characters (PostgreSQL refuses NUL in
/// text), no invisible or bidirectional format characters (U+200B, U+202E…:
/// two names that look alike must be alike), no line separators; no leading
/// or trailing whitespace (MySQL's PAD SPACE collations would equate "a" and
/// "a ").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedText(String);

impl BoundedText {
    /// Checks `value` exactly as given (license keys: what the vendor issued
    /// is what the buyer gets); `field` names it in the error.
    pub fn parse(field: &'static str, value: impl Into<String>) -> Result<Self, Invalid> {
        let value = value.into();
        let chars = value.chars().count();
        let problem = if chars == 0 {
            "must not be empty".to_string()
        } else if chars > MAX_CHARS {
            format!("must be at most {MAX_CHARS} characters, got {chars}")
        } else if value.chars().any(char::is_control) {
            "must not contain control characters".to_string()
        } else if let Some(c) = value.chars().find(|c| is_invisible(*c)) {
            format!(
                "must not contain invisible or direction-changing characters (U+{:04X})",
                c as u32
            )
        } else if value.trim() != value {
            "must not start or end with whitespace".to_string()
        } else {
            return Ok(Self(value));
        };
        Err(Invalid { field, problem })
    }

    /// A name people type and compare (coupon names, user ids, SKUs, order
    /// ids): normalised to NFC first, so that "é" typed as one character or
    /// as "e" and a combining accent is one name; then [`Self::parse`].
    pub fn identifier(field: &'static str, value: &str) -> Result<Self, Invalid> {
        use unicode_normalization::UnicodeNormalization;
        Self::parse(field, value.nfc().collect::<String>())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Format characters (zero-width spaces and joiners, bidirectional marks and
/// overrides, the BOM…) and line or paragraph separators: invisible, or
/// changing how the text around them is shown.
fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // No ASCII character is in these categories; the table lookup below
    // was a tenth of a key import's CPU.
    if c.is_ascii() {
        return false;
    }
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Columns for email addresses hold 320 characters (64 + @ + 255).
const MAX_EMAIL_CHARS: usize = 320;

/// An email address as delivery will accept it. Buyers' addresses are bare
/// (`ana@example.com`); addresses from settings may carry a display name
/// (`Shop <shop@example.com>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// A bare address, trimmed, its domain lower-cased (domains are
    /// case-insensitive; the local part is not, by RFC 5321, so it is kept
    /// as given).
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let value = value.trim();
        let invalid = |problem: String| Invalid {
            field: "email",
            problem,
        };
        let chars = value.chars().count();
        if chars > MAX_EMAIL_CHARS {
            return Err(invalid(format!(
                "must be at most {MAX_EMAIL_CHARS} characters, got {chars}"
            )));
        }
        if value.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err(invalid(format!(
                "{value:?} contains control or invisible characters"
            )));
        }
        let value = match value.rsplit_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
            None => value.to_string(),
        };
        value
            .parse::<lettre::Address>()
            .map(|_| Self(value.clone()))
            .map_err(|e| invalid(format!("{value:?} is not a valid address ({e})")))
    }

    /// An address or `Name <address>`, trimmed.
    pub fn parse_mailbox(value: &str) -> Result<Self, Invalid> {
        let value = value.trim();
        value
            .parse::<lettre::message::Mailbox>()
            .map(|_| Self(value.to_string()))
            .map_err(|e| Invalid {
                field: "email",
                problem: format!("{value:?} is not an email address ({e})"),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain, for Message-IDs: `example.com` of `Shop <shop@example.com>`.
    pub fn domain(&self) -> &str {
        self.0
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d.trim_end_matches('>'))
    }
}

impl std::fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most `max_bytes` of `text`, cut at a character boundary: outside
/// text recorded in a bounded column or a log line, but not without bound.
pub fn clip(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `value` quoted for a message, its first `chars` characters only when it
/// is longer (with its length said): enough to recognise it.
pub fn excerpt(value: &str, chars: usize) -> String {
    let mut rest = value.chars();
    let head: String = rest.by_ref().take(chars).collect();
    match rest.next() {
        None => format!("{head:?}"),
        Some(_) => format!("{head:?}… ({} characters)", value.chars().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_in_characters_not_bytes() {
        assert!(BoundedText::parse("name", "é".repeat(255)).is_ok());
        assert!(BoundedText::parse("name", "é".repeat(256)).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let err = BoundedText::parse("SKU", "").unwrap_err();
        assert_eq!(err.to_string(), "SKU must not be empty");
        assert!(BoundedText::parse("SKU", " a").is_err());
        assert!(BoundedText::parse("SKU", "a\u{0}b").is_err());
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for sneaky in [
            "PROMO\u{200B}",
            "PRO\u{202E}MO",
            "\u{FEFF}PROMO",
            "A\u{2028}B",
        ] {
            assert!(BoundedText::parse("name", sneaky).is_err(), "{sneaky:?}");
        }
        assert!(BoundedText::parse("name", "PROMO SUPER 🎉").is_ok());
    }

    #[test]
    fn identifiers_are_compared_in_nfc() {
        let composed = BoundedText::identifier("name", "caf\u{e9}").unwrap();
        let decomposed = BoundedText::identifier("name", "cafe\u{301}").unwrap();
        assert_eq!(composed, decomposed);
        // Keys stay exactly as issued.
        assert_ne!(
            BoundedText::parse("license key", "cafe\u{301}").unwrap(),
            composed
        );
    }

    #[test]
    fn only_the_domain_of_an_address_is_lower_cased() {
        let address = EmailAddress::parse(" Ana.Silva@Example.COM ").unwrap();
        assert_eq!(address.as_str(), "Ana.Silva@example.com");
        assert!(EmailAddress::parse("a\u{0}b@example.com").is_err());
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(320))).is_err());
    }

    #[test]
    fn addresses_bare_or_named() {
        assert!(EmailAddress::parse("ana@example.com").is_ok());
        assert!(EmailAddress::parse("Ana <ana@example.com>").is_err());
        let named = EmailAddress::parse_mailbox(" Shop <shop@example.com> ").unwrap();
        assert_eq!(named.as_str(), "Shop <shop@example.com>");
        assert_eq!(named.domain(), "example.com");
        assert!(EmailAddress::parse_mailbox("nope").is_err());
    }

    #[test]
    fn a_long_value_is_quoted_in_part_with_its_length() {
        assert_eq!(excerpt("abc", 5), "\"abc\"");
        assert_eq!(excerpt(&"é".repeat(9), 3), "\"ééé\"… (9 characters)");
        assert_eq!(clip("aé", 2), "a");
    }
}

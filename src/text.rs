//! Text that comes from outside and ends up in a bounded column or an email
//! header: parsed once at the edge into a type that carries the proof.
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

/// 1..=255 characters, no control characters (PostgreSQL refuses NUL in
/// text), no leading or trailing whitespace (MySQL's PAD SPACE collations
/// would equate "a" and "a ").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedText(String);

impl BoundedText {
    /// Checks `value`; `field` names it in the error.
    pub fn parse(field: &'static str, value: impl Into<String>) -> Result<Self, Invalid> {
        let value = value.into();
        let chars = value.chars().count();
        let problem = if chars == 0 {
            "must not be empty".to_string()
        } else if chars > MAX_CHARS {
            format!("must be at most {MAX_CHARS} characters, got {chars}")
        } else if value.chars().any(char::is_control) {
            "must not contain control characters".to_string()
        } else if value.trim() != value {
            "must not start or end with whitespace".to_string()
        } else {
            return Ok(Self(value));
        };
        Err(Invalid { field, problem })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address as delivery will accept it. Buyers' addresses are bare
/// (`ana@example.com`); addresses from settings may carry a display name
/// (`Shop <shop@example.com>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// A bare address, trimmed.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let value = value.trim();
        value
            .parse::<lettre::Address>()
            .map(|_| Self(value.to_string()))
            .map_err(|e| Invalid {
                field: "email",
                problem: format!("{value:?} is not a valid address ({e})"),
            })
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
    fn addresses_bare_or_named() {
        assert!(EmailAddress::parse("ana@example.com").is_ok());
        assert!(EmailAddress::parse("Ana <ana@example.com>").is_err());
        let named = EmailAddress::parse_mailbox(" Shop <shop@example.com> ").unwrap();
        assert_eq!(named.as_str(), "Shop <shop@example.com>");
        assert_eq!(named.domain(), "example.com");
        assert!(EmailAddress::parse_mailbox("nope").is_err());
    }
}

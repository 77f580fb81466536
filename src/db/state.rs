//! States stored as text: each capability's states (an order's, a key's,
//! a job's, a command reply's) are a Rust enum, and the text in the
//! database is read into it once, at the row boundary
//! (`#[sqlx(try_from = "String")]` on a row's field). So no state is a
//! string compared against a literal elsewhere; the architecture test
//! `architecture::states_are_compared_as_their_types` checks it.

/// A stored text that is not one of a state type's values.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a known {what}")]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
}

/// Declares a state enum stored as text: `as_str`, `ALL`, `Display`,
/// `FromStr` and `TryFrom<String>` (for rows), serialised as its text.
///
/// ```ignore
/// stored_state! {
///     /// An order's state.
///     pub enum OrderState: "order state" {
///         Fulfilled = "fulfilled",
///         AwaitingStock = "awaiting_stock",
///     }
/// }
/// ```
#[macro_export]
macro_rules! stored_state {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            // Not every state type lists its values somewhere.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::db::UnknownState;

            fn from_str(value: &str) -> Result<Self, $crate::db::UnknownState> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::db::UnknownState {
                        what: $what,
                        value: value.to_string(),
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::db::UnknownState;

            fn try_from(value: String) -> Result<Self, $crate::db::UnknownState> {
                value.parse()
            }
        }
    };
}

/// Reads a state from text selected without a row struct (a scalar, a
/// tuple), as `#[sqlx(try_from = "String")]` does for a row's field.
pub fn read_state<S>(text: String) -> Result<S, sqlx::Error>
where
    S: TryFrom<String, Error = UnknownState>,
{
    S::try_from(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

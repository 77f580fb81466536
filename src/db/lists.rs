//! The two pieces every statement of a batch is made of, for
//! `sqlx::QueryBuilder` on any backend: a bound list for `in (…)`, and a
//! `case` that gives each row of the batch its own value in one `update`.
//!
//! Statements built from them change text with the batch size: run them
//! with `persistent(false)` (see [`super::sql`]).
//!
//! On SQLite a batch's rows go instead as one bound JSON array of rows
//! ([`json_rows`]), which the statement reads with `json_each` and
//! `value ->> n`: its text is the same for every batch, so it is prepared
//! once and kept. Prepared anew for each batch, the statements of an order
//! batch took the one writer's time parsing and planning (SQLite orders/s
//! rose about 11 % with them kept, docs/benchmarks.md); kept in each of
//! their shapes, they would hold hundreds of prepared statements.

use sqlx::{Database, Encode, QueryBuilder, Type};

/// Pushes `(v1, v2, …)`, each value bound. `values` must not be empty:
/// `in ()` is not SQL.
pub fn push_list<'t, DB, T>(query: &mut QueryBuilder<DB>, values: impl IntoIterator<Item = T>)
where
    DB: Database,
    T: Encode<'t, DB> + Type<DB>,
{
    query.push("(");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    query.push(")");
}

/// Pushes `case KEY when k1 then v1 when k2 then v2 … end`, each key and
/// value bound.
pub fn push_case<'t, DB, K, V>(
    query: &mut QueryBuilder<DB>,
    key: &str,
    pairs: impl IntoIterator<Item = (K, V)>,
) where
    DB: Database,
    K: Encode<'t, DB> + Type<DB>,
    V: Encode<'t, DB> + Type<DB>,
{
    query.push(format!("case {key}"));
    for (k, v) in pairs {
        query
            .push(" when ")
            .push_bind(k)
            .push(" then ")
            .push_bind(v);
    }
    query.push(" end");
}

/// A batch's rows as one JSON array of arrays, for a SQLite statement that
/// reads row `n`'s column `c` as `value ->> c` of `json_each(?)`.
pub fn json_rows<T: serde::Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|error| sqlx::Error::Encode(Box::new(error)))
}

//! What a buyer's email reads at send time: a key, its status, and the
//! buyer and order it went to in the order's transaction.
//!
//! The outbox runs many key emails at once, each needing its key. Through
//! [`IssuedKeys`], the lookups in flight together are one statement
//! (`where id in (…)`, [`crate::batch`]): a lone lookup is read at once,
//! and under a sale the emails no longer cost a statement each, which on
//! PostgreSQL was the largest share of the statements a sale ran.

use std::collections::HashMap;

use sqlx::{Database, Encode, MySql, Postgres, QueryBuilder, Type};
use tokio_util::task::TaskTracker;

use super::{KeyStatus, LicenseKey, store::stored_key};
use crate::{
    batch::{Batcher, Decide},
    db::{self, Db, json_rows, push_list},
};

/// The most keys one statement reads.
const MAX_BATCH: usize = 64;

/// A key, its status and whom it went to, by id.
#[derive(Debug, Clone)]
pub struct Issued {
    pub key: LicenseKey,
    pub status: KeyStatus,
    pub product_sku: String,
    pub assigned_to_email: Option<String>,
    pub assigned_order_id: Option<String>,
}

/// Key `id`, read alone.
pub async fn issued(db: &Db, id: i64) -> Result<Option<Issued>, sqlx::Error> {
    Ok(read(db, &[id]).await?.remove(&id))
}

/// Reads issued keys, the concurrent lookups together. Cheap to clone.
#[derive(Clone)]
pub struct IssuedKeys {
    batches: Batcher<Reader>,
}

struct Reader {
    db: Db,
}

impl IssuedKeys {
    pub fn new(db: Db) -> Self {
        // The runners are awaited through the lookups waiting for answers.
        let batches = Batcher::new(
            Reader { db },
            TaskTracker::new(),
            MAX_BATCH,
            "allot_key_read_batch_size",
        );
        Self { batches }
    }

    /// How many lookups wait for the read in flight (`None`: none is).
    pub fn waiting(&self) -> Option<usize> {
        self.batches.waiting(&())
    }

    /// How many statements have read keys so far.
    pub fn reads(&self) -> u64 {
        self.batches.batches()
    }

    /// Key `id`, read together with the other lookups in flight.
    pub async fn get(&self, id: i64) -> Result<Option<Issued>, db::Error> {
        // Only a panic while reading leaves a lookup unanswered.
        self.batches
            .submit(&(), id)
            .await
            .unwrap_or(Err(db::Error::Unanswered))
    }
}

impl Decide for Reader {
    /// Every lookup shares one queue: they read, so nothing orders them.
    type Key = ();
    type Request = i64;
    type Answer = Result<Option<Issued>, db::Error>;

    async fn decide(&self, _: &(), ids: Vec<i64>) -> Vec<Self::Answer> {
        match read(&self.db, &ids).await {
            Ok(found) => ids.iter().map(|id| Ok(found.get(id).cloned())).collect(),
            Err(error) => {
                // One failure, told to each lookup as itself.
                let error = db::Error::from(error);
                ids.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }
}

/// `select` followed by the list of `ids`, bound.
fn by_id_list<DB>(select: &str, ids: &[i64]) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(select.to_string());
    push_list(&mut query, ids.iter().copied());
    query
}

/// Keys `ids` (not empty) that exist, by id.
async fn read(db: &Db, ids: &[i64]) -> Result<HashMap<i64, Issued>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        license_key: String,
        #[sqlx(try_from = "String")]
        status: KeyStatus,
        product_sku: String,
        assigned_to_email: Option<String>,
        assigned_order_id: Option<String>,
    }
    macro_rules! select_where_id {
        ($rest:literal) => {
            concat!(
                "select id, license_key, status, product_sku, assigned_to_email, assigned_order_id
                   from license_keys where id",
                $rest
            )
        };
    }
    // SQLite takes the ids as one JSON array, so the statement has one
    // text whatever the number of ids and is prepared once per reader (a
    // fresh prepare for each read was SQLite's largest parsing cost under
    // `allot bench orders`). The servers read a list that follows the
    // number of ids, not kept among the connection's prepared statements:
    // on PostgreSQL one `= any($1)` statement prepared once sold fewer
    // orders than the list in each of three alternating pairs of runs.
    let rows: Vec<Row> = match db {
        Db::Sqlite { reader, .. } => {
            sqlx::query_as(select_where_id!(" in (select value from json_each(?1))"))
                .bind(json_rows(ids)?)
                .fetch_all(reader)
                .await?
        }
        Db::Postgres(pool) => {
            by_id_list::<Postgres>(select_where_id!(" in "), ids)
                .build_query_as()
                .persistent(false)
                .fetch_all(pool)
                .await?
        }
        Db::MySql(pool) => {
            by_id_list::<MySql>(select_where_id!(" in "), ids)
                .build_query_as()
                .persistent(false)
                .fetch_all(pool)
                .await?
        }
    };
    rows.into_iter()
        .map(|row| {
            let issued = Issued {
                key: stored_key(row.license_key)?,
                status: row.status,
                product_sku: row.product_sku,
                assigned_to_email: row.assigned_to_email,
                assigned_order_id: row.assigned_order_id,
            };
            Ok((row.id, issued))
        })
        .collect()
}

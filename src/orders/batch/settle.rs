//! The middle of a batch of orders: the new orders, in arrival order, get
//! the oldest keys while they last and their email jobs; the rest wait for
//! stock; each gets its history entry. On PostgreSQL this, and storing the
//! orders, is one call of `allot_place_orders` (`place_orders.pg.sql`)
//! instead of nine round trips, and a batch that needs nothing more is
//! committed by that call alone; the other backends run the same steps
//! statement by statement, on orders stored first. What follows (alerts,
//! merchant announcements) is the caller's, on every backend.

use super::{Request, store};
use crate::{
    db::{self, Tx},
    jobs,
    keys::{self, Assignment, Sku},
    orders::{OrderState, history, notices},
};

/// A new order of the batch: its place in the batch and its row id.
pub(super) type New = (usize, i64);

/// What the new orders got: the first `served.len()` of them a key and an
/// email job (none when one was queued before), the rest wait.
pub(super) struct Settled {
    pub served: Vec<(i64, Option<i64>)>,
    /// Orders of the SKU were already waiting: the new ones queue behind
    /// them without taking a key.
    pub queued_behind: bool,
    /// The email jobs born leased to this process's worker, handed to it
    /// once the batch commits.
    pub handed: jobs::Handed,
}

/// A batch being placed: its SKU and orders, when, with what attempt
/// budget for the emails, and which worker may take them by hand.
#[derive(Clone, Copy)]
pub(super) struct Placing<'a> {
    pub sku: &'a Sku,
    pub batch: &'a [Request],
    pub max_attempts: i32,
    pub now: i64,
    pub handoff: Option<&'a jobs::Handoff>,
}

/// Settles the stored orders `new` of `placing` step by step (SQLite,
/// MySQL: see `db::Step`).
pub(super) async fn settle(
    tx: &mut Tx,
    placing: Placing<'_>,
    new: &[New],
) -> Result<Settled, db::Error> {
    let Placing {
        sku,
        batch,
        max_attempts,
        now,
        handoff,
    } = placing;
    let mut handed = jobs::Handed::default();
    let queued_behind = crate::orders::store::waiting_ahead(tx, sku).await?;
    let reserved = if queued_behind {
        Vec::new()
    } else {
        keys::reserve(tx, sku, new.len()).await?
    };
    let (served, waiting) = new.split_at(reserved.len());
    let mut events = Vec::with_capacity(new.len());
    let mut settled = Vec::with_capacity(served.len());
    if !served.is_empty() {
        let assignments: Vec<(i64, Assignment)> = served
            .iter()
            .zip(&reserved)
            .map(|(&(i, _), &key)| {
                let order = &batch[i].order;
                let to = Assignment {
                    email: order.email.as_str(),
                    order_id: &order.order_id,
                    coupon_code: order.coupon_code.as_deref(),
                };
                (key, to)
            })
            .collect();
        keys::assign_reserved_many(tx.steps(), &assignments, now).await?;
        let emails: Vec<_> = served
            .iter()
            .zip(&reserved)
            .map(|(&(i, id), &key)| {
                notices::key_email(id, key, max_attempts).request_id(batch[i].request_id.clone())
            })
            .collect();
        let (jobs, born_leased) =
            jobs::enqueue_many_handed(tx.steps(), &emails, now, handoff).await?;
        handed = born_leased;
        let fulfilled: Vec<(i64, i64, Option<i64>)> = served
            .iter()
            .zip(&reserved)
            .zip(&jobs)
            .map(|((&(_, id), &key), &job)| (id, key, job))
            .collect();
        store::fulfilled(tx.steps(), &fulfilled, now).await?;
        for (&(i, _), &(id, key, job)) in served.iter().zip(&fulfilled) {
            events.push((
                id,
                OrderState::Fulfilled,
                fulfilled_detail(batch, i, key, sku, job),
            ));
            settled.push((key, job));
        }
    }
    if !waiting.is_empty() {
        let ids: Vec<i64> = waiting.iter().map(|&(_, id)| id).collect();
        store::waiting(tx.steps(), &ids, now).await?;
        for (n, &(i, id)) in waiting.iter().enumerate() {
            let first = n == 0 && !queued_behind;
            events.push((
                id,
                OrderState::AwaitingStock,
                waiting_detail(batch, i, sku, first),
            ));
        }
    }
    store::events(tx.steps(), &events, now).await?;
    Ok(Settled {
        served: settled,
        queued_behind,
        handed,
    })
}

/// The history entries (see `orders::history`).
fn fulfilled_detail(batch: &[Request], i: usize, key: i64, sku: &Sku, job: Option<i64>) -> String {
    history::fulfilled(&history::received(batch[i].source), key, sku.as_str(), job)
}

/// `first`: the first order of a sell-out; those after it queue behind.
fn waiting_detail(batch: &[Request], i: usize, sku: &Sku, first: bool) -> String {
    history::waiting(&history::received(batch[i].source), sku.as_str(), first)
}

/// What one call of `allot_place_orders` did with the first arrivals of a
/// batch: the orders it placed (new ones, and ones set aside before taken
/// up again) and what they got.
pub(super) struct InOneCall {
    pub new: Vec<New>,
    pub settled: Settled,
}

/// One row of `allot_place_orders`' answer: an order it placed (stored,
/// or taken up again), in arrival order.
#[derive(sqlx::FromRow)]
struct PlacedRow {
    /// Its place among the orders of the call, from 1.
    out_place: i32,
    /// The order's row id.
    out_ref: i64,
    /// The key it got, if served.
    out_key: Option<i64>,
    /// Its key email job (none when one was queued before).
    out_job: Option<i64>,
    /// Orders of the SKU were already waiting: the batch queued behind them.
    out_behind: bool,
}

/// The call, [`in_one_call`] `on_its_own`, refused to commit the batch;
/// nothing was written.
pub(super) fn needs_transaction(error: &db::Error) -> bool {
    let db::Error::Database(error) = error else {
        return false;
    };
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("AL001"))
}

/// Places the orders at `firsts` (places in `batch`, in arrival order, no
/// repeats) on PostgreSQL: stored, keyed, queued and described in one call
/// of `allot_place_orders` (`place_orders.pg.sql`), each new row written once;
/// its walk for keys starts after key `after`, if given (see `resume`).
/// `conn` is in the caller's transaction, or, `on_its_own`, in none: then
/// the call commits the batch, or refuses it ([`needs_transaction`]).
pub(super) async fn in_one_call(
    conn: &mut sqlx::PgConnection,
    placing: Placing<'_>,
    firsts: &[usize],
    after: Option<i64>,
    on_its_own: bool,
) -> Result<InOneCall, db::Error> {
    let Placing {
        sku,
        batch,
        max_attempts,
        now,
        handoff,
    } = placing;
    let order = |i: usize| &batch[i].order;
    let sources: Vec<&str> = firsts.iter().map(|&i| batch[i].source.as_str()).collect();
    let order_ids: Vec<&str> = firsts.iter().map(|&i| order(i).order_id.as_str()).collect();
    let emails: Vec<&str> = firsts.iter().map(|&i| order(i).email.as_str()).collect();
    let coupons: Vec<Option<&str>> = firsts
        .iter()
        .map(|&i| order(i).coupon_code.as_deref())
        .collect();
    let payment_refs: Vec<Option<&str>> = firsts
        .iter()
        .map(|&i| batch[i].payment_ref.as_deref())
        .collect();
    let request_ids: Vec<Option<&str>> = firsts
        .iter()
        .map(|&i| batch[i].request_id.as_deref())
        .collect();
    // As many key emails as the batch could need are promised to this
    // process's worker; the function leases it the first of them.
    let reservation = handoff
        .map(|handoff| handoff.reserve(notices::KEY_EMAIL, firsts.len()))
        .filter(|r| r.granted() > 0);
    let lease_count = reservation.as_ref().map_or(0, |r| r.granted() as i32);
    let call = "select out_place, out_ref, out_key, out_job, out_behind
                  from allot_place_orders($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                          $13, $14::jsonb, $15)";
    let rows: Vec<PlacedRow> = sqlx::query_as(call)
        .bind(sku.as_str())
        .bind(&sources)
        .bind(&order_ids)
        .bind(&emails)
        .bind(&coupons)
        .bind(&payment_refs)
        .bind(&request_ids)
        .bind(now)
        .bind(max_attempts)
        .bind(after)
        .bind(reservation.as_ref().map(|r| r.worker()))
        .bind(reservation.as_ref().map(|r| r.locked_until(now)))
        .bind(lease_count)
        .bind(history::words_for_postgres())
        .bind(on_its_own)
        .fetch_all(&mut *conn)
        .await?;
    let mut placed = InOneCall {
        new: Vec::with_capacity(rows.len()),
        settled: Settled {
            served: Vec::with_capacity(rows.len()),
            queued_behind: rows.first().is_some_and(|row| row.out_behind),
            handed: jobs::Handed::default(),
        },
    };
    let mut leased = Vec::new();
    for row in rows {
        let PlacedRow {
            out_place: place,
            out_ref: id,
            out_key: key,
            out_job: job,
            ..
        } = row;
        let Some(&i) = usize::try_from(place - 1).ok().and_then(|n| firsts.get(n)) else {
            return Err(db::Error::Broken(format!(
                "allot_place_orders answered for order {place} of {}",
                firsts.len()
            )));
        };
        placed.new.push((i, id));
        if let Some(key) = key {
            placed.settled.served.push((key, job));
            if let Some(job) = job.filter(|_| leased.len() < lease_count as usize) {
                let email = notices::key_email(id, key, max_attempts)
                    .request_id(batch[i].request_id.clone());
                leased.push(email.born_leased(job, now));
            }
        }
    }
    if let Some(reservation) = reservation {
        placed.settled.handed = reservation.handed(leased);
    }
    Ok(placed)
}

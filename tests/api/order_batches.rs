//! Group commit for webhook orders: orders for one SKU that arrive while a
//! batch is in flight are placed together in the next transaction, with the
//! outcomes they would get one by one.
//!
//! An outside transaction holds the first order's row (an uncommitted
//! insert of the same order id; SQLite's write lock) so that the first
//! order's batch waits in the database; the orders queued meanwhile, in a
//! known order, become the next batch.

use allot::{
    intake::normalize::Source,
    keys::Sku,
    orders::{Fulfilment, Receipt, Status},
};
use serde_json::json;

use crate::{
    helpers::{Backend, Holder, World, eventually, reject_inserts, seed_keys},
    on_every_backend,
};

on_every_backend!(
    orders_held_up_together_are_placed_as_one_batch,
    an_order_that_breaks_its_batch_fails_alone,
    an_order_set_aside_before_is_taken_up_again_in_a_batch,
    a_batch_behind_waiting_orders_waits_behind_them,
    a_batch_announces_each_order_to_merchant_endpoints,
    each_job_of_a_batch_names_the_request_of_its_order,
    orders_delivered_twice_race_through_two_lanes,
    the_key_emails_of_a_batch_go_straight_to_the_worker,
    a_paused_worker_is_handed_no_emails,
    emails_handed_to_a_worker_that_died_are_sent_after_its_lease,
);

type Pending = tokio::task::JoinHandle<Result<Receipt, allot::db::Error>>;

struct Scene {
    world: World,
    fulfilment: Fulfilment,
    holder: Holder,
    first: Pending,
}

fn course() -> Sku {
    Sku::parse("course").unwrap()
}

/// `keys` keys for SKU `course`, the first order's row held by an outside
/// transaction, and that order's batch waiting for it; an order with id
/// `rejected` will fail to insert.
async fn scene(backend: Backend, keys: usize, rejected: Option<&str>) -> Scene {
    scene_with(backend, keys, rejected, &[]).await
}

/// [`scene`], `setup` run first.
async fn scene_with(
    backend: Backend,
    keys: usize,
    rejected: Option<&str>,
    setup: &[&'static str],
) -> Scene {
    let world = world_with(backend, keys, rejected, setup).await;
    // One lane, so that the orders queued behind the first form its next
    // batch whatever their ids.
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings)
        .grouped_in(tokio_util::task::TaskTracker::new(), 1);
    held_up(backend, world, fulfilment).await
}

/// The database of [`scene_with`], before any order.
async fn world_with(
    backend: Backend,
    keys: usize,
    rejected: Option<&str>,
    setup: &[&'static str],
) -> World {
    let world = World::new(backend, |_| {}).await;
    let url = world.settings.database.url.clone();
    let keys: Vec<String> = (1..=keys).map(|n| format!("KEY-{n:03}")).collect();
    seed_keys(&world.db, "course", &keys).await;
    for &statement in setup {
        allot::on_db!(&world.db, write, |pool, sql| {
            sqlx::query(sql(statement)).execute(pool).await.map(drop)
        })
        .unwrap();
    }
    if let Some(order_id) = rejected {
        reject_inserts(backend, &url, "orders", "order_id", order_id).await;
    }
    world
}

/// The first order's batch of `fulfilment` (one lane), held up in the
/// database.
async fn held_up(backend: Backend, world: World, fulfilment: Fulfilment) -> Scene {
    let url = world.settings.database.url.clone();
    let hold = "insert into orders (source, order_id, state, created_at, updated_at)
                values ('generic', 'first', 'needs_attention', 0, 0)";
    let holder = Holder::hold(backend, &url, hold).await;
    let first = place(&fulfilment, "first");
    eventually("the first batch to be in flight", async || {
        fulfilment.batching(&course()) == Some((Some(0), 1))
    })
    .await;
    Scene {
        world,
        fulfilment,
        holder,
        first,
    }
}

fn place(fulfilment: &Fulfilment, order_id: &str) -> Pending {
    place_as(fulfilment, order_id, None)
}

/// [`place`] as the work of request `request_id`, as the webhook route
/// places its orders.
fn place_as(fulfilment: &Fulfilment, order_id: &str, request_id: Option<&str>) -> Pending {
    let body = json!({ "order_id": order_id, "email": format!("{order_id}@buyer.test") });
    let fulfilment = fulfilment.clone();
    let request_id = request_id.map(std::sync::Arc::from);
    tokio::spawn(allot::telemetry::serving(request_id, async move {
        let body = body.to_string();
        let now = allot::clock::now_ms();
        fulfilment
            .receive(Source::Generic, body.as_bytes(), Some(&course()), now)
            .await
    }))
}

/// Queues orders one after the other, so the batch keeps their order.
async fn queue_in_order(fulfilment: &Fulfilment, order_ids: &[&str]) -> Vec<Pending> {
    queue_as_requests(fulfilment, order_ids, |_| None).await
}

/// [`queue_in_order`], each order as the work of the request `request(order_id)`.
async fn queue_as_requests(
    fulfilment: &Fulfilment,
    order_ids: &[&str],
    request: impl Fn(&str) -> Option<String>,
) -> Vec<Pending> {
    let mut pending = Vec::new();
    for (n, order_id) in order_ids.iter().enumerate() {
        pending.push(place_as(fulfilment, order_id, request(order_id).as_deref()));
        eventually("the order to join the queue", async || {
            fulfilment.batching(&course()) == Some((Some(n + 1), 1))
        })
        .await;
    }
    pending
}

async fn statuses(pending: Vec<Pending>) -> Vec<Result<Status, String>> {
    let mut statuses = Vec::new();
    for p in pending {
        statuses.push(match p.await.unwrap() {
            Ok(receipt) => Ok(receipt.status),
            Err(error) => Err(error.to_string()),
        });
    }
    statuses
}

/// Lets the first order's batch commit, and with it the batch queued
/// behind it: the first order's status, then the queued orders', in queue
/// order.
async fn release(
    holder: Holder,
    first: Pending,
    pending: Vec<Pending>,
) -> (Status, Vec<Result<Status, String>>) {
    holder.release().await;
    let first = first.await.unwrap().unwrap().status;
    (first, statuses(pending).await)
}

/// (order id, key) of every order holding a key, in the order the orders
/// were stored.
async fn keys_by_order(world: &World) -> Vec<(String, String)> {
    let rows: Vec<(String, String)> = allot::on_db!(&world.db, read, |pool, sql| {
        sqlx::query_as(sql("select o.order_id, k.license_key from orders o
               join license_keys k on k.id = o.license_key_id order by o.id"))
        .fetch_all(pool)
        .await
    })
    .unwrap();
    rows
}

async fn count(world: &World, query: &'static str) -> i64 {
    allot::on_db!(&world.db, read, |pool, sql| {
        sqlx::query_scalar(sql(query)).fetch_one(pool).await
    })
    .unwrap()
}

/// Duplicates (inside the batch and of an order stored before it) and a
/// sell-out inside one batch: five keys, the first order served alone,
/// then eight deliveries of seven orders in one batch.
async fn orders_held_up_together_are_placed_as_one_batch(backend: Backend) {
    let scene = scene(backend, 5, None).await;
    let order_ids = ["a", "b", "a", "first", "c", "d", "e", "f"];
    let pending = queue_in_order(&scene.fulfilment, &order_ids).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::Fulfilled);
    use Status::*;
    assert_eq!(
        outcomes,
        [
            Ok(Fulfilled),
            Ok(Fulfilled),
            Ok(Duplicate),
            Ok(Duplicate),
            Ok(Fulfilled),
            Ok(Fulfilled),
            Ok(AwaitingStock),
            Ok(AwaitingStock),
        ]
    );
    // Oldest key to the earliest order, each key once.
    let expected: Vec<(String, String)> = ["first", "a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(n, o)| (o.to_string(), format!("KEY-{:03}", n + 1)))
        .collect();
    assert_eq!(keys_by_order(&scene.world).await, expected);
    assert_eq!(
        scene.fulfilment.batching(&course()).map(|(_, b)| b),
        Some(2),
        "the first order, then one batch"
    );
    assert_eq!(
        scene.fulfilment.batches_committed_at_once(),
        u64::from(backend == Backend::Postgres),
        "the first order alone is committed at once on PostgreSQL; a batch in which \
         orders wait is placed in a transaction, which alerts"
    );
    let world = &scene.world;
    assert_eq!(count(world, "select count(*) from orders").await, 7);
    assert_eq!(
        count(world, "select count(*) from jobs where kind = 'key_email'").await,
        5,
        "one email per key"
    );
    assert_eq!(
        count(
            world,
            "select count(*) from order_events e join orders o on o.id = e.order_ref
              where o.state = 'awaiting_stock' and e.state = 'awaiting_stock'"
        )
        .await,
        2,
        "each waiting order's history says so"
    );
    assert_eq!(
        count(
            world,
            "select count(*) from jobs where kind = 'out_of_stock_alert'"
        )
        .await,
        1,
        "the sell-out alerts the admin once"
    );
    for (order_id, state, said) in [
        (
            "e",
            "awaiting_stock",
            "course is out of stock, waiting for keys",
        ),
        (
            "f",
            "awaiting_stock",
            "queued behind earlier orders waiting for course",
        ),
        (
            "d",
            "fulfilled",
            "key #5 of course assigned, email to the buyer queued (job ",
        ),
    ] {
        let view = allot::orders::find(&world.db, Source::Generic, order_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, state);
        assert_eq!(
            view.email.as_deref(),
            Some(&*format!("{order_id}@buyer.test"))
        );
        assert_eq!(view.product_sku.as_deref(), Some("course"));
        let last = view.history.last().unwrap();
        assert_eq!(last.state, state);
        assert!(
            last.detail.starts_with("received from generic; ") && last.detail.contains(said),
            "{order_id}: {:?}",
            view.history
        );
        // The email named in the history is the one the order points to.
        if let Some(delivery) = &view.email_delivery {
            assert!(last.detail.ends_with(&format!("(job {})", delivery.job_id)));
        }
    }
    let d = allot::orders::find(&world.db, Source::Generic, "d")
        .await
        .unwrap()
        .unwrap();
    assert!(
        d.email_delivery.is_some(),
        "a fulfilled order names its email"
    );
    // Whichever backend wrote them, the email jobs and the history say the
    // same words: in Rust (`settle::settle`) on SQLite and MySQL, by
    // `allot_place_orders` on PostgreSQL.
    type Written = (String, i64, i64, i64, String, String, String);
    let written: Vec<Written> = allot::on_db!(&world.db, read, |pool, sql| {
        sqlx::query_as(sql(
            "select o.order_id, o.id, o.license_key_id, o.email_job_id,
                      j.payload, j.dedupe_key, e.detail
                 from orders o
                 join jobs j on j.id = o.email_job_id
                 join order_events e on e.order_ref = o.id and e.state = 'fulfilled'
                where o.state = 'fulfilled' order by o.id",
        ))
        .fetch_all(pool)
        .await
    })
    .unwrap();
    let order_ids: Vec<&str> = written.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(order_ids, ["first", "a", "b", "c", "d"]);
    for (order_id, id, key, job, payload, dedupe_key, detail) in &written {
        assert_eq!(
            payload,
            &format!(r#"{{"key":{key},"order":{id}}}"#),
            "{order_id}"
        );
        assert_eq!(dedupe_key, &format!("key_email:{id}:{key}"), "{order_id}");
        assert_eq!(
            detail,
            &format!(
                "received from generic; key #{key} of course assigned, email to the buyer queued (job {job})"
            ),
            "{order_id}"
        );
    }
    eventually("the runner to retire", async || {
        scene.fulfilment.batching(&course()) == Some((None, 2))
    })
    .await;
}

/// An order whose first delivery was set aside (it could not be used) and
/// whose good delivery then arrives inside a batch is taken up again, as it
/// would be alone: described, given its own key and email.
async fn an_order_set_aside_before_is_taken_up_again_in_a_batch(backend: Backend) {
    let scene = scene_with(
        backend,
        5,
        None,
        &[
            "insert into orders (source, order_id, state, problem, raw_body, created_at,
                                 updated_at)
           values ('generic', 'b', 'needs_attention', 'no SKU', 'the first body', 0, 0)",
        ],
    )
    .await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b", "c"]).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::Fulfilled);
    use Status::*;
    assert_eq!(outcomes, [Ok(Fulfilled), Ok(Fulfilled), Ok(Fulfilled)]);
    let world = &scene.world;
    let mut keys = keys_by_order(world).await;
    keys.sort();
    let keys: Vec<&str> = keys.iter().map(|(order, _)| order.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c", "first"], "each order holds one key");
    let b = allot::orders::find(&world.db, Source::Generic, "b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, "fulfilled");
    assert_eq!(b.email.as_deref(), Some("b@buyer.test"));
    assert_eq!(b.product_sku.as_deref(), Some("course"));
    assert!(b.email_delivery.is_some(), "b names its email");
    assert_eq!(
        (b.problem.as_deref(), b.raw_body.as_deref()),
        (None, None),
        "kept only while it needed attention"
    );
    assert_eq!(count(world, "select count(*) from orders").await, 4);
    assert_eq!(
        count(world, "select count(*) from jobs where kind = 'key_email'").await,
        4
    );
}

/// A trigger rejects one order's row: the batch's transaction fails, and
/// only that order fails with it; the others are fulfilled, each once.
async fn an_order_that_breaks_its_batch_fails_alone(backend: Backend) {
    let scene = scene(backend, 10, Some("poison")).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "poison", "b"]).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::Fulfilled);
    assert_eq!(outcomes[0], Ok(Status::Fulfilled), "{outcomes:?}");
    assert!(outcomes[1].is_err(), "{outcomes:?}");
    assert_eq!(outcomes[2], Ok(Status::Fulfilled), "{outcomes:?}");
    let holders: Vec<String> = keys_by_order(&scene.world)
        .await
        .into_iter()
        .map(|(order, _)| order)
        .collect();
    assert_eq!(holders, ["first", "a", "b"]);
    assert_eq!(
        count(
            &scene.world,
            "select count(*) from jobs where kind = 'key_email'"
        )
        .await,
        3
    );
}

/// A batch that arrives while orders of its SKU already wait for stock
/// queues behind them, first order and all.
async fn a_batch_behind_waiting_orders_waits_behind_them(backend: Backend) {
    let scene = scene(backend, 0, None).await;
    let pending = queue_in_order(&scene.fulfilment, &["x", "y"]).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::AwaitingStock);
    use Status::*;
    assert_eq!(outcomes, [Ok(AwaitingStock), Ok(AwaitingStock)]);
    for order_id in ["x", "y"] {
        let view = allot::orders::find(&scene.world.db, Source::Generic, order_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, "awaiting_stock");
        assert_eq!(
            view.history.last().unwrap().detail,
            "received from generic; queued behind earlier orders waiting for course"
        );
    }
}

/// With a merchant endpoint enabled, each order of a batch is announced,
/// with its delivery job, in the batch's transaction.
async fn a_batch_announces_each_order_to_merchant_endpoints(backend: Backend) {
    let endpoint = "insert into endpoints (url, events, secret, created_at, updated_at)
                    values ('http://127.0.0.1:9/hook', 'order.*', 'whsec_dGVzdA==', 0, 0)";
    let scene = scene_with(backend, 10, None, &[endpoint]).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b", "c"]).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::Fulfilled);
    use Status::*;
    assert_eq!(outcomes, [Ok(Fulfilled), Ok(Fulfilled), Ok(Fulfilled)]);
    let world = &scene.world;
    assert_eq!(
        count(
            world,
            "select count(*) from merchant_events where event_type = 'order.fulfilled'"
        )
        .await,
        4,
        "first, a, b and c announced"
    );
    assert_eq!(
        count(world, "select count(*) from jobs where kind = 'key_email'").await,
        4
    );
    assert_eq!(
        count(
            world,
            "select count(*) from jobs where kind = 'merchant_webhook'"
        )
        .await,
        4,
        "one delivery per order"
    );
    assert_eq!(
        scene.fulfilment.batches_committed_at_once(),
        0,
        "with an endpoint, a batch is placed in a transaction, which announces"
    );
}

/// Each job of a batch names the request that delivered its order:
/// placed by one statement that commits (PostgreSQL, no endpoint) or in a
/// transaction (an endpoint to announce to, every backend). The first
/// order, placed as the work of no request, names none.
async fn each_job_of_a_batch_names_the_request_of_its_order(backend: Backend) {
    let endpoint = "insert into endpoints (url, events, secret, created_at, updated_at)
                    values ('http://127.0.0.1:9/hook', 'order.*', 'whsec_dGVzdA==', 0, 0)";
    for setup in [&[][..], &[endpoint][..]] {
        let scene = scene_with(backend, 10, None, setup).await;
        let request = |order_id: &str| Some(format!("shop-delivery/{order_id}"));
        let pending = queue_as_requests(&scene.fulfilment, &["a", "b", "c"], request).await;
        let (first, outcomes) = release(scene.holder, scene.first, pending).await;
        assert_eq!(first, Status::Fulfilled);
        assert!(
            outcomes.iter().all(|o| o == &Ok(Status::Fulfilled)),
            "{outcomes:?}"
        );
        // The first order's batch of one, then the batch.
        let at_once = backend == Backend::Postgres && setup.is_empty();
        assert_eq!(
            scene.fulfilment.batches_committed_at_once(),
            2 * u64::from(at_once)
        );
        let world = &scene.world;
        let emails: Vec<(String, Option<String>)> = allot::on_db!(&world.db, read, |pool, sql| {
            sqlx::query_as(sql("select o.order_id, j.request_id from orders o
                   join jobs j on j.id = o.email_job_id order by o.order_id"))
            .fetch_all(pool)
            .await
        })
        .unwrap();
        let expected: Vec<(String, Option<String>)> = ["a", "b", "c", "first"]
            .iter()
            .map(|&o| (o.to_string(), (o != "first").then(|| request(o)).flatten()))
            .collect();
        assert_eq!(emails, expected, "{setup:?}");
        let mut announced: Vec<Option<String>> = allot::on_db!(&world.db, read, |pool, sql| {
            sqlx::query_scalar(sql(
                "select request_id from jobs where kind = 'merchant_webhook'",
            ))
            .fetch_all(pool)
            .await
        })
        .unwrap();
        announced.sort();
        let expected: Vec<Option<String>> = match setup {
            [] => Vec::new(),
            _ => vec![None, request("a"), request("b"), request("c")],
        };
        assert_eq!(announced, expected);
    }
}

/// On PostgreSQL a batch whose orders all get keys, on a store with no
/// merchant endpoint, is placed and committed by one statement: the same
/// orders, keys, emails and history as in a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_needs_nothing_more_is_committed_by_one_statement() {
    if !Backend::Postgres.available() {
        return;
    }
    let scene = scene(Backend::Postgres, 10, None).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b", "a", "c"]).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::Fulfilled);
    use Status::*;
    assert_eq!(
        outcomes,
        [Ok(Fulfilled), Ok(Fulfilled), Ok(Duplicate), Ok(Fulfilled)]
    );
    assert_eq!(
        scene.fulfilment.batches_committed_at_once(),
        2,
        "the first order's batch of one, then the batch"
    );
    let world = &scene.world;
    let expected: Vec<(String, String)> = ["first", "a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(n, o)| (o.to_string(), format!("KEY-{:03}", n + 1)))
        .collect();
    assert_eq!(keys_by_order(world).await, expected);
    assert_eq!(
        count(world, "select count(*) from jobs where kind = 'key_email'").await,
        4
    );
    let c = allot::orders::find(&world.db, Source::Generic, "c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state, "fulfilled");
    let delivery = c.email_delivery.expect("a fulfilled order names its email");
    assert_eq!(
        c.history.last().unwrap().detail,
        format!(
            "received from generic; key #4 of course assigned, email to the buyer queued (job {})",
            delivery.job_id
        )
    );
}

/// The statement that commits a batch at once (migration 0019) refuses one
/// that needs more, before anything is written: with a merchant endpoint
/// enabled, or with an order of the SKU waiting for stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_statement_that_commits_at_once_refuses_a_batch_that_needs_more() {
    use sqlx::Connection;
    if !Backend::Postgres.available() {
        return;
    }
    let world = World::new(Backend::Postgres, |_| {}).await;
    seed_keys(&world.db, "course", &["KEY-001".to_string()]).await;
    let mut conn = sqlx::PgConnection::connect(&world.settings.database.url)
        .await
        .unwrap();
    let call = |order_ids: &'static [&'static str]| {
        let emails: Vec<String> = order_ids
            .iter()
            .map(|o| format!("{o}@buyer.test"))
            .collect();
        sqlx::query_as::<_, (i64, String)>(
            "select out_ref,
                    case when out_key is null then 'awaiting_stock' else 'fulfilled' end
               from allot_place_orders(
                 'course', array_fill('generic'::text, array[cardinality($1::text[])]), $1,
                 $2, array_fill(null::text, array[cardinality($1::text[])]),
                 array_fill(null::text, array[cardinality($1::text[])]),
                 array_fill(null::text, array[cardinality($1::text[])]), 0, 5,
                 null, null, null, 0, $3::jsonb, true)",
        )
        .bind(order_ids)
        .bind(emails)
        .bind(allot::orders::history::words_for_postgres())
    };
    let refused = |result: Result<Vec<(i64, String)>, sqlx::Error>| match result {
        Err(sqlx::Error::Database(e)) => e.code().as_deref() == Some("AL001"),
        _ => false,
    };
    let stored = async |conn: &mut sqlx::PgConnection| -> (i64, i64) {
        sqlx::query_as(
            "select (select count(*) from orders),
                    (select count(*) from license_keys where status = 'available')",
        )
        .fetch_one(conn)
        .await
        .unwrap()
    };

    // Two orders, one key: the second would wait.
    assert!(refused(call(&["a", "b"]).fetch_all(&mut conn).await));
    assert_eq!(stored(&mut conn).await, (0, 1), "nothing written");

    sqlx::query(
        "insert into endpoints (url, events, secret, created_at, updated_at)
         values ('http://127.0.0.1:9/hook', 'stock.*', 'whsec_dGVzdA==', 0, 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert!(refused(call(&["a"]).fetch_all(&mut conn).await));
    assert_eq!(stored(&mut conn).await, (0, 1), "nothing written");

    sqlx::query("update endpoints set enabled = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let placed = call(&["a"]).fetch_all(&mut conn).await.unwrap();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].1, "fulfilled");
    assert_eq!(stored(&mut conn).await, (1, 0), "committed");
}

/// A batch that runs short of keys while another transaction holds one
/// (PostgreSQL; a batch refused a commit at once holds keys until it rolls
/// back) does not make its orders wait: the statement fails as a
/// serialization failure, writing nothing, and once the holder has let the
/// key go, the batch run again gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_short_of_keys_another_transaction_holds_is_run_again() {
    use sqlx::Connection;
    if !Backend::Postgres.available() {
        return;
    }
    let world = World::new(Backend::Postgres, |_| {}).await;
    seed_keys(&world.db, "course", &["KEY-001".into(), "KEY-002".into()]).await;
    let url = &world.settings.database.url;
    let holder = Holder::hold(
        Backend::Postgres,
        url,
        "select 1 from license_keys where license_key = 'KEY-001' for update",
    )
    .await;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let call = "select case when out_key is null then 'awaiting_stock' else 'fulfilled' end
                  from allot_place_orders(
                    'course', array['generic', 'generic'], array['a', 'b'],
                    array['a@buyer.test', 'b@buyer.test'], array[null, null]::text[],
                    array[null, null]::text[], array[null, null]::text[], 0, 5, null, null,
                    null, 0, $1::jsonb, true)";
    let stored = "select (select count(*) from orders),
                         (select count(*) from license_keys where status = 'available')";
    match sqlx::query_scalar::<_, String>(call)
        .bind(allot::orders::history::words_for_postgres())
        .fetch_all(&mut conn)
        .await
    {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("40001"), "{e}"),
        other => panic!("expected a serialization failure, got {other:?}"),
    }
    let nothing: (i64, i64) = sqlx::query_as(stored).fetch_one(&mut conn).await.unwrap();
    assert_eq!(nothing, (0, 2), "nothing written");

    holder.release().await;
    let placed: Vec<String> = sqlx::query_scalar(call)
        .bind(allot::orders::history::words_for_postgres())
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(placed, ["fulfilled", "fulfilled"]);
    let committed: (i64, i64) = sqlx::query_as(stored).fetch_one(&mut conn).await.unwrap();
    assert_eq!(committed, (2, 0));
}

/// The same for an order placed alone: while another transaction holds the
/// last key, the order is not told to wait but that the database is busy
/// (503, try again), with nothing stored; once that transaction has sold
/// the key, the order waits for stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_waits_for_stock_only_once_the_last_key_held_elsewhere_is_sold() {
    if !Backend::Postgres.available() {
        return;
    }
    let world = World::new(Backend::Postgres, |_| {}).await;
    seed_keys(&world.db, "course", &["KEY-001".into()]).await;
    let holder = Holder::hold(
        Backend::Postgres,
        &world.settings.database.url,
        "update license_keys set status = 'assigned', assigned_at = 0
          where license_key = 'KEY-001'",
    )
    .await;
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings);
    match place(&fulfilment, "x").await.unwrap() {
        Err(error) => assert!(error.is_contention(), "{error}"),
        Ok(receipt) => panic!("answered {:?} while the key was held", receipt.status),
    }
    assert_eq!(count(&world, "select count(*) from orders").await, 0);

    holder.commit().await;
    let receipt = place(&fulfilment, "x").await.unwrap().unwrap();
    assert_eq!(receipt.status, Status::AwaitingStock);
}

/// On PostgreSQL, where the batch is one function call: another process
/// stores one of the batch's orders (set aside, as an unparseable delivery
/// would be) while the batch's insert waits for that row. The batch is run
/// again, finds the order stored and set aside, and takes it up again in
/// its place: every order is placed once, each with its own key and email.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_another_process_stores_meanwhile_is_placed_once() {
    if !Backend::Postgres.available() {
        return;
    }
    let scene = scene(Backend::Postgres, 10, None).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b", "c"]).await;
    let other = Holder::hold(
        Backend::Postgres,
        &scene.world.settings.database.url,
        "insert into orders (source, order_id, state, created_at, updated_at)
         values ('generic', 'b', 'needs_attention', 0, 0)",
    )
    .await;
    scene.holder.release().await;
    assert_eq!(
        scene.first.await.unwrap().unwrap().status,
        Status::Fulfilled
    );
    let world = &scene.world;
    eventually(
        "the batch to wait for the other process's row",
        async || {
            count(
                world,
                "select count(*) from pg_stat_activity
              where wait_event_type = 'Lock' and query like '%from allot_place_orders%'",
            )
            .await
                == 1
        },
    )
    .await;
    other.commit().await;

    use Status::*;
    assert_eq!(
        statuses(pending).await,
        [Ok(Fulfilled), Ok(Fulfilled), Ok(Fulfilled)]
    );
    let mut keys = keys_by_order(world).await;
    keys.sort_by(|x, y| x.1.cmp(&y.1));
    let keys: Vec<(&str, &str)> = keys.iter().map(|(o, k)| (&**o, &**k)).collect();
    assert_eq!(
        keys,
        [
            ("first", "KEY-001"),
            ("a", "KEY-002"),
            ("b", "KEY-003"),
            ("c", "KEY-004")
        ],
        "the batch again, b taken up in its place"
    );
    assert_eq!(count(world, "select count(*) from orders").await, 4);
    assert_eq!(
        count(world, "select count(*) from jobs where kind = 'key_email'").await,
        4
    );
}

/// On PostgreSQL a batch's walk for keys starts after the last key the
/// process's previous batch of the SKU assigned (migration 0016), not at
/// the oldest key: every key sold leaves a dead index entry there. Here
/// KEY-002 is available behind that place, as a key is that a batch
/// stepped over while another transaction held it. The next batch starts
/// after the place; the one after, finding too few keys there, walks from
/// the oldest again and sells KEY-002 before any order waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_starts_after_the_last_key_sold_and_still_sells_a_key_stepped_over() {
    use sqlx::Connection;
    if !Backend::Postgres.available() {
        return;
    }
    let world = World::new(Backend::Postgres, |_| {}).await;
    let keys: Vec<String> = (1..=6).map(|n| format!("KEY-{n:03}")).collect();
    seed_keys(&world.db, "course", &keys).await;
    let mut conn = sqlx::PgConnection::connect(&world.settings.database.url)
        .await
        .unwrap();
    sqlx::query(
        "update license_keys set status = 'assigned'
          where license_key in ('KEY-001', 'KEY-003', 'KEY-004')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let key_id = async |conn: &mut sqlx::PgConnection, key: &str| -> i64 {
        sqlx::query_scalar("select id from license_keys where license_key = $1")
            .bind(key)
            .fetch_one(conn)
            .await
            .unwrap()
    };
    // (order id, its key, its state) for a batch of `order_ids` placed
    // after key `after`.
    async fn place(
        conn: &mut sqlx::PgConnection,
        order_ids: &[&str],
        after: i64,
    ) -> Vec<(String, Option<String>, String)> {
        let emails: Vec<String> = order_ids
            .iter()
            .map(|o| format!("{o}@buyer.test"))
            .collect();
        let sources = vec!["generic"; order_ids.len()];
        let coupons: Vec<Option<&str>> = vec![None; order_ids.len()];
        // One row per order, in the batch's order. The keys' rows are
        // read as they were before the call (one statement, one snapshot).
        // `$4` three times: no coupon codes, payments or request ids.
        let placed: Vec<(Option<String>, String)> = sqlx::query_as(
            "select k.license_key,
                    case when p.out_key is null then 'awaiting_stock' else 'fulfilled' end
               from allot_place_orders('course', $1, $2, $3, $4, $4, $4, 0, 5, $5, null, null,
                                       0, $6::jsonb, false) p
               left join license_keys k on k.id = p.out_key",
        )
        .bind(&sources)
        .bind(order_ids)
        .bind(&emails)
        .bind(&coupons)
        .bind(after)
        .bind(allot::orders::history::words_for_postgres())
        .fetch_all(conn)
        .await
        .unwrap();
        order_ids
            .iter()
            .zip(placed)
            .map(|(o, (key, state))| (o.to_string(), key, state))
            .collect()
    }
    let owned = |rows: &[(&str, Option<&str>, &str)]| -> Vec<(String, Option<String>, String)> {
        rows.iter()
            .map(|(o, k, s)| (o.to_string(), k.map(str::to_string), s.to_string()))
            .collect()
    };

    let after = key_id(&mut conn, "KEY-004").await;
    assert_eq!(
        place(&mut conn, &["a", "b"], after).await,
        owned(&[
            ("a", Some("KEY-005"), "fulfilled"),
            ("b", Some("KEY-006"), "fulfilled")
        ]),
        "the walk starts after the last key sold"
    );
    let after = key_id(&mut conn, "KEY-006").await;
    assert_eq!(
        place(&mut conn, &["c", "d"], after).await,
        owned(&[
            ("c", Some("KEY-002"), "fulfilled"),
            ("d", None, "awaiting_stock")
        ]),
        "too few keys after the place: the walk starts again from the oldest"
    );
}

/// Two lanes of batches for one SKU (as PostgreSQL runs them): 120 orders,
/// each delivered twice at once, race for 100 keys. Each order is stored
/// once, answered once as placed and once as a duplicate; every key is
/// sold once, to one order, with one email; 20 orders wait for stock.
async fn orders_delivered_twice_race_through_two_lanes(backend: Backend) {
    let world = World::new(backend, |_| {}).await;
    let keys: Vec<String> = (1..=100).map(|n| format!("KEY-{n:03}")).collect();
    seed_keys(&world.db, "course", &keys).await;
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings)
        .grouped_in(tokio_util::task::TaskTracker::new(), 2);
    let order_ids: Vec<String> = (0..120).map(|n| format!("race-{n}")).collect();
    let lanes: std::collections::HashSet<u8> = order_ids
        .iter()
        .map(|id| fulfilment.lane(Source::Generic, id))
        .collect();
    assert_eq!(lanes.len(), 2, "the orders fall in both lanes");
    let pending: Vec<(String, Pending, Pending)> = order_ids
        .iter()
        .map(|id| (id.clone(), place(&fulfilment, id), place(&fulfilment, id)))
        .collect();
    use Status::*;
    let (mut fulfilled, mut waiting) = (0, 0);
    for (id, one, two) in pending {
        let mut answers = [one.await.unwrap(), two.await.unwrap()].map(|a| match a {
            Ok(receipt) => receipt.status,
            Err(error) => panic!("{id}: {error}"),
        });
        answers.sort_by_key(|s| s.as_str());
        match answers {
            [AwaitingStock, Duplicate] => waiting += 1,
            [Duplicate, Fulfilled] => fulfilled += 1,
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!((fulfilled, waiting), (100, 20));
    let held = keys_by_order(&world).await;
    let distinct: std::collections::HashSet<&String> = held.iter().map(|(_, k)| k).collect();
    assert_eq!(
        (held.len(), distinct.len()),
        (100, 100),
        "each key sold once"
    );
    assert_eq!(count(&world, "select count(*) from orders").await, 120);
    assert_eq!(
        count(&world, "select count(*) from jobs where kind = 'key_email'").await,
        100,
        "one email per key"
    );
    assert_eq!(
        count(
            &world,
            "select count(*) from orders where state = 'awaiting_stock'"
        )
        .await,
        20
    );
}

/// On PostgreSQL a process places two batches of one SKU at once: orders
/// in the two lanes, each held up by a row of an outside transaction, wait
/// in the database side by side; once let go, both are placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_runs_two_batches_of_a_sku_at_once() {
    if !Backend::Postgres.available() {
        return;
    }
    let world = World::new(Backend::Postgres, |_| {}).await;
    seed_keys(&world.db, "course", &["KEY-001".into(), "KEY-002".into()]).await;
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings)
        .grouped(tokio_util::task::TaskTracker::new());
    let in_lane = |lane: u8| {
        (0..)
            .map(|n| format!("held-{n}"))
            .find(|id| fulfilment.lane(Source::Generic, id) == lane)
            .unwrap()
    };
    let (one, two) = (in_lane(0), in_lane(1));
    let hold = format!(
        "insert into orders (source, order_id, state, created_at, updated_at)
         values ('generic', '{one}', 'needs_attention', 0, 0),
                ('generic', '{two}', 'needs_attention', 0, 0)"
    );
    let holder = Holder::hold(Backend::Postgres, &world.settings.database.url, &hold).await;
    let pending = [place(&fulfilment, &one), place(&fulfilment, &two)];
    eventually("both batches to wait in the database", async || {
        count(
            &world,
            "select count(*) from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock'",
        )
        .await
            == 2
    })
    .await;
    holder.release().await;
    assert_eq!(
        statuses(pending.into()).await,
        [Ok(Status::Fulfilled), Ok(Status::Fulfilled)]
    );
    assert_eq!(keys_by_order(&world).await.len(), 2);
}

/// A worker of this process running its loop, ready to take jobs by hand.
struct Running {
    worker: allot::jobs::Worker,
    stop: tokio_util::sync::CancellationToken,
    loop_: tokio::task::JoinHandle<()>,
}

async fn running_worker(world: &World) -> Running {
    let worker = allot::app::worker(world.db.clone(), &world.settings).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let loop_ = tokio::spawn(
        worker
            .clone()
            .run(stop.clone(), std::time::Duration::from_secs(5)),
    );
    let handoff = worker.handoff();
    eventually("the worker to take key emails by hand", async || {
        handoff.reserve("key_email", 1).granted() == 1
    })
    .await;
    Running {
        worker,
        stop,
        loop_,
    }
}

/// [`held_up`], the batches' key emails handed to `handoff`'s worker.
async fn held_up_handing_to(
    backend: Backend,
    world: World,
    handoff: &allot::jobs::Handoff,
) -> Scene {
    let fulfilment = Fulfilment::new(world.db.clone(), &world.settings)
        .handing_to(handoff.clone())
        .grouped_in(tokio_util::task::TaskTracker::new(), 1);
    held_up(backend, world, fulfilment).await
}

/// A batch's key emails are inserted leased to this process's worker and
/// handed to it at commit: each is sent in one attempt by that worker. The
/// first order, a batch of one, hands its email over too.
async fn the_key_emails_of_a_batch_go_straight_to_the_worker(backend: Backend) {
    let world = world_with(backend, 5, None, &[]).await;
    let running = running_worker(&world).await;
    let handoff = running.worker.handoff();
    let scene = held_up_handing_to(backend, world, &handoff).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b", "a", "c"]).await;
    let (first, outcomes) = release(scene.holder, scene.first, pending).await;
    assert_eq!(first, Status::Fulfilled);
    use Status::*;
    assert_eq!(
        outcomes,
        [Ok(Fulfilled), Ok(Fulfilled), Ok(Duplicate), Ok(Fulfilled)]
    );
    let world = &scene.world;
    eventually("every key email sent", async || {
        count(
            world,
            "select count(*) from jobs where kind = 'key_email' and state = 'done'",
        )
        .await
            == 4
    })
    .await;
    assert_eq!(
        handoff.handed_over(),
        4,
        "the first order's email and the batch's three"
    );
    assert_eq!(
        count(
            world,
            "select count(*) from jobs where kind = 'key_email' and attempts = 1"
        )
        .await,
        4,
        "each email sent in its first attempt"
    );
    let by: Vec<(String, String)> = allot::on_db!(&world.db, read, |pool, sql| {
        sqlx::query_as(sql("select a.worker, a.outcome from job_attempts a
               join jobs j on j.id = a.job_id where j.kind = 'key_email'"))
        .fetch_all(pool)
        .await
    })
    .unwrap();
    let worker = running.worker.id().to_string();
    assert_eq!(by, vec![(worker, "done".to_string()); 4]);
    let mails = crate::helpers::read_eml_files(world.mail_dir.path());
    assert_eq!(mails.iter().filter(|m| m.contains("KEY-00")).count(), 4);
    running.stop.cancel();
    running.loop_.await.unwrap();
}

/// A paused worker takes nothing, by hand or by lease: the batch's emails
/// wait queued, and go out once it is resumed.
async fn a_paused_worker_is_handed_no_emails(backend: Backend) {
    let world = world_with(backend, 5, None, &[]).await;
    let running = running_worker(&world).await;
    let handoff = running.worker.handoff();
    running.worker.steering().pause();
    eventually("the paused worker to take nothing by hand", async || {
        handoff.reserve("key_email", 1).granted() == 0
    })
    .await;
    let scene = held_up_handing_to(backend, world, &handoff).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b"]).await;
    scene.holder.release().await;
    scene.first.await.unwrap().unwrap();
    assert!(
        statuses(pending)
            .await
            .iter()
            .all(|s| *s == Ok(Status::Fulfilled))
    );
    let world = &scene.world;
    assert_eq!(handoff.handed_over(), 0);
    assert_eq!(
        count(world, "select count(*) from jobs where kind = 'key_email' and state = 'queued' and attempts = 0").await,
        3
    );
    running.worker.steering().resume();
    eventually("every key email sent after the resume", async || {
        count(
            world,
            "select count(*) from jobs where kind = 'key_email' and state = 'done'",
        )
        .await
            == 3
    })
    .await;
    running.stop.cancel();
    running.loop_.await.unwrap();
}

/// The worker's process dies after the batch's emails were born leased to
/// it: nothing is lost. Once their lease expires another worker takes them
/// up, and the history shows the lost attempt.
async fn emails_handed_to_a_worker_that_died_are_sent_after_its_lease(backend: Backend) {
    let world = world_with(backend, 5, None, &[]).await;
    let running = running_worker(&world).await;
    let handoff = running.worker.handoff();
    // Killed: its loop ends where it is, and says nothing to anyone.
    running.loop_.abort();
    assert!(running.loop_.await.unwrap_err().is_cancelled());
    let scene = held_up_handing_to(backend, world, &handoff).await;
    let pending = queue_in_order(&scene.fulfilment, &["a", "b"]).await;
    scene.holder.release().await;
    scene.first.await.unwrap().unwrap();
    assert!(
        statuses(pending)
            .await
            .iter()
            .all(|s| *s == Ok(Status::Fulfilled))
    );
    let world = &scene.world;
    assert_eq!(handoff.handed_over(), 3);
    assert_eq!(
        count(
            world,
            "select count(*) from jobs where kind = 'key_email' and state = 'running'"
        )
        .await,
        3,
        "the batches' emails, leased to the dead worker"
    );

    let other = allot::app::worker(world.db.clone(), &world.settings).unwrap();
    let past_the_lease = allot::clock::now_ms() + world.settings.jobs.lease.as_millis() as i64 + 1;
    let events = other.run_once(past_the_lease).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| matches!(e, allot::jobs::WorkerEvent::Done { .. }))
    );
    assert_eq!(
        count(
            world,
            "select count(*) from job_attempts a join jobs j on j.id = a.job_id
                       where j.kind = 'key_email' and a.outcome = 'lease_expired'"
        )
        .await,
        3
    );
    let mails = crate::helpers::read_eml_files(world.mail_dir.path());
    assert_eq!(mails.iter().filter(|m| m.contains("KEY-00")).count(), 3);
}

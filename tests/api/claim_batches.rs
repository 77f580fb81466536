//! Group commit: claims on one coupon that arrive while a batch is in flight
//! are decided together in the next transaction, with the outcomes they
//! would get one by one.
//!
//! An outside transaction holds the coupon (its row lock; SQLite's write
//! lock) so that the first claim's batch waits in the database; the claims
//! queued meanwhile, in a known order, become the next batch.

use allot::coupons::{Amount, ClaimOutcome, Combiner, CouponError, CouponName, UserId};
use sqlx::Connection;

use crate::{
    helpers::{Backend, TestDb, eventually},
    on_every_backend,
};

on_every_backend!(
    claims_held_up_together_are_decided_as_one_batch,
    a_claim_that_breaks_its_batch_fails_alone,
);

/// A transaction of another connection that holds coupon `HOT`.
enum Holder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

impl Holder {
    async fn hold(backend: Backend, url: &str) -> Self {
        use sqlx::Executor;
        let lock = "select 1 from coupons where name = 'HOT' for update";
        match backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                c.execute("begin immediate").await.unwrap();
                Holder::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                c.execute("begin").await.unwrap();
                c.execute(lock).await.unwrap();
                Holder::Postgres(c)
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
                c.execute("begin").await.unwrap();
                c.execute(lock).await.unwrap();
                Holder::MySql(c)
            }
        }
    }

    async fn release(self) {
        use sqlx::Executor;
        match self {
            Holder::Sqlite(mut c) => c.execute("rollback").await.map(drop),
            Holder::Postgres(mut c) => c.execute("rollback").await.map(drop),
            Holder::MySql(mut c) => c.execute("rollback").await.map(drop),
        }
        .unwrap();
    }
}

type Pending = tokio::task::JoinHandle<Result<ClaimOutcome, CouponError>>;

struct Scene {
    claims: Combiner,
    holder: Holder,
    first: Pending,
    _db: TestDb,
}

/// Coupon `HOT` with `amount` units, held by an outside transaction, and a
/// first claim whose batch waits for it; a claim of `rejected` will fail.
async fn scene(backend: Backend, amount: i64, rejected: Option<&str>) -> Scene {
    let test_db = TestDb::create(backend).await;
    let settings = allot::config::Settings::for_database(test_db.url.clone());
    let db = allot::db::Db::open(&settings.database).await.unwrap();
    allot::coupons::create(&db, &hot(), Amount::parse(amount).unwrap())
        .await
        .unwrap();
    if let Some(user) = rejected {
        reject_user(backend, &test_db.url, user).await;
    }
    let claims = Combiner::new(db, tokio_util::task::TaskTracker::new());
    let holder = Holder::hold(backend, &test_db.url).await;
    let first = queue(&claims, "first");
    eventually("the first batch to be in flight", async || {
        claims.waiting("HOT") == Some(0)
    })
    .await;
    Scene {
        claims,
        holder,
        first,
        _db: test_db,
    }
}

fn hot() -> CouponName {
    CouponName::parse("HOT").unwrap()
}

fn queue(claims: &Combiner, user: &str) -> Pending {
    let (claims, user) = (claims.clone(), UserId::parse(user).unwrap());
    tokio::spawn(async move { claims.claim(&hot(), &user).await })
}

/// Queues claims for `users` one after the other, so the batch keeps
/// their order.
async fn queue_in_order(claims: &Combiner, users: &[&str]) -> Vec<Pending> {
    let mut pending = Vec::new();
    for (n, user) in users.iter().enumerate() {
        pending.push(queue(claims, user));
        eventually("the claim to join the queue", async || {
            claims.waiting("HOT") == Some(n + 1)
        })
        .await;
    }
    pending
}

async fn claimed_by(claims: &Combiner) -> (i64, Vec<String>) {
    let coupon = allot::coupons::show(claims.db(), &hot()).await.unwrap();
    (coupon.remaining_amount, coupon.claimed_by)
}

/// Duplicates and a sell-out inside one batch: eight units, the first
/// taken alone, then fifteen claims of twelve users in one batch.
async fn claims_held_up_together_are_decided_as_one_batch(backend: Backend) {
    let scene = scene(backend, 8, None).await;
    let users = [
        "u1", "u2", "u3", "u3", "u4", "u5", "u5", "u5", "u6", "u7", "u8", "u9", "u10", "u11", "u12",
    ];
    let pending = queue_in_order(&scene.claims, &users).await;
    scene.holder.release().await;

    assert_eq!(scene.first.await.unwrap().unwrap(), ClaimOutcome::Granted);
    let mut outcomes = Vec::new();
    for p in pending {
        outcomes.push(p.await.unwrap().unwrap());
    }
    use ClaimOutcome::*;
    #[rustfmt::skip]
    let expected = [
        Granted, Granted, Granted, AlreadyClaimed, Granted, Granted, AlreadyClaimed,
        AlreadyClaimed, Granted, Granted, OutOfStock, OutOfStock, OutOfStock, OutOfStock,
        OutOfStock,
    ];
    assert_eq!(outcomes, expected);
    let (remaining, holders) = claimed_by(&scene.claims).await;
    assert_eq!(remaining, 0);
    assert_eq!(holders, ["first", "u1", "u2", "u3", "u4", "u5", "u6", "u7"]);
    assert_eq!(
        scene.claims.transactions(),
        2,
        "the first claim, then one batch"
    );
    eventually("the runner to retire", async || {
        scene.claims.waiting("HOT").is_none()
    })
    .await;
}

/// A trigger rejects one user's claim: the batch's transaction fails, and
/// only that claim fails with it; the others are granted.
async fn a_claim_that_breaks_its_batch_fails_alone(backend: Backend) {
    let scene = scene(backend, 10, Some("poison")).await;
    let pending = queue_in_order(&scene.claims, &["a", "poison", "b"]).await;
    scene.holder.release().await;

    assert_eq!(scene.first.await.unwrap().unwrap(), ClaimOutcome::Granted);
    let mut outcomes = Vec::new();
    for p in pending {
        outcomes.push(p.await.unwrap());
    }
    assert!(
        matches!(outcomes[0], Ok(ClaimOutcome::Granted)),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Err(CouponError::Database(_))),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[2], Ok(ClaimOutcome::Granted)),
        "{outcomes:?}"
    );
    let (remaining, holders) = claimed_by(&scene.claims).await;
    assert_eq!(
        (remaining, holders),
        (7, vec!["first".into(), "a".into(), "b".into()])
    );
    assert_eq!(
        scene.claims.transactions(),
        5,
        "the first claim, the batch that failed, then each of its claims alone"
    );
}

/// A trigger that makes inserting a claim of `user` fail.
async fn reject_user(backend: Backend, url: &str, user: &str) {
    use sqlx::Executor;
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "create trigger reject_claim before insert on coupon_claims
                   when new.user_id = '{user}'
                 begin select raise(abort, 'claim rejected'); end"
            ))))
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "create function reject_claim() returns trigger language plpgsql as $$
                 begin
                   if new.user_id = '{user}' then raise exception 'claim rejected'; end if;
                   return new;
                 end $$;
                 create trigger reject_claim before insert on coupon_claims
                   for each row execute function reject_claim();"
            ))))
            .await
            .unwrap();
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            c.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "create trigger reject_claim before insert on coupon_claims for each row
                 begin
                   if new.user_id = '{user}' then
                     signal sqlstate '45000' set message_text = 'claim rejected';
                   end if;
                 end"
            ))))
            .await
            .unwrap();
        }
    }
}

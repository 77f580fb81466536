//! Group commit: claims on one coupon that arrive while a batch is in flight
//! are decided together in the next transaction, with the outcomes they
//! would get one by one.
//!
//! An outside transaction holds the coupon (its row lock; SQLite's write
//! lock) so that the first claim's batch waits in the database; the claims
//! queued meanwhile, in a known order, become the next batch.

use crate::{
    helpers::{Backend, Holder, TestDb, eventually, reject_inserts},
    on_every_backend,
};
use allot::coupons::{Amount, ClaimOutcome, Combiner, CouponError, CouponName, UserId};

on_every_backend!(
    claims_held_up_together_are_decided_as_one_batch,
    a_claim_that_breaks_its_batch_fails_alone,
);

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
        reject_inserts(backend, &test_db.url, "coupon_claims", "user_id", user).await;
    }
    let claims = Combiner::new(db, tokio_util::task::TaskTracker::new());
    let lock = "select 1 from coupons where name = 'HOT' for update";
    let holder = Holder::hold(backend, &test_db.url, lock).await;
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

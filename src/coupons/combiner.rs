//! Group commit for claims: concurrent claims on one coupon share one
//! transaction ([`crate::batch`]), so a hot coupon is not held to one commit
//! per claim.
//!
//! Correctness stays in the database: the coupon row lock orders batches of
//! any number of processes, and a batch decides its claims in arrival order
//! with the outcomes they would get one by one ([`store::claim_batch`]).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio_util::task::TaskTracker;

use super::{ClaimOutcome, CouponError, CouponName, UserId, store};
use crate::{
    batch::{Batcher, Decide},
    db::{Db, is_contention, is_unavailable},
};

/// The most claims one transaction decides. Bounded so that one batch's
/// statements stay small (the `in (…)` list, the multi-row insert) and its
/// lock is held briefly; the rest wait for the next batch.
const MAX_BATCH: usize = 256;

type Answer = Result<ClaimOutcome, CouponError>;

/// Claims of one process, combined per coupon. Cheap to clone.
#[derive(Clone)]
pub struct Combiner {
    batches: Batcher<Claims>,
}

struct Claims {
    db: Db,
    /// Claim transactions begun, batches and claims decided alone alike.
    transactions: AtomicU64,
}

impl Combiner {
    pub fn new(db: Db, tasks: TaskTracker) -> Self {
        let runtime = db.writer_runtime();
        let claims = Claims {
            db,
            transactions: AtomicU64::new(0),
        };
        Self {
            batches: Batcher::new(claims, tasks, MAX_BATCH, "allot_claim_batch_size").on(runtime),
        }
    }

    pub fn db(&self) -> &Db {
        &self.batches.decider().db
    }

    /// How many claim transactions this combiner has begun.
    pub fn transactions(&self) -> u64 {
        self.batches.decider().transactions.load(Ordering::Relaxed)
    }

    /// How many claims on `coupon` wait for the batch in flight to commit;
    /// `None` when no batch of it is in flight.
    pub fn waiting(&self, coupon: &str) -> Option<usize> {
        let coupon = CouponName::parse(coupon).ok()?;
        self.batches.waiting(&coupon)
    }

    /// Decides one claim, together with whatever else is claiming the same
    /// coupon right now.
    pub async fn claim(&self, coupon: &CouponName, user: &UserId) -> Answer {
        self.batches
            .submit(coupon, user.clone())
            .await
            // Only a panic inside the runner drops a claim unanswered.
            .unwrap_or(Err(CouponError::Interrupted))
    }
}

impl Decide for Claims {
    type Key = CouponName;
    type Request = UserId;
    type Answer = Answer;

    /// Decides `users` in one transaction; if that transaction fails for a
    /// reason of its own (not a lock conflict, not an unreachable database),
    /// each claim is decided alone, so that one bad claim fails alone.
    async fn decide(&self, coupon: &CouponName, users: Vec<UserId>) -> Vec<Answer> {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        match store::claim_batch(&self.db, coupon, &users).await {
            Ok(Some(outcomes)) => outcomes.into_iter().map(Ok).collect(),
            Ok(None) => users.iter().map(|_| Err(CouponError::NotFound)).collect(),
            Err(error) if users.len() == 1 || is_contention(&error) || is_unavailable(&error) => {
                let error = Arc::new(error);
                users
                    .iter()
                    .map(|_| Err(CouponError::Database(error.clone())))
                    .collect()
            }
            Err(error) => {
                tracing::warn!(%error, claims = users.len(), "a batch of claims failed; deciding each alone");
                let mut answers = Vec::with_capacity(users.len());
                for user in &users {
                    self.transactions.fetch_add(1, Ordering::Relaxed);
                    answers.push(
                        match store::claim_batch(&self.db, coupon, std::slice::from_ref(user)).await
                        {
                            Ok(Some(outcomes)) => Ok(outcomes[0]),
                            Ok(None) => Err(CouponError::NotFound),
                            Err(error) => Err(CouponError::Database(Arc::new(error))),
                        },
                    );
                }
                answers
            }
        }
    }
}

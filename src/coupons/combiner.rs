//! Group commit for claims: concurrent claims on one coupon share one
//! transaction, so a hot coupon is not held to one commit per claim.
//!
//! Each coupon with claims in flight has a queue and one runner task. A
//! claim joins its coupon's queue; if no runner is active it starts one. The
//! runner takes everything queued (up to [`MAX_BATCH`]), decides it with one
//! [`store::claim_batch`], answers each claim, and goes on until the queue is
//! empty. A lone claim therefore commits at once (no window to wait out),
//! and under load each batch gathers the claims that arrived while the
//! previous one committed.
//!
//! Correctness stays in the database: the coupon row lock orders batches of
//! any number of processes, and a batch decides its claims in arrival order
//! with the outcomes they would get one by one. The runner is a task of its
//! own, so a client that hangs up cannot cancel a batch half-way for the
//! others; a crash loses only claims that were never answered.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::{ClaimOutcome, CouponError, CouponName, UserId, store};
use crate::db::{Db, is_contention, is_unavailable};

/// The most claims one transaction decides. Bounded so that one batch's
/// statements stay small (the `in (…)` list, the multi-row insert) and its
/// lock is held briefly; the rest wait for the next batch.
const MAX_BATCH: usize = 256;

type Answer = Result<ClaimOutcome, CouponError>;

struct Waiting {
    user: UserId,
    answer: oneshot::Sender<Answer>,
}

/// The queues of the coupons with claims in flight; shared by all requests
/// of one process. A coupon's entry exists exactly while its runner runs,
/// so idle coupons hold no memory.
#[derive(Clone)]
pub struct Combiner {
    db: Db,
    queues: Arc<Mutex<HashMap<String, Vec<Waiting>>>>,
    /// The application's tasks: it waits for runners before closing the pool.
    tasks: TaskTracker,
    /// Claim transactions begun, batches and claims decided alone alike.
    transactions: Arc<AtomicU64>,
}

impl Combiner {
    pub fn new(db: Db, tasks: TaskTracker) -> Self {
        Self {
            db,
            queues: Arc::default(),
            tasks,
            transactions: Arc::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// How many claim transactions this combiner has begun.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// How many claims on `coupon` wait for the batch in flight to commit;
    /// `None` when no batch of it is in flight.
    pub fn waiting(&self, coupon: &str) -> Option<usize> {
        self.lock().get(coupon).map(Vec::len)
    }

    /// Decides one claim, together with whatever else is claiming the same
    /// coupon right now.
    pub async fn claim(&self, coupon: &CouponName, user: &UserId) -> Answer {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            user: user.clone(),
            answer,
        };
        let start_runner = {
            let mut queues = self.lock();
            match queues.get_mut(coupon.as_str()) {
                Some(queue) => {
                    queue.push(waiting);
                    false
                }
                None => {
                    queues.insert(coupon.as_str().to_string(), vec![waiting]);
                    true
                }
            }
        };
        if start_runner {
            self.tasks.spawn(self.clone().run(coupon.clone()));
        }
        answered.await.unwrap_or_else(|_| {
            // Only a panic inside the runner drops a claim unanswered.
            Err(CouponError::Interrupted)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Waiting>>> {
        // A panic elsewhere while holding the lock leaves the map whole
        // (every change to it is one call), so its data is still good.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs batches for `coupon` until its queue is empty, then retires.
    async fn run(self, coupon: CouponName) {
        loop {
            let batch: Vec<Waiting> = {
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(coupon.as_str()) else {
                    return;
                };
                if queue.is_empty() {
                    queues.remove(coupon.as_str());
                    return;
                }
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            metrics::histogram!("allot_claim_batch_size").record(batch.len() as f64);
            self.decide(&coupon, batch).await;
        }
    }

    /// Decides `batch` in one transaction; if that transaction fails for a
    /// reason of its own (not a lock conflict, not an unreachable database),
    /// each claim is decided alone, so that one bad claim fails alone.
    async fn decide(&self, coupon: &CouponName, batch: Vec<Waiting>) {
        let users: Vec<UserId> = batch.iter().map(|w| w.user.clone()).collect();
        self.transactions.fetch_add(1, Ordering::Relaxed);
        match store::claim_batch(&self.db, coupon, &users).await {
            Ok(Some(outcomes)) => {
                for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = waiting.answer.send(Ok(outcome));
                }
            }
            Ok(None) => {
                for waiting in batch {
                    let _ = waiting.answer.send(Err(CouponError::NotFound));
                }
            }
            Err(error) if batch.len() == 1 || is_contention(&error) || is_unavailable(&error) => {
                let error = Arc::new(error);
                for waiting in batch {
                    let _ = waiting
                        .answer
                        .send(Err(CouponError::Database(error.clone())));
                }
            }
            Err(error) => {
                tracing::warn!(%error, claims = batch.len(), "a batch of claims failed; deciding each alone");
                for waiting in batch {
                    self.transactions.fetch_add(1, Ordering::Relaxed);
                    let alone =
                        store::claim_batch(&self.db, coupon, std::slice::from_ref(&waiting.user))
                            .await;
                    let answer = match alone {
                        Ok(Some(outcomes)) => Ok(outcomes[0]),
                        Ok(None) => Err(CouponError::NotFound),
                        Err(error) => Err(CouponError::Database(Arc::new(error))),
                    };
                    let _ = waiting.answer.send(answer);
                }
            }
        }
    }
}

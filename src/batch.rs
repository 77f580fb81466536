//! Group commit: concurrent requests on one hot row (a coupon, a SKU's key
//! pool) share one transaction, so the row is not held to one commit per
//! request.
//!
//! Each key with requests in flight has a queue and one runner task. A
//! request joins its key's queue; if no runner is active it starts one. The
//! runner takes everything queued (up to a bound), hands it to the
//! [`Decide`] implementation as one batch, answers each request, and goes
//! on until the queue is empty. A lone request is therefore decided at once
//! (no window to wait out), and under load each batch gathers the requests
//! that arrived while the previous one committed.
//!
//! The runner is a task of its own, so a client that hangs up cannot cancel
//! a batch half-way for the others; a crash loses only requests that were
//! never answered. Correctness stays with the decider and the database: a
//! batch must give each request the outcome it would get alone, in arrival
//! order, and row locks order the batches of different processes.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, oneshot};
use tokio_util::task::TaskTracker;

/// Decides a batch of requests that share one key.
pub trait Decide: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    type Request: Send + 'static;
    type Answer: Send + 'static;

    /// One answer per request, in the order of `batch`. A missing answer
    /// reaches its request as `None` from [`Batcher::submit`].
    fn decide(
        &self,
        key: &Self::Key,
        batch: Vec<Self::Request>,
    ) -> impl Future<Output = Vec<Self::Answer>> + Send;
}

type Queue<D> = Vec<(
    <D as Decide>::Request,
    oneshot::Sender<<D as Decide>::Answer>,
)>;

/// The queues of the keys with requests in flight, shared by all requests
/// of one process. A key's entry exists exactly while its runner runs, so
/// idle keys hold no memory. Cheap to clone.
pub struct Batcher<D: Decide> {
    decider: Arc<D>,
    queues: Arc<Mutex<HashMap<D::Key, Queue<D>>>>,
    /// The application's tasks: it waits for runners before closing the pool.
    tasks: TaskTracker,
    max_batch: usize,
    /// Names the batch-size histogram (`allot_<name>_batch_size`).
    histogram: &'static str,
    /// Batches handed to the decider so far.
    batches: Arc<AtomicU64>,
    /// See [`Batcher::lingering`].
    linger: Option<(Duration, usize)>,
    /// Wakes lingering runners when a queue reaches the fill.
    filled: Arc<Notify>,
    /// Where runners run (see [`Batcher::on`]); the caller's runtime if none.
    runtime: Option<tokio::runtime::Handle>,
}

impl<D: Decide> Clone for Batcher<D> {
    fn clone(&self) -> Self {
        Self {
            decider: self.decider.clone(),
            queues: self.queues.clone(),
            tasks: self.tasks.clone(),
            max_batch: self.max_batch,
            histogram: self.histogram,
            batches: self.batches.clone(),
            linger: self.linger,
            filled: self.filled.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<D: Decide> Batcher<D> {
    /// `max_batch` bounds one transaction's statements and how long it holds
    /// its locks; the rest wait for the next batch.
    pub fn new(decider: D, tasks: TaskTracker, max_batch: usize, histogram: &'static str) -> Self {
        Self {
            decider: Arc::new(decider),
            queues: Arc::default(),
            tasks,
            max_batch: max_batch.max(1),
            histogram,
            batches: Arc::default(),
            linger: None,
            filled: Arc::default(),
            runtime: None,
        }
    }

    /// A runner that finds fewer than `fill` requests queued waits up to
    /// `linger` for the queue to fill before it starts the batch: a trickle
    /// of requests shares one batch, and a flood, which fills the queue at
    /// once, does not wait. Only for work
    /// whose requesters can wait (outcomes to record, not answers a client
    /// waits for): by default a lone request is decided at once.
    pub fn lingering(mut self, linger: Duration, fill: usize) -> Self {
        self.linger = Some((linger, fill));
        self
    }

    /// Runs the runners on `runtime` (if any) rather than the caller's:
    /// for a decider whose batches are a chain of short waits
    /// ([`crate::db::Db::writer_runtime`]).
    pub fn on(mut self, runtime: Option<tokio::runtime::Handle>) -> Self {
        self.runtime = runtime;
        self
    }

    pub fn decider(&self) -> &D {
        &self.decider
    }

    /// How many batches were handed to the decider.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// How many requests on `key` wait for the batch in flight to commit;
    /// `None` when no batch of it is in flight.
    pub fn waiting(&self, key: &D::Key) -> Option<usize> {
        self.lock().get(key).map(Vec::len)
    }

    /// Decides one request together with whatever else is in flight on the
    /// same key. `None` only if the decider panicked or gave no answer.
    pub async fn submit(&self, key: &D::Key, request: D::Request) -> Option<D::Answer> {
        let (answer, answered) = oneshot::channel();
        let start_runner = {
            let mut queues = self.lock();
            match queues.get_mut(key) {
                Some(queue) => {
                    queue.push((request, answer));
                    if self.linger.is_some_and(|(_, fill)| queue.len() == fill) {
                        self.filled.notify_waiters();
                    }
                    false
                }
                None => {
                    queues.insert(key.clone(), vec![(request, answer)]);
                    true
                }
            }
        };
        if start_runner {
            let runner = self.tasks.track_future(self.clone().run(key.clone()));
            match &self.runtime {
                Some(runtime) => drop(runtime.spawn(runner)),
                None => drop(tokio::spawn(runner)),
            }
        }
        answered.await.ok()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<D::Key, Queue<D>>> {
        // A panic elsewhere while holding the lock leaves the map whole
        // (every change to it is one call), so its data is still good.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs batches for `key` until its queue is empty, then retires.
    async fn run(self, key: D::Key) {
        // Should the decider panic, the guard retires the key, so the next
        // request starts a runner again instead of queueing forever; the
        // requests of the failed batch see their senders dropped.
        let _retire = Retire {
            batcher: &self,
            key: &key,
        };
        loop {
            if let Some((linger, fill)) = self.linger {
                // Listening before counting, so a fill in between is not missed.
                let filled = self.filled.notified();
                tokio::pin!(filled);
                filled.as_mut().enable();
                if self.waiting(&key).is_some_and(|n| (1..fill).contains(&n)) {
                    let _ = tokio::time::timeout(linger, filled).await;
                }
            }
            let batch: Queue<D> = {
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(&key) else {
                    return;
                };
                if queue.is_empty() {
                    queues.remove(&key);
                    return;
                }
                let n = queue.len().min(self.max_batch);
                queue.drain(..n).collect()
            };
            metrics::histogram!(self.histogram).record(batch.len() as f64);
            self.batches.fetch_add(1, Ordering::Relaxed);
            let (requests, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let answers = self.decider.decide(&key, requests).await;
            for (sender, answer) in senders.into_iter().zip(answers) {
                let _ = sender.send(answer);
            }
        }
    }
}

struct Retire<'a, D: Decide> {
    batcher: &'a Batcher<D>,
    key: &'a D::Key,
}

impl<D: Decide> Drop for Retire<'_, D> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Those still queued are answered by dropping their senders.
            self.batcher.lock().remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers each request with the size of the batch it was decided in.
    struct Sizes;

    impl Decide for Sizes {
        type Key = ();
        type Request = u32;
        type Answer = usize;

        async fn decide(&self, _: &(), batch: Vec<u32>) -> Vec<usize> {
            vec![batch.len(); batch.len()]
        }
    }

    fn lingering(linger: Duration, fill: usize) -> Batcher<Sizes> {
        Batcher::new(Sizes, TaskTracker::new(), 64, "test").lingering(linger, fill)
    }

    /// The linger is an hour: only the queue reaching its fill can start
    /// the batch, and it starts the one batch of all three.
    #[tokio::test]
    async fn a_lingering_batch_starts_as_soon_as_its_queue_fills() {
        let batcher = lingering(Duration::from_secs(3600), 3);
        let submit = |n| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(&(), n).await })
        };
        let pending = [submit(1), submit(2), submit(3)];
        let within = Duration::from_secs(10);
        for p in pending {
            let answer = tokio::time::timeout(within, p).await.expect("decided");
            assert_eq!(answer.unwrap(), Some(3));
        }
        assert_eq!(batcher.batches(), 1);
    }

    /// Short of its fill, a request is still decided once the linger ends.
    #[tokio::test]
    async fn a_lone_request_is_decided_after_the_linger() {
        let batcher = lingering(Duration::from_millis(20), 64);
        let answer = tokio::time::timeout(Duration::from_secs(10), batcher.submit(&(), 1)).await;
        assert_eq!(answer.expect("decided"), Some(1));
    }
}

//! Jobs born leased: a job enqueued by the process whose own worker has
//! room is inserted already leased to that worker, and handed to it once
//! the enqueueing transaction commits. The worker runs it as if its own
//! lease had brought it, and no lease transaction is spent on it: during
//! a sale each key email was otherwise written three times (queued, leased,
//! done), each time in a transaction of its own.
//!
//! Nothing else changes for the job. Its lease is the worker's (a crash
//! before it ends means the job runs again once the lease expires, as for
//! any job leased ahead); it carries attempt 1; its outcome is recorded as
//! any other.
//!
//! The worker says how many jobs it would take ([`Handoff::room`]): none
//! while it is paused or stopping, or while due jobs wait in the table (its
//! last lease came back full), since a newcomer must not overtake them;
//! otherwise what its lease-ahead queue would hold. Jobs of kinds the
//! worker does not run are never handed to it.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Mutex, mpsc};

use super::handler::Leased;

/// A cheap handle on one worker's intake of jobs born leased.
#[derive(Clone)]
pub struct Handoff {
    inner: Arc<Inner>,
}

struct Inner {
    worker: String,
    lease: Duration,
    kinds: HashSet<&'static str>,
    /// Jobs the worker would take now, as it last said.
    room: AtomicUsize,
    /// Jobs promised by [`Handoff::reserve`] and not yet delivered or
    /// given back.
    promised: AtomicUsize,
    /// Jobs delivered so far.
    handed_over: AtomicU64,
    sender: mpsc::UnboundedSender<Leased>,
    /// The worker's end; a loop started again takes it up again.
    receiver: Mutex<mpsc::UnboundedReceiver<Leased>>,
}

impl Handoff {
    pub(super) fn new(worker: &str, lease: Duration, kinds: HashSet<&'static str>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                worker: worker.to_string(),
                lease,
                kinds,
                room: AtomicUsize::new(0),
                promised: AtomicUsize::new(0),
                handed_over: AtomicU64::new(0),
                sender,
                receiver: Mutex::new(receiver),
            }),
        }
    }

    /// Up to `wanted` jobs of `kind` the worker takes at once, promised
    /// until the returned [`Reservation`] is delivered or dropped.
    pub fn reserve(&self, kind: &str, wanted: usize) -> Reservation {
        let mut granted = 0;
        if self.inner.kinds.contains(kind) {
            let _ = self
                .inner
                .room
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |room| {
                    granted = room.min(wanted);
                    Some(room - granted)
                });
        }
        self.inner.promised.fetch_add(granted, Ordering::AcqRel);
        Reservation {
            handoff: self.clone(),
            granted,
        }
    }

    /// How many jobs were handed to the worker so far.
    pub fn handed_over(&self) -> u64 {
        self.inner.handed_over.load(Ordering::Acquire)
    }

    /// The worker: how many jobs it would take now, given what it holds.
    pub(super) fn offer(&self, room: usize) {
        let promised = self.inner.promised.load(Ordering::Acquire);
        self.inner
            .room
            .store(room.saturating_sub(promised), Ordering::Release);
    }

    /// The worker: it takes nothing (paused, stopping, or jobs are due).
    pub(super) fn close(&self) {
        self.inner.room.store(0, Ordering::Release);
    }

    /// The worker's end of the channel, held for as long as its loop runs.
    pub(super) async fn receiver(
        &self,
    ) -> tokio::sync::MutexGuard<'_, mpsc::UnboundedReceiver<Leased>> {
        self.inner.receiver.lock().await
    }
}

/// Jobs a worker was promised, to insert leased to it
/// ([`super::enqueue_many_handed`]) and hand over after the commit.
#[must_use = "a reservation promises the worker jobs: deliver them after the commit"]
pub struct Reservation {
    handoff: Handoff,
    granted: usize,
}

impl Reservation {
    /// How many jobs the worker takes.
    pub fn granted(&self) -> usize {
        self.granted
    }

    /// The worker the jobs are leased to (`locked_by`).
    pub fn worker(&self) -> &str {
        &self.handoff.inner.worker
    }

    /// Until when jobs inserted at `now` are leased (`locked_until`).
    pub fn locked_until(&self, now: i64) -> i64 {
        now + self.handoff.inner.lease.as_millis() as i64
    }

    /// The jobs inserted leased, to deliver after the commit.
    pub fn handed(self, jobs: Vec<Leased>) -> super::Handed {
        super::Handed {
            reservation: Some(self),
            jobs,
        }
    }

    /// Hands the jobs inserted leased to the worker, once their
    /// transaction has committed. Jobs never delivered (the transaction
    /// failed, the process stopped) run again once their leases expire.
    pub fn deliver(mut self, jobs: Vec<Leased>) {
        let inner = &self.handoff.inner;
        inner
            .handed_over
            .fetch_add(jobs.len() as u64, Ordering::AcqRel);
        metrics::counter!("allot_jobs_handed_over_total").increment(jobs.len() as u64);
        for job in jobs {
            // A worker that is gone leaves the job to its lease's expiry.
            let _ = self.handoff.inner.sender.send(job);
        }
        self.give_back();
    }

    fn give_back(&mut self) {
        let granted = std::mem::take(&mut self.granted);
        self.handoff
            .inner
            .promised
            .fetch_sub(granted, Ordering::AcqRel);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.give_back();
    }
}

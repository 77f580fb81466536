//! Jobs leased ahead of the running ones, so that a slot freed by a job
//! that ended starts the next one without a round trip. One lease at a
//! time runs beside the worker loop (which goes on starting jobs while it
//! is in flight), and a new one starts once half of what is ahead is used.
//!
//! How much is leased ahead follows the pace at which this worker starts
//! jobs: what it would start in [`HORIZON`], at least its concurrency and
//! at most [`MAX_AHEAD`]. Slow jobs (mail sends) therefore keep few leases
//! idle, which other processes could run meanwhile, while quick ones keep
//! a batch large enough to cover the next lease's round trip and commit.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

use super::Inner;
use crate::{clock::now_ms, jobs::handler::Leased};

/// How far ahead, in time at the current pace, jobs are leased.
const HORIZON: Duration = Duration::from_millis(50);

/// The most jobs one worker holds leased without running them.
const MAX_AHEAD: usize = 512;

/// How long the pace is counted over before it is taken as the new one.
const PACE_WINDOW: Duration = Duration::from_millis(200);

pub(super) struct Ahead {
    queue: VecDeque<(Leased, Instant)>,
    /// The lease in flight, if any, and how many jobs it asked for.
    leasing: JoinSet<anyhow::Result<Vec<Leased>>>,
    asked: usize,
    /// The last lease came back with fewer jobs than it asked for: none
    /// more are due, so the next waits for a wake-up, a tick or a job's end.
    starved: bool,
    /// The last lease came back with as many jobs as it asked for: more
    /// may be due, and jobs enqueued now must queue behind them rather
    /// than be handed to this worker (see `handoff`).
    backlog: bool,
    /// When the last lease came back.
    leased_at: Instant,
    concurrency: usize,
    /// Jobs started per second, as last counted.
    pace: f64,
    window: (Instant, usize),
}

/// What one finished lease brought.
pub(super) enum Leasing {
    Brought,
    Failed(anyhow::Error),
}

impl Ahead {
    pub(super) fn new(concurrency: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            leasing: JoinSet::new(),
            asked: 0,
            starved: false,
            backlog: false,
            leased_at: Instant::now(),
            concurrency,
            pace: 0.0,
            window: (Instant::now(), 0),
        }
    }

    /// How many jobs to keep leased ahead at the current pace.
    fn target(&self) -> usize {
        let at_pace = (self.pace * HORIZON.as_secs_f64()) as usize;
        at_pace.clamp(self.concurrency, MAX_AHEAD.max(self.concurrency))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(super) fn is_leasing(&self) -> bool {
        !self.leasing.is_empty()
    }

    /// Something happened that may have made jobs due or freed room.
    pub(super) fn woken(&mut self) {
        self.starved = false;
    }

    /// A job ended, which freed a slot: worth a lease if the last one, even
    /// short, came back a while ago. Jobs this process enqueues meanwhile
    /// come by hand (see `handoff`); a lease per job end would mostly
    /// find nothing, each time in a transaction.
    pub(super) fn job_ended(&mut self) {
        if self.leased_at.elapsed() >= HORIZON {
            self.starved = false;
        }
    }

    /// Whether due jobs may wait in the table beyond what is leased.
    pub(super) fn backlogged(&self) -> bool {
        self.backlog
    }

    /// How many more jobs this worker would hold, `running` of its slots
    /// taken: what a lease would ask for now.
    pub(super) fn room(&self, running: usize) -> usize {
        (self.concurrency + self.target()).saturating_sub(running + self.queue.len())
    }

    /// A job born leased to this worker, handed over by its enqueuer.
    pub(super) fn accept(&mut self, job: Leased) {
        self.queue.push_back((job, Instant::now()));
    }

    /// Starts a lease if none is in flight, the last one was not short,
    /// and half of what is ahead is used; `running` jobs hold slots.
    pub(super) fn refill(&mut self, inner: &Arc<Inner>, running: usize) {
        let target = self.target();
        if self.is_leasing() || self.starved || self.queue.len() * 2 > target {
            return;
        }
        let room = (self.concurrency + target).saturating_sub(running + self.queue.len());
        if room == 0 {
            return;
        }
        self.asked = room;
        let inner = inner.clone();
        self.leasing
            .spawn(async move { inner.lease(room, now_ms()).await });
    }

    /// Takes in a lease that finished (from [`Self::next_lease`] or
    /// [`Self::try_lease`]).
    fn took(
        &mut self,
        result: Result<anyhow::Result<Vec<Leased>>, tokio::task::JoinError>,
    ) -> Leasing {
        let jobs = match result {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(error)) => {
                self.starved = true;
                self.backlog = true;
                return Leasing::Failed(error);
            }
            Err(error) => {
                self.starved = true;
                return Leasing::Failed(anyhow::anyhow!("the lease task failed: {error}"));
            }
        };
        let brought = jobs.len();
        self.starved = brought < self.asked;
        self.backlog = brought > 0 && brought >= self.asked;
        self.leased_at = Instant::now();
        let at = Instant::now();
        self.queue.extend(jobs.into_iter().map(|job| (job, at)));
        Leasing::Brought
    }

    /// The lease in flight, once it finishes; pending forever if none is.
    pub(super) async fn next_lease(&mut self) -> Leasing {
        match self.leasing.join_next().await {
            Some(result) => self.took(result),
            None => std::future::pending().await,
        }
    }

    /// The lease in flight, if it has finished.
    pub(super) fn try_lease(&mut self) -> Option<Leasing> {
        let result = self.leasing.try_join_next()?;
        Some(self.took(result))
    }

    /// The next job to start, and when it was leased.
    pub(super) fn pop(&mut self) -> Option<(Leased, Instant)> {
        let next = self.queue.pop_front()?;
        let (since, started) = &mut self.window;
        *started += 1;
        let elapsed = since.elapsed();
        if elapsed >= PACE_WINDOW {
            self.pace = *started as f64 / elapsed.as_secs_f64();
            self.window = (Instant::now(), 0);
        }
        Some(next)
    }

    /// Everything leased and not started, the lease in flight included
    /// (waited for): the caller gives them back.
    pub(super) async fn take_all(&mut self) -> Vec<Leased> {
        while let Some(result) = self.leasing.join_next().await {
            if let Leasing::Failed(error) = self.took(result) {
                tracing::error!(error = %format!("{error:#}"), "leasing jobs failed");
            }
        }
        self.queue.drain(..).map(|(job, _)| job).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle or slow, a worker leases its concurrency ahead; quick jobs
    /// raise that to what it starts in the horizon, up to the cap.
    #[test]
    fn how_much_is_leased_ahead_follows_the_pace() {
        let mut ahead = Ahead::new(8);
        assert_eq!(ahead.target(), 8);
        ahead.pace = 4.0; // mail sends: a few a second
        assert_eq!(ahead.target(), 8);
        ahead.pace = 1_000.0;
        assert_eq!(ahead.target(), 50);
        ahead.pace = 30_000.0;
        assert_eq!(ahead.target(), MAX_AHEAD);
        // A concurrency above the cap is never cut below itself.
        let mut wide = Ahead::new(1_000);
        wide.pace = 30_000.0;
        assert_eq!(wide.target(), 1_000);
    }
}

//! The levers an operator has on a running worker, and what it reports
//! back: paused or not, jobs in flight, jobs done, the last failure. The
//! control channel holds a [`Steering`] and the worker loop obeys it; this
//! file knows nothing of where the commands come from.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::watch;

#[derive(Clone)]
pub struct Steering {
    inner: Arc<Inner>,
}

struct Inner {
    paused: watch::Sender<bool>,
    in_flight: AtomicU64,
    done: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Default for Steering {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                paused: watch::Sender::new(false),
                in_flight: AtomicU64::new(0),
                done: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }
}

impl Steering {
    /// The worker leases nothing more; what it holds runs to its end.
    /// Returns whether this changed anything.
    pub fn pause(&self) -> bool {
        self.inner
            .paused
            .send_if_modified(|paused| !std::mem::replace(paused, true))
    }

    /// Returns whether this changed anything.
    pub fn resume(&self) -> bool {
        self.inner
            .paused
            .send_if_modified(|paused| std::mem::replace(paused, false))
    }

    /// Sets this worker's gauges of `/metrics`: paused or not, jobs in
    /// flight, and when its loop last came round, which the alert
    /// `AllotWorkerSilent` (deploy/prometheus/alerts.yml) watches: a worker
    /// stuck or gone stops moving it.
    pub fn publish_gauges(&self) {
        metrics::gauge!("allot_worker_paused").set(if self.is_paused() { 1.0 } else { 0.0 });
        metrics::gauge!("allot_worker_jobs_in_flight").set(self.in_flight() as f64);
        let now = crate::clock::now_ms() as f64 / 1000.0;
        metrics::gauge!("allot_worker_heartbeat_timestamp_seconds").set(now);
    }

    pub fn is_paused(&self) -> bool {
        *self.inner.paused.borrow()
    }

    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Jobs this process has finished since it started.
    pub fn done(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    /// The error of the last attempt that failed, one line.
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().unwrap().clone()
    }

    /// Resolves once the worker is not paused.
    pub(super) async fn resumed(&self) {
        let mut paused = self.inner.paused.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = paused.wait_for(|paused| !*paused).await;
    }

    pub(super) fn started_one(&self) {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn finished_one(&self) {
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn record_done(&self) {
        self.inner.done.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_error(&self, error: &str) {
        let line: String = error.split_whitespace().collect::<Vec<_>>().join(" ");
        let line: String = line.chars().take(300).collect();
        *self.inner.last_error.lock().unwrap() = Some(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_and_resume_report_whether_anything_changed() {
        let steering = Steering::default();
        assert!(!steering.is_paused());
        assert!(steering.pause());
        assert!(!steering.pause());
        assert!(steering.is_paused());
        let waiter = tokio::spawn({
            let steering = steering.clone();
            async move { steering.resumed().await }
        });
        assert!(steering.resume());
        assert!(!steering.resume());
        waiter.await.unwrap();
    }
}

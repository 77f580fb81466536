//! The load driver: N connections, each sending one request after another
//! until the time is up, timing every answer.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::ProgressBar;

/// What one request came to: `Ok` or the kind of error, as counted.
pub type Outcome = Result<(), String>;

/// Every answer's latency and every error, by kind.
#[derive(Debug, Default)]
pub struct Tally {
    /// Microseconds, of the answers that were `Ok`.
    pub latencies_us: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Requests that timed out or lost their connection: each may or may
    /// not have been done.
    pub fn unanswered(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(kind, _)| matches!(kind.as_str(), "timeout" | "connection"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts `other`'s answers in this tally too, its error kinds
    /// prefixed by `prefix`; the longer of the two elapsed times is kept.
    /// Latencies come unsorted: sort them before taking quantiles.
    pub fn add(&mut self, prefix: &str, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (kind, n) in other.errors {
            *self.errors.entry(format!("{prefix}{kind}")).or_default() += n;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    pub fn ops_per_s(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency below which a fraction `q` of the answers came, in ms.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.latencies_us.len();
        (n > 0).then(|| {
            let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
            self.latencies_us[i] as f64 / 1000.0
        })
    }
}

/// Runs `op(connection, sequence, client)` from `connections` tasks for
/// `duration`, each with its own HTTP client (one keep-alive connection).
pub async fn drive<F, Fut>(
    connections: usize,
    duration: Duration,
    progress: &ProgressBar,
    op: F,
) -> anyhow::Result<Tally>
where
    F: Fn(usize, u64, reqwest::Client) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let op = Arc::new(op);
    // Every client is built before the clock starts: building one reads
    // the system's root certificates, which took the first seconds' CPU
    // from the connections already sending.
    let clients = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (connection, client) in clients.into_iter().enumerate() {
        let (op, progress) = (op.clone(), progress.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut sequence = 0;
            while Instant::now() < deadline {
                sequence += 1;
                let sent = Instant::now();
                match op(connection, sequence, client.clone()).await {
                    Ok(()) => tally.latencies_us.push(sent.elapsed().as_micros() as u64),
                    Err(kind) => *tally.errors.entry(kind).or_default() += 1,
                }
                progress.inc(1);
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.add("", tally?);
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    Ok(total)
}

/// The kind of a failed request: its status and error code, or the
/// transport error.
pub async fn error_kind(response: Result<reqwest::Response, reqwest::Error>) -> String {
    match response {
        Err(error) if error.is_timeout() => "timeout".into(),
        Err(_) => "connection".into(),
        Ok(response) => {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            match body["error"].as_str() {
                Some(code) => format!("{status} {code}"),
                None => status.to_string(),
            }
        }
    }
}

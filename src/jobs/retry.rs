//! When a failed attempt runs again: the retry schedule, with jitter, and a
//! provider's `Retry-After` honoured within bounds.

use std::time::Duration;

/// How long to wait before attempt `attempts + 1`, after `attempts` failed.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub schedule: Vec<Duration>,
}

/// A provider's Retry-After is honoured up to this much.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based), with ±20 %
    /// jitter so that a burst of failures does not retry in lockstep, and
    /// never shorter than a Retry-After the provider gave (capped).
    pub fn delay(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.schedule.len().saturating_sub(1));
        let base = self
            .schedule
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let jitter = rand::random_range(0.8..=1.2);
        let delay = base.mul_f64(jitter);
        match retry_after {
            Some(after) => delay.max(after.min(MAX_RETRY_AFTER)),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(300),
            ],
        }
    }

    #[test]
    fn delays_follow_the_schedule_within_jitter() {
        for (attempt, base) in [(1, 10.0), (2, 60.0), (3, 300.0), (9, 300.0)] {
            for _ in 0..100 {
                let delay = policy().delay(attempt, None).as_secs_f64();
                assert!(
                    (base * 0.8..=base * 1.2).contains(&delay),
                    "attempt {attempt}: {delay}"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let long = policy().delay(1, Some(Duration::from_secs(3600)));
        assert_eq!(long, Duration::from_secs(3600));
        let absurd = policy().delay(1, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(absurd, MAX_RETRY_AFTER);
        let short = policy().delay(2, Some(Duration::from_secs(1)));
        assert!(short >= Duration::from_secs(48), "{short:?}");
    }
}

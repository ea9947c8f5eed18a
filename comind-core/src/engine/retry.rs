//! Retry of transient failures: exponential backoff with jitter, bounded.

use std::time::Duration;

use crate::config::Config;

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The policy of `engine` in `config`.
    pub fn from_config(config: &Config) -> Self {
        RetryPolicy {
            retries: config.engine.retries,
            initial_delay: config.engine.retry_delay.get(),
            max_delay: config.engine.retry_max_delay.get(),
        }
    }

    /// The delay after failed attempt `attempt` (from 1): the exponential step capped
    /// at `max_delay`, of which a random half is kept ("equal jitter") so that runs
    /// retrying the same peer spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let policy = RetryPolicy {
            retries: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let d1 = policy.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = policy.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = policy.delay(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
        }
        assert_ne!(
            (0..20).map(|_| policy.delay(4)).collect::<Vec<_>>(),
            vec![policy.delay(4); 20],
            "jitter varies the delay"
        );
    }
}

//! Waiting for a condition: poll with backoff under a timeout, cooperatively
//! cancellable. The caller decides what to poll, how often and for how long.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::phase::PhaseContext;
use crate::{Error, Result};

/// How often to poll: from `initial`, multiplied by `factor` after each poll, up to
/// `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First interval.
    pub initial: Duration,
    /// Longest interval.
    pub max: Duration,
    /// Growth per poll.
    pub factor: f64,
}

impl Backoff {
    /// For a service that is starting: a first poll after 25 ms, growing to 1 s, so a
    /// fast service is seen ready almost at once and a slow one is not hammered.
    pub const READINESS: Backoff = Backoff {
        initial: Duration::from_millis(25),
        max: Duration::from_secs(1),
        factor: 1.5,
    };

    /// For cloud resources that take minutes: 2 s growing to 30 s.
    pub const CLOUD: Backoff = Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(30),
        factor: 1.5,
    };

    fn next(&self, current: Duration) -> Duration {
        current.mul_f64(self.factor).min(self.max)
    }
}

/// Why a wait ended without success.
#[derive(Debug)]
pub struct WaitFailed {
    /// The last error the check returned (for a timeout) or the permanent one.
    pub last: Error,
    /// Whether the timeout ran out (as opposed to a permanent error or cancellation).
    pub timed_out: bool,
    /// Number of checks made.
    pub attempts: u32,
    /// Time spent.
    pub elapsed: Duration,
}

impl WaitFailed {
    /// The error to report for a wait on `subject` (`postgres`, `container x`) that
    /// had `timeout`: a `Timeout` naming the attempts and the last error when the time
    /// ran out, else the permanent error's kind; `diagnostics` (a log excerpt, never a
    /// secret) is appended on its own lines. A cancellation is returned as it is.
    pub fn into_error(
        self,
        subject: &str,
        timeout: Duration,
        diagnostics: Option<String>,
    ) -> Error {
        if self.last.kind() == crate::ErrorKind::Cancelled {
            return self.last;
        }
        let mut message = if self.timed_out {
            format!(
                "{subject} did not answer within {} ({} attempts); last error: {}",
                humantime::format_duration(timeout),
                self.attempts,
                self.last
            )
        } else {
            format!("{subject} failed: {}", self.last)
        };
        if let Some(diagnostics) = diagnostics {
            message.push('\n');
            message.push_str(&diagnostics);
        }
        let kind = if self.timed_out {
            crate::ErrorKind::Timeout
        } else {
            self.last.kind()
        };
        let mut err = Error::new(kind, message).transient(false);
        if let Some(resource) = self.last.resource() {
            err = err.with_resource(resource);
        }
        if let Some(hint) = self.last.hint() {
            err = err.with_hint(hint);
        }
        err
    }
}

/// Calls `check` until it succeeds, returns a permanent (non-transient) error, the
/// `timeout` runs out, or the run is cancelled. Reports progress on `ctx` with
/// `what` (e.g. "waiting for postgres to accept connections").
///
/// # Errors
/// [`WaitFailed`] with the last error.
pub async fn until<T, F, Fut>(
    ctx: &PhaseContext,
    what: &str,
    timeout: Duration,
    backoff: Backoff,
    mut check: F,
) -> std::result::Result<T, WaitFailed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut interval = backoff.initial;
    let mut attempts = 0;
    let mut last_report = Instant::now();
    loop {
        attempts += 1;
        let remaining = timeout.saturating_sub(started.elapsed());
        // A single check that hangs must not outlive the wait.
        let outcome =
            match tokio::time::timeout(remaining.max(Duration::from_millis(1)), check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::timeout(format!(
                    "{what}: the last check did not answer"
                ))),
            };
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let failed = |last, timed_out| WaitFailed {
            last,
            timed_out,
            attempts,
            elapsed: started.elapsed(),
        };
        if !error.is_transient() && error.kind() != crate::ErrorKind::Timeout {
            return Err(failed(error, false));
        }
        if started.elapsed() + interval >= timeout {
            return Err(failed(error, true));
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            ctx.progress(format!(
                "{what} ({}s, last: {})",
                started.elapsed().as_secs(),
                error.message()
            ));
        }
        if ctx.sleep(interval).await.is_err() {
            return Err(failed(
                Error::cancelled(format!("{what}: stopped because the run was cancelled")),
                false,
            ));
        }
        interval = backoff.next(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::environment::Environment;
    use crate::phase::Operation;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn ctx() -> PhaseContext {
        let env = Arc::new(Environment::with_state_root(
            Config::default(),
            "/tmp/unused",
        ));
        PhaseContext::standalone("x".into(), Operation::Apply, env, Default::default())
    }

    #[tokio::test]
    async fn succeeds_after_transient_failures() {
        let calls = AtomicU32::new(0);
        let value = until(
            &ctx(),
            "waiting",
            Duration::from_secs(5),
            Backoff::READINESS,
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(Error::unavailable("not yet"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn stops_at_a_permanent_error() {
        let failed = until(
            &ctx(),
            "waiting",
            Duration::from_secs(5),
            Backoff::READINESS,
            || async { Err::<(), _>(Error::permission("wrong password")) },
        )
        .await
        .unwrap_err();
        assert!(!failed.timed_out);
        assert_eq!(failed.attempts, 1);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let failed = until(
            &ctx(),
            "waiting",
            Duration::from_millis(200),
            Backoff::READINESS,
            || async { Err::<(), _>(Error::unavailable("connection refused")) },
        )
        .await
        .unwrap_err();
        assert!(failed.timed_out);
        assert_eq!(failed.last.message(), "connection refused");
        assert!(failed.elapsed < Duration::from_millis(400));
        assert!(failed.attempts > 2);
    }

    #[tokio::test]
    async fn a_hanging_check_is_bounded_by_the_timeout() {
        let failed = until(
            &ctx(),
            "waiting",
            Duration::from_millis(100),
            Backoff::READINESS,
            || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .await
        .unwrap_err();
        assert!(failed.timed_out);
    }
}

//! Waiting for an AWS resource to reach a status.
//!
//! EKS clusters take about 15 minutes, RDS instances about 10, ElastiCache groups
//! several. Waits are core's [`comind_core::wait::Wait`] (the vocabulary Docker and
//! Kubernetes waits share: a status per look, progress on each change, a failed status
//! ends the wait, a timeout names the last status), polled with [`Backoff::CLOUD`]
//! under a timeout taken from `aws.timeouts.*`, with AWS's wording in the hints. Each
//! AWS module maps its describe call onto [`Observed`].

use std::future::Future;
use std::time::Duration;

use comind_core::wait::{self, Backoff};
pub(crate) use comind_core::wait::{Observed, Status};
use comind_core::{PhaseContext, Result};

/// What to do about a resource in a failed status.
const FAILED_HINT: &str = "look up why in the AWS console (events of the resource), fix the \
                           cause, then run `comind down` and `comind up` to create it again";

/// A wait for one AWS resource.
#[derive(Debug, Clone)]
pub(crate) struct Wait<'a>(wait::Wait<'a>);

impl<'a> Wait<'a> {
    /// A wait for `kind` `name` to become `target` within `timeout`, which the
    /// comind.yaml `setting` sets (if one does).
    pub(crate) fn new(
        kind: &'a str,
        name: &'a str,
        target: &'a str,
        timeout: Duration,
        setting: impl Into<Option<&'a str>>,
    ) -> Self {
        Wait(
            wait::Wait::new(kind, name, target, timeout, setting)
                .with_backoff(Backoff::CLOUD)
                .on("AWS")
                .with_failed_hint(FAILED_HINT),
        )
    }

    /// Looks with `backoff` instead of [`Backoff::CLOUD`].
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_backoff(self, backoff: Backoff) -> Self {
        Wait(self.0.with_backoff(backoff))
    }

    /// Calls `check` until the resource is ready, has failed, the timeout runs out or
    /// the run is cancelled; see [`comind_core::wait::Wait::until`].
    ///
    /// # Errors
    /// `Timeout` with the last status; `Unavailable` (permanent) for a failed status;
    /// the error of `check`; `Cancelled`.
    pub(crate) async fn until<T, F, Fut>(&self, ctx: &PhaseContext, check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Observed<T>>>,
    {
        self.0.until(ctx, check).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::testing::test_env;
    use comind_core::{Error, ErrorKind, Operation};
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Instant;

    const FAST: Backoff = Backoff {
        initial: Duration::from_millis(5),
        steady: Duration::ZERO,
        max: Duration::from_millis(20),
        factor: 1.5,
    };

    fn ctx() -> (PhaseContext, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let env = test_env("waiter", dir.path());
        (
            PhaseContext::standalone("postgres".into(), Operation::Apply, env, Default::default()),
            dir,
        )
    }

    fn script(steps: Vec<Result<Observed<u32>>>) -> Mutex<VecDeque<Result<Observed<u32>>>> {
        Mutex::new(steps.into())
    }

    async fn next(steps: &Mutex<VecDeque<Result<Observed<u32>>>>) -> Result<Observed<u32>> {
        let step = steps.lock().unwrap().pop_front();
        step.unwrap_or_else(|| Ok(Observed::Pending(Status::new("creating"))))
    }

    fn wait(timeout: Duration) -> Wait<'static> {
        Wait::new(
            "db-instance",
            "comind-waiter-postgres",
            "available",
            timeout,
            "aws.timeouts.database",
        )
        .with_backoff(FAST)
    }

    #[tokio::test]
    async fn creating_then_available_reports_progress() {
        let (ctx, _dir) = ctx();
        let mut events = ctx.events().subscribe();
        let steps = script(vec![
            Ok(Observed::Pending(Status::new("creating"))),
            Ok(Observed::Pending(Status::new("creating"))),
            Err(Error::unavailable("throttled")),
            Ok(Observed::Pending(Status::new("backing-up"))),
            Ok(Observed::Ready(7)),
        ]);
        let value = wait(Duration::from_secs(5))
            .until(&ctx, || next(&steps))
            .await
            .unwrap();
        assert_eq!(value, 7);
        let mut progress = Vec::new();
        while let Ok(Some(record)) =
            tokio::time::timeout(Duration::from_millis(50), events.recv()).await
        {
            if let comind_core::event::Event::PhaseProgress { message, .. } = &record.event {
                progress.push(message.clone());
            }
        }
        assert_eq!(
            progress.len(),
            2,
            "one event per status change: {progress:?}"
        );
        assert!(progress[0].contains("`creating`"), "{progress:?}");
        assert!(progress[1].contains("`backing-up`"), "{progress:?}");
    }

    #[tokio::test]
    async fn a_failed_status_stops_at_once_with_the_aws_message() {
        let (ctx, _dir) = ctx();
        let steps = script(vec![
            Ok(Observed::Pending(Status::new("creating"))),
            Ok(Observed::Failed(
                Status::new("incompatible-network")
                    .with_message(Some("no free IP addresses in the subnet".into())),
            )),
            Ok(Observed::Ready(1)),
        ]);
        let err = wait(Duration::from_secs(5))
            .until(&ctx, || next(&steps))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(!err.is_transient());
        assert!(err.message().contains("`incompatible-network`"), "{err}");
        assert!(err.message().contains("no free IP addresses"), "{err}");
        assert_eq!(err.resource(), Some("db-instance comind-waiter-postgres"));
        assert_eq!(
            steps.lock().unwrap().len(),
            1,
            "stopped at the failed status"
        );
    }

    #[tokio::test]
    async fn a_timeout_names_the_last_status_and_the_setting() {
        let (ctx, _dir) = ctx();
        let steps = script(vec![
            Ok(Observed::Pending(Status::new("creating"))),
            Ok(Observed::Pending(
                Status::new("modifying").with_message(Some("applying parameter group".into())),
            )),
        ]);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let started = Instant::now();
        let err = wait(Duration::from_millis(150))
            .until(&ctx, || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    let mut steps = steps.lock().unwrap();
                    if steps.len() > 1 {
                        steps.pop_front().unwrap()
                    } else {
                        // Stays `modifying` from the second look on.
                        Ok(Observed::Pending(
                            Status::new("modifying")
                                .with_message(Some("applying parameter group".into())),
                        ))
                    }
                }
            })
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(!err.is_transient());
        assert!(
            err.message()
                .contains("last status was `modifying` (applying parameter group)"),
            "{err}"
        );
        assert!(
            err.hint().unwrap().contains("aws.timeouts.database"),
            "{err}"
        );
        assert!(calls.load(std::sync::atomic::Ordering::SeqCst) > 2);
    }

    #[tokio::test]
    async fn a_permanent_aws_error_ends_the_wait() {
        let (ctx, _dir) = ctx();
        let steps = script(vec![
            Ok(Observed::Pending(Status::new("creating"))),
            Err(Error::permission("AccessDenied")),
        ]);
        let err = wait(Duration::from_secs(5))
            .until(&ctx, || next(&steps))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permission);
    }

    #[tokio::test]
    async fn a_cancelled_check_ends_the_wait() {
        let (ctx, _dir) = ctx();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let err = wait(Duration::from_secs(5))
            .until(&ctx, || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Err::<Observed<()>, _>(Error::cancelled("run cancelled")) }
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

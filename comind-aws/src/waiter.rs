//! Waiting for an AWS resource to reach a status.
//!
//! EKS clusters take about 15 minutes, RDS instances about 10, ElastiCache groups
//! several. A [`Wait`] polls the resource's status with [`Backoff::CLOUD`] under a
//! timeout taken from `aws.timeouts.*`, reports each change of status as a progress
//! event, stops at once on a status the resource will not leave by itself (`failed`,
//! `CREATE_FAILED`), and on timeout fails with the last status and AWS's message.
//! It builds on [`comind_core::wait::until`], so it is cancellable like every wait.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comind_core::wait::{self, Backoff};
use comind_core::{Error, PhaseContext, Result};

/// A status as AWS reports it, with its explanation when AWS gives one (EKS health
/// issues, RDS events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// The status (`creating`, `ACTIVE`, `deleting`).
    pub(crate) status: String,
    /// Why, when AWS says.
    pub(crate) message: Option<String>,
}

impl Status {
    pub(crate) fn new(status: impl Into<String>) -> Self {
        Status {
            status: status.into(),
            message: None,
        }
    }

    #[must_use]
    pub(crate) fn with_message(mut self, message: Option<String>) -> Self {
        self.message = message.filter(|m| !m.is_empty());
        self
    }

    fn describe(&self) -> String {
        match &self.message {
            Some(message) => format!("`{}` ({message})", self.status),
            None => format!("`{}`", self.status),
        }
    }
}

/// What one look at the resource found.
#[derive(Debug)]
pub(crate) enum Observed<T> {
    /// It reached the target.
    Ready(T),
    /// It is on its way, in this status.
    Pending(Status),
    /// It is in a status it will not leave by itself.
    Failed(Status),
}

/// A wait for one resource.
#[derive(Debug, Clone)]
pub(crate) struct Wait<'a> {
    /// The kind of resource (`eks cluster`, `db-instance`).
    pub(crate) kind: &'a str,
    /// Its name.
    pub(crate) name: &'a str,
    /// What it should become (`active`, `available`, `deleted`).
    pub(crate) target: &'a str,
    /// How long it may take.
    pub(crate) timeout: Duration,
    /// The comind.yaml setting of that timeout, for the hint; `None` when it is fixed.
    pub(crate) setting: Option<&'a str>,
    /// How often to look.
    pub(crate) backoff: Backoff,
}

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
        Wait {
            kind,
            name,
            target,
            timeout,
            setting: setting.into(),
            backoff: Backoff::CLOUD,
        }
    }

    /// Looks with `backoff` instead of [`Backoff::CLOUD`].
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Calls `check` until the resource is ready, has failed, the timeout runs out or
    /// the run is cancelled. Transient errors of `check` (throttling, a dropped
    /// connection) are polled through; permanent ones end the wait.
    ///
    /// # Errors
    /// `Timeout` with the last status; `Unavailable` (permanent) for a failed status;
    /// the error of `check`; `Cancelled`.
    pub(crate) async fn until<T, F, Fut>(&self, ctx: &PhaseContext, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Observed<T>>>,
    {
        ctx.checkpoint()?;
        let resource = format!("{} {}", self.kind, self.name);
        let what = format!(
            "waiting for {} `{}` to be {}",
            self.kind, self.name, self.target
        );
        let last: Mutex<Option<Status>> = Mutex::new(None);
        let started = Instant::now();
        let outcome = wait::until(ctx, &what, self.timeout, self.backoff, || {
            let look = check();
            let last = &last;
            let resource = &resource;
            async move {
                match look.await? {
                    Observed::Ready(value) => Ok(value),
                    Observed::Pending(status) => {
                        let changed = {
                            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                            let changed = last.as_ref() != Some(&status);
                            *last = Some(status.clone());
                            changed
                        };
                        if changed {
                            ctx.progress(format!(
                                "{} `{}` is {} after {}s",
                                self.kind,
                                self.name,
                                status.describe(),
                                started.elapsed().as_secs()
                            ));
                        }
                        Err(Error::unavailable(format!(
                            "{} `{}` is {}",
                            self.kind,
                            self.name,
                            status.describe()
                        ))
                        .with_resource(resource.as_str()))
                    }
                    Observed::Failed(status) => Err(Error::unavailable(format!(
                        "{} `{}` is {}, which it will not leave by itself, so it will \
                         never be {}",
                        self.kind,
                        self.name,
                        status.describe(),
                        self.target
                    ))
                    .transient(false)
                    .with_resource(resource.as_str())
                    .with_hint(
                        "look up why in the AWS console (events of the resource), fix the \
                         cause, then run `comind down` and `comind up` to create it again",
                    )),
                }
            }
        })
        .await;
        match outcome {
            Ok(value) => Ok(value),
            Err(failed) if failed.timed_out => {
                let last = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let seen = match last {
                    Some(status) => format!("its last status was {}", status.describe()),
                    None => format!("the last check failed: {}", failed.last),
                };
                Err(Error::timeout(format!(
                    "{} `{}` did not become {} within {} ({} checks); {seen}",
                    self.kind,
                    self.name,
                    self.target,
                    humantime::format_duration(self.timeout),
                    failed.attempts
                ))
                .transient(false)
                .with_resource(resource)
                .with_hint(match self.setting {
                    Some(setting) => format!(
                        "it may still be on its way in AWS: run the command again to keep \
                         waiting, or raise `{setting}` in comind.yaml if it regularly takes \
                         longer"
                    ),
                    None => "it may still be on its way in AWS: run the command again to \
                             keep waiting"
                        .to_string(),
                }))
            }
            Err(failed) => Err(failed.last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::testing::test_env;
    use comind_core::{ErrorKind, Operation};
    use std::collections::VecDeque;

    const FAST: Backoff = Backoff {
        initial: Duration::from_millis(5),
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

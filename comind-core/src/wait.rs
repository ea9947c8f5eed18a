//! Waiting, in one vocabulary for every provider: Docker containers, AWS resources and
//! Kubernetes objects alike.
//!
//! Two levels:
//! - [`until`] polls a check with [`Backoff`] under a timeout, cooperatively
//!   cancellable, until it succeeds or returns a permanent error; the caller turns a
//!   [`WaitFailed`] into its error.
//! - [`Wait`] waits for one named resource to reach a target state: each look returns
//!   an [`Observed`] state (ready, pending in a [`Status`], or failed in a status it
//!   will not leave by itself); every change of status is a progress event, a failed
//!   status ends the wait at once, and a timeout names the resource, its target and
//!   its last status. Providers map their API onto [`Observed`] and nothing else.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::phase::PhaseContext;
use crate::{Error, Result};

/// How often to poll: every `initial` for the first `steady` of the wait, then
/// multiplied by `factor` after each poll, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First interval.
    pub initial: Duration,
    /// How long the wait polls at `initial` before the interval grows.
    pub steady: Duration,
    /// Longest interval.
    pub max: Duration,
    /// Growth per poll.
    pub factor: f64,
}

impl Backoff {
    /// For a service that is starting: every 100 ms for the first 10 s (a local
    /// service answers within seconds, and an interval grown to a second would see it
    /// up to a second late: on a cold `up` that is time on the critical path), then
    /// growing to 1 s, so a slow one is not hammered. 100 ms, not less: with the k3d
    /// cluster starting on the same cores, tighter polls of four services measurably
    /// slowed the cluster, which is the longer path.
    pub const READINESS: Backoff = Backoff {
        initial: Duration::from_millis(100),
        steady: Duration::from_secs(10),
        max: Duration::from_secs(1),
        factor: 1.5,
    };

    /// For cloud resources that take minutes: 2 s growing to 30 s.
    pub const CLOUD: Backoff = Backoff {
        initial: Duration::from_secs(2),
        steady: Duration::ZERO,
        max: Duration::from_secs(30),
        factor: 1.5,
    };

    /// The interval after `current`, `elapsed` into the wait.
    fn next(&self, current: Duration, elapsed: Duration) -> Duration {
        if elapsed < self.steady {
            self.initial
        } else {
            current.mul_f64(self.factor).min(self.max)
        }
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
        interval = backoff.next(interval, started.elapsed());
    }
}

/// A state as the resource's API reports it, with its explanation when the API gives
/// one (EKS health issues, RDS events, a container's exit code, a Kubernetes
/// condition's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The state (`creating`, `ACTIVE`, `Progressing`).
    pub status: String,
    /// Why, when the API says.
    pub message: Option<String>,
}

impl Status {
    /// A status with no explanation.
    pub fn new(status: impl Into<String>) -> Self {
        Status {
            status: status.into(),
            message: None,
        }
    }

    /// The same status with `message` as its explanation (empty counts as none).
    #[must_use]
    pub fn with_message(mut self, message: Option<String>) -> Self {
        self.message = message.filter(|m| !m.is_empty());
        self
    }

    /// `` `status` (message)``, for messages.
    pub fn describe(&self) -> String {
        match &self.message {
            Some(message) => format!("`{}` ({message})", self.status),
            None => format!("`{}`", self.status),
        }
    }
}

/// What one look at a resource found.
#[derive(Debug)]
pub enum Observed<T> {
    /// It reached the target.
    Ready(T),
    /// It is on its way, in this status.
    Pending(Status),
    /// It is in a status it will not leave by itself.
    Failed(Status),
}

/// A wait for one resource to reach a target state.
#[derive(Debug, Clone)]
pub struct Wait<'a> {
    /// The kind of resource (`eks cluster`, `db-instance`, `deployment`).
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
    /// What it should become (`active`, `available`, `deleted`).
    pub target: &'a str,
    /// How long it may take.
    pub timeout: Duration,
    /// The comind.yaml setting of that timeout, for the hint; `None` when it is fixed.
    pub setting: Option<&'a str>,
    /// How often to look.
    pub backoff: Backoff,
    /// Where the resource lives (`AWS`, `Docker`, `the cluster`), for the hints.
    pub peer: &'a str,
    /// What to do about a failed status.
    pub failed_hint: &'a str,
}

impl<'a> Wait<'a> {
    /// A wait for `kind` `name` to become `target` within `timeout`, which the
    /// comind.yaml `setting` sets (if one does); polled with [`Backoff::CLOUD`].
    pub fn new(
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
            peer: "its provider",
            failed_hint: "find out why from the resource's events, fix the cause, then run \
                          `comind down` and `comind up` to create it again",
        }
    }

    /// Looks with `backoff`.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Names where the resource lives (`AWS`), for the timeout's hint.
    #[must_use]
    pub fn on(mut self, peer: &'a str) -> Self {
        self.peer = peer;
        self
    }

    /// Says what to do when the resource reaches a failed status.
    #[must_use]
    pub fn with_failed_hint(mut self, hint: &'a str) -> Self {
        self.failed_hint = hint;
        self
    }

    fn resource(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }

    fn progress(&self, status: &Status, started: Instant) -> String {
        format!(
            "{} `{}` is {} after {}s",
            self.kind,
            self.name,
            status.describe(),
            started.elapsed().as_secs()
        )
    }

    /// The error of a status the resource will not leave by itself.
    fn failed(&self, status: &Status) -> Error {
        Error::unavailable(format!(
            "{} `{}` is {}, which it will not leave by itself, so it will never be {}",
            self.kind,
            self.name,
            status.describe(),
            self.target
        ))
        .transient(false)
        .with_resource(self.resource())
        .with_hint(self.failed_hint)
    }

    /// The error of a wait whose timeout ran out after `looks` looks, naming the last
    /// status seen (or the last error, when no status was).
    fn timed_out(&self, last: Option<&Status>, last_error: Option<&Error>, looks: u32) -> Error {
        let seen = match (last, last_error) {
            (Some(status), _) => format!("its last status was {}", status.describe()),
            (None, Some(error)) => format!("the last check failed: {error}"),
            (None, None) => "it was never seen".to_string(),
        };
        let peer = self.peer;
        Error::timeout(format!(
            "{} `{}` did not become {} within {} ({looks} checks); {seen}",
            self.kind,
            self.name,
            self.target,
            humantime::format_duration(self.timeout),
        ))
        .transient(false)
        .with_resource(self.resource())
        .with_hint(match self.setting {
            Some(setting) => format!(
                "it may still be on its way in {peer}: run the command again to keep \
                 waiting, or raise `{setting}` in comind.yaml if it regularly takes longer"
            ),
            None => format!(
                "it may still be on its way in {peer}: run the command again to keep waiting"
            ),
        })
    }

    /// Like [`until`](Self::until), for APIs that push changes instead of being polled
    /// (a Kubernetes watch): `next` yields each observation as it happens, `None` when
    /// the feed ends. Transient errors of the feed are waited through (a watch
    /// reconnects), permanent ones end the wait; progress, the failed status and the
    /// timeout read exactly as they do for a polled wait.
    ///
    /// # Errors
    /// As [`until`](Self::until); `Unavailable` when the feed ends.
    pub async fn watch<T, F, Fut>(&self, ctx: &PhaseContext, mut next: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<Result<Observed<T>>>>,
    {
        ctx.checkpoint()?;
        let started = Instant::now();
        let mut last: Option<Status> = None;
        let mut last_error: Option<Error> = None;
        let mut looks = 0;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let observed = tokio::select! {
                observed = tokio::time::timeout_at(deadline, next()) => observed,
                () = ctx.cancelled() => {
                    return Err(Error::cancelled(format!(
                        "stopped waiting for {} `{}` because the run was cancelled",
                        self.kind, self.name
                    )));
                }
            };
            let observed = match observed {
                Ok(observed) => observed,
                Err(_) => return Err(self.timed_out(last.as_ref(), last_error.as_ref(), looks)),
            };
            looks += 1;
            match observed {
                None => {
                    return Err(Error::unavailable(format!(
                        "the feed of {} `{}` ended while waiting for it to be {}",
                        self.kind, self.name, self.target
                    ))
                    .with_resource(self.resource()));
                }
                Some(Ok(Observed::Ready(value))) => return Ok(value),
                Some(Ok(Observed::Pending(status))) => {
                    if last.as_ref() != Some(&status) {
                        ctx.progress(self.progress(&status, started));
                        last = Some(status);
                    }
                }
                Some(Ok(Observed::Failed(status))) => return Err(self.failed(&status)),
                Some(Err(error)) if error.is_transient() => last_error = Some(error),
                Some(Err(error)) => return Err(error),
            }
        }
    }

    /// Calls `check` until the resource is ready, has failed, the timeout runs out or
    /// the run is cancelled. Transient errors of `check` (throttling, a dropped
    /// connection) are polled through; permanent ones end the wait. Each change of
    /// status is reported as progress on `ctx`.
    ///
    /// # Errors
    /// `Timeout` with the last status; `Unavailable` (permanent) for a failed status;
    /// the error of `check`; `Cancelled`.
    pub async fn until<T, F, Fut>(&self, ctx: &PhaseContext, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Observed<T>>>,
    {
        ctx.checkpoint()?;
        let resource = self.resource();
        let what = format!(
            "waiting for {} `{}` to be {}",
            self.kind, self.name, self.target
        );
        let last: Mutex<Option<Status>> = Mutex::new(None);
        let started = Instant::now();
        let outcome = until(ctx, &what, self.timeout, self.backoff, || {
            let look = check();
            let last = &last;
            let resource = &resource;
            async move {
                match look.await? {
                    Observed::Ready(value) => Ok(value),
                    Observed::Pending(status) => {
                        // A poisoned lock only means another look panicked; the
                        // status it holds is still the last one seen.
                        let changed = {
                            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                            let changed = last.as_ref() != Some(&status);
                            *last = Some(status.clone());
                            changed
                        };
                        if changed {
                            ctx.progress(self.progress(&status, started));
                        }
                        Err(Error::unavailable(format!(
                            "{} `{}` is {}",
                            self.kind,
                            self.name,
                            status.describe()
                        ))
                        .with_resource(resource.as_str()))
                    }
                    Observed::Failed(status) => Err(self.failed(&status)),
                }
            }
        })
        .await;
        match outcome {
            Ok(value) => Ok(value),
            Err(failed) if failed.timed_out => {
                let last = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Err(self.timed_out(last.as_ref(), Some(&failed.last), failed.attempts))
            }
            Err(failed) => Err(failed.last),
        }
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
            Duration::from_millis(500),
            Backoff::READINESS,
            || async { Err::<(), _>(Error::unavailable("connection refused")) },
        )
        .await
        .unwrap_err();
        assert!(failed.timed_out);
        assert_eq!(failed.last.message(), "connection refused");
        assert!(failed.elapsed < Duration::from_millis(700));
        // Polled at the steady interval (100 ms), not a growing one.
        assert!(failed.attempts >= 4, "{} attempts", failed.attempts);
    }

    fn fast(wait: Wait<'_>) -> Wait<'_> {
        wait.with_backoff(Backoff {
            initial: Duration::from_millis(5),
            steady: Duration::ZERO,
            max: Duration::from_millis(20),
            factor: 1.5,
        })
    }

    #[tokio::test]
    async fn a_resource_wait_ends_at_a_failed_status_with_its_message() {
        let calls = AtomicU32::new(0);
        let wait = fast(Wait::new(
            "deployment",
            "web",
            "available",
            Duration::from_secs(5),
            None,
        ))
        .on("the cluster")
        .with_failed_hint("read the pod's events");
        let err = wait
            .until(&ctx(), || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    Ok::<_, Error>(if n == 0 {
                        Observed::<()>::Pending(Status::new("Progressing"))
                    } else {
                        Observed::Failed(
                            Status::new("ProgressDeadlineExceeded")
                                .with_message(Some("ReplicaSet has timed out".into())),
                        )
                    })
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(!err.is_transient());
        assert!(
            err.message()
                .contains("`ProgressDeadlineExceeded` (ReplicaSet has timed out)")
        );
        assert_eq!(err.resource(), Some("deployment web"));
        assert_eq!(err.hint(), Some("read the pod's events"));
    }

    #[tokio::test]
    async fn a_resource_wait_times_out_naming_its_last_status_the_peer_and_the_setting() {
        let wait = fast(Wait::new(
            "container",
            "comind-dev-postgres",
            "healthy",
            Duration::from_millis(100),
            "local.ready_timeout",
        ))
        .on("Docker");
        let err = wait
            .until(&ctx(), || async {
                Ok::<_, Error>(Observed::<()>::Pending(Status::new("starting")))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Timeout);
        assert!(
            err.message().contains("last status was `starting`"),
            "{err}"
        );
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("in Docker") && hint.contains("local.ready_timeout"),
            "{hint}"
        );
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

    #[tokio::test]
    async fn a_watched_resource_reports_changes_and_ends_ready_failed_or_timed_out() {
        let wait =
            Wait::new("Deployment", "web", "ready", Duration::from_secs(5), None).on("the cluster");
        let ctx = ctx();
        let mut events = ctx.events().subscribe();
        let mut feed = vec![
            Ok(Observed::Ready(7)),
            Ok(Observed::Pending(Status::new("Progressing"))),
            Err(Error::unavailable("watch reconnecting")),
            Ok(Observed::Pending(Status::new("Progressing"))),
        ];
        let got = wait.watch(&ctx, || {
            let next = feed.pop();
            async move { next }
        });
        assert_eq!(got.await.unwrap(), 7);
        let mut progress = 0;
        while let Some(record) = events.try_recv() {
            if matches!(record.event, crate::event::Event::PhaseProgress { .. }) {
                progress += 1;
            }
        }
        assert_eq!(progress, 1, "one progress line per change of status");

        let failed = wait
            .watch(&ctx, || async {
                Some(Ok::<_, Error>(Observed::<()>::Failed(
                    Status::new("Failed").with_message(Some("backoff limit".into())),
                )))
            })
            .await
            .unwrap_err();
        assert!(!failed.is_transient());
        assert!(failed.to_string().contains("backoff limit"), "{failed}");

        let short = Wait::new(
            "Deployment",
            "web",
            "ready",
            Duration::from_millis(200),
            None,
        );
        let mut first = true;
        let timed_out = short
            .watch(&ctx, || {
                let now = std::mem::take(&mut first);
                async move {
                    if now {
                        Some(Ok::<_, Error>(Observed::<()>::Pending(Status::new(
                            "0 of 1 available",
                        ))))
                    } else {
                        std::future::pending().await
                    }
                }
            })
            .await
            .unwrap_err();
        assert_eq!(timed_out.kind(), crate::ErrorKind::Timeout);
        assert!(
            timed_out.to_string().contains("0 of 1 available"),
            "{timed_out}"
        );
    }
}

//! A scriptable phase: delays, failures (transient N times, permanent, hang, panic),
//! crash points, outputs, and resources in a [`World`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::world::{FakeResource, World};
use crate::output::{OutputValue, Outputs};
use crate::phase::{
    Applied, Change, DestroyOptions, Destroyed, Input, Phase, PhaseContext, PhaseId, Plan,
};
use crate::{Error, Result};

/// How `apply` misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It does not.
    None,
    /// Fails transiently this many times, then succeeds.
    Transient(u32),
    /// Fails this many times saying the peer needs this long before a retry can
    /// succeed (throttling, a name reserved after a delete), then succeeds.
    RetryAfter(u32, Duration),
    /// Always fails, permanently.
    Permanent,
    /// Never returns (until the engine's timeout or an abort).
    Hang,
    /// Panics.
    Panic,
    /// Creates this many of its resources, then fails as if the process had died
    /// there. The next attempt (or run) resumes.
    CrashAfter(usize),
}

/// A fake phase. Build with [`FakePhase::new`] and the `with_*` methods.
#[derive(Debug)]
pub struct FakePhase {
    id: PhaseId,
    deps: Vec<PhaseId>,
    world: World,
    work: Duration,
    failure: Failure,
    interruptible: bool,
    resources: Vec<String>,
    spec: String,
    outputs: Outputs,
    forwards: Vec<(PhaseId, String)>,
    timeout: Option<Duration>,
    preflight_error: Option<String>,
    preflight_flakes: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
}

impl FakePhase {
    /// A phase `id` that owns one resource named after it, in `world`.
    pub fn new(id: &str, world: &World) -> Self {
        FakePhase {
            id: PhaseId::new(id),
            deps: Vec::new(),
            world: world.clone(),
            work: Duration::ZERO,
            failure: Failure::None,
            interruptible: true,
            resources: vec![format!("fake/{id}")],
            spec: "v1".to_string(),
            outputs: Outputs::new(),
            forwards: Vec::new(),
            timeout: None,
            preflight_error: None,
            preflight_flakes: Arc::new(AtomicU32::new(0)),
            attempts: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Depends on `ids`.
    #[must_use]
    pub fn with_deps(mut self, ids: &[&str]) -> Self {
        self.deps = ids.iter().map(PhaseId::new).collect();
        self
    }

    /// Takes `work` to apply (and a tenth of it to plan and destroy).
    #[must_use]
    pub fn with_work(mut self, work: Duration) -> Self {
        self.work = work;
        self
    }

    /// Misbehaves as `failure` says.
    #[must_use]
    pub fn with_failure(mut self, failure: Failure) -> Self {
        self.failure = failure;
        self
    }

    /// Ignores cancellation while working: a phase in a section it cannot leave.
    #[must_use]
    pub fn uninterruptible(mut self) -> Self {
        self.interruptible = false;
        self
    }

    /// Owns these resources instead of one named after the phase.
    #[must_use]
    pub fn with_resources(mut self, names: &[&str]) -> Self {
        self.resources = names.iter().map(ToString::to_string).collect();
        self
    }

    /// Its desired spec; a different spec than the one in the world means "replace".
    #[must_use]
    pub fn with_spec(mut self, spec: &str) -> Self {
        self.spec = spec.to_string();
        self
    }

    /// Publishes these outputs.
    #[must_use]
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Copies output `key` of dependency `from` into its own outputs.
    #[must_use]
    pub fn forwarding(mut self, from: &str, key: &str) -> Self {
        self.forwards.push((PhaseId::new(from), key.to_string()));
        self
    }

    /// Declares its own default timeout.
    #[must_use]
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Fails its preflight check with `message`.
    #[must_use]
    pub fn failing_preflight(mut self, message: &str) -> Self {
        self.preflight_error = Some(message.to_string());
        self
    }

    /// Fails its first `times` preflight checks with a transient error, as a peer
    /// that answers 503 for a moment does.
    #[must_use]
    pub fn flaky_preflight(self, times: u32) -> Self {
        self.preflight_flakes.store(times, Ordering::SeqCst);
        self
    }

    /// Apply attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// A counter of apply attempts that stays readable after the phase moves into an
    /// engine.
    pub fn attempt_counter(&self) -> Arc<AtomicU32> {
        self.attempts.clone()
    }

    fn resource(&self, ctx: &PhaseContext) -> FakeResource {
        FakeResource {
            kind: "resource".to_string(),
            labels: ctx.env().labels(self.id.as_str(), None),
            spec: self.spec.clone(),
            running: true,
            data: Default::default(),
        }
    }

    async fn work(&self, ctx: &PhaseContext, duration: Duration) -> Result<()> {
        if duration.is_zero() {
            return ctx.checkpoint();
        }
        if self.interruptible {
            ctx.sleep(duration).await
        } else {
            tokio::time::sleep(duration).await;
            Ok(())
        }
    }

    fn forwarded(&self, ctx: &PhaseContext) -> Result<Outputs> {
        let mut outputs = self.outputs.clone();
        for (from, key) in &self.forwards {
            match ctx.require_input(from, key)? {
                OutputValue::Text(text) => outputs.insert_text(key.clone(), text.clone()),
                OutputValue::Secret(secret) => outputs.insert_secret(key.clone(), secret.clone()),
            }
        }
        Ok(outputs)
    }

    fn pending_changes(&self) -> Vec<Change> {
        self.resources
            .iter()
            .filter_map(|name| match self.world.get(name) {
                None => Some(Change::create("resource", name)),
                Some(r) if r.spec != self.spec => {
                    Some(Change::replace("resource", name).because("spec changed"))
                }
                Some(_) => None,
            })
            .collect()
    }
}

/// Ends the span of an attempt however it ends (success, error, timeout, abort).
struct SpanGuard<'a> {
    world: &'a World,
    id: &'a str,
}

impl Drop for SpanGuard<'_> {
    fn drop(&mut self) {
        self.world.end(self.id);
    }
}

#[async_trait]
impl Phase for FakePhase {
    fn id(&self) -> PhaseId {
        self.id.clone()
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        self.deps.clone()
    }

    fn default_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn preflight(&self, _ctx: &PhaseContext) -> Result<()> {
        let flaky = self
            .preflight_flakes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if flaky {
            return Err(Error::unavailable("the fake peer answered 503")
                .with_resource(format!("fake/{}", self.id)));
        }
        match &self.preflight_error {
            Some(message) => Err(Error::invalid_input(message.clone())
                .with_resource(format!("fake/{}", self.id))
                .with_hint("change the fake's script")),
            None => Ok(()),
        }
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        self.work(ctx, self.work / 10).await?;
        for name in &self.resources {
            self.world.read(self.id.as_str(), name);
        }
        let deferred: Vec<String> = self
            .forwards
            .iter()
            .filter(|(from, key)| matches!(ctx.input(from, key), Input::KnownAfterApply))
            .map(|(from, key)| format!("`{key}` from `{from}`"))
            .collect();
        let changes = self.pending_changes();
        if !deferred.is_empty() {
            return Ok(Plan {
                changes,
                outputs: None,
                deferred: Some(format!("needs {}, known after apply", deferred.join(", "))),
            });
        }
        if changes.is_empty() {
            Ok(Plan::in_sync(self.forwarded(ctx)?))
        } else {
            Ok(Plan::changes(changes))
        }
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        self.world.begin(self.id.as_str());
        let _span = SpanGuard {
            world: &self.world,
            id: self.id.as_str(),
        };
        self.work(ctx, self.work).await?;
        match self.failure {
            Failure::None => {}
            Failure::Transient(times) if attempt <= times => {
                return Err(Error::unavailable(format!(
                    "simulated transient failure {attempt} of {times}"
                ))
                .with_resource(format!("fake/{}", self.id)));
            }
            Failure::Transient(_) => {}
            Failure::RetryAfter(times, delay) if attempt <= times => {
                return Err(Error::unavailable(format!(
                    "simulated throttling {attempt} of {times}"
                ))
                .retry_after(delay)
                .with_resource(format!("fake/{}", self.id)));
            }
            Failure::RetryAfter(..) => {}
            Failure::Permanent => {
                return Err(Error::invalid_input("simulated permanent failure")
                    .with_resource(format!("fake/{}", self.id))
                    .with_hint("remove the failure from the fake's script"));
            }
            Failure::Hang => std::future::pending::<()>().await,
            Failure::Panic => panic!("simulated panic in phase {}", self.id),
            Failure::CrashAfter(_) => {}
        }
        let mut changes = Vec::new();
        for (i, name) in self.resources.iter().enumerate() {
            if let Failure::CrashAfter(n) = self.failure
                && i == n
                && attempt == 1
            {
                return Err(Error::internal(format!(
                    "simulated crash after creating {n} resource(s)"
                ))
                .with_resource(format!("fake/{}", self.id)));
            }
            match self.world.get(name) {
                Some(existing) if existing.spec == self.spec => {}
                Some(_) => {
                    self.world.put(self.id.as_str(), name, self.resource(ctx));
                    changes.push(Change::replace("resource", name).because("spec changed"));
                }
                None => {
                    self.world.put(self.id.as_str(), name, self.resource(ctx));
                    changes.push(Change::create("resource", name));
                }
            }
        }
        Ok(Applied {
            changes,
            outputs: self.forwarded(ctx)?,
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        self.world.begin(self.id.as_str());
        let _span = SpanGuard {
            world: &self.world,
            id: self.id.as_str(),
        };
        self.work(ctx, self.work / 10).await?;
        let mut changes = Vec::new();
        for name in self.resources.iter().rev() {
            if self.world.delete(self.id.as_str(), name) {
                changes.push(Change::delete("resource", name));
            }
        }
        Ok(Destroyed {
            changes,
            kept: Vec::new(),
        })
    }
}

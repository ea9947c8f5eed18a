//! Phases: the steps of a bootstrap, and what they report.
//!
//! A [`Phase`] has an id and the ids it depends on. It can [`plan`](Phase::plan)
//! (read live state and say what would change, changing nothing),
//! [`apply`](Phase::apply) (converge idempotently and return its outputs) and
//! [`destroy`](Phase::destroy). The [engine](crate::engine) schedules, times, retries
//! and reports phases; a phase only does its own work, reading its dependencies'
//! outputs from the [`PhaseContext`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::event::{Event, EventBus};
use crate::output::{OutputValue, Outputs};
use crate::{Error, Result};

/// A phase's id, such as `postgres` or `network`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhaseId(Arc<str>);

impl PhaseId {
    /// An id. The engine rejects ids that are not lowercase letters, digits, `-`, `.`
    /// and `/`.
    pub fn new(id: impl AsRef<str>) -> Self {
        PhaseId(Arc::from(id.as_ref()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why this id is not acceptable, if it is not.
    pub fn check(&self) -> std::result::Result<(), String> {
        let ok = !self.0.is_empty()
            && self.0.len() <= 63
            && self.0.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '/'
            })
            && self.0.starts_with(|c: char| c.is_ascii_alphanumeric());
        if ok {
            Ok(())
        } else {
            Err(format!(
                "phase id `{}` is not valid: use 1 to 63 lowercase letters, digits, `-`, `.` \
                 or `/`, starting with a letter or digit",
                self.0
            ))
        }
    }
}

impl fmt::Display for PhaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl From<&str> for PhaseId {
    fn from(id: &str) -> Self {
        PhaseId::new(id)
    }
}

impl AsRef<str> for PhaseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a change does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The resource does not exist and will be (or was) created.
    Create,
    /// The resource exists and will be (or was) changed in place, or started.
    Update,
    /// The resource will be (or was) deleted and created again; data is kept where the
    /// resource keeps it elsewhere (a volume, a snapshot).
    Replace,
    /// The resource will be (or was) deleted.
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        })
    }
}

/// One change to one resource, planned or made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What happens.
    pub action: Action,
    /// The kind of resource: `container`, `volume`, `bucket`, `db-instance`.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// Why, when it is not obvious (`spec changed: image`, `container was stopped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    /// A change of `action` to the resource `kind`/`name`.
    pub fn new(action: Action, kind: impl Into<String>, name: impl Into<String>) -> Self {
        Change {
            action,
            kind: kind.into(),
            name: name.into(),
            reason: None,
        }
    }

    /// Creates `kind`/`name`.
    pub fn create(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(Action::Create, kind, name)
    }

    /// Updates `kind`/`name` in place.
    pub fn update(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(Action::Update, kind, name)
    }

    /// Replaces `kind`/`name`.
    pub fn replace(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(Action::Replace, kind, name)
    }

    /// Deletes `kind`/`name`.
    pub fn delete(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(Action::Delete, kind, name)
    }

    /// Says why.
    #[must_use]
    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.action, self.kind, self.name)?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

/// What [`Phase::plan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// What `apply` would change. Empty: in sync.
    pub changes: Vec<Change>,
    /// The phase's outputs as they are now, when it can tell without applying; `None`
    /// means "known after apply".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    /// Set when the plan is incomplete because it depends on values known only after
    /// a dependency is applied; says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<String>,
}

impl Plan {
    /// In sync, with the current outputs.
    pub fn in_sync(outputs: Outputs) -> Self {
        Plan {
            changes: Vec::new(),
            outputs: Some(outputs),
            deferred: None,
        }
    }

    /// These changes are pending; outputs are known after apply.
    pub fn changes(changes: Vec<Change>) -> Self {
        Plan {
            changes,
            outputs: None,
            deferred: None,
        }
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.deferred.is_none()
    }
}

/// What [`Phase::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// What was changed. Empty: it was already in sync.
    pub changes: Vec<Change>,
    /// The phase's outputs, for dependents and the user.
    pub outputs: Outputs,
}

/// A resource `destroy` deliberately left in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The kind of resource (`volume`, `bucket`, `db-snapshot`).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Why, and how to remove it (`holds data; use --purge`).
    pub reason: String,
}

/// What [`Phase::destroy`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destroyed {
    /// What was deleted (or created, such as a final snapshot).
    pub changes: Vec<Change>,
    /// What was kept, and why.
    pub kept: Vec<Kept>,
}

/// How far [`Phase::destroy`] goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyOptions {
    /// Remove data too: volumes, non-empty buckets, queues with messages, and RDS
    /// instances without a final snapshot.
    pub purge: bool,
}

/// How healthy a phase's resources are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Everything exists, matches the desired state and answers.
    Ready,
    /// Some of it exists but differs from the desired state, or does not answer.
    Degraded,
    /// Nothing of it exists.
    Absent,
    /// It could not be determined (a peer was unreachable).
    Unknown,
}

/// What [`Phase::status`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseStatus {
    /// Overall health.
    pub health: Health,
    /// A short human sentence.
    pub detail: String,
    /// Outputs, when they can be told now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
}

/// The operation a phase is asked to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Read-only: what would change.
    Plan,
    /// Converge to the desired state.
    Apply,
    /// Remove what was created.
    Destroy,
    /// Read-only: is it there and healthy.
    Status,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Plan => "plan",
            Operation::Apply => "apply",
            Operation::Destroy => "destroy",
            Operation::Status => "status",
        })
    }
}

/// A dependency's output as seen by a phase.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// The value.
    Known(&'a OutputValue),
    /// The dependency has not been applied yet (only during plan).
    KnownAfterApply,
    /// The dependency does not publish this key, or is not a dependency.
    Missing,
}

/// Outputs of a dependency, or their absence during plan.
#[derive(Debug, Clone)]
pub(crate) enum InputSet {
    Known(Arc<Outputs>),
    KnownAfterApply,
}

/// What a phase sees while it runs.
#[derive(Clone)]
pub struct PhaseContext {
    pub(crate) phase: PhaseId,
    pub(crate) operation: Operation,
    pub(crate) attempt: u32,
    pub(crate) env: Arc<Environment>,
    pub(crate) inputs: Arc<HashMap<PhaseId, InputSet>>,
    pub(crate) events: EventBus,
    pub(crate) cancel: crate::cancel::Cancellation,
}

impl fmt::Debug for PhaseContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhaseContext")
            .field("phase", &self.phase)
            .field("operation", &self.operation)
            .field("attempt", &self.attempt)
            .field("environment", &self.env.name())
            .finish_non_exhaustive()
    }
}

impl PhaseContext {
    /// A context for running one phase outside the engine: in tests, conformance
    /// suites and tools. Dependencies' outputs are given as `inputs`.
    pub fn standalone(
        phase: PhaseId,
        operation: Operation,
        env: Arc<Environment>,
        inputs: HashMap<PhaseId, Outputs>,
    ) -> Self {
        PhaseContext {
            phase,
            operation,
            attempt: 1,
            env,
            inputs: Arc::new(
                inputs
                    .into_iter()
                    .map(|(k, v)| (k, InputSet::Known(Arc::new(v))))
                    .collect(),
            ),
            events: EventBus::new(),
            cancel: crate::cancel::Cancellation::new(),
        }
    }

    /// The same context, cancelled through `cancel` (for tools and tests that run a
    /// phase outside the engine and want to interrupt it).
    #[must_use]
    pub fn with_cancellation(&self, cancel: crate::cancel::Cancellation) -> Self {
        let mut ctx = self.clone();
        ctx.cancel = cancel;
        ctx
    }

    /// The same context for another operation (used by the service adapter and the
    /// conformance suites).
    #[must_use]
    pub fn for_operation(&self, operation: Operation) -> Self {
        let mut ctx = self.clone();
        ctx.operation = operation;
        ctx
    }

    /// The phase being run.
    pub fn phase(&self) -> &PhaseId {
        &self.phase
    }

    /// The operation being performed.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The environment: name, profile, configuration and state directory.
    pub fn env(&self) -> &Environment {
        &self.env
    }

    /// The event bus of the run.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// An output of dependency `from`.
    pub fn input(&self, from: &PhaseId, key: &str) -> Input<'_> {
        match self.inputs.get(from) {
            Some(InputSet::Known(outputs)) => match outputs.get(key) {
                Some(value) => Input::Known(value),
                None => Input::Missing,
            },
            Some(InputSet::KnownAfterApply) => Input::KnownAfterApply,
            None => Input::Missing,
        }
    }

    /// All outputs of dependency `from`; `None` when they are known only after apply.
    ///
    /// # Errors
    /// `Internal` if `from` is not a dependency of this phase.
    pub fn inputs_of(&self, from: &PhaseId) -> Result<Option<&Outputs>> {
        match self.inputs.get(from) {
            Some(InputSet::Known(outputs)) => Ok(Some(outputs)),
            Some(InputSet::KnownAfterApply) => Ok(None),
            None => Err(Error::internal(format!(
                "phase `{}` read the outputs of `{from}`, which is not one of its dependencies",
                self.phase
            ))),
        }
    }

    /// A required output of dependency `from`.
    ///
    /// # Errors
    /// `Internal` when missing, or when read during plan before the dependency is
    /// applied (phases should check [`Input::KnownAfterApply`] in `plan`).
    pub fn require_input(&self, from: &PhaseId, key: &str) -> Result<&OutputValue> {
        match self.input(from, key) {
            Input::Known(value) => Ok(value),
            Input::KnownAfterApply => Err(Error::internal(format!(
                "phase `{}` needs `{key}` from `{from}`, which is known only after apply",
                self.phase
            ))),
            Input::Missing => Err(Error::internal(format!(
                "phase `{}` needs output `{key}` of `{from}`, which does not publish it",
                self.phase
            ))),
        }
    }

    /// Reports progress of this phase, for progress bars and the event log.
    pub fn progress(&self, message: impl Into<String>) {
        self.events.emit(Event::PhaseProgress {
            phase: self.phase.clone(),
            message: message.into(),
            fraction: None,
        });
    }

    /// Reports progress with a completed fraction from 0 to 1.
    pub fn progress_fraction(&self, message: impl Into<String>, fraction: f64) {
        self.events.emit(Event::PhaseProgress {
            phase: self.phase.clone(),
            message: message.into(),
            fraction: Some(fraction.clamp(0.0, 1.0)),
        });
    }

    /// Runs `work` as the step `step` of this phase and, when it succeeds, reports how
    /// long it took ([`Event::PhaseStep`]).
    ///
    /// # Errors
    /// `work`'s error, unchanged.
    pub async fn step<T, E>(
        &self,
        step: &str,
        work: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E> {
        let started = std::time::Instant::now();
        let out = work.await;
        if out.is_ok() {
            self.step_took(step, started.elapsed());
        }
        out
    }

    /// Reports that the step `step` of this phase took `took` ([`Event::PhaseStep`]),
    /// for a step measured by the phase itself.
    pub fn step_took(&self, step: &str, took: std::time::Duration) {
        self.events.emit(Event::PhaseStep {
            phase: self.phase.clone(),
            step: step.to_string(),
            duration_ms: crate::event::millis(took),
        });
    }

    /// Whether the run is being cancelled. Long phases check this at safe points.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_requested()
    }

    /// Resolves once the run is being cancelled: race it against a wait that is not
    /// built on [`wait`](crate::wait), such as a watch.
    pub async fn cancelled(&self) {
        self.cancel.requested().await;
    }

    /// A safe point: returns `Cancelled` if the run is being cancelled, so the phase
    /// can stop here without leaving a half-made resource.
    ///
    /// # Errors
    /// `Cancelled` when cancellation was requested.
    pub fn checkpoint(&self) -> Result<()> {
        if self.cancel.is_requested() {
            Err(Error::cancelled(format!(
                "phase `{}` stopped at a safe point because the run was cancelled",
                self.phase
            )))
        } else {
            Ok(())
        }
    }

    /// Sleeps for `duration` unless the run is cancelled first.
    ///
    /// # Errors
    /// `Cancelled` when cancellation was requested before or during the sleep.
    pub async fn sleep(&self, duration: Duration) -> Result<()> {
        self.checkpoint()?;
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = self.cancel.requested() => self.checkpoint(),
        }
    }
}

/// One step of the bootstrap.
///
/// Implementations must be idempotent: `apply` on a converged system changes nothing
/// and says so; `destroy` on a removed system is harmless. `plan` and `status` must not
/// change anything. State is never kept between runs: each call discovers what exists
/// (by ownership labels or tags).
#[async_trait]
pub trait Phase: Send + Sync + 'static {
    /// The phase's id, unique in a run.
    fn id(&self) -> PhaseId;

    /// The phases whose outputs this phase needs, which must succeed first.
    fn dependencies(&self) -> Vec<PhaseId> {
        Vec::new()
    }

    /// A short description for plans and progress lines.
    fn description(&self) -> String {
        self.id().to_string()
    }

    /// A timeout suited to this phase, used when the configuration sets none for it.
    fn default_timeout(&self) -> Option<Duration> {
        None
    }

    /// Checks that must pass before anything in the run is changed (a host port taken
    /// by something that is not ours). The engine runs every phase's preflight before
    /// applying any phase.
    ///
    /// # Errors
    /// `InvalidInput` or `Conflict` describing what is in the way and how to fix it.
    async fn preflight(&self, _ctx: &PhaseContext) -> Result<()> {
        Ok(())
    }

    /// Reads live state and says what `apply` would change. Changes nothing.
    ///
    /// # Errors
    /// When live state cannot be read; never "absent" for "unknown".
    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan>;

    /// Converges to the desired state and returns the outputs.
    ///
    /// # Errors
    /// When the desired state cannot be reached; transient errors are retried by the
    /// engine.
    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied>;

    /// Removes what this phase created, keeping data unless `options.purge`.
    ///
    /// # Errors
    /// When something could not be removed.
    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed>;

    /// Reports health. The default derives it from [`plan`](Phase::plan).
    ///
    /// # Errors
    /// When live state cannot be read.
    async fn status(&self, ctx: &PhaseContext) -> Result<PhaseStatus> {
        Ok(status_from_plan(self.plan(ctx).await?))
    }
}

/// Health as a plan tells it: in sync is ready, only creations is absent, anything
/// else degraded.
pub fn status_from_plan(plan: Plan) -> PhaseStatus {
    if plan.is_empty() {
        PhaseStatus {
            health: Health::Ready,
            detail: "in sync".to_string(),
            outputs: plan.outputs,
        }
    } else if plan.changes.iter().all(|c| c.action == Action::Create) {
        PhaseStatus {
            health: Health::Absent,
            detail: format!("{} resource(s) to create", plan.changes.len()),
            outputs: plan.outputs,
        }
    } else {
        PhaseStatus {
            health: Health::Degraded,
            detail: format!("{} pending change(s)", plan.changes.len()),
            outputs: plan.outputs,
        }
    }
}

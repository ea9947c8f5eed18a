//! One reconcile function for both `plan` and `apply`.
//!
//! A phase that plans with one piece of code and applies with another can drift: the
//! plan says one thing and `apply` does another. Here a phase (or a service backend)
//! writes a single `reconcile` function that walks its resources, records every change
//! it would make on a [`Pass`], and acts only when [`Pass::will`] says the pass is
//! applying. [`ReconcilePhase`] derives [`Phase::plan`] and [`Phase::apply`] from that
//! one function, so "the plan says exactly what apply does" holds by construction.
//!
//! ```
//! use comind_core::reconcile::Pass;
//! use comind_core::Change;
//!
//! fn converge(pass: &mut Pass, exists: bool) {
//!     if !exists && pass.will(Change::create("bucket", "comind-dev-uploads")) {
//!         // create it: only reached when applying
//!     }
//! }
//!
//! let mut plan = Pass::plan();
//! converge(&mut plan, false);
//! assert_eq!(plan.changes().len(), 1);
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::output::Outputs;
use crate::phase::{
    Applied, Change, DestroyOptions, Destroyed, Phase, PhaseContext, PhaseId, PhaseStatus, Plan,
};
use crate::{Error, Result};

/// Whether a [`Pass`] only reads or also changes things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Read live state and record what would change; change nothing.
    Plan,
    /// Record each change and make it.
    Apply,
}

/// One pass of a reconcile function over its resources: the changes it recorded, and
/// whether it may act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    mode: Mode,
    changes: Vec<Change>,
}

impl Pass {
    /// A pass in `mode` that has recorded nothing yet.
    pub fn new(mode: Mode) -> Self {
        Pass {
            mode,
            changes: Vec::new(),
        }
    }

    /// A planning pass: reads only.
    pub fn plan() -> Self {
        Self::new(Mode::Plan)
    }

    /// An applying pass.
    pub fn apply() -> Self {
        Self::new(Mode::Apply)
    }

    /// The pass's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether this pass makes changes.
    pub fn is_apply(&self) -> bool {
        self.mode == Mode::Apply
    }

    /// Records `change` and says whether to make it now: `true` when applying, `false`
    /// when planning. Call it right before the change, so a plan lists exactly what an
    /// apply of the same live state does.
    pub fn will(&mut self, change: Change) -> bool {
        self.changes.push(change);
        self.is_apply()
    }

    /// Records changes made (or planned) by a part of the pass that keeps its own list,
    /// such as a shared sub-resource reconciler.
    pub fn record(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.changes.extend(changes);
    }

    /// What has been recorded so far.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// What was recorded.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }
}

/// A phase written as one [`reconcile`](Reconcile::reconcile) function; run it with
/// [`ReconcilePhase`].
///
/// The methods other than `reconcile` mean what the [`Phase`] methods of the same name
/// mean.
#[async_trait]
pub trait Reconcile: Send + Sync + 'static {
    /// The phase's id, unique in a run.
    fn id(&self) -> PhaseId;

    /// The phases whose outputs this phase needs.
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

    /// Checks that must pass before anything in the run changes.
    ///
    /// # Errors
    /// What is in the way and how to fix it.
    async fn preflight(&self, _ctx: &PhaseContext) -> Result<()> {
        Ok(())
    }

    /// Why a plan is incomplete, when it depends on outputs of a dependency that are
    /// known only after apply; `None` when the plan is complete.
    fn deferred(&self, _ctx: &PhaseContext) -> Option<String> {
        None
    }

    /// Walks the phase's resources, recording each change on `pass` and making it only
    /// when [`Pass::will`] returns `true`. Returns the phase's outputs: when planning,
    /// `None` where they are known only after apply (a plan with pending changes reports
    /// its outputs as known after apply in any case); when applying, always `Some`.
    ///
    /// # Errors
    /// When live state cannot be read, or (applying) a change cannot be made.
    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<Option<Outputs>>;

    /// Removes what the phase created, keeping data unless `options.purge`.
    ///
    /// # Errors
    /// When something could not be removed.
    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed>;

    /// Health, when the phase can say more than its plan does; `None` (the default)
    /// derives it from the plan, as [`Phase::status`] does.
    ///
    /// # Errors
    /// When live state cannot be read.
    async fn status(&self, _ctx: &PhaseContext) -> Result<Option<PhaseStatus>> {
        Ok(None)
    }
}

/// A [`Reconcile`] run as a [`Phase`]: `plan` is a planning pass, `apply` an applying
/// one, of the same function.
pub struct ReconcilePhase<R: ?Sized> {
    inner: Arc<R>,
}

impl<R: Reconcile + ?Sized> ReconcilePhase<R> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<R>) -> Self {
        ReconcilePhase { inner }
    }

    /// The wrapped reconciler.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: ?Sized> std::fmt::Debug for ReconcilePhase<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconcilePhase").finish_non_exhaustive()
    }
}

#[async_trait]
impl<R: Reconcile + ?Sized> Phase for ReconcilePhase<R> {
    fn id(&self) -> PhaseId {
        self.inner.id()
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        self.inner.dependencies()
    }

    fn description(&self) -> String {
        self.inner.description()
    }

    fn default_timeout(&self) -> Option<Duration> {
        self.inner.default_timeout()
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        self.inner.preflight(ctx).await
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let mut pass = Pass::plan();
        let outputs = self.inner.reconcile(ctx, &mut pass).await?;
        let deferred = self.inner.deferred(ctx);
        let changes = pass.into_changes();
        // Outputs read while changes are pending may not be those `apply` publishes.
        let known = deferred.is_none() && changes.is_empty();
        Ok(Plan {
            changes,
            outputs: if known { outputs } else { None },
            deferred,
        })
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let mut pass = Pass::apply();
        let outputs = self.inner.reconcile(ctx, &mut pass).await?.ok_or_else(|| {
            Error::internal(format!(
                "phase `{}` was applied but did not return its outputs",
                self.inner.id()
            ))
        })?;
        Ok(Applied {
            changes: pass.into_changes(),
            outputs,
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.inner.destroy(ctx, options).await
    }

    async fn status(&self, ctx: &PhaseContext) -> Result<PhaseStatus> {
        if let Some(status) = self.inner.status(ctx).await? {
            return Ok(status);
        }
        Ok(crate::phase::status_from_plan(self.plan(ctx).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planning_pass_records_and_never_acts() {
        let mut pass = Pass::plan();
        assert!(!pass.will(Change::create("bucket", "a")));
        assert!(!pass.will(Change::delete("bucket", "b")));
        assert_eq!(pass.changes().len(), 2);
        assert!(!pass.is_apply());
    }

    #[test]
    fn an_applying_pass_records_and_acts() {
        let mut pass = Pass::apply();
        assert!(pass.will(Change::create("bucket", "a")));
        pass.record([Change::update("bucket", "b")]);
        assert_eq!(
            pass.into_changes(),
            vec![Change::create("bucket", "a"), Change::update("bucket", "b")]
        );
    }
}

//! The graph engine: plan, apply, destroy and status over a graph of phases.
//!
//! The engine validates the graph before anything runs (see [`PhaseGraph`]), then
//! runs it with bounded concurrency: a phase starts as soon as its dependencies are
//! done, so the wall time of a run approaches its critical path. A failed phase skips
//! its dependents while independent branches go on. Each phase has a timeout; errors
//! that are transient are retried with exponential backoff and jitter. Destroy runs the
//! graph in reverse. Cancellation is cooperative (see [`Cancellation`]).
//!
//! ```no_run
//! # async fn demo(phases: Vec<std::sync::Arc<dyn comind_core::Phase>>,
//! #               env: std::sync::Arc<comind_core::Environment>) -> comind_core::Result<()> {
//! use comind_core::engine::{Engine, EngineOptions, RunOptions};
//! use comind_core::Operation;
//!
//! let engine = Engine::new(phases, env, EngineOptions::default())?;
//! let report = engine.run(Operation::Apply, &RunOptions::default()).await;
//! println!("critical path: {:?}", report.summary.critical_path);
//! # Ok(()) }
//! ```

mod graph;
mod report;
mod retry;
mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Cancellation lives in [`crate::cancel`], which the engine and phases share; it is
/// re-exported here where embedders have always found it.
pub use crate::cancel::Cancellation;
pub use graph::{GraphError, PhaseGraph};
pub use report::RunReport;
pub use retry::RetryPolicy;

use crate::config::Config;
use crate::environment::Environment;
use crate::event::EventBus;
use crate::phase::{DestroyOptions, Operation, Phase, PhaseId};

/// Default bound on phases running at once.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Default time a phase may take, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Timeout and retries of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseLimits {
    /// Time the phase may take, retries included.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retries: u32,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Phases running at once, at least 1.
    pub concurrency: usize,
    /// Timeout for phases that neither the overrides nor the phase itself set.
    pub default_timeout: Duration,
    /// Backoff and retries for transient failures.
    pub retry: RetryPolicy,
    /// Per-phase overrides.
    pub overrides: HashMap<PhaseId, PhaseOverride>,
    /// The event bus the run reports to.
    pub events: EventBus,
    /// The cancellation handle of the run.
    pub cancel: Cancellation,
}

/// Per-phase settings that win over the engine's defaults and the phase's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseOverride {
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Retries.
    pub retries: Option<u32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            concurrency: DEFAULT_CONCURRENCY,
            default_timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            overrides: HashMap::new(),
            events: EventBus::new(),
            cancel: Cancellation::new(),
        }
    }
}

impl EngineOptions {
    /// Options from the `engine` and `phases` sections of `config`.
    pub fn from_config(config: &Config) -> Self {
        let overrides = config
            .phases
            .iter()
            .map(|(id, s)| {
                (
                    PhaseId::new(id),
                    PhaseOverride {
                        timeout: s.timeout.map(|t| t.get()),
                        retries: s.retries,
                    },
                )
            })
            .collect();
        EngineOptions {
            concurrency: usize::try_from(config.engine.concurrency)
                .unwrap_or(DEFAULT_CONCURRENCY)
                .max(1),
            default_timeout: config.engine.timeout.get(),
            retry: RetryPolicy::from_config(config),
            overrides,
            ..EngineOptions::default()
        }
    }

    /// The limits that apply to `phase`: its override, else its own default timeout,
    /// else the engine's.
    pub fn limits_for(&self, phase: &dyn Phase) -> PhaseLimits {
        let own = self.overrides.get(&phase.id()).copied().unwrap_or_default();
        PhaseLimits {
            timeout: own
                .timeout
                .or_else(|| phase.default_timeout())
                .unwrap_or(self.default_timeout),
            retries: own.retries.unwrap_or(self.retry.retries),
        }
    }
}

/// What one run covers.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only these phases and what they need (`--only`).
    pub only: Vec<PhaseId>,
    /// Leave out these phases and what cannot run without them (`--skip`).
    pub skip: Vec<PhaseId>,
    /// For destroy: whether to remove data too.
    pub destroy: DestroyOptions,
}

/// Runs operations over a validated phase graph.
#[derive(Debug)]
pub struct Engine {
    graph: PhaseGraph,
    env: Arc<Environment>,
    options: EngineOptions,
}

impl Engine {
    /// An engine over `phases`, validated into a graph.
    ///
    /// # Errors
    /// When the phases do not form a valid graph (see [`GraphError`]).
    pub fn new(
        phases: Vec<Arc<dyn Phase>>,
        env: Arc<Environment>,
        options: EngineOptions,
    ) -> Result<Self, GraphError> {
        Ok(Engine {
            graph: PhaseGraph::new(phases)?,
            env,
            options,
        })
    }

    /// The graph.
    pub fn graph(&self) -> &PhaseGraph {
        &self.graph
    }

    /// The event bus runs report to.
    pub fn events(&self) -> &EventBus {
        &self.options.events
    }

    /// The cancellation handle of runs.
    pub fn cancellation(&self) -> &Cancellation {
        &self.options.cancel
    }

    /// The environment.
    pub fn env(&self) -> &Arc<Environment> {
        &self.env
    }

    /// Runs `operation` over the selected phases and reports what happened. Failures
    /// are in the report, not an `Err`: a run always has a summary.
    ///
    /// For [`Operation::Apply`], every selected phase's preflight runs first; if any
    /// fails, nothing is applied and the run ends [`rejected`](crate::event::RunOutcome).
    pub async fn run(&self, operation: Operation, run: &RunOptions) -> RunReport {
        scheduler::run(self, operation, run).await
    }

    /// Checks `--only`/`--skip` against the graph without running anything.
    ///
    /// # Errors
    /// `UnknownSelection` naming the unknown ids.
    pub fn check_selection(&self, run: &RunOptions) -> Result<(), GraphError> {
        self.graph.select(&run.only, &run.skip, false).map(|_| ())
    }
}

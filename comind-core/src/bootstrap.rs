//! The bootstrap of one environment: what `comind plan`, `up`, `status`, `outputs`,
//! `down` and `doctor` do, as a library.
//!
//! [`Bootstrap`] gathers the phases of its providers, checks them against the
//! configuration, takes the environment lock for runs that change things, writes the
//! event log of the last run to the state directory, and guards production
//! environments. The CLI is a thin layer over it: what the CLI can do, an embedder can
//! do.
//!
//! ```no_run
//! # async fn demo(provider: impl comind_core::Provider) -> comind_core::Result<()> {
//! use comind_core::{Bootstrap, Environment, config::{Config, LoadOptions}};
//! use comind_core::engine::RunOptions;
//!
//! let config = Config::load(&LoadOptions::from_process(None))?;
//! let bootstrap = Bootstrap::new(Environment::new(config)?).with_provider(provider);
//! let mut events = bootstrap.events().subscribe();
//! tokio::spawn(async move {
//!     while let Some(record) = events.recv().await {
//!         println!("{}", serde_json::to_string(&*record).unwrap_or_default());
//!     }
//! });
//! let report = bootstrap.up(&RunOptions::default(), &Default::default()).await?;
//! assert!(report.succeeded());
//! # Ok(()) }
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Cancellation, Engine, EngineOptions, RunOptions, RunReport};
use crate::environment::Environment;
use crate::event::{Event, EventBus, EventRecord};
use crate::lock::{EnvironmentLock, LockWait};
use crate::output::Outputs;
use crate::phase::{Action, Operation, Phase};
use crate::provider::{CheckStatus, Diagnosis, Provider};
use crate::{Error, Result};

/// Options of [`Bootstrap::up`].
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// In a production environment, allow changes that replace or delete resources.
    pub allow_destructive: bool,
}

/// Options of [`Bootstrap::down`].
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// The environment name, required to destroy a production environment.
    pub confirm: Option<String>,
}

/// Brings one environment up, reports on it and takes it down.
pub struct Bootstrap {
    env: Arc<Environment>,
    providers: Vec<Arc<dyn Provider>>,
    /// Phases added one by one by an embedder, next to the providers' phases.
    phases: Vec<Arc<dyn Phase>>,
    options: EngineOptions,
    lock_wait: LockWait,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("environment", &self.env.name())
            .field(
                "providers",
                &self.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// A bootstrap of `env` with no providers yet; engine options from its config.
    pub fn new(env: Environment) -> Self {
        let options = EngineOptions::from_config(env.config());
        Bootstrap {
            env: Arc::new(env),
            providers: Vec::new(),
            phases: Vec::new(),
            options,
            lock_wait: LockWait::Fail,
        }
    }

    /// Adds a provider; phases of all providers form one graph.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Provider) -> Self {
        self.providers.push(Arc::new(provider));
        self
    }

    /// Adds a shared provider.
    #[must_use]
    pub fn with_shared_provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Adds a phase of the embedder's own to the graph, next to the providers' phases:
    /// it may depend on theirs (a migration after `postgres`) and theirs on it. The
    /// engine schedules, retries, reports and destroys it like any other phase.
    #[must_use]
    pub fn with_phase(self, phase: impl Phase) -> Self {
        self.with_shared_phase(Arc::new(phase))
    }

    /// Adds a shared phase; see [`with_phase`](Bootstrap::with_phase).
    #[must_use]
    pub fn with_shared_phase(mut self, phase: Arc<dyn Phase>) -> Self {
        self.phases.push(phase);
        self
    }

    /// Overrides the concurrency bound (`--concurrency`).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.options.concurrency = concurrency.max(1);
        self
    }

    /// How to wait for the environment lock (`--lock-timeout`).
    #[must_use]
    pub fn with_lock_wait(mut self, wait: LockWait) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Replaces the engine options wholesale (tests, embedders).
    #[must_use]
    pub fn with_engine_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// The environment.
    pub fn env(&self) -> &Arc<Environment> {
        &self.env
    }

    /// The event stream of every run of this bootstrap.
    pub fn events(&self) -> &EventBus {
        &self.options.events
    }

    /// The cancellation handle: call [`Cancellation::request`] on the first interrupt
    /// and again on the second.
    pub fn cancellation(&self) -> &Cancellation {
        &self.options.cancel
    }

    /// The phases of every provider, in order, then those added with
    /// [`with_phase`](Bootstrap::with_phase).
    ///
    /// # Errors
    /// When a provider cannot build its phases.
    pub fn phases(&self) -> Result<Vec<Arc<dyn Phase>>> {
        let mut phases = Vec::new();
        for provider in &self.providers {
            phases.extend(provider.phases(&self.env)?);
        }
        phases.extend(self.phases.iter().cloned());
        Ok(phases)
    }

    /// The engine over every provider's phases, checked against the configuration.
    ///
    /// # Errors
    /// An invalid graph, or a `phases` entry in the configuration naming an unknown
    /// phase.
    pub fn engine(&self) -> Result<Engine> {
        let engine = Engine::new(self.phases()?, self.env.clone(), self.options.clone())?;
        let ids: Vec<&str> = engine.graph().ids().iter().map(|id| id.as_str()).collect();
        self.env.config().check_phase_ids(ids.iter().copied())?;
        Ok(engine)
    }

    async fn checked_engine(&self, run: &RunOptions) -> Result<Engine> {
        // `Config::load` validated already; an embedder's hand-built `Config` has not
        // been, and every rule about the configuration lives in that one check.
        self.env.config().validate()?;
        let engine = self.engine()?;
        engine.check_selection(run)?;
        for provider in &self.providers {
            provider.prepare(&self.env).await?;
        }
        Ok(engine)
    }

    /// What `up` would change. Changes nothing; takes no lock.
    ///
    /// # Errors
    /// Invalid selection or graph; phase failures are in the report.
    pub async fn plan(&self, run: &RunOptions) -> Result<RunReport> {
        let engine = self.checked_engine(run).await?;
        Ok(engine.run(Operation::Plan, run).await)
    }

    /// Health of every phase. Changes nothing; takes no lock.
    ///
    /// # Errors
    /// Invalid selection or graph; phase failures are in the report.
    pub async fn status(&self, run: &RunOptions) -> Result<RunReport> {
        let engine = self.checked_engine(run).await?;
        Ok(engine.run(Operation::Status, run).await)
    }

    /// The outputs of every phase that can tell them now, discovered live (a plan run),
    /// with the report of that run.
    ///
    /// # Errors
    /// Invalid selection or graph.
    pub async fn outputs(&self, run: &RunOptions) -> Result<(Outputs, RunReport)> {
        let report = self.plan(run).await?;
        Ok((report.merged_outputs(), report))
    }

    /// Brings the environment up: takes the lock, runs every preflight, then applies.
    ///
    /// # Errors
    /// Invalid selection or graph, the lock held by another run, or (production) a
    /// destructive change without `allow_destructive`. Phase failures are in the
    /// report.
    pub async fn up(&self, run: &RunOptions, options: &UpOptions) -> Result<RunReport> {
        let engine = self.checked_engine(run).await?;
        let lock = self.lock("comind up").await?;
        if self.env.is_production() && !options.allow_destructive {
            // The guard's plan reports to a bus of its own: subscribers see one run.
            let guard = Engine::new(
                self.phases()?,
                self.env.clone(),
                EngineOptions {
                    events: EventBus::new(),
                    ..self.options.clone()
                },
            )?;
            let plan = guard.run(Operation::Plan, run).await;
            if !plan.succeeded() {
                let unread: Vec<String> = plan
                    .summary
                    .phases
                    .iter()
                    .filter(|p| p.outcome != crate::event::Outcome::Succeeded)
                    .map(|p| match &p.error {
                        Some(error) => format!("`{}` ({error})", p.id),
                        None => format!("`{}`", p.id),
                    })
                    .collect();
                return Err(Error::invalid_input(format!(
                    "environment `{}` is production, and whether this run would replace or \
                     delete something cannot be told: the plan of {} did not succeed; \
                     nothing was changed",
                    self.env.name(),
                    unread.join(", ")
                ))
                .with_hint("fix what the plan reports, or pass --allow-destructive"));
            }
            let destructive: Vec<String> = plan
                .plans
                .values()
                .flat_map(|p| &p.changes)
                .filter(|c| matches!(c.action, Action::Replace | Action::Delete))
                .map(ToString::to_string)
                .collect();
            if !destructive.is_empty() {
                return Err(Error::invalid_input(format!(
                    "environment `{}` is production and this run would {}; nothing was changed",
                    self.env.name(),
                    destructive.join(", ")
                ))
                .with_hint("review `comind plan`, then pass --allow-destructive"));
            }
        }
        self.logged(&engine, &lock, Operation::Apply, run).await
    }

    /// Takes the environment down: removes what Comind created, keeping data unless
    /// `run.destroy.purge`.
    ///
    /// # Errors
    /// Invalid selection or graph, the lock held by another run, or a production
    /// environment without `confirm` naming it.
    pub async fn down(&self, run: &RunOptions, options: &DownOptions) -> Result<RunReport> {
        let engine = self.checked_engine(run).await?;
        if self.env.is_production() && options.confirm.as_deref() != Some(self.env.name()) {
            let what = if run.destroy.purge {
                "destroy it and its data"
            } else {
                "destroy it"
            };
            return Err(Error::invalid_input(format!(
                "environment `{}` is marked production; refusing to {what} without \
                 confirmation; nothing was changed",
                self.env.name()
            ))
            .with_hint(format!("pass --confirm {} if you mean it", self.env.name())));
        }
        let lock = self.lock("comind down").await?;
        self.logged(&engine, &lock, Operation::Destroy, run).await
    }

    /// Checks prerequisites of every provider, and the state directory.
    pub async fn doctor(&self) -> Vec<Diagnosis> {
        let mut checks = Vec::new();
        let state = self.env.state();
        checks.push(match state.ensure() {
            Ok(()) => Diagnosis::ok(
                "state directory",
                format!("{} is writable", state.path().display()),
            ),
            Err(err) => Diagnosis::failed(
                "state directory",
                err.to_string(),
                "set `state_dir` in comind.yaml or COMIND_STATE_DIR to a writable directory",
            ),
        });
        if let Some(held) = EnvironmentLock::holder(&state.lock_path()) {
            checks.push(Diagnosis::warning(
                "environment lock",
                format!("locked: {held}"),
                "wait for that run to finish before running `comind up` or `down`",
            ));
        }
        for provider in &self.providers {
            checks.extend(provider.diagnose(&self.env).await);
        }
        checks
    }

    /// Whether every check passed (warnings allowed).
    pub fn doctor_passed(checks: &[Diagnosis]) -> bool {
        checks.iter().all(|c| c.status != CheckStatus::Failed)
    }

    async fn lock(&self, command: &str) -> Result<EnvironmentLock> {
        self.env.state().ensure()?;
        let path = self.env.state().lock_path();
        // Waiting for another run must not outlast an interrupt.
        let lock = tokio::select! {
            lock = EnvironmentLock::acquire(&path, command, self.lock_wait) => lock?,
            () = self.options.cancel.requested() => {
                return Err(Error::cancelled(
                    "cancelled while waiting for the environment lock; nothing was changed",
                )
                .with_resource(path.display().to_string()));
            }
        };
        if let Some(stale) = lock.recovered_from() {
            let state = if stale.is_dead() {
                "which is no longer running"
            } else {
                "which did not release it"
            };
            self.options.events.emit(Event::Notice {
                message: format!(
                    "took over a stale environment lock left by {stale}, {state}; \
                     the run resumes from what exists"
                ),
            });
        }
        Ok(lock)
    }

    async fn logged(
        &self,
        engine: &Engine,
        _lock: &EnvironmentLock,
        operation: Operation,
        run: &RunOptions,
    ) -> Result<RunReport> {
        let path = self.env.state().event_log_path();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| crate::state::io_error("write the event log", &path, e))?;
        let mut stream = self.options.events.subscribe();
        let writer = tokio::spawn(async move {
            let mut out = std::io::BufWriter::new(file);
            while let Some(record) = stream.recv().await {
                let done = matches!(record.event, Event::RunFinished { .. });
                write_record(&mut out, &record);
                if done {
                    break;
                }
            }
            let _ = out.flush();
        });
        let report = engine.run(operation, run).await;
        // The writer stops at run_finished; bound the wait in case it never comes.
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        Ok(report)
    }
}

fn write_record(out: &mut impl Write, record: &EventRecord) {
    // The log is best effort: a full disk must not fail the bootstrap itself.
    if let Ok(line) = serde_json::to_string(record) {
        let _ = writeln!(out, "{line}");
    }
}

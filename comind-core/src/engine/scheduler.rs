//! The run loop: starts each phase as soon as what it waits for is done, within the
//! concurrency bound; records outcomes; skips what cannot run; reports.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::graph::Selected;
use super::report::{RunReport, critical_path};
use super::{Engine, PhaseLimits, RetryPolicy, RunOptions};
use crate::error::{Error, ErrorKind, ErrorReport};
use crate::event::{Event, EventBus, Outcome, PhaseSummary, RunOutcome, RunSummary, millis};
use crate::phase::{
    Applied, Change, DestroyOptions, Destroyed, InputSet, Kept, Operation, Phase, PhaseContext,
    PhaseId, PhaseStatus, Plan,
};

/// What a phase returned.
enum Returned {
    Plan(Plan),
    Applied(Applied),
    Destroyed(Destroyed),
    Status(PhaseStatus),
}

impl Returned {
    fn changes(&self) -> &[Change] {
        match self {
            Returned::Plan(plan) => &plan.changes,
            Returned::Applied(applied) => &applied.changes,
            Returned::Destroyed(destroyed) => &destroyed.changes,
            Returned::Status(_) => &[],
        }
    }

    fn kept(&self) -> &[Kept] {
        match self {
            Returned::Destroyed(destroyed) => &destroyed.kept,
            _ => &[],
        }
    }

    /// What dependents see of this phase.
    fn as_input(&self) -> Option<InputSet> {
        match self {
            Returned::Applied(applied) => Some(InputSet::Known(Arc::new(applied.outputs.clone()))),
            Returned::Plan(plan) => Some(match &plan.outputs {
                Some(outputs) => InputSet::Known(Arc::new(outputs.clone())),
                None => InputSet::KnownAfterApply,
            }),
            Returned::Status(status) => Some(match &status.outputs {
                Some(outputs) => InputSet::Known(Arc::new(outputs.clone())),
                None => InputSet::KnownAfterApply,
            }),
            Returned::Destroyed(_) => None,
        }
    }
}

struct Executed {
    result: Result<Returned, Error>,
    attempts: u32,
    duration: Duration,
}

#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    duration: Duration,
    attempts: u32,
    changes: usize,
    error: Option<ErrorReport>,
    reason: Option<String>,
    input: Option<InputSet>,
}

pub(super) async fn run(engine: &Engine, operation: Operation, run: &RunOptions) -> RunReport {
    let started = Instant::now();
    let graph = &engine.graph;
    let options = &engine.options;
    let events = &options.events;
    let reverse = operation == Operation::Destroy;
    let n = graph.len();

    let mut report = RunReport {
        summary: RunSummary {
            operation,
            outcome: RunOutcome::Succeeded,
            wall_ms: 0,
            critical_path_ms: 0,
            critical_path: Vec::new(),
            changes: 0,
            phases: Vec::new(),
        },
        outputs: HashMap::new(),
        plans: HashMap::new(),
        statuses: HashMap::new(),
        destroyed: HashMap::new(),
    };

    let selection = match graph.select(&run.only, &run.skip, reverse) {
        Ok(selection) => selection,
        Err(err) => {
            // The caller should have checked; report it as a rejected run all the same.
            events.emit(Event::Notice {
                message: err.to_string(),
            });
            report.summary.outcome = RunOutcome::Rejected;
            events.emit(Event::RunFinished {
                summary: report.summary.clone(),
            });
            return report;
        }
    };
    let in_run: Vec<usize> = (0..n)
        .filter(|&i| selection[i] != Selected::OutsideOnly)
        .collect();
    let upstream = |i: usize| -> &[usize] {
        if reverse {
            graph.dependents(i)
        } else {
            graph.deps(i)
        }
    };
    let downstream = |i: usize| -> &[usize] {
        if reverse {
            graph.deps(i)
        } else {
            graph.dependents(i)
        }
    };

    events.emit(Event::RunStarted {
        operation,
        environment: engine.env.name().to_string(),
        profile: engine.env.profile().to_string(),
        phases: in_run.iter().map(|&i| graph.ids()[i].clone()).collect(),
        concurrency: options.concurrency,
    });

    let mut slots: Vec<Slot> = (0..n).map(|_| Slot::default()).collect();
    for &i in &in_run {
        if let Selected::Skipped(because) = selection[i] {
            let (reason, because) = match because {
                None => ("excluded by --skip".to_string(), Vec::new()),
                Some(j) => (
                    format!("needs `{}`, which is excluded", graph.ids()[j]),
                    vec![graph.ids()[j].clone()],
                ),
            };
            skip(
                &mut slots[i],
                &graph.ids()[i],
                reason,
                because,
                Outcome::Skipped,
                events,
            );
        }
    }
    let runnable: Vec<usize> = in_run
        .iter()
        .copied()
        .filter(|&i| selection[i] == Selected::Yes)
        .collect();

    let mut verdict = Preflight::Passed;
    if operation == Operation::Apply {
        verdict = preflight(engine, &runnable, &mut slots, events).await;
    }
    let rejected = verdict == Preflight::Rejected;

    if verdict == Preflight::Passed {
        schedule(
            engine,
            operation,
            run,
            &runnable,
            &upstream,
            &downstream,
            &mut slots,
            &mut report,
        )
        .await;
    }

    // Whatever never started was stopped by cancellation.
    for &i in &in_run {
        if slots[i].outcome.is_none() {
            skip(
                &mut slots[i],
                &graph.ids()[i],
                "not started: the run was cancelled".to_string(),
                Vec::new(),
                Outcome::Cancelled,
                events,
            );
        }
    }

    let order: Vec<usize> = {
        let mut topo: Vec<usize> = graph
            .topological_order()
            .iter()
            .filter_map(|id| graph.position(id))
            .filter(|&i| selection[i] != Selected::OutsideOnly)
            .collect();
        if reverse {
            topo.reverse();
        }
        topo
    };
    let (critical_ms, critical) = critical_path(
        &order,
        |i| {
            upstream(i)
                .iter()
                .copied()
                .filter(|&u| selection[u] != Selected::OutsideOnly)
                .collect()
        },
        |i| millis(slots[i].duration),
        n,
    );

    let summary = &mut report.summary;
    summary.critical_path_ms = critical_ms;
    summary.critical_path = critical
        .into_iter()
        .map(|i| graph.ids()[i].clone())
        .collect();
    summary.phases = in_run
        .iter()
        .map(|&i| {
            let slot = &slots[i];
            PhaseSummary {
                id: graph.ids()[i].clone(),
                outcome: slot.outcome.unwrap_or(Outcome::Cancelled),
                duration_ms: millis(slot.duration),
                attempts: slot.attempts,
                changes: slot.changes,
                error: slot.error.clone(),
                reason: slot.reason.clone(),
            }
        })
        .collect();
    summary.changes = summary
        .phases
        .iter()
        .filter(|p| p.outcome == Outcome::Succeeded)
        .map(|p| p.changes)
        .sum();
    let any = |o: Outcome| summary.phases.iter().any(|p| p.outcome == o);
    summary.outcome = if rejected {
        RunOutcome::Rejected
    } else if options.cancel.is_requested() && any(Outcome::Cancelled) {
        RunOutcome::Cancelled
    } else if any(Outcome::Failed) || any(Outcome::Cancelled) {
        RunOutcome::Failed
    } else {
        RunOutcome::Succeeded
    };
    summary.wall_ms = millis(started.elapsed());
    events.emit(Event::RunFinished {
        summary: summary.clone(),
    });
    report
}

fn skip(
    slot: &mut Slot,
    id: &PhaseId,
    reason: String,
    because: Vec<PhaseId>,
    outcome: Outcome,
    events: &EventBus,
) {
    slot.outcome = Some(outcome);
    slot.reason = Some(reason.clone());
    events.emit(Event::PhaseSkipped {
        phase: id.clone(),
        reason,
        because,
    });
}

/// What the preflight checks decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preflight {
    /// Every check passed: the run goes on.
    Passed,
    /// A check found a problem with the input (a taken port, a foreign resource, bad
    /// settings): nothing runs, and the run is `rejected`.
    Rejected,
    /// A check could not be completed (a peer kept failing after the retries, a bug):
    /// nothing runs, and the run has `failed`; it is not the input's fault.
    Failed,
}

/// Whether a failed preflight check is a problem with the input rather than a check
/// that could not be made.
fn is_input_problem(err: &Error) -> bool {
    !err.is_transient()
        && matches!(
            err.kind(),
            ErrorKind::InvalidInput
                | ErrorKind::Conflict
                | ErrorKind::NotFound
                | ErrorKind::Permission
        )
}

/// One phase's preflight check, with transient failures retried under the phase's
/// retry policy and within its timeout, as its apply would be: a peer that answers
/// 503 for a moment must not read as bad input.
async fn checked(
    phase: Arc<dyn Phase>,
    ctx: PhaseContext,
    limits: PhaseLimits,
    retry: RetryPolicy,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut attempt = 1;
    loop {
        let error = match tokio::time::timeout_at(deadline, phase.preflight(&ctx)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(Error::timeout(format!(
                    "preflight checks of `{}` did not finish within {}",
                    ctx.phase(),
                    humantime::format_duration(limits.timeout)
                )));
            }
        };
        let delay = retry
            .delay(attempt)
            .max(error.retry_after_delay().unwrap_or_default());
        if !error.is_transient()
            || attempt > limits.retries
            || ctx.cancel.is_requested()
            || tokio::time::Instant::now() + delay >= deadline
        {
            return Err(error);
        }
        ctx.events().emit(Event::PhaseRetrying {
            phase: ctx.phase().clone(),
            attempt,
            delay_ms: millis(delay),
            error: with_phase(error, ctx.phase()).report(),
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.cancel.requested() => {
                return Err(Error::cancelled(format!(
                    "preflight checks of `{}` were cancelled; nothing was changed",
                    ctx.phase()
                )));
            }
        }
        attempt += 1;
    }
}

/// Runs every preflight check.
async fn preflight(
    engine: &Engine,
    runnable: &[usize],
    slots: &mut [Slot],
    events: &EventBus,
) -> Preflight {
    let graph = &engine.graph;
    let mut checks = JoinSet::new();
    for &i in runnable {
        let phase = graph.phase(i).clone();
        // Nothing has been applied yet: every dependency's outputs are to come.
        let inputs = graph
            .deps(i)
            .iter()
            .map(|&d| (graph.ids()[d].clone(), InputSet::KnownAfterApply))
            .collect();
        let ctx = context(engine, i, Operation::Apply, inputs);
        let limits = engine.options.limits_for(&*phase);
        let retry = engine.options.retry;
        checks.spawn(async move { (i, checked(phase, ctx, limits, retry).await) });
    }
    let mut failed = Vec::new();
    while let Some(joined) = checks.join_next().await {
        let (i, result) = match joined {
            Ok(pair) => pair,
            Err(join_error) => {
                // A panicking preflight is a bug; the run must not go on past it.
                events.emit(Event::Notice {
                    message: format!("a preflight check panicked: {join_error}"),
                });
                return Preflight::Failed;
            }
        };
        if let Err(err) = result {
            failed.push((i, err));
        }
    }
    if failed.is_empty() {
        return Preflight::Passed;
    }
    failed.sort_by_key(|(i, _)| *i);
    let verdict = if failed.iter().any(|(_, err)| is_input_problem(err)) {
        Preflight::Rejected
    } else {
        Preflight::Failed
    };
    let failed: Vec<usize> = failed
        .into_iter()
        .map(|(i, err)| {
            let report = with_phase(err, &graph.ids()[i]).report();
            events.emit(Event::PhaseFailed {
                phase: graph.ids()[i].clone(),
                duration_ms: 0,
                error: report.clone(),
            });
            slots[i].outcome = Some(Outcome::Failed);
            slots[i].error = Some(report);
            i
        })
        .collect();
    let names: Vec<String> = failed
        .iter()
        .map(|&i| format!("`{}`", graph.ids()[i]))
        .collect();
    for &i in runnable {
        if slots[i].outcome.is_none() {
            skip(
                &mut slots[i],
                &graph.ids()[i],
                format!(
                    "not run: preflight checks of {} failed, so nothing was changed",
                    names.join(", ")
                ),
                failed.iter().map(|&j| graph.ids()[j].clone()).collect(),
                Outcome::Skipped,
                events,
            );
        }
    }
    verdict
}

fn with_phase(err: Error, id: &PhaseId) -> Error {
    if err.phase().is_some() {
        err
    } else {
        err.with_phase(id.as_str())
    }
}

fn context(
    engine: &Engine,
    i: usize,
    operation: Operation,
    inputs: HashMap<PhaseId, InputSet>,
) -> PhaseContext {
    PhaseContext {
        phase: engine.graph.ids()[i].clone(),
        operation,
        attempt: 1,
        env: engine.env.clone(),
        inputs: Arc::new(inputs),
        events: engine.options.events.clone(),
        cancel: engine.options.cancel.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn schedule<'g>(
    engine: &'g Engine,
    operation: Operation,
    run: &RunOptions,
    runnable: &[usize],
    upstream: &(dyn Fn(usize) -> &'g [usize] + Sync),
    downstream: &(dyn Fn(usize) -> &'g [usize] + Sync),
    slots: &mut [Slot],
    report: &mut RunReport,
) {
    let graph = &engine.graph;
    let options = &engine.options;
    let events = &options.events;
    let cancel = &options.cancel;
    let n = graph.len();

    let mut runs = vec![false; n];
    for &i in runnable {
        runs[i] = true;
    }
    let mut waiting: Vec<usize> = (0..n)
        .map(|i| {
            if runs[i] {
                upstream(i).iter().filter(|&&u| runs[u]).count()
            } else {
                0
            }
        })
        .collect();
    // Ready phases start in declaration order, so runs are reproducible.
    let mut ready: BTreeSet<usize> = runnable
        .iter()
        .copied()
        .filter(|&i| waiting[i] == 0)
        .collect();
    let mut tasks: JoinSet<(usize, Executed)> = JoinSet::new();
    let mut task_index: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut aborted = false;

    loop {
        while tasks.len() < options.concurrency && !cancel.is_requested() {
            let Some(i) = ready.pop_first() else { break };
            let phase = graph.phase(i).clone();
            let inputs: HashMap<PhaseId, InputSet> = if operation == Operation::Destroy {
                HashMap::new()
            } else {
                upstream(i)
                    .iter()
                    .filter_map(|&u| {
                        slots[u]
                            .input
                            .clone()
                            .map(|input| (graph.ids()[u].clone(), input))
                    })
                    .collect()
            };
            let ctx = context(engine, i, operation, inputs);
            let limits = options.limits_for(&*phase);
            let retry = options.retry;
            let destroy = run.destroy;
            let handle = tasks.spawn(async move {
                let executed = execute(phase, ctx, limits, retry, destroy).await;
                (i, executed)
            });
            task_index.insert(handle.id(), i);
        }
        if tasks.is_empty() {
            break;
        }
        let joined = tokio::select! {
            biased;
            () = cancel.aborted(), if !aborted => {
                aborted = true;
                tasks.abort_all();
                continue;
            }
            joined = tasks.join_next_with_id() => joined,
        };
        let Some(joined) = joined else { break };
        let (i, executed) = match joined {
            Ok((_, pair)) => pair,
            Err(join_error) => {
                let Some(i) = task_index.remove(&join_error.id()) else {
                    continue;
                };
                let error = if join_error.is_cancelled() {
                    Error::cancelled(format!(
                        "phase `{}` was aborted by a second interrupt",
                        graph.ids()[i]
                    ))
                } else {
                    Error::internal(format!(
                        "phase `{}` panicked: {join_error}; this is a bug",
                        graph.ids()[i]
                    ))
                };
                (
                    i,
                    Executed {
                        result: Err(error),
                        attempts: 1,
                        duration: Duration::ZERO,
                    },
                )
            }
        };
        let id = graph.ids()[i].clone();
        let slot = &mut slots[i];
        slot.duration = executed.duration;
        slot.attempts = executed.attempts;
        match executed.result {
            Ok(returned) => {
                slot.outcome = Some(Outcome::Succeeded);
                slot.changes = returned.changes().len();
                slot.input = returned.as_input();
                let (health, detail) = match &returned {
                    Returned::Status(status) => (Some(status.health), Some(status.detail.clone())),
                    _ => (None, None),
                };
                events.emit(Event::PhaseFinished {
                    phase: id.clone(),
                    outcome: Outcome::Succeeded,
                    duration_ms: millis(executed.duration),
                    changes: returned.changes().to_vec(),
                    kept: returned.kept().to_vec(),
                    health,
                    detail,
                });
                match returned {
                    Returned::Plan(plan) => {
                        if let Some(outputs) = &plan.outputs {
                            report.outputs.insert(id.clone(), outputs.clone());
                        }
                        report.plans.insert(id, plan);
                    }
                    Returned::Applied(applied) => {
                        report.outputs.insert(id, applied.outputs);
                    }
                    Returned::Destroyed(destroyed) => {
                        report.destroyed.insert(id, destroyed);
                    }
                    Returned::Status(status) => {
                        if let Some(outputs) = &status.outputs {
                            report.outputs.insert(id.clone(), outputs.clone());
                        }
                        report.statuses.insert(id, status);
                    }
                }
                for &d in downstream(i) {
                    if runs[d] && slots[d].outcome.is_none() {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            ready.insert(d);
                        }
                    }
                }
            }
            Err(error) => {
                let cancelled = error.kind() == ErrorKind::Cancelled;
                let report_err = error.report();
                slot.error = Some(report_err.clone());
                if cancelled {
                    slot.outcome = Some(Outcome::Cancelled);
                    slot.reason = Some(error.message().to_string());
                    events.emit(Event::PhaseFinished {
                        phase: id.clone(),
                        outcome: Outcome::Cancelled,
                        duration_ms: millis(executed.duration),
                        changes: Vec::new(),
                        kept: Vec::new(),
                        health: None,
                        detail: None,
                    });
                } else {
                    slot.outcome = Some(Outcome::Failed);
                    events.emit(Event::PhaseFailed {
                        phase: id.clone(),
                        duration_ms: millis(executed.duration),
                        error: report_err,
                    });
                }
                skip_downstream(
                    i,
                    &id,
                    cancelled,
                    &runs,
                    downstream,
                    slots,
                    graph.ids(),
                    events,
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn skip_downstream<'g>(
    from: usize,
    id: &PhaseId,
    cancelled: bool,
    runs: &[bool],
    downstream: &(dyn Fn(usize) -> &'g [usize] + Sync),
    slots: &mut [Slot],
    ids: &[PhaseId],
    events: &EventBus,
) {
    let (reason, outcome) = if cancelled {
        (
            format!("not started: `{id}` was cancelled"),
            Outcome::Cancelled,
        )
    } else {
        (format!("not run: `{id}` failed"), Outcome::Skipped)
    };
    let mut stack: Vec<usize> = downstream(from).to_vec();
    while let Some(d) = stack.pop() {
        if runs[d] && slots[d].outcome.is_none() {
            skip(
                &mut slots[d],
                &ids[d],
                reason.clone(),
                vec![id.clone()],
                outcome,
                events,
            );
            stack.extend(downstream(d).iter().copied());
        }
    }
}

async fn perform(
    phase: &dyn Phase,
    ctx: &PhaseContext,
    destroy: DestroyOptions,
) -> Result<Returned, Error> {
    Ok(match ctx.operation() {
        Operation::Plan => Returned::Plan(phase.plan(ctx).await?),
        Operation::Apply => Returned::Applied(phase.apply(ctx).await?),
        Operation::Destroy => Returned::Destroyed(phase.destroy(ctx, destroy).await?),
        Operation::Status => Returned::Status(phase.status(ctx).await?),
    })
}

async fn execute(
    phase: Arc<dyn Phase>,
    mut ctx: PhaseContext,
    limits: PhaseLimits,
    retry: RetryPolicy,
    destroy: DestroyOptions,
) -> Executed {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let id = ctx.phase().clone();
    let events = ctx.events().clone();
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        events.emit(Event::PhaseStarted {
            phase: id.clone(),
            attempt,
        });
        let result = match tokio::time::timeout_at(deadline, perform(&*phase, &ctx, destroy)).await
        {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "phase `{id}` did not finish within {}",
                humantime::format_duration(limits.timeout)
            ))
            .transient(false)
            .with_hint(format!(
                "if it needs longer, raise `phases.{id}.timeout` in comind.yaml"
            ))),
        };
        let error = match result {
            Ok(returned) => {
                return Executed {
                    result: Ok(returned),
                    attempts: attempt,
                    duration: started.elapsed(),
                };
            }
            Err(error) => with_phase(error, &id),
        };
        let delay = retry
            .delay(attempt)
            .max(error.retry_after_delay().unwrap_or_default());
        let retry_now = error.is_transient()
            && attempt <= limits.retries
            && !ctx.cancel.is_requested()
            && tokio::time::Instant::now() + delay < deadline;
        if !retry_now {
            return Executed {
                result: Err(error),
                attempts: attempt,
                duration: started.elapsed(),
            };
        }
        events.emit(Event::PhaseRetrying {
            phase: id.clone(),
            attempt,
            delay_ms: millis(delay),
            error: error.report(),
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.cancel.requested() => {
                return Executed {
                    result: Err(Error::cancelled(format!(
                        "phase `{id}` was not retried because the run was cancelled \
                         (last error: {error})"
                    ))),
                    attempts: attempt,
                    duration: started.elapsed(),
                };
            }
        }
        attempt += 1;
    }
}

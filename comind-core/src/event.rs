//! The event stream of a run.
//!
//! Every run emits versioned, serializable events: run started, phase started,
//! progress, retrying, finished, failed, skipped, and run finished with a summary and
//! the critical path. The CLI renders them as progress lines or JSON lines and writes
//! them to the state directory; an embedder subscribes to the same stream with
//! [`EventBus::subscribe`]. Events never carry secret values.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::ErrorReport;
use crate::phase::{Change, Health, Kept, Operation, PhaseId};

/// The version of the event schema, carried by every record as `v`. It changes only
/// when a field is removed or changes meaning; new fields and new event types do not
/// change it, so consumers must ignore what they do not know.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One event with its envelope: schema version, sequence number and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Schema version, [`EVENT_SCHEMA_VERSION`].
    pub v: u32,
    /// Position in the run's stream, from 0.
    pub seq: u64,
    /// Wall-clock time (RFC 3339, milliseconds).
    pub ts: String,
    /// Milliseconds since the bus was created.
    pub elapsed_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It did what was asked.
    Succeeded,
    /// It failed (after any retries).
    Failed,
    /// It did not run because a dependency failed, or because it was not selected.
    Skipped,
    /// It was cancelled before or while running.
    Cancelled,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        })
    }
}

/// How a whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every selected phase succeeded.
    Succeeded,
    /// At least one phase failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// Preflight checks failed, so nothing was changed.
    Rejected,
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Rejected => "rejected",
        })
    }
}

/// What one phase did in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// The phase.
    pub id: PhaseId,
    /// How it ended.
    pub outcome: Outcome,
    /// Time from start to end, 0 if it never started.
    pub duration_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Number of changes made (apply, destroy) or pending (plan).
    pub changes: usize,
    /// The error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    /// Why it was skipped or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The summary of a run, carried by [`Event::RunFinished`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// What was run.
    pub operation: Operation,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Wall time of the run.
    pub wall_ms: u64,
    /// Duration of the longest dependency chain, by the phases' measured durations.
    pub critical_path_ms: u64,
    /// The phases on that chain, first to last.
    pub critical_path: Vec<PhaseId>,
    /// Resources created, updated, replaced or deleted (or pending, for a plan).
    pub changes: usize,
    /// Every phase, in the order they were declared.
    pub phases: Vec<PhaseSummary>,
}

impl RunSummary {
    /// Phases with this outcome.
    pub fn with_outcome(&self, outcome: Outcome) -> Vec<&PhaseId> {
        self.phases
            .iter()
            .filter(|p| p.outcome == outcome)
            .map(|p| &p.id)
            .collect()
    }
}

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The run began.
    RunStarted {
        /// What runs.
        operation: Operation,
        /// The environment.
        environment: String,
        /// The profile.
        profile: String,
        /// The phases that will run, in declaration order.
        phases: Vec<PhaseId>,
        /// The concurrency bound.
        concurrency: usize,
    },
    /// A phase started (or started another attempt).
    PhaseStarted {
        /// The phase.
        phase: PhaseId,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A phase reported progress.
    PhaseProgress {
        /// The phase.
        phase: PhaseId,
        /// What it is doing.
        message: String,
        /// Completed fraction, 0 to 1, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraction: Option<f64>,
    },
    /// Progress: a step of a phase finished, and how long it took (a service's image
    /// check, container creation, start, first answer, setup, probe), so the slow step
    /// of a slow phase can be seen. Steps are reported as they finish; one that fails
    /// is not reported (the phase's failure is).
    PhaseStep {
        /// The phase.
        phase: PhaseId,
        /// The step, a short stable name (`create`, `first_answer`).
        step: String,
        /// How long it took.
        duration_ms: u64,
    },
    /// A phase failed transiently and will be retried.
    PhaseRetrying {
        /// The phase.
        phase: PhaseId,
        /// The attempt that failed.
        attempt: u32,
        /// Delay before the next attempt.
        delay_ms: u64,
        /// What failed.
        error: ErrorReport,
    },
    /// A phase ended without failing.
    PhaseFinished {
        /// The phase.
        phase: PhaseId,
        /// `succeeded` or `cancelled`.
        outcome: Outcome,
        /// Time from start to end.
        duration_ms: u64,
        /// Changes made (apply, destroy) or pending (plan).
        changes: Vec<Change>,
        /// Resources deliberately kept (destroy).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        kept: Vec<Kept>,
        /// Health found (status runs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<Health>,
        /// What the health means (status runs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A phase failed.
    PhaseFailed {
        /// The phase.
        phase: PhaseId,
        /// Time from start to end.
        duration_ms: u64,
        /// What failed.
        error: ErrorReport,
    },
    /// A phase did not run.
    PhaseSkipped {
        /// The phase.
        phase: PhaseId,
        /// Why.
        reason: String,
        /// The phases that caused it (a failed dependency).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        because: Vec<PhaseId>,
    },
    /// Something the user should know that is not about one phase (a stale lock was
    /// recovered).
    Notice {
        /// The message.
        message: String,
    },
    /// The run ended.
    RunFinished {
        /// What happened.
        summary: RunSummary,
    },
}

struct BusInner {
    started: Instant,
    seq: AtomicU64,
    active: AtomicBool,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<EventRecord>>>>,
}

/// The event stream of a run. Cheap to clone; clones share subscribers.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("seq", &self.inner.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        EventBus {
            inner: Arc::new(BusInner {
                started: Instant::now(),
                seq: AtomicU64::new(0),
                active: AtomicBool::new(false),
                subscribers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Subscribes to every event emitted from now on. Nothing is dropped: the stream
    /// buffers until read.
    pub fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        subs.push(tx);
        self.inner.active.store(true, Ordering::Release);
        EventStream { rx }
    }

    /// Emits an event to every subscriber.
    pub fn emit(&self, event: Event) {
        // Without subscribers nothing is formatted: the engine emits several events per
        // phase, and large graphs must stay cheap.
        if !self.inner.active.load(Ordering::Acquire) {
            self.inner.seq.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The sequence number is taken under the lock so every subscriber sees the
        // same order.
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(EventRecord {
            v: EVENT_SCHEMA_VERSION,
            seq,
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            elapsed_ms: millis(self.inner.started.elapsed()),
            event,
        });
        subs.retain(|tx| tx.send(record.clone()).is_ok());
    }

    /// Ends every subscription: streams return `None` once drained.
    pub fn close(&self) {
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        subs.clear();
        self.inner.active.store(false, Ordering::Release);
    }
}

/// A subscription to an [`EventBus`].
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Arc<EventRecord>>,
}

impl EventStream {
    /// The next event; `None` when the bus is closed and everything was read.
    pub async fn recv(&mut self) -> Option<Arc<EventRecord>> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<EventRecord>> {
        self.rx.try_recv().ok()
    }
}

pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_reports_its_time_when_it_succeeds_and_nothing_when_it_fails() {
        let ctx = crate::PhaseContext::standalone(
            crate::PhaseId::new("postgres"),
            crate::Operation::Apply,
            std::sync::Arc::new(crate::Environment::with_state_root(
                crate::Config::default(),
                "/tmp/x",
            )),
            Default::default(),
        );
        let mut events = ctx.events().subscribe();
        let ok: std::result::Result<u32, ()> = ctx
            .step("first_answer", async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(7)
            })
            .await;
        assert_eq!(ok, Ok(7));
        let failed: std::result::Result<u32, &str> = ctx.step("setup", async { Err("no") }).await;
        assert_eq!(failed, Err("no"));
        let record = events.try_recv().unwrap();
        match &record.event {
            Event::PhaseStep {
                phase,
                step,
                duration_ms,
            } => {
                assert_eq!(phase.as_str(), "postgres");
                assert_eq!(step, "first_answer");
                assert!(*duration_ms >= 20, "{duration_ms}");
            }
            other => panic!("not a step: {other:?}"),
        }
        assert!(events.try_recv().is_none(), "a failed step is not reported");
        let json = serde_json::to_value(&*record).unwrap();
        assert_eq!(json["type"], "phase_step");
        assert_eq!(json["step"], "first_answer");
    }

    #[tokio::test]
    async fn subscribers_see_every_event_in_order() {
        let bus = EventBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.emit(Event::Notice {
            message: "one".into(),
        });
        bus.emit(Event::PhaseStarted {
            phase: "x".into(),
            attempt: 1,
        });
        bus.close();
        for stream in [&mut a, &mut b] {
            let first = stream.recv().await.unwrap();
            let second = stream.recv().await.unwrap();
            assert!(first.seq < second.seq);
            assert!(matches!(second.event, Event::PhaseStarted { .. }));
            assert!(stream.recv().await.is_none());
        }
    }

    #[test]
    fn records_serialize_flat_with_type_and_version() {
        let record = EventRecord {
            v: EVENT_SCHEMA_VERSION,
            seq: 3,
            ts: "2026-11-22T00:00:00.000Z".into(),
            elapsed_ms: 12,
            event: Event::PhaseSkipped {
                phase: "postgres".into(),
                reason: "dependency failed".into(),
                because: vec!["network".into()],
            },
        };
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["type"], "phase_skipped");
        assert_eq!(json["v"], 1);
        assert_eq!(json["phase"], "postgres");
        assert_eq!(json["because"][0], "network");
        let back: EventRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}

//! Live rendering of a run's events: a progress line per running phase on a
//! terminal, plain timestamped lines otherwise, or one JSON object per line.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use comind_core::event::{Event, EventBus, EventRecord, EventStream, Outcome};
use comind_core::{Health, Operation, PhaseId};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::args::OutputMode;

/// Prints events while a command runs.
pub struct EventPrinter {
    done: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EventPrinter {
    /// Subscribes to `bus` and prints in `mode` until [`finish`](Self::finish).
    pub fn start(bus: &EventBus, mode: OutputMode) -> Self {
        let stream = bus.subscribe();
        let (done, done_rx) = oneshot::channel();
        let sink: Box<dyn Sink> = match mode {
            OutputMode::Json => Box::new(JsonLines),
            OutputMode::Human if std::io::stderr().is_terminal() => Box::new(Live::new()),
            OutputMode::Human => Box::new(Plain::default()),
        };
        let task = tokio::spawn(pump(stream, done_rx, sink));
        EventPrinter {
            done: Some(done),
            task: Some(task),
        }
    }

    /// Prints what is still buffered and stops.
    pub async fn finish(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn pump(mut stream: EventStream, mut done: oneshot::Receiver<()>, mut sink: Box<dyn Sink>) {
    loop {
        tokio::select! {
            biased;
            record = stream.recv() => match record {
                Some(record) => sink.event(&record),
                None => break,
            },
            _ = &mut done => {
                while let Some(record) = stream.try_recv() {
                    sink.event(&record);
                }
                break;
            }
        }
    }
    sink.close();
}

trait Sink: Send {
    fn event(&mut self, record: &EventRecord);
    fn close(&mut self) {}
}

/// `--output json`: every event as one line on stdout.
struct JsonLines;

impl Sink for JsonLines {
    fn event(&mut self, record: &EventRecord) {
        if let Ok(line) = serde_json::to_string(record) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

pub(crate) fn seconds(ms: u64) -> String {
    let secs = Duration::from_millis(ms).as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    }
}

/// The line that opens a run, for both renderers.
fn started_line(event: &Event) -> Option<String> {
    match event {
        Event::RunStarted {
            operation,
            environment,
            profile,
            phases,
            ..
        } => Some(format!(
            "comind {operation}: environment `{environment}` ({profile}), {} phases",
            phases.len()
        )),
        _ => None,
    }
}

/// The steps each phase reported ([`Event::PhaseStep`]), so its finished line can
/// name where its time went.
#[derive(Default)]
struct Steps(HashMap<PhaseId, Vec<(String, u64)>>);

impl Steps {
    /// The longest step to show, at least.
    const SHOWN_FROM_MS: u64 = 100;

    /// Records `event` when it is a step.
    fn record(&mut self, event: &Event) {
        if let Event::PhaseStep {
            phase,
            step,
            duration_ms,
        } = event
        {
            self.0
                .entry(phase.clone())
                .or_default()
                .push((step.clone(), *duration_ms));
        }
    }

    /// The three slowest steps of `phase` that took 100 ms or more, slowest first:
    /// `first_answer 1.6s, start 0.2s`.
    fn slowest(&self, phase: &PhaseId) -> Option<String> {
        let mut steps: Vec<&(String, u64)> = self
            .0
            .get(phase)?
            .iter()
            .filter(|(_, ms)| *ms >= Self::SHOWN_FROM_MS)
            .collect();
        steps.sort_by_key(|s| std::cmp::Reverse(s.1));
        let shown: Vec<String> = steps
            .iter()
            .take(3)
            .map(|(step, ms)| format!("{step} {}", seconds(*ms)))
            .collect();
        (!shown.is_empty()).then(|| shown.join(", "))
    }
}

/// A one-line description of a terminal phase event, for both renderers. `operation`
/// is the run's, so a plan's changes read as pending and a status check as checked.
fn finished_line(event: &Event, operation: Option<Operation>, steps: &Steps) -> Option<String> {
    Some(match event {
        Event::PhaseFinished {
            phase,
            outcome: Outcome::Succeeded,
            duration_ms,
            changes,
            health,
            ..
        } => {
            let n = changes.len();
            let what = match (operation, n) {
                (Some(Operation::Status), _) => match health {
                    Some(Health::Ready) => "ready".to_string(),
                    Some(Health::Degraded) => "degraded".to_string(),
                    Some(Health::Absent) => "absent".to_string(),
                    Some(Health::Unknown) | None => "checked".to_string(),
                },
                (Some(Operation::Plan), 0) => "in sync".to_string(),
                (Some(Operation::Plan), 1) => "1 pending change".to_string(),
                (Some(Operation::Plan), n) => format!("{n} pending changes"),
                (_, 0) => "no changes".to_string(),
                (_, 1) => "1 change".to_string(),
                (_, n) => format!("{n} changes"),
            };
            let slow = if n > 0 { steps.slowest(phase) } else { None };
            let slow = slow.map(|s| format!("  ({s})")).unwrap_or_default();
            format!(
                "✓ {:<14} {:>7}  {what}{slow}",
                phase.as_str(),
                seconds(*duration_ms)
            )
        }
        Event::PhaseFinished {
            phase, duration_ms, ..
        } => format!(
            "○ {:<14} {:>7}  cancelled",
            phase.as_str(),
            seconds(*duration_ms)
        ),
        Event::PhaseFailed {
            phase,
            duration_ms,
            error,
        } => format!(
            "✗ {:<14} {:>7}  failed: {}",
            phase.as_str(),
            seconds(*duration_ms),
            error.message.lines().next().unwrap_or("")
        ),
        Event::PhaseSkipped { phase, reason, .. } => {
            format!("- {:<14} {:>7}  {reason}", phase.as_str(), "")
        }
        Event::Notice { message } => format!("note: {message}"),
        _ => return None,
    })
}

/// A terminal: a spinner per running phase.
struct Live {
    operation: Option<Operation>,
    steps: Steps,
    multi: MultiProgress,
    bars: HashMap<PhaseId, ProgressBar>,
    style: ProgressStyle,
}

impl Live {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        // The template is a constant that indicatif accepts; fall back to the default
        // style rather than fail a run over a progress line.
        let style = ProgressStyle::with_template("{spinner} {prefix:<14} {elapsed:>6}  {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        Live {
            operation: None,
            steps: Steps::default(),
            multi,
            bars: HashMap::new(),
            style,
        }
    }

    fn bar(&mut self, phase: &PhaseId) -> &ProgressBar {
        let multi = &self.multi;
        let style = &self.style;
        self.bars.entry(phase.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(phase.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

impl Sink for Live {
    fn event(&mut self, record: &EventRecord) {
        self.steps.record(&record.event);
        match &record.event {
            event @ Event::RunStarted { operation, .. } => {
                self.operation = Some(*operation);
                if let Some(line) = started_line(event) {
                    self.println(&line);
                }
            }
            Event::PhaseStarted { phase, attempt } => {
                let bar = self.bar(phase);
                if *attempt > 1 {
                    bar.set_message(format!("attempt {attempt}"));
                }
            }
            Event::PhaseProgress {
                phase,
                message,
                fraction,
            } => {
                let text = match fraction {
                    Some(f) => format!("{message} ({:.0}%)", f * 100.0),
                    None => message.clone(),
                };
                self.bar(phase).set_message(text);
            }
            Event::PhaseRetrying {
                phase,
                attempt,
                delay_ms,
                error,
            } => {
                let text = format!(
                    "attempt {attempt} failed, retrying in {}: {}",
                    seconds(*delay_ms),
                    error.message
                );
                self.bar(phase).set_message(text);
            }
            event => {
                let phase = match event {
                    Event::PhaseFinished { phase, .. }
                    | Event::PhaseFailed { phase, .. }
                    | Event::PhaseSkipped { phase, .. } => Some(phase.clone()),
                    _ => None,
                };
                if let Some(phase) = phase
                    && let Some(bar) = self.bars.remove(&phase)
                {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(line) = finished_line(event, self.operation, &self.steps) {
                    self.println(&line);
                }
            }
        }
    }

    fn close(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// Not a terminal: plain lines on stderr with the time since the run started;
/// progress messages at most every few seconds per phase.
#[derive(Default)]
struct Plain {
    operation: Option<Operation>,
    steps: Steps,
    last_progress: HashMap<PhaseId, (Instant, String)>,
}

impl Plain {
    fn line(record: &EventRecord, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{:>7}] {text}", seconds(record.elapsed_ms));
    }
}

impl Sink for Plain {
    fn event(&mut self, record: &EventRecord) {
        self.steps.record(&record.event);
        match &record.event {
            event @ Event::RunStarted { operation, .. } => {
                self.operation = Some(*operation);
                if let Some(line) = started_line(event) {
                    Self::line(record, &line);
                }
            }
            Event::PhaseStarted { phase, attempt } => {
                let suffix = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                Self::line(record, &format!("  {phase} started{suffix}"));
            }
            Event::PhaseProgress { phase, message, .. } => {
                let due = match self.last_progress.get(phase) {
                    Some((at, last)) => at.elapsed() >= Duration::from_secs(3) && last != message,
                    None => true,
                };
                if due {
                    self.last_progress
                        .insert(phase.clone(), (Instant::now(), message.clone()));
                    Self::line(record, &format!("  {phase}: {message}"));
                }
            }
            Event::PhaseRetrying {
                phase,
                attempt,
                delay_ms,
                error,
            } => Self::line(
                record,
                &format!(
                    "  {phase}: attempt {attempt} failed, retrying in {}: {}",
                    seconds(*delay_ms),
                    error.message
                ),
            ),
            event => {
                if let Some(line) = finished_line(event, self.operation, &self.steps) {
                    Self::line(record, &line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(phase: &str, step: &str, duration_ms: u64) -> Event {
        Event::PhaseStep {
            phase: PhaseId::new(phase),
            step: step.to_string(),
            duration_ms,
        }
    }

    #[test]
    fn a_finished_line_names_the_slowest_steps_of_a_phase_that_changed_something() {
        let mut steps = Steps::default();
        for event in [
            step("postgres", "create", 40),
            step("postgres", "start", 1200),
            step("postgres", "first_answer", 2400),
            step("postgres", "setup", 480),
            step("postgres", "probe", 120),
            step("cache", "start", 900),
        ] {
            steps.record(&event);
        }
        let finished = |changes: Vec<comind_core::Change>| Event::PhaseFinished {
            phase: PhaseId::new("postgres"),
            outcome: Outcome::Succeeded,
            duration_ms: 4300,
            changes,
            kept: Vec::new(),
            health: None,
            detail: None,
        };
        let line = finished_line(
            &finished(vec![comind_core::Change::create("container", "x")]),
            Some(Operation::Apply),
            &steps,
        )
        .unwrap();
        assert!(
            line.ends_with("1 change  (first_answer 2.4s, start 1.2s, setup 0.5s)"),
            "{line}"
        );
        let quiet = finished_line(&finished(Vec::new()), Some(Operation::Apply), &steps).unwrap();
        assert!(quiet.ends_with("no changes"), "{quiet}");
    }
}

//! An in-memory world: the resources fake phases and backends create, and a log of
//! what was called, for tests to assert against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A resource in the fake world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeResource {
    /// The kind (`container`, `volume`, `resource`).
    pub kind: String,
    /// Ownership labels.
    pub labels: BTreeMap<String, String>,
    /// The spec it was created with (compared to detect drift).
    pub spec: String,
    /// Whether it is running (containers).
    pub running: bool,
    /// Data written into it (volumes).
    pub data: BTreeSet<String>,
}

/// One call recorded by the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Who made it (a phase id).
    pub by: String,
    /// What it was (`create`, `delete`, `start`, `read`).
    pub op: String,
    /// On which resource.
    pub resource: String,
}

impl Call {
    /// Whether the call changed the world.
    pub fn is_mutating(&self) -> bool {
        self.op != "read"
    }
}

/// A span of time a phase ran, for ordering and concurrency assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start, since the world was created.
    pub start: Duration,
    /// End, since the world was created.
    pub end: Duration,
}

#[derive(Debug, Default)]
struct State {
    resources: BTreeMap<String, FakeResource>,
    calls: Vec<Call>,
    spans: BTreeMap<String, Vec<Span>>,
    running: BTreeMap<String, Duration>,
    max_parallel: usize,
    secrets: BTreeMap<String, String>,
}

/// Shared in-memory world. Cheap to clone; clones see the same state.
#[derive(Debug, Clone)]
pub struct World {
    state: Arc<Mutex<State>>,
    epoch: Instant,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// An empty world.
    pub fn new() -> Self {
        World {
            state: Arc::new(Mutex::new(State::default())),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in one test thread must not hide the world from the assertions.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(state: &mut State, by: &str, op: &str, resource: &str) {
        state.calls.push(Call {
            by: by.to_string(),
            op: op.to_string(),
            resource: resource.to_string(),
        });
    }

    /// The resource named `name`.
    pub fn get(&self, name: &str) -> Option<FakeResource> {
        self.lock().resources.get(name).cloned()
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.lock().resources.contains_key(name)
    }

    /// Every resource name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().resources.keys().cloned().collect()
    }

    /// Names of resources whose labels include every `selector` label.
    pub fn select(&self, selector: &BTreeMap<String, String>) -> Vec<String> {
        self.lock()
            .resources
            .iter()
            .filter(|(_, r)| selector.iter().all(|(k, v)| r.labels.get(k) == Some(v)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Records a read of `name` by `by` and returns the resource.
    pub fn read(&self, by: &str, name: &str) -> Option<FakeResource> {
        let mut state = self.lock();
        Self::record(&mut state, by, "read", name);
        state.resources.get(name).cloned()
    }

    /// Creates or replaces `name`.
    pub fn put(&self, by: &str, name: &str, resource: FakeResource) {
        let mut state = self.lock();
        let op = if state.resources.contains_key(name) {
            "replace"
        } else {
            "create"
        };
        Self::record(&mut state, by, op, name);
        state.resources.insert(name.to_string(), resource);
    }

    /// Deletes `name`; returns whether it existed.
    pub fn delete(&self, by: &str, name: &str) -> bool {
        let mut state = self.lock();
        let existed = state.resources.remove(name).is_some();
        if existed {
            Self::record(&mut state, by, "delete", name);
        }
        existed
    }

    /// Sets whether `name` is running; returns whether it exists.
    pub fn set_running(&self, by: &str, name: &str, running: bool) -> bool {
        let mut state = self.lock();
        let op = if running { "start" } else { "stop" };
        let found = match state.resources.get_mut(name) {
            Some(resource) => {
                resource.running = running;
                true
            }
            None => false,
        };
        if found {
            Self::record(&mut state, by, op, name);
        }
        found
    }

    /// Adds a data item to `name` (a volume); returns whether it exists.
    pub fn write_data(&self, name: &str, item: &str) -> bool {
        let mut state = self.lock();
        match state.resources.get_mut(name) {
            Some(resource) => {
                resource.data.insert(item.to_string());
                true
            }
            None => false,
        }
    }

    /// A stable secret for `key`, generated on first use (a fake credential store).
    pub fn secret(&self, key: &str) -> String {
        let mut state = self.lock();
        state
            .secrets
            .entry(key.to_string())
            .or_insert_with(|| format!("fake-secret-{:016x}", fastrand::u64(..)))
            .clone()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls that changed the world.
    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::is_mutating).collect()
    }

    /// Forgets the call log (not the resources), to assert on the next run alone.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Marks `phase` as running now.
    pub fn begin(&self, phase: &str) {
        let now = self.epoch.elapsed();
        let mut state = self.lock();
        state.running.insert(phase.to_string(), now);
        state.max_parallel = state.max_parallel.max(state.running.len());
    }

    /// Marks `phase` as no longer running.
    pub fn end(&self, phase: &str) {
        let now = self.epoch.elapsed();
        let mut state = self.lock();
        if let Some(start) = state.running.remove(phase) {
            state
                .spans
                .entry(phase.to_string())
                .or_default()
                .push(Span { start, end: now });
        }
    }

    /// The spans `phase` ran in, one per attempt.
    pub fn spans(&self, phase: &str) -> Vec<Span> {
        self.lock().spans.get(phase).cloned().unwrap_or_default()
    }

    /// The most phases that ran at once.
    pub fn max_parallel(&self) -> usize {
        self.lock().max_parallel
    }

    /// Whether `first` finished before `second` started (their last attempts).
    pub fn ran_before(&self, first: &str, second: &str) -> bool {
        match (self.spans(first).last(), self.spans(second).first()) {
            (Some(a), Some(b)) => a.end <= b.start,
            _ => false,
        }
    }
}

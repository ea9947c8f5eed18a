//! What a run reports: the summary, and each phase's result.

use std::collections::HashMap;

use crate::event::{Outcome, RunOutcome, RunSummary};
use crate::output::Outputs;
use crate::phase::{Destroyed, PhaseId, PhaseStatus, Plan};

/// The result of a run: the summary (also sent as the last event) and what each phase
/// returned.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The summary.
    pub summary: RunSummary,
    /// Outputs of phases that applied (apply) or could tell them (plan, status).
    pub outputs: HashMap<PhaseId, Outputs>,
    /// Plans, for a plan run.
    pub plans: HashMap<PhaseId, Plan>,
    /// Health, for a status run.
    pub statuses: HashMap<PhaseId, PhaseStatus>,
    /// What each phase removed and kept, for a destroy run.
    pub destroyed: HashMap<PhaseId, Destroyed>,
}

impl RunReport {
    /// Whether every phase succeeded.
    pub fn succeeded(&self) -> bool {
        self.summary.outcome == RunOutcome::Succeeded
    }

    /// For a plan run: whether `up` would change something, or cannot tell yet because
    /// a plan depends on outputs known only after apply.
    pub fn has_pending_changes(&self) -> bool {
        self.summary.changes > 0 || self.plans.values().any(|p| p.deferred.is_some())
    }

    /// For a status run: whether every phase was read and is ready.
    pub fn all_ready(&self) -> bool {
        self.succeeded()
            && self
                .statuses
                .values()
                .all(|s| s.health == crate::phase::Health::Ready)
    }

    /// Ids of phases with `outcome`.
    pub fn phases_with(&self, outcome: Outcome) -> Vec<PhaseId> {
        self.summary
            .with_outcome(outcome)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Outputs of every phase that has them, merged in phase order. Keys are unique
    /// across phases by convention (they are prefixed by service).
    pub fn merged_outputs(&self) -> Outputs {
        let mut merged = Outputs::new();
        for phase in &self.summary.phases {
            if let Some(outputs) = self.outputs.get(&phase.id) {
                merged.extend(outputs.clone());
            }
        }
        merged
    }
}

/// The longest chain through the DAG by measured duration. `order` is a topological
/// order (upstream first) of the phases in the run, `upstream(i)` the in-run phases
/// `i` waited for, `duration_ms(i)` what `i` took.
pub(crate) fn critical_path(
    order: &[usize],
    upstream: impl Fn(usize) -> Vec<usize>,
    duration_ms: impl Fn(usize) -> u64,
    n: usize,
) -> (u64, Vec<usize>) {
    let mut finish = vec![0u64; n];
    let mut via: Vec<Option<usize>> = vec![None; n];
    for &i in order {
        let best = upstream(i).into_iter().max_by_key(|&u| finish[u]);
        let start = best.map_or(0, |u| finish[u]);
        finish[i] = start + duration_ms(i);
        via[i] = best;
    }
    let Some(&end) = order.iter().max_by_key(|&&i| finish[i]) else {
        return (0, Vec::new());
    };
    let mut path = vec![end];
    let mut current = end;
    while let Some(prev) = via[current] {
        path.push(prev);
        current = prev;
    }
    path.reverse();
    (finish[end], path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_path_follows_the_longest_chain() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3; 2 is slower than 1.
        let deps = [vec![], vec![0], vec![0], vec![1, 2]];
        let dur = [10, 5, 30, 1];
        let (ms, path) = critical_path(&[0, 1, 2, 3], |i| deps[i].clone(), |i| dur[i], 4);
        assert_eq!(ms, 41);
        assert_eq!(path, vec![0, 2, 3]);
        let (ms, path) = critical_path(&[], |_| vec![], |_| 0, 0);
        assert_eq!((ms, path), (0, vec![]));
    }
}

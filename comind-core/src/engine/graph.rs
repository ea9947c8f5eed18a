//! The phase graph: validated once, before anything runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::phase::{Phase, PhaseId};

/// Why a set of phases does not form a valid graph. Every variant names the
/// offending ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// An id breaks the naming rules.
    #[error("{0}")]
    InvalidId(String),
    /// Two or more phases share an id.
    #[error("duplicate phase id(s): {}", join(.0))]
    Duplicate(Vec<PhaseId>),
    /// A phase depends on an id that no phase has.
    #[error("unknown dependencies: {}", .0.iter().map(|(p, d)| format!("`{p}` depends on `{d}`")).collect::<Vec<_>>().join(", "))]
    UnknownDependency(Vec<(PhaseId, PhaseId)>),
    /// The dependencies form a cycle; each id depends on the next, and the first is
    /// repeated at the end.
    #[error("dependency cycle: {} (each phase depends on the next)", .0.iter().map(PhaseId::as_str).collect::<Vec<_>>().join(" -> "))]
    Cycle(Vec<PhaseId>),
    /// `--only` or `--skip` named a phase that does not exist.
    #[error("unknown phase(s) selected: {}; the phases are: {}", join(.unknown), join(.known))]
    UnknownSelection {
        /// The unknown ids.
        unknown: Vec<PhaseId>,
        /// Every id of the graph.
        known: Vec<PhaseId>,
    },
}

fn join(ids: &[PhaseId]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<GraphError> for crate::Error {
    fn from(err: GraphError) -> Self {
        let hint = match &err {
            GraphError::UnknownSelection { .. } => "check the ids given to --only and --skip",
            _ => "this is a bug in the provider that contributed these phases",
        };
        let kind = match &err {
            GraphError::UnknownSelection { .. } => crate::ErrorKind::InvalidInput,
            _ => crate::ErrorKind::Internal,
        };
        crate::Error::new(kind, format!("invalid phase graph: {err}")).with_hint(hint)
    }
}

/// A validated graph of phases: unique ids, known dependencies, no cycles.
#[derive(Clone)]
pub struct PhaseGraph {
    phases: Vec<Arc<dyn Phase>>,
    ids: Vec<PhaseId>,
    index: HashMap<PhaseId, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl std::fmt::Debug for PhaseGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseGraph")
            .field("ids", &self.ids)
            .finish()
    }
}

impl PhaseGraph {
    /// Validates `phases` into a graph.
    ///
    /// # Errors
    /// Invalid or duplicate ids, unknown dependencies, or a cycle, naming the ids.
    pub fn new(phases: Vec<Arc<dyn Phase>>) -> Result<Self, GraphError> {
        let ids: Vec<PhaseId> = phases.iter().map(|p| p.id()).collect();
        for id in &ids {
            id.check().map_err(GraphError::InvalidId)?;
        }
        let mut index = HashMap::with_capacity(ids.len());
        let mut duplicates = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if index.insert(id.clone(), i).is_some() && !duplicates.contains(id) {
                duplicates.push(id.clone());
            }
        }
        if !duplicates.is_empty() {
            return Err(GraphError::Duplicate(duplicates));
        }
        let mut deps = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for (i, phase) in phases.iter().enumerate() {
            let mut mine = Vec::new();
            for dep in phase.dependencies() {
                match index.get(&dep) {
                    Some(&j) if !mine.contains(&j) => mine.push(j),
                    Some(_) => {}
                    None => unknown.push((ids[i].clone(), dep)),
                }
            }
            deps.push(mine);
        }
        if !unknown.is_empty() {
            return Err(GraphError::UnknownDependency(unknown));
        }
        let mut dependents = vec![Vec::new(); ids.len()];
        for (i, mine) in deps.iter().enumerate() {
            for &d in mine {
                dependents[d].push(i);
            }
        }
        let graph = PhaseGraph {
            phases,
            ids,
            index,
            deps,
            dependents,
        };
        if let Some(cycle) = graph.find_cycle() {
            return Err(GraphError::Cycle(cycle));
        }
        Ok(graph)
    }

    /// Number of phases.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the graph has no phases.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, in declaration order.
    pub fn ids(&self) -> &[PhaseId] {
        &self.ids
    }

    /// The phase with `id`.
    pub fn get(&self, id: &PhaseId) -> Option<&Arc<dyn Phase>> {
        self.index.get(id).map(|&i| &self.phases[i])
    }

    pub(crate) fn phase(&self, i: usize) -> &Arc<dyn Phase> {
        &self.phases[i]
    }

    pub(crate) fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    pub(crate) fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    pub(crate) fn position(&self, id: &PhaseId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The direct dependencies of `id`.
    pub fn dependencies_of(&self, id: &PhaseId) -> Vec<PhaseId> {
        self.position(id)
            .map(|i| self.deps[i].iter().map(|&d| self.ids[d].clone()).collect())
            .unwrap_or_default()
    }

    /// A topological order (dependencies first), stable with respect to declaration
    /// order among independent phases.
    pub fn topological_order(&self) -> Vec<PhaseId> {
        self.kahn()
            .into_iter()
            .map(|i| self.ids[i].clone())
            .collect()
    }

    fn kahn(&self) -> Vec<usize> {
        let n = self.ids.len();
        let mut remaining: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut ready: std::collections::VecDeque<usize> =
            (0..n).filter(|&i| remaining[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &d in &self.dependents[i] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        order
    }

    fn find_cycle(&self) -> Option<Vec<PhaseId>> {
        let order = self.kahn();
        if order.len() == self.ids.len() {
            return None;
        }
        let done: HashSet<usize> = order.into_iter().collect();
        // Every node left over lies on or behind a cycle; walking dependencies from
        // one of them must revisit a node.
        let start = (0..self.ids.len()).find(|i| !done.contains(i))?;
        let mut path = vec![start];
        let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        let mut current = start;
        loop {
            let next = *self.deps[current].iter().find(|d| !done.contains(d))?;
            if let Some(&at) = seen.get(&next) {
                let mut cycle: Vec<PhaseId> =
                    path[at..].iter().map(|&i| self.ids[i].clone()).collect();
                cycle.push(cycle[0].clone());
                return Some(cycle);
            }
            seen.insert(next, path.len());
            path.push(next);
            current = next;
        }
    }

    /// Which phases a run selects. `only` takes the named phases and what they need:
    /// their dependencies, or their dependents when `reverse` (destroy). `skip` leaves
    /// out the named phases and what cannot run without them. Returns, per phase, why
    /// it is excluded (`None`: selected; absent from the run: not selected by `only`).
    ///
    /// # Errors
    /// `UnknownSelection` when `only` or `skip` names an unknown id.
    pub(crate) fn select(
        &self,
        only: &[PhaseId],
        skip: &[PhaseId],
        reverse: bool,
    ) -> Result<Vec<Selected>, GraphError> {
        let unknown: Vec<PhaseId> = only
            .iter()
            .chain(skip)
            .filter(|id| !self.index.contains_key(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(GraphError::UnknownSelection {
                unknown,
                known: self.ids.clone(),
            });
        }
        let n = self.ids.len();
        let mut state = vec![Selected::Yes; n];
        if !only.is_empty() {
            let mut keep = vec![false; n];
            let mut stack: Vec<usize> = only.iter().filter_map(|id| self.position(id)).collect();
            while let Some(i) = stack.pop() {
                if !keep[i] {
                    keep[i] = true;
                    let next = if reverse {
                        &self.dependents[i]
                    } else {
                        &self.deps[i]
                    };
                    stack.extend(next.iter().copied());
                }
            }
            for i in 0..n {
                if !keep[i] {
                    state[i] = Selected::OutsideOnly;
                }
            }
        }
        let mut stack: Vec<(usize, Option<usize>)> = skip
            .iter()
            .filter_map(|id| self.position(id))
            .map(|i| (i, None))
            .collect();
        while let Some((i, because)) = stack.pop() {
            if state[i] == Selected::OutsideOnly || matches!(state[i], Selected::Skipped(_)) {
                continue;
            }
            state[i] = Selected::Skipped(because);
            let next = if reverse {
                &self.deps[i]
            } else {
                &self.dependents[i]
            };
            stack.extend(next.iter().map(|&j| (j, Some(i))));
        }
        Ok(state)
    }
}

/// Whether a phase takes part in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selected {
    /// It runs.
    Yes,
    /// `--only` did not select it: it is not part of the run at all.
    OutsideOnly,
    /// `--skip` excluded it (`None`) or a phase it needs (`Some(index)`).
    Skipped(Option<usize>),
}

//! A provider made of given phases and diagnoses.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;
use crate::environment::Environment;
use crate::phase::Phase;
use crate::provider::{Diagnosis, Provider};
use crate::service::{ServiceBackend, ServicePhase};

/// A fake [`Provider`].
#[derive(Clone, Default)]
pub struct FakeProvider {
    name: String,
    phases: Vec<Arc<dyn Phase>>,
    diagnoses: Vec<Diagnosis>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("name", &self.name)
            .field(
                "phases",
                &self.phases.iter().map(|p| p.id()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FakeProvider {
    /// A provider called `name` with no phases.
    pub fn new(name: &str) -> Self {
        FakeProvider {
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// Adds a phase.
    #[must_use]
    pub fn with_phase(mut self, phase: impl Phase) -> Self {
        self.phases.push(Arc::new(phase));
        self
    }

    /// Adds a service backend, wrapped as a phase.
    #[must_use]
    pub fn with_service(mut self, backend: impl ServiceBackend) -> Self {
        self.phases
            .push(Arc::new(ServicePhase::new(Arc::new(backend))));
        self
    }

    /// Adds a doctor diagnosis.
    #[must_use]
    pub fn with_diagnosis(mut self, diagnosis: Diagnosis) -> Self {
        self.diagnoses.push(diagnosis);
        self
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn phases(&self, _env: &Arc<Environment>) -> Result<Vec<Arc<dyn Phase>>> {
        Ok(self.phases.clone())
    }

    async fn diagnose(&self, _env: &Arc<Environment>) -> Vec<Diagnosis> {
        self.diagnoses.clone()
    }
}

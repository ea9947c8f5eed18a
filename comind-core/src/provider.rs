//! Providers: a profile's set of phases, and the checks `comind doctor` runs.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::environment::Environment;
use crate::phase::Phase;

/// Contributes phases to a bootstrap: a profile's cluster and services and what they
/// need (a VPC and IAM roles on AWS; a Docker network locally), or the platform laid
/// on a cluster.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short name (`local`, `aws`, `gitops`).
    fn name(&self) -> &str;

    /// The phases for `env`. Called once per run; must not touch anything.
    ///
    /// # Errors
    /// When the configuration cannot be turned into phases (a bad setting that only
    /// this provider can judge).
    fn phases(&self, env: &Arc<Environment>) -> Result<Vec<Arc<dyn Phase>>>;

    /// Checks, before any run (plan included), what must hold for anything to work and
    /// can only be known asynchronously, such as a region resolved from the AWS chain.
    /// Must not change anything. The default checks nothing.
    ///
    /// # Errors
    /// `InvalidInput` when the environment cannot be run as configured; the CLI exits 2
    /// with nothing touched.
    async fn prepare(&self, _env: &Arc<Environment>) -> Result<()> {
        Ok(())
    }

    /// Checks prerequisites (a daemon, a binary, credentials, free ports) and says how
    /// to fix each problem. Must not change anything.
    async fn diagnose(&self, env: &Arc<Environment>) -> Vec<Diagnosis>;
}

/// How a prerequisite check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Works, but something is worth knowing.
    Warning,
    /// A run would fail.
    Failed,
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warning => "warning",
            CheckStatus::Failed => "failed",
        })
    }
}

/// The result of one prerequisite check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What was checked (`docker daemon`, `port 5432`).
    pub check: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it is not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Diagnosis {
    /// A passing check.
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Diagnosis {
            check: check.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A warning with a fix.
    pub fn warning(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Diagnosis {
            check: check.into(),
            status: CheckStatus::Warning,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failed check with a fix.
    pub fn failed(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Diagnosis {
            check: check.into(),
            status: CheckStatus::Failed,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

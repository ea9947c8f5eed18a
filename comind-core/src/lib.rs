//! # comind-core
//!
//! The core of Comind, the bootstrapper of the Comind-Ops platform. It knows nothing
//! of Docker, AWS or Kubernetes: it holds the configuration ([`config`]), the traits a
//! bootstrap is made of ([`Phase`], [`ServiceBackend`], [`Provider`]), the graph
//! [`engine`] that plans, applies and destroys phases in parallel, the [`event`]
//! stream, [`output`]s and [`secret`]s, the error type, the [`cluster`] contract of
//! the in-cluster phases, the environment [`lock`] and the [`state`] directory.
//! [`Bootstrap`] ties them together into what the `comind` CLI does, for any embedder
//! to do the same.
//!
//! Provider crates (`comind-local`, `comind-aws`, `comind-gitops`) implement the
//! traits. With the `testing` feature, the `testing` module offers fakes of every trait, an
//! in-memory world to assert against, and the conformance suites every
//! implementation must pass.

pub mod bootstrap;
pub mod cancel;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod environment;
pub mod error;
pub mod event;
pub mod lock;
pub mod output;
pub mod phase;
pub mod provider;
pub mod reconcile;
pub mod secret;
pub mod secret_store;
pub mod service;
pub mod state;
pub mod wait;

#[cfg(feature = "testing")]
pub mod testing;

pub use bootstrap::{Bootstrap, DownOptions, UpOptions};
pub use config::{Config, Profile};
pub use environment::Environment;
pub use error::{Error, ErrorKind, Result};
pub use output::{OutputValue, Outputs};
pub use phase::{
    Action, Applied, Change, DestroyOptions, Destroyed, Health, Input, Kept, Operation, Phase,
    PhaseContext, PhaseId, PhaseStatus, Plan,
};
pub use provider::{CheckStatus, Diagnosis, Provider};
pub use reconcile::{Pass, Reconcile, ReconcilePhase};
pub use secret::Secret;
pub use secret_store::{Forgotten, SecretStore, StateSecretStore};
pub use service::{ServiceBackend, ServiceEndpoint, ServiceKind, ServicePhase};

//! Test support for Comind and for anyone building on its traits (crate feature
//! `testing`).
//!
//! - [`World`]: an in-memory world of resources and a log of calls.
//! - [`FakePhase`], [`FakeService`], [`FakeProvider`]: fakes of every trait with
//!   scripted delays, failures (transient N times, permanent, hang, panic) and crash
//!   points; [`FakeSecretStore`], an in-memory [`SecretStore`](crate::SecretStore).
//! - [`conformance`]: the suites every [`Phase`](crate::Phase) and
//!   [`ServiceBackend`](crate::ServiceBackend) implementation must pass. The fakes
//!   pass them; so do the Docker and AWS backends.
//! - [`test_env`]: an environment whose state directory lives in a temporary folder.

pub mod conformance;
mod fake_phase;
mod fake_provider;
mod fake_secret_store;
mod fake_service;
mod world;

use std::sync::Arc;

pub use fake_phase::{Failure, FakePhase};
pub use fake_provider::FakeProvider;
pub use fake_secret_store::FakeSecretStore;
pub use fake_service::FakeService;
pub use world::{Call, FakeResource, Span, World};

use crate::config::Config;
use crate::environment::Environment;

/// An environment named `name` with the default configuration and its state
/// directory under `state_root` (a temporary directory of the test).
pub fn test_env(name: &str, state_root: &std::path::Path) -> Arc<Environment> {
    let mut config = Config::default();
    match crate::config::EnvironmentName::new(name) {
        Ok(env) => config.environment = env,
        Err(message) => panic!("test environment name: {message}"),
    }
    Arc::new(Environment::with_state_root(config, state_root))
}

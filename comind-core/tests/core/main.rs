//! Engine, bootstrap and conformance tests of comind-core, on the fakes of
//! `comind_core::testing`. One binary for the crate keeps link time down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bootstrap;
mod conformance;
mod engine;

use std::sync::Arc;
use std::time::Duration;

use comind_core::engine::{Engine, EngineOptions, RetryPolicy};
use comind_core::testing::test_env;
use comind_core::{Environment, Phase};

/// Fast retries so tests do not wait on real backoff.
pub fn fast_options() -> EngineOptions {
    EngineOptions {
        retry: RetryPolicy {
            retries: 3,
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        default_timeout: Duration::from_secs(30),
        ..EngineOptions::default()
    }
}

/// A test environment in a fresh temporary state directory.
pub fn env() -> (Arc<Environment>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (test_env("test", dir.path()), dir)
}

/// An engine over `phases` with fast retries.
pub fn engine(phases: Vec<Arc<dyn Phase>>, options: EngineOptions) -> (Engine, tempfile::TempDir) {
    let (env, dir) = env();
    (Engine::new(phases, env, options).unwrap(), dir)
}

/// Boxes phases for the engine.
#[macro_export]
macro_rules! phases {
    ($($phase:expr),* $(,)?) => {
        vec![$(std::sync::Arc::new($phase) as std::sync::Arc<dyn comind_core::Phase>),*]
    };
}

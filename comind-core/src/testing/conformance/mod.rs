//! Conformance suites: behaviour every implementation of a trait must show.
//!
//! A suite drives the implementation through a fixture that the implementer writes:
//! it knows how to find what the implementation created (by ownership labels or tags,
//! through the real peer: Docker, AWS, or the fake [`World`](super::World)) and, for
//! services, how to write and read a piece of data with a real client. Suites panic
//! with a message naming the step that failed, like `assert!`.
//!
//! ```no_run
//! # async fn demo(fixture: impl comind_core::testing::conformance::ServiceFixture) {
//! comind_core::testing::conformance::service_suite(&fixture).await;
//! # }
//! ```

mod phase;
mod secret_store;
mod service;

pub use phase::{PhaseFixture, phase_suite};
pub use secret_store::secret_store_suite;
pub use service::{ServiceFixture, service_suite};

use crate::output::Outputs;

/// Asserts that no secret of `outputs` shows in their `Debug`, serialized or
/// unrevealed renderings. `step` names the step for the panic message.
pub fn assert_secrets_redacted(outputs: &Outputs, step: &str) {
    let debug = format!("{outputs:?}");
    let json = serde_json::to_string(outputs).unwrap_or_default();
    let env = outputs.to_env_lines(false);
    let object = outputs.to_json(false).to_string();
    for (key, value) in outputs.iter() {
        if !value.is_secret() {
            continue;
        }
        let secret = value.expose();
        assert!(
            secret.len() >= 8,
            "{step}: secret output `{key}` is shorter than 8 characters; generated secrets \
             must be strong enough that redaction can be checked"
        );
        for (what, text) in [
            ("Debug", &debug),
            ("serde", &json),
            ("env lines", &env),
            ("JSON", &object),
        ] {
            assert!(
                !text.contains(secret),
                "{step}: secret output `{key}` leaks through {what}"
            );
        }
    }
}

//! The peer policy, decided here and nowhere else.
//!
//! A missing real peer fails the test when `COMIND_REQUIRE_PEERS=1` (CI), and
//! otherwise skips it with one loud banner: on a developer's machine without Docker
//! or moto the other tests still run, and nobody mistakes the skip for a pass.
//!
//! Each peer module reports what it cannot provide as a [`Missing`]; a test turns that
//! into "go on with the peer" or "return" with [`require_peer!`](crate::require_peer)
//! (or [`available`]).

use std::fmt;

/// The environment variable that makes a missing peer a failure when it is `1`.
pub const REQUIRE_PEERS: &str = "COMIND_REQUIRE_PEERS";

/// Whether a missing peer fails the test (`COMIND_REQUIRE_PEERS=1`, as in CI) rather
/// than skipping it.
pub fn peers_required() -> bool {
    std::env::var(REQUIRE_PEERS).is_ok_and(|v| v == "1")
}

/// A real peer that a test needs and cannot have: what is missing, and how to
/// provide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing and why, e.g. "the Docker daemon does not answer: ...".
    pub what: String,
    /// How to provide it, e.g. "run scripts/test-env/ensure-docker.sh".
    pub remedy: String,
}

impl Missing {
    /// A missing peer: `what` is missing, `remedy` provides it.
    pub fn new(what: impl Into<String>, remedy: impl Into<String>) -> Self {
        Missing {
            what: what.into(),
            remedy: remedy.into(),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; to provide it: {}", self.what, self.remedy)
    }
}

impl std::error::Error for Missing {}

/// Applies the peer policy to a missing peer: panics when peers are required, else
/// prints the skip banner and returns, so that the test can return.
///
/// # Panics
/// When `COMIND_REQUIRE_PEERS=1`.
#[track_caller]
pub fn skip_or_fail(missing: &Missing) {
    apply(missing, peers_required());
}

/// The peer, or `None` after [`skip_or_fail`] when it is missing.
///
/// # Panics
/// When the peer is missing and `COMIND_REQUIRE_PEERS=1`.
#[track_caller]
pub fn available<T>(peer: Result<T, Missing>) -> Option<T> {
    match peer {
        Ok(peer) => Some(peer),
        Err(missing) => {
            skip_or_fail(&missing);
            None
        }
    }
}

/// Gets a peer from a `Result<T, Missing>`, or returns from the enclosing test (after
/// the skip banner) when it is missing and peers are not required.
///
/// The expression may await: `require_peer!(docker::ready(&images).await)`.
///
/// # Panics
/// When the peer is missing and `COMIND_REQUIRE_PEERS=1`.
#[macro_export]
macro_rules! require_peer {
    ($peer:expr) => {
        match $crate::peers::available($peer) {
            ::std::option::Option::Some(peer) => peer,
            ::std::option::Option::None => return,
        }
    };
}

#[track_caller]
fn apply(missing: &Missing, required: bool) {
    let test = current_test();
    assert!(
        !required,
        "{test}: a real peer is missing and {REQUIRE_PEERS}=1 makes that a failure: {}. \
         To provide it: {}",
        missing.what, missing.remedy
    );
    eprintln!("{}", banner(&test, missing));
}

/// The test harnesses (libtest and cargo-nextest) run each test on a thread named
/// after it.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "this test".to_string(),
    }
}

fn banner(test: &str, missing: &Missing) -> String {
    let rule = "!".repeat(78);
    format!(
        "\n{rule}\n\
         !! SKIPPED {test}: a real peer is missing.\n\
         !! Missing: {}\n\
         !! To provide it: {}\n\
         !! Set {REQUIRE_PEERS}=1 to make a missing peer a failure (CI does).\n\
         {rule}\n",
        missing.what, missing.remedy
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn missing() -> Missing {
        Missing::new("the widget does not answer", "start the widget")
    }

    #[test]
    fn a_required_peer_that_is_missing_fails_the_test_with_the_remedy() {
        let panic = std::panic::catch_unwind(|| apply(&missing(), true)).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("the widget does not answer"), "{message}");
        assert!(message.contains("start the widget"), "{message}");
        assert!(message.contains("COMIND_REQUIRE_PEERS=1"), "{message}");
    }

    #[test]
    fn an_optional_peer_that_is_missing_returns() {
        apply(&missing(), false);
    }

    #[test]
    fn the_banner_names_the_test_what_is_missing_and_the_remedy() {
        let banner = banner(&current_test(), &missing());
        assert!(
            banner.contains(
                "SKIPPED peers::tests::the_banner_names_the_test_what_is_missing_and_the_remedy"
            ),
            "{banner}"
        );
        assert!(
            banner.contains("Missing: the widget does not answer"),
            "{banner}"
        );
        assert!(
            banner.contains("To provide it: start the widget"),
            "{banner}"
        );
    }

    #[test]
    fn available_passes_a_present_peer_through() {
        assert_eq!(available::<u8>(Ok(7)), Some(7));
    }
}

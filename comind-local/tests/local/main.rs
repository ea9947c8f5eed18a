//! Integration tests of the local provider against a real Docker engine, with the
//! stand-in images described in [`support`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod drift;
mod lifecycle;
mod markers;
mod preflight;
mod pull;
mod readiness;
mod support;

//! Integration tests of the local provider against a real Docker engine, with the
//! stand-in images of `comind_test_support::docker`. A test whose peer (the daemon,
//! an image) is missing fails when `COMIND_REQUIRE_PEERS=1` and otherwise skips
//! loudly: the peer policy of `comind_test_support::peers`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod conformance;
mod crash;
mod drift;
mod git_server;
mod lifecycle;
mod markers;
mod preflight;
mod pull;
mod readiness;
mod registry;
mod support;

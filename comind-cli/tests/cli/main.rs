//! End-to-end tests of the `comind` binary, driven as a user drives it.
//!
//! `config` needs nothing but the binary. `local` needs a Docker engine and the test
//! images (see `scripts/test-env`); it fails when they are missing and
//! `COMIND_REQUIRE_PEERS=1` (CI), and skips loudly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod basics;
mod config;
#[cfg(feature = "local")]
mod local;
mod support;

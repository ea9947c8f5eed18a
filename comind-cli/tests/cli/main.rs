//! End-to-end tests of the `comind` binary, driven as a user drives it.
//!
//! `config` and `basics` need nothing but the binary. `local` needs a Docker engine
//! and the test images, `aws` a `moto_server` (see `scripts/test-env`), both from
//! `comind-test-support`; they fail when those are missing and
//! `COMIND_REQUIRE_PEERS=1` (CI), and skip loudly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "aws")]
mod aws;
mod basics;
mod config;
mod gitops;
#[cfg(feature = "local")]
mod local;
mod seal;
mod support;

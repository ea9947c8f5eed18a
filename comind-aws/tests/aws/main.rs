//! Integration tests of comind-aws against a real `moto_server`, one server per test
//! (see `support/moto.rs` for the peer policy and `support/moto_launcher.py` for the
//! gaps of moto that the tests work around).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bootstrap;
mod conformance;
mod eks;
mod network;
mod provider;
mod support;
mod waiting;

//! Integration tests of comind-aws against a real `moto_server`, one server per test,
//! started by `comind_test_support::moto` through `scripts/test-env/moto_launcher.py`
//! (whose docstring lists the gaps of moto that the tests work around). When moto
//! cannot be started a test fails if `COMIND_REQUIRE_PEERS=1` and otherwise skips
//! loudly: the peer policy of `comind_test_support::peers`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bootstrap;
mod conformance;
mod eks;
mod eks_platform;
mod fault_proxy;
mod killed;
mod lost_answers;
mod network;
mod ownership;
mod provider;
mod secret_store;
mod support;
mod transient;
mod waiting;

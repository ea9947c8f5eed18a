//! What Comind's integration tests share, so that each rule and each launcher exists
//! once: the peer policy, the real peers the tests run against, names and ports that
//! no other test takes, and guards that remove what a test made.
//!
//! This is a dev-dependency of the crates whose integration tests need a real peer
//! (`comind-local`, `comind-aws`, `comind-cli` and `tests/`); product code never
//! depends on it. Fixtures that only one test binary uses (a `TestEnv` of the local
//! provider, the AWS call recorder, the `comind` binary in a scratch directory) stay
//! in that binary's own `support` module.
//!
//! # Modules
//!
//! - [`peers`]: the peer policy, and [`require_peer!`] to get a peer or return from
//!   the test.
//! - [`moto`]: a `moto_server` started through `scripts/test-env/moto_launcher.py`.
//! - `aws_faults` (feature `aws`): a fault-injecting proxy in front of moto
//!   (throttling, 503s, resets, lost answers, calls held in flight), and what it saw.
//! - `docker` (feature `docker`): the daemon and the stand-in images, and a guard that
//!   removes Docker objects by their environment label.
//! - `docker_proxy` (feature `docker`): a proxy of the Docker API that holds a chosen
//!   request, so that a test can kill the client at that step.
//! - `git_https` (feature `git_https`): Git's `git http-backend` behind TLS with a
//!   throwaway CA and a token, for clients of Git's smart HTTP protocol.
//! - `git_ssh` (feature `git_ssh`): OpenSSH's `sshd` with keys made for the test,
//!   serving Git over SSH.
//! - `k3d` (feature `docker`): the k3d CLI double, with a state directory per test.
//! - [`names`] and [`ports`]: unique names and free 127.0.0.1 ports for a test run.
//! - [`workspace`]: where the repository and its test scripts are.
//!
//! One module per peer: a new peer (such as the Kubernetes API server and etcd from
//! `../shared/test-peers`) is a module of its own that starts it, checks it answers,
//! stops it on drop, and reports what is missing as a [`peers::Missing`]; its client
//! dependencies go behind a feature of their own, as `docker` and `aws` do, and its
//! binaries are found from [`workspace::root`].
//!
//! # Peer policy
//!
//! A test that needs a real peer (a Docker engine, a stand-in image, `moto_server`)
//! gets it through this crate. When the peer is missing, the test **fails** if
//! `COMIND_REQUIRE_PEERS=1` (CI and `./scripts/test` set it) and otherwise **skips**:
//! it prints one loud banner naming the test, what is missing and how to provide it,
//! and returns. The decision is made in [`peers::skip_or_fail`] and nowhere else.
//!
//! ```no_run
//! use comind_test_support::moto::Moto;
//! use comind_test_support::require_peer;
//!
//! fn talks_to_moto() {
//!     let moto = require_peer!(Moto::start());
//!     assert!(moto.url().starts_with("http://127.0.0.1:"));
//! }
//! ```
//!
//! # Features
//!
//! The crate itself needs only the standard library, `tempfile` and `fastrand`.
//! `docker` adds `bollard` (and `comind-core`, for the label names); `aws` adds
//! `aws-config` for `Moto::sdk_config`, and hyper for the fault proxy. Crates that do
//! not talk to Docker or the AWS SDK in their tests do not compile either for this
//! crate.

#[cfg(feature = "kubelet")]
pub mod argo_cd;
#[cfg(feature = "aws")]
pub mod aws_faults;
#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "docker")]
pub mod docker_proxy;
#[cfg(feature = "git_https")]
pub mod git_https;
#[cfg(feature = "git_ssh")]
pub mod git_ssh;
#[cfg(feature = "docker")]
pub mod k3d;
pub mod kube;
#[cfg(feature = "kubelet")]
pub mod kubelet;
pub mod moto;
pub mod names;
pub mod oracles;
pub mod peers;
pub mod ports;
pub mod workspace;

pub use peers::Missing;

//! A run of `up` in a child process, for a test to kill -9 at a chosen moment.
//!
//! The child is this test binary itself, started again on the same test in a "child
//! role" (environment variables say which environment, state directory and endpoint):
//! the test function calls [`act_as_child_if_asked`] first, which in the child runs
//! `up` through `comind_core::Bootstrap` with `AwsProvider` (what `comind up` runs,
//! minus the rendering) and exits. Why not the `comind` binary: it is built by
//! `comind-cli`, which depends on this crate, so this crate's tests cannot name it
//! (`CARGO_BIN_EXE_comind` exists only in `comind-cli`'s tests). What matters for a
//! crash is the same either way: a real process, holding the environment lock, killed
//! by the kernel with an AWS call in flight.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use comind_core::UpOptions;
use comind_core::engine::RunOptions;

use super::CallLog;
use super::runs;

/// Set in the child: the environment to bring up.
const ENVIRONMENT: &str = "COMIND_AWS_TEST_CHILD_ENVIRONMENT";
/// Set in the child: the state root.
const STATE: &str = "COMIND_AWS_TEST_CHILD_STATE";
/// Set in the child: the AWS endpoint (a fault proxy).
const ENDPOINT: &str = "COMIND_AWS_TEST_CHILD_ENDPOINT";

/// A child process running `up`.
pub struct ChildRun {
    child: Child,
    output: PathBuf,
}

impl ChildRun {
    /// Starts the current test again in the child role: `up` of environment `name`
    /// with its state under `state`, against `endpoint`. Its output goes to a file in
    /// `state`, shown when the test fails.
    pub fn up(name: &str, state: &Path, endpoint: &str) -> ChildRun {
        let test = std::thread::current()
            .name()
            .expect("the test harness names the test's thread after the test")
            .to_string();
        let output = state.join(format!("child-{name}.log"));
        let log = std::fs::File::create(&output).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(ENVIRONMENT, name)
            .env(STATE, state)
            .env(ENDPOINT, endpoint)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ChildRun { child, output }
    }

    /// Kills the child with SIGKILL (it must still be running) and reaps it.
    pub fn kill(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the child run ended before it was killed:\n{}",
            self.output()
        );
        // std's `kill` sends SIGKILL on Unix: no handler, no cleanup, no lock release
        // other than the kernel's.
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "{status}");
    }

    /// What the child printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child started by [`ChildRun::up`], runs `up` and exits the process with 0 when
/// it succeeded, 1 otherwise; in the test itself, returns at once.
pub async fn act_as_child_if_asked() {
    let (Ok(name), Ok(state), Ok(endpoint)) = (
        std::env::var(ENVIRONMENT),
        std::env::var(STATE),
        std::env::var(ENDPOINT),
    ) else {
        return;
    };
    let sdk = comind_test_support::moto::sdk_config_for(&endpoint);
    let bootstrap = runs::bootstrap(sdk, &CallLog::default(), &name, Path::new(&state), |_| {});
    let code = match bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
    {
        Ok(report) if report.succeeded() => 0,
        Ok(report) => {
            eprintln!("child up did not succeed: {:?}", report.summary);
            1
        }
        Err(err) => {
            eprintln!("child up failed: {err}");
            1
        }
    };
    std::process::exit(code);
}

//! The k3d test double (`scripts/test-env/k3d`, documented in
//! `scripts/test-env/k3d-double.md`) as a test peer: a stand-in for the k3d v5 CLI that
//! validates its configuration file as k3d does, makes the Docker objects k3d makes,
//! and runs a real control plane (etcd, kube-apiserver, kube-controller-manager) whose
//! nodes it reports Ready. It is not k3s: no Pod runs, nothing is pulled, no ingress
//! serves.
//!
//! Each test gets a [`K3dDouble`] of its own: a wrapper script that runs the double with
//! a state directory of the test's, so what one test's clusters record (`calls.log`,
//! the configuration files) is that test's alone. Clusters are removed with their node
//! containers (the test's label cleanup does that too: the double's watchdog then
//! stops the control plane).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::peers::Missing;
use crate::workspace;

/// The double, checked once per test process: `COMIND_K3D_DOUBLE` (set by
/// `./scripts/test`), else what `scripts/test-env/ensure-k3d-double.sh` prints.
fn double() -> Result<&'static PathBuf, Missing> {
    static DOUBLE: OnceLock<Result<PathBuf, Missing>> = OnceLock::new();
    DOUBLE
        .get_or_init(|| {
            if std::env::var_os("KUBEBUILDER_ASSETS").is_none() {
                return Err(Missing::new(
                    "KUBEBUILDER_ASSETS is not set: the k3d double runs its control plane \
                     from there",
                    "run the tests with ./scripts/test, or export \
                     KUBEBUILDER_ASSETS=$(scripts/test-env/ensure-kube.sh | tail -1)",
                ));
            }
            if let Some(path) = std::env::var_os("COMIND_K3D_DOUBLE") {
                return Ok(PathBuf::from(path));
            }
            let script = workspace::test_env_script("ensure-k3d-double.sh");
            let out = Command::new(&script).output().map_err(|e| {
                Missing::new(
                    format!("cannot run {}: {e}", script.display()),
                    "run ./scripts/test",
                )
            })?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            match (out.status.success(), stdout.lines().last()) {
                (true, Some(path)) if Path::new(path.trim()).is_file() => {
                    Ok(PathBuf::from(path.trim()))
                }
                _ => Err(Missing::new(
                    format!(
                        "the k3d double is not ready: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    format!("run {}", script.display()),
                )),
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A k3d double with a state directory of one test's.
#[derive(Debug)]
pub struct K3dDouble {
    wrapper: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl K3dDouble {
    /// A double for one test.
    ///
    /// # Errors
    /// A [`Missing`] peer when the double or the control plane's binaries are not
    /// there.
    pub fn new() -> Result<Self, Missing> {
        let double = double()?;
        let dir = tempfile::tempdir()
            .map_err(|e| Missing::new(format!("no temporary directory: {e}"), "free /tmp"))?;
        let state = dir.path().join("state");
        let wrapper = dir.path().join("k3d");
        let script = format!(
            "#!/bin/sh\nK3D_DOUBLE_STATE='{}' exec '{}' \"$@\"\n",
            state.display(),
            double.display()
        );
        let written = std::fs::write(&wrapper, script).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        });
        written
            .map_err(|e| Missing::new(format!("cannot write the k3d wrapper: {e}"), "free /tmp"))?;
        Ok(K3dDouble {
            wrapper,
            state,
            _dir: dir,
        })
    }

    /// The executable to use as `k3d` (`local.cluster.k3d`).
    pub fn binary(&self) -> &Path {
        &self.wrapper
    }

    /// The double's records: `calls.log`, `clusters/NAME/...`.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Every k3d invocation so far, each as its arguments.
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The invocations that change a cluster (`cluster create|start|stop|delete`).
    pub fn mutating_calls(&self) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|args| {
                args.first().map(String::as_str) == Some("cluster")
                    && matches!(
                        args.get(1).map(String::as_str),
                        Some("create" | "start" | "stop" | "delete")
                    )
            })
            .collect()
    }

    /// Runs the double as `k3d ARGS` (for a test that changes the cluster behind
    /// Comind's back); whether it succeeded, and its output.
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        match Command::new(&self.wrapper).args(args).output() {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("cannot run the k3d double: {e}")),
        }
    }
}

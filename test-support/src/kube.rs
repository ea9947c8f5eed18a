//! A real Kubernetes control plane as a test peer: kube-apiserver v1.36, etcd and
//! kube-controller-manager from `../shared/test-peers`, one per test binary.
//!
//! [`KubePeer::shared`] gives every test of a binary the same control plane. nextest
//! runs each test in a process of its own, so the control plane is not a child of
//! any one test: the first test process to ask starts `scripts/test-env/kube-peer.sh`
//! detached, and every process that uses it leaves a lease (a file named after its
//! pid); the script stops etcd, the API server and the controller manager a few
//! seconds after the last leased process exited. Startup takes about 2 s, once.
//! Tests isolate themselves by namespace or by environment name, so they run in
//! parallel against one server.
//!
//! The binaries come from `KUBEBUILDER_ASSETS` (envtest's convention; `./scripts/test`
//! sets it through `scripts/test-env/ensure-kube.sh`); when it is unset, this module
//! runs `ensure-kube.sh` itself. What it does not prove: no Pod ever runs (no
//! scheduler, no kubelet), and no controller of an add-on runs; a test that needs a
//! controller's effect writes it as the controller would, and says so.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::peers::Missing;
use crate::{ports, workspace};

/// The binaries the control plane needs.
const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];
/// How long a start may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How many lines of a log a failure shows.
const LOG_LINES: usize = 15;

/// A user of the control plane, with its groups (see `kube-peer.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// `system:masters`: may do anything.
    Admin,
    /// In group `platform:admin`.
    Alice,
    /// In group `platform:developer`.
    Dave,
    /// In group `platform:readonly`.
    Rita,
    /// In no group at all.
    Nobody,
}

impl User {
    /// The user name.
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Alice => "alice",
            User::Dave => "dave",
            User::Rita => "rita",
            User::Nobody => "nobody",
        }
    }
}

/// A running control plane that this process holds a lease on.
#[derive(Debug)]
pub struct KubePeer {
    dir: PathBuf,
    server: String,
}

impl KubePeer {
    /// The control plane of this test binary, started if no test process of the
    /// binary has started it yet.
    ///
    /// # Errors
    /// A [`Missing`] peer naming what failed: a missing binary, a port, the last lines
    /// of the failing component's log.
    pub fn shared() -> Result<&'static KubePeer, Missing> {
        static PEER: OnceLock<Result<KubePeer, Missing>> = OnceLock::new();
        PEER.get_or_init(start).as_ref().map_err(Clone::clone)
    }

    /// The admin kubeconfig (`system:masters`), with the serving certificate as CA.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The context name in [`kubeconfig`](Self::kubeconfig).
    pub fn context(&self) -> &'static str {
        "test-peer"
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The PEM of the API server's serving certificate, to trust it.
    ///
    /// # Panics
    /// When the file is gone (the control plane was stopped under the test).
    pub fn ca_pem(&self) -> String {
        read(&self.dir.join("certs").join("apiserver.crt"))
    }

    /// The bearer token of `user`.
    ///
    /// # Panics
    /// When the file is gone (the control plane was stopped under the test).
    pub fn token(&self, user: User) -> String {
        read(&self.dir.join("tokens").join(user.name()))
    }

    /// A kubeconfig for `user`, written next to the admin one.
    ///
    /// # Panics
    /// When it cannot be written.
    pub fn kubeconfig_for(&self, user: User) -> PathBuf {
        let admin = read(&self.kubeconfig());
        let text = admin.replace(&self.token(User::Admin), &self.token(user));
        let path = self
            .dir
            .join(format!("kubeconfig-{}-{}", user.name(), std::process::id()));
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Waits until no other test process holds `name`, and holds it until the
    /// returned file is dropped: for tests that lay cluster-wide names (one
    /// environment at a time may own them). Tests run in processes of their own, so
    /// this is a file lock, not a mutex. Blocking: call it before the test's runtime
    /// work, or from `spawn_blocking`.
    ///
    /// # Panics
    /// When the lock file cannot be opened or locked.
    pub fn exclusive(&self, name: &str) -> File {
        let path = self.dir.join(format!("exclusive-{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        file
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Where the binaries are: `KUBEBUILDER_ASSETS`, or what `ensure-kube.sh` unpacks.
fn binaries() -> Result<PathBuf, Missing> {
    let remedy = "run scripts/test-env/ensure-kube.sh (it unpacks ../shared/test-peers), \
                  or set KUBEBUILDER_ASSETS to a directory holding etcd, kube-apiserver and \
                  kube-controller-manager";
    let dir = match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = workspace::test_env_script("ensure-kube.sh");
            let out = Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| {
                    Missing::new(format!("cannot run {}: {e}", script.display()), remedy)
                })?;
            if !out.status.success() {
                return Err(Missing::new(
                    format!("{} failed ({})", script.display(), out.status),
                    remedy,
                ));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    for bin in BINARIES {
        if !dir.join(bin).is_file() {
            return Err(Missing::new(
                format!("no {bin} in {}", dir.display()),
                remedy,
            ));
        }
    }
    Ok(dir)
}

/// The state directory of this binary's control plane: one per test executable.
fn state_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let stamp = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in exe.to_string_lossy().bytes().chain(stamp.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    std::env::temp_dir().join(format!("comind-kube-peer-{hash:016x}"))
}

fn start() -> Result<KubePeer, Missing> {
    let bin = binaries()?;
    let dir = state_dir();
    std::fs::create_dir_all(&dir).map_err(|e| {
        Missing::new(
            format!("cannot create {}: {e}", dir.display()),
            "check /tmp",
        )
    })?;
    // One process at a time decides whether to start it.
    let lock_path = dir.with_extension("lock");
    let lock = lock_within(&lock_path, START_TIMEOUT)?;
    let leases = dir.join("leases");
    std::fs::create_dir_all(&leases).map_err(|e| {
        Missing::new(
            format!("cannot create {}: {e}", leases.display()),
            "check /tmp",
        )
    })?;
    // The lease comes first, so the watchdog of a running control plane keeps it.
    let lease = leases.join(std::process::id().to_string());
    File::create(&lease).map_err(|e| {
        Missing::new(
            format!("cannot write {}: {e}", lease.display()),
            "check /tmp",
        )
    })?;
    if !(dir.join("ready").exists() && supervisor_alive(&dir)) {
        launch(&dir, &bin)?;
    }
    drop(lock);
    let server = server_of(&dir.join("kubeconfig")).ok_or_else(|| {
        Missing::new(
            format!("{} names no server", dir.join("kubeconfig").display()),
            "remove the directory and run the tests again",
        )
    })?;
    Ok(KubePeer { dir, server })
}

/// Takes the lock at `path` (a supervisor holds it while it stops), waiting at most
/// `timeout`.
fn lock_within(path: &Path, timeout: Duration) -> Result<File, Missing> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Missing::new(format!("cannot open {}: {e}", path.display()), "check /tmp"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Missing::new(
                    format!(
                        "cannot lock {} within {}s: {e}",
                        path.display(),
                        timeout.as_secs()
                    ),
                    "a stopping control plane holds it; find it with `fuser -v` on that file",
                ));
            }
        }
    }
}

fn supervisor_alive(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("supervisor.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Starts `kube-peer.sh` detached (in a process group of its own, so it outlives this
/// test process) and waits for `ready` or `failed`.
fn launch(dir: &Path, bin: &Path) -> Result<(), Missing> {
    for stale in ["ready", "failed", "kubeconfig", "supervisor.pid"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    let etcd_port = ports::free_port();
    let api_port = ports::free_port();
    let script = workspace::test_env_script("kube-peer.sh");
    let log = File::create(dir.join("supervisor.log")).map_err(|e| {
        Missing::new(
            format!("cannot write in {}: {e}", dir.display()),
            "check /tmp",
        )
    })?;
    // Through bash, so a checkout that lost the executable bit still works.
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .arg(dir)
        .arg(bin)
        .arg(etcd_port.to_string())
        .arg(api_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command.spawn().map_err(|e| {
        Missing::new(
            format!("cannot start {}: {e}", script.display()),
            "check that the checkout's scripts are executable",
        )
    })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if dir.join("ready").exists() {
            return Ok(());
        }
        let exited = child.try_wait().ok().flatten();
        if dir.join("failed").exists() || exited.is_some() || Instant::now() > deadline {
            let reason =
                std::fs::read_to_string(dir.join("failed")).unwrap_or_else(|_| match exited {
                    Some(status) => format!("kube-peer.sh exited ({status})"),
                    None => format!(
                        "the control plane did not become ready within {}s",
                        START_TIMEOUT.as_secs()
                    ),
                });
            let _ = child.kill();
            return Err(Missing::new(
                format!(
                    "the Kubernetes test peer did not start (etcd on 127.0.0.1:{etcd_port}, \
                     kube-apiserver on 127.0.0.1:{api_port}): {}{}",
                    reason.trim(),
                    logs(dir)
                ),
                "read the logs above; the binaries come from scripts/test-env/ensure-kube.sh",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of every log in `dir`, for a failure message.
fn logs(dir: &Path) -> String {
    let mut text = String::new();
    for name in [
        "supervisor.log",
        "etcd.log",
        "kube-apiserver.log",
        "kube-controller-manager.log",
    ] {
        let mut content = String::new();
        if File::open(dir.join(name))
            .and_then(|mut f| f.read_to_string(&mut content))
            .is_err()
            || content.trim().is_empty()
        {
            continue;
        }
        let lines: Vec<&str> = content.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_LINES)..];
        text.push_str(&format!("\n--- last lines of {name}:\n{}", tail.join("\n")));
    }
    text
}

fn server_of(kubeconfig: &Path) -> Option<String> {
    std::fs::read_to_string(kubeconfig)
        .ok()?
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
}

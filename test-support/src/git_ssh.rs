//! A Git server over SSH for tests: OpenSSH's own `sshd` on 127.0.0.1, with a host key
//! and a client key made for the test, letting the client key run Git's
//! `git-receive-pack`/`git-upload-pack` as the user that runs the test. What a client
//! proves against it is Git's SSH transport as Git hosting serves it.
//!
//! `sshd` runs with no system configuration (`-f /dev/null`) and logs to a file of its
//! own; it needs its privilege separation directory (`/run/sshd`), made here when it is
//! missing.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where OpenSSH's server is installed (Debian's `openssh-server`).
const SSHD: &str = "/usr/sbin/sshd";
/// How long `sshd` may take to answer with its banner.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `sshd`; stopped when dropped.
pub struct GitSshServer {
    child: Child,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
}

impl GitSshServer {
    /// Starts `sshd` on a free port of 127.0.0.1, accepting [`client_key`](Self::client_key).
    ///
    /// # Panics
    /// When `sshd` or `ssh-keygen` is missing or does not start (the test's setup
    /// failing), saying what to install.
    pub fn start() -> GitSshServer {
        match Self::try_start() {
            Ok(server) => server,
            Err(e) => panic!(
                "cannot start the Git SSH server: {e} (scripts/test installs openssh-server; \
                 `apt-get install openssh-server`)"
            ),
        }
    }

    fn try_start() -> Result<GitSshServer, Box<dyn std::error::Error>> {
        if !Path::new(SSHD).is_file() {
            return Err(format!("{SSHD} is missing").into());
        }
        let dir = tempfile::tempdir()?;
        for key in ["host", "client", "stranger"] {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(dir.path().join(key))
                .status()?;
            if !made.success() {
                return Err(format!("ssh-keygen could not make the {key} key").into());
            }
        }
        std::fs::copy(
            dir.path().join("client.pub"),
            dir.path().join("authorized_keys"),
        )?;
        if !Path::new("/run/sshd").is_dir() {
            std::fs::create_dir_all("/run/sshd")?;
        }
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_string();
        let port = crate::ports::free_port();
        let log = std::fs::File::create(dir.path().join("sshd.log"))?;
        let option = |o: &str| ["-o".to_string(), o.to_string()];
        let mut command = Command::new(SSHD);
        command
            .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string(), "-h"])
            .arg(dir.path().join("host"))
            .args(option("ListenAddress=127.0.0.1"))
            .args(option(&format!(
                "AuthorizedKeysFile={}",
                dir.path().join("authorized_keys").display()
            )))
            // The test's temporary directories are not root's 0755 tree.
            .args(option("StrictModes=no"))
            .args(option("PidFile=none"))
            .args(option("PermitRootLogin=prohibit-password"))
            .args(option("PasswordAuthentication=no"))
            .args(option("KbdInteractiveAuthentication=no"))
            .args(option("UsePAM=no"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn()?;
        let mut server = GitSshServer {
            child,
            port,
            user,
            dir,
        };
        server.wait_ready()?;
        let host_key = std::fs::read_to_string(server.dir.path().join("host.pub"))?;
        std::fs::write(
            server.known_hosts(),
            format!("[127.0.0.1]:{port} {}", host_key.trim()) + "\n",
        )?;
        Ok(server)
    }

    /// Waits until `sshd` answers with its banner (`SSH-2.0-…`).
    fn wait_ready(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
                return Err(format!("sshd exited ({status}): {log}").into());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("sshd did not answer in {READY_TIMEOUT:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `ssh://` URL of the repository at the absolute path `repository`.
    pub fn url(&self, repository: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repository.display()
        )
    }

    /// The private key the server accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// A private key the server does not accept.
    pub fn stranger_key(&self) -> PathBuf {
        self.dir.path().join("stranger")
    }

    /// A known hosts file holding the server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
}

impl Drop for GitSshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

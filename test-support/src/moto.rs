//! A `moto_server` of the test's own, on a free 127.0.0.1 port, stopped when dropped.
//!
//! Every test starts its own server (about half a second), so tests share no AWS
//! state and run in parallel, one process each under cargo-nextest. The server is
//! started through `scripts/test-env/moto_launcher.py`, which patches the gaps of moto
//! that matter to Comind and can script the statuses moto reports (see its
//! docstring); product code never knows about either.
//!
//! [`Moto::start`] returns when the server answers `GET /moto-api/data.json` with
//! 200, not after a fixed delay.

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::Missing;
use crate::{ports, workspace};

/// The region the tests use.
pub const REGION: &str = "us-east-1";
/// The access key id moto is given (moto accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
/// The secret access key moto is given (moto accepts any).
pub const SECRET_ACCESS_KEY: &str = "testing";
/// The account moto reports for those credentials.
pub const ACCOUNT_ID: &str = "123456789012";

/// The interpreter that runs the launcher: `$COMIND_PYTHON`, else `python3`.
pub const PYTHON_VARIABLE: &str = "COMIND_PYTHON";

/// How long a server may take to answer after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ports are tried: a port found free can be taken before moto binds it.
const ATTEMPTS: usize = 3;

const REMEDY: &str = "run scripts/test-env/ensure-moto.sh \
                      (it installs `moto[server]>=5.2,<5.3` with pip)";

/// A running `moto_server`, killed when dropped.
pub struct Moto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("url", &self.url())
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Moto {
    /// Starts a server and waits until it answers.
    ///
    /// # Errors
    /// A [`Missing`] peer when the launcher cannot be run, exits, or does not answer
    /// within [`START_TIMEOUT`]; its log's last lines are in the message.
    pub fn start() -> Result<Moto, Missing> {
        let python = std::env::var(PYTHON_VARIABLE).unwrap_or_else(|_| "python3".to_string());
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let dir = tempfile::tempdir()
                .map_err(|e| unavailable(format!("no temporary directory: {e}")))?;
            let port = ports::free_port();
            let log_path = dir.path().join("moto.log");
            let log = std::fs::File::create(&log_path)
                .map_err(|e| unavailable(format!("cannot write {}: {e}", log_path.display())))?;
            let err_log = log
                .try_clone()
                .map_err(|e| unavailable(format!("cannot write {}: {e}", log_path.display())))?;
            let mut child = Command::new(&python)
                .arg(launcher())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .env("COMIND_MOTO_SCRIPT", dir.path().join("script.json"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .spawn()
                .map_err(|e| {
                    unavailable(format!(
                        "cannot run `{python} {}`: {e}",
                        launcher().display()
                    ))
                })?;
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "the moto launcher exited with {status}: {}",
                        log_tail(&log_path)
                    );
                    break;
                }
                if answers(port) {
                    return Ok(Moto { child, port, dir });
                }
                if started.elapsed() > START_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!(
                        "moto_server did not answer within {} s: {}",
                        START_TIMEOUT.as_secs(),
                        log_tail(&log_path)
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(unavailable(last))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The standard AWS variables that point an AWS SDK or CLI in another process at
    /// this server: endpoint, region, credentials, and no instance metadata lookups.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        aws_env_for(&self.url())
    }

    /// An AWS SDK configuration for this server: [`REGION`], the dummy credentials.
    #[cfg(feature = "aws")]
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.url())
    }

    /// Scripts the statuses moto reports, as JSON (hook 7 of `moto_launcher.py`):
    /// `{"db-instance:<id>": ["creating", "available"]}`.
    ///
    /// # Panics
    /// When the script cannot be written to the server's temporary directory.
    pub fn script(&self, script: impl Display) {
        let path = self.dir.path().join("script.json");
        if let Err(e) = std::fs::write(&path, script.to_string()) {
            panic!("cannot write the moto script {}: {e}", path.display());
        }
    }
}

/// The standard AWS variables that point another process at the moto-compatible
/// endpoint `url` (moto itself, or a proxy in front of it).
pub fn aws_env_for(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// An AWS SDK configuration for the moto-compatible endpoint `url`: [`REGION`], the
/// dummy credentials.
#[cfg(feature = "aws")]
pub fn sdk_config_for(url: &str) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;

    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "moto",
        )))
        .build()
}

fn unavailable(why: String) -> Missing {
    Missing::new(format!("moto_server cannot be started: {why}"), REMEDY)
}

fn launcher() -> PathBuf {
    workspace::test_env_script("moto_launcher.py")
}

/// The last lines of the server's log, on one line.
fn log_tail(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let mut tail: Vec<&str> = log.lines().rev().take(8).collect();
    tail.reverse();
    tail.join(" / ")
}

/// Whether moto's own API answers 200 on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.ends_with(b"200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require_peer;

    #[test]
    fn a_server_answers_until_it_is_dropped() {
        let moto = require_peer!(Moto::start());
        let port = moto.port();
        assert!(answers(port));
        assert!(moto.url().ends_with(&format!(":{port}")));
        assert!(
            moto.aws_env()
                .contains(&("AWS_ENDPOINT_URL", moto.url().to_string()))
        );
        drop(moto);
        assert!(!answers(port), "the server was stopped");
    }
}

//! A `moto_server` of the test's own, on a free port, killed when dropped.
//!
//! Every test starts its own server (about half a second), so tests share no state
//! and run in parallel, one process each under cargo-nextest. The server is started
//! through `scripts/test-env/moto_launcher.py`, which patches moto's gaps (see its
//! docstring); product code never knows about them.
//!
//! Peer policy, decided here and nowhere else: when moto_server cannot be started, a
//! test fails if `COMIND_REQUIRE_PEERS=1` (CI) and otherwise skips with a loud
//! message.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A running moto_server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required() -> bool {
    std::env::var("COMIND_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

fn unavailable(why: &str) -> Option<Moto> {
    assert!(
        !required(),
        "moto_server is required (COMIND_REQUIRE_PEERS=1) but could not be started: {why}"
    );
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! SKIPPED: moto_server is not available: {why}\n\
         !! Install it with `pip install 'moto[server]>=5.2,<5.3'`; set\n\
         !! COMIND_REQUIRE_PEERS=1 to make this a failure instead of a skip.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

fn launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-env/moto_launcher.py")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `GET path` on `port` answers 200.
fn answers(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

impl Moto {
    /// Starts a server, or `None` (after the loud message) when moto_server is not
    /// available and peers are not required.
    ///
    /// # Panics
    /// When moto_server is not available and `COMIND_REQUIRE_PEERS=1`.
    pub fn start() -> Option<Moto> {
        let python = std::env::var("COMIND_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let mut last = String::new();
        // A port found free can be taken before moto binds it; try a few.
        for _ in 0..3 {
            let dir = match tempfile::tempdir() {
                Ok(dir) => dir,
                Err(e) => return unavailable(&format!("no temporary directory: {e}")),
            };
            let port = match free_port() {
                Ok(port) => port,
                Err(e) => return unavailable(&format!("no free port: {e}")),
            };
            let log_path = dir.path().join("moto.log");
            let log = match std::fs::File::create(&log_path) {
                Ok(log) => log,
                Err(e) => return unavailable(&format!("cannot write {}: {e}", log_path.display())),
            };
            let err_log = match log.try_clone() {
                Ok(log) => log,
                Err(e) => return unavailable(&format!("cannot write the log: {e}")),
            };
            let spawned = Command::new(&python)
                .arg(launcher())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .env("COMIND_MOTO_SCRIPT", dir.path().join("script.json"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => return unavailable(&format!("cannot run `{python}`: {e}")),
            };
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(8).collect();
                    last = format!(
                        "the launcher exited with {status}: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                    );
                    break;
                }
                if answers(port, "/moto-api/data.json") {
                    return Some(Moto {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        dir,
                    });
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = "it did not answer within 30 s".to_string();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unavailable(&last)
    }

    /// An SDK configuration for this server: region us-east-1, dummy credentials.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "moto",
            )))
            .build()
    }

    /// Scripts the statuses moto reports (see hook 7 of `moto_launcher.py`).
    pub fn script(&self, script: &serde_json::Value) {
        std::fs::write(self.dir.path().join("script.json"), script.to_string())
            .expect("write the moto script");
    }
}

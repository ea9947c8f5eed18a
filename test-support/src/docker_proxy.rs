//! A proxy in front of the Docker Engine API that holds a chosen request, so a test can
//! kill the client at that exact step.
//!
//! Crash-safety tests need a process to die at one precise moment (say, after it
//! created a container and before it uploaded the container's files), on every run,
//! not by luck of timing. The proxy listens on a Unix socket of its own, which the
//! process under test gets as `DOCKER_HOST`, and forwards every byte to the real
//! daemon, except that the first request matching a [`Trap`], and from then on every
//! request, is never forwarded and never answered: the daemon does not act on it, the
//! client waits, and nothing else the client does reaches the daemon either. [`DockerApiProxy::wait_trapped`] returns once that happened, and the
//! test kills the client.
//!
//! Requests are recognised by their request line (`PUT /v1.47/containers/ID/archive`),
//! which the client writes first; the Docker API uses one request at a time per
//! connection, so a request line is never preceded by another request's body in the
//! same read.

use std::io;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// The daemon's socket when `DOCKER_HOST` does not name a Unix socket.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Which requests the proxy holds: a method and a fragment of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    method: String,
    path_fragment: String,
}

impl Trap {
    /// Requests with this method whose path contains `path_fragment`.
    pub fn new(method: &str, path_fragment: &str) -> Self {
        Trap {
            method: method.to_string(),
            path_fragment: path_fragment.to_string(),
        }
    }

    /// Every upload of files into a container (`PUT /containers/{id}/archive`): the
    /// step between creating a container and starting it.
    pub fn file_upload() -> Self {
        Trap::new("PUT", "/archive")
    }

    /// Whether the bytes `seen` (the start of a read from the client) hold a request
    /// line this trap matches.
    fn matches(&self, seen: &[u8]) -> bool {
        let prefix = format!("{} /", self.method);
        let prefix = prefix.as_bytes();
        seen.windows(prefix.len())
            .enumerate()
            .filter(|(_, w)| *w == prefix)
            .any(|(at, _)| {
                let line = &seen[at..];
                let end = line
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .unwrap_or(line.len());
                String::from_utf8_lossy(&line[..end]).contains(&self.path_fragment)
            })
    }
}

/// Whether the trap has fired, and a condition to wait on it.
#[derive(Debug, Default)]
struct Fired {
    fired: Mutex<bool>,
    changed: Condvar,
}

/// A running proxy; stops (and drops every held request) when dropped.
#[derive(Debug)]
pub struct DockerApiProxy {
    socket: PathBuf,
    fired: Arc<Fired>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The Unix socket of the daemon the tests use: `DOCKER_HOST` when it is a
/// `unix://` address, else the default socket.
pub fn daemon_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => {
            PathBuf::from(host.trim_start_matches("unix://"))
        }
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

impl DockerApiProxy {
    /// Starts a proxy to the daemon listening on `upstream`, holding what `trap`
    /// matches. It runs on a thread of its own, so blocking tests can use it.
    ///
    /// # Errors
    /// When its socket cannot be made or its runtime cannot start.
    pub fn start(upstream: &Path, trap: Trap) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("docker.sock");
        let listener = StdUnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let fired = Arc::new(Fired::default());
        let (shutdown, stop) = oneshot::channel();
        let upstream = upstream.to_path_buf();
        let thread = {
            let fired = fired.clone();
            std::thread::spawn(move || {
                runtime.block_on(serve(listener, upstream, trap, fired, stop));
                // Dropping the runtime here drops every connection, held ones included.
            })
        };
        Ok(DockerApiProxy {
            socket,
            fired,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The `DOCKER_HOST` value that reaches the daemon through the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Waits up to `timeout` for the trap to fire; returns whether it did.
    pub fn wait_trapped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut fired = self
            .fired
            .fired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !*fired {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            fired = self
                .fired
                .changed
                .wait_timeout(fired, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for DockerApiProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: StdUnixListener,
    upstream: PathBuf,
    trap: Trap,
    fired: Arc<Fired>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("docker proxy: cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(relay(client, upstream.clone(), trap.clone(), fired.clone()));
                }
                Err(e) => eprintln!("docker proxy: accept failed: {e}"),
            },
            _ = &mut stop => return,
        }
    }
}

/// Relays one client connection to the daemon, holding it from the first trapped
/// request on.
async fn relay(client: UnixStream, upstream: PathBuf, trap: Trap, fired: Arc<Fired>) {
    let daemon = match UnixStream::connect(&upstream).await {
        Ok(daemon) => daemon,
        Err(e) => {
            eprintln!("docker proxy: cannot reach {}: {e}", upstream.display());
            return;
        }
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_daemon, mut to_daemon) = daemon.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_daemon, &mut to_client).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let held = *fired.fired.lock().unwrap_or_else(PoisonError::into_inner);
        if held || trap.matches(&buf[..n]) {
            {
                let mut state = fired.fired.lock().unwrap_or_else(PoisonError::into_inner);
                *state = true;
            }
            fired.changed.notify_all();
            // Never forwarded, never answered: the client waits until it is killed or
            // the proxy stops.
            std::future::pending::<()>().await;
        }
        if to_daemon.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to_daemon.shutdown().await;
    let _ = answers.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_trap_matches_only_uploads() {
        let trap = Trap::file_upload();
        assert!(trap.matches(
            b"PUT /v1.47/containers/abc/archive?path=%2F HTTP/1.1\r\nHost: docker\r\n\r\n"
        ));
        assert!(!trap.matches(b"POST /v1.47/containers/create?name=x HTTP/1.1\r\n\r\n"));
        assert!(!trap.matches(b"GET /v1.47/containers/abc/archive HTTP/1.1\r\n\r\n"));
        assert!(!trap.matches(b"PUT /v1.47/volumes HTTP/1.1\r\nX: /archive\r\n\r\n"));
    }
}

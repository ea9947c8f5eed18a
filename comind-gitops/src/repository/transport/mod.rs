//! The network transports `app deploy` gives libgit2, which is built here without its
//! own (they would bring OpenSSL and libssh2):
//!
//! - [`http`]: Git's smart HTTP protocol over Comind's own HTTPS client (hyper and
//!   rustls), for `https://` (and `http://`) remotes, with a token;
//! - [`ssh`]: Git's SSH transport as Git itself runs it: OpenSSH's `ssh` client,
//!   running `git-receive-pack`/`git-upload-pack` on the server, so the user's SSH
//!   setup (agent, `~/.ssh/config`, known hosts) holds, with the key
//!   `gitops.repo.ssh_key_*` names.
//!
//! libgit2 keeps the Git protocol; a transport moves its bytes. Both are registered
//! once per process, and take what they need (the credential) from the [`Session`] the
//! deploy opens on its own thread: libgit2 calls a transport on the thread that pushes.
//! A transport records what failed there too, so the deploy reports a refused token or
//! key, an unknown host key, or a missing repository as such rather than as libgit2's
//! "network error".

pub(crate) mod http;
pub(crate) mod ssh;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once, PoisonError};

use git2::transport::Transport;

pub(crate) use http::BasicAuth;

/// What went wrong in an exchange, kept for the deploy to turn into a typed error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// HTTP 401: no credential, or one the server refuses.
    Unauthorized,
    /// HTTP 403: the credential is known but may not do this (a read-only token).
    Forbidden,
    /// No repository at the URL (HTTP 404, or the SSH server's Git says so).
    NotFound(String),
    /// The server answered, but not as a Git server (a web page, a dumb HTTP server,
    /// an error status, no Git on the SSH server).
    NotGit(String),
    /// No answer: DNS, connection, TLS (an untrusted certificate), a timeout.
    Unreachable(String),
    /// The SSH server refused the key (or every key ssh offered).
    KeyRefused(String),
    /// The SSH server's host key is not a known one (or not the one known).
    HostKey(String),
    /// No `ssh` program to run.
    NoSsh(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unauthorized => f.write_str("the server asks for credentials (401)"),
            Failure::Forbidden => f.write_str("the server refuses the credential (403)"),
            Failure::NotFound(what)
            | Failure::NotGit(what)
            | Failure::Unreachable(what)
            | Failure::KeyRefused(what)
            | Failure::HostKey(what)
            | Failure::NoSsh(what) => f.write_str(what),
        }
    }
}

/// How `ssh` authenticates a deploy: the identity file (`-i`) and the known hosts file.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshSettings {
    /// A private key file; none: ssh's own choice (agent, `~/.ssh/id_*`).
    pub(crate) identity: Option<PathBuf>,
    /// A known hosts file; none: ssh's own (`~/.ssh/known_hosts`).
    pub(crate) known_hosts: Option<PathBuf>,
}

/// What the transports of this thread's session read.
#[derive(Default)]
pub(super) struct SessionState {
    basic: Option<BasicAuth>,
    ssh: SshSettings,
    failure: Arc<Mutex<Option<Failure>>>,
}

thread_local! {
    static SESSION: RefCell<Option<SessionState>> = const { RefCell::new(None) };
}

/// The credentials and the last failure of the exchanges libgit2 makes on this thread
/// while the session lives.
pub(crate) struct Session {
    failure: Arc<Mutex<Option<Failure>>>,
}

impl Session {
    /// Opens a session on this thread, registering the transports first.
    pub(crate) fn open(basic: Option<BasicAuth>, ssh: SshSettings) -> Session {
        register();
        let state = SessionState {
            basic,
            ssh,
            ..SessionState::default()
        };
        let failure = Arc::clone(&state.failure);
        SESSION.with(|s| *s.borrow_mut() = Some(state));
        Session { failure }
    }

    /// The failure of the last exchange that failed, taken.
    pub(crate) fn take_failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        SESSION.with(|s| *s.borrow_mut() = None);
    }
}

/// Registers the transports with libgit2, once per process. They take precedence over
/// libgit2's own (custom transports are looked up first), which, built without TLS or
/// SSH, cannot speak HTTPS or SSH anyway; libgit2 also hands an scp-like address
/// (`git@host:path`) to the `ssh` one.
fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // Schemes, not prefixes: libgit2 appends `://` itself.
        for scheme in ["https", "http", "ssh"] {
            // SAFETY: `register` must not race with libgit2 creating transports; this
            // runs once, under `Once`, before this process's first remote of these
            // schemes. Another registration of a scheme (an embedder's own) makes it
            // fail: theirs is kept, which is what they asked for.
            #[allow(unsafe_code)]
            let _ = unsafe {
                git2::transport::register(scheme, move |remote| {
                    SESSION.with(|s| {
                        let s = s.borrow();
                        if scheme == "ssh" {
                            Transport::smart(remote, false, ssh::SshSubtransport::new(s.as_ref()))
                        } else {
                            Transport::smart(remote, true, http::HttpSubtransport::new(s.as_ref()))
                        }
                    })
                })
            };
        }
    });
}

/// Records `failure` where the session reads it, and makes the I/O error libgit2 sees.
fn failed(slot: &Mutex<Option<Failure>>, failure: Failure) -> std::io::Error {
    let error = std::io::Error::other(failure.to_string());
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
    error
}

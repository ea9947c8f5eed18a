//! Git's SSH transport, run as Git runs it: OpenSSH's `ssh` client executes
//! `git-receive-pack '<path>'` (or `git-upload-pack`) on the server, and libgit2 speaks
//! the Git protocol over its standard input and output. libgit2's own "exec" SSH
//! backend does the same; it is not in the libgit2 built here.
//!
//! `ssh` runs with `BatchMode=yes`: it never prompts (there is no terminal to answer
//! it), so an unknown host key or a refused key fails at once, with ssh's own message.
//! The key `gitops.repo.ssh_key_*` names is given with `-i` (a path: a key never goes
//! on a command line); without one, ssh's own setup (agent, `~/.ssh/config`) decides.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};

use super::{Failure, SessionState, SshSettings};

/// Where an SSH remote is: `user@host` (or `host`), the port, and the repository's path
/// as the server's Git takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshAddress {
    pub(crate) destination: String,
    pub(crate) port: Option<u16>,
    pub(crate) path: String,
}

/// Parses `ssh://[user@]host[:port]/path` and the scp-like `[user@]host:path`, as Git
/// does: an `ssh://` path is absolute, unless it starts with `/~` (a home directory);
/// an scp-like path is as written (relative to the login's home when not absolute).
///
/// # Errors
/// A message when `url` is neither, has no path, or has a user or host that starts
/// with `-` (ssh would read it as an option).
pub(crate) fn parse(url: &str) -> Result<SshAddress, String> {
    let (destination, port, path) = if let Some(rest) = url.strip_prefix("ssh://") {
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{url}` names no repository path"))?;
        let path = if path.starts_with('~') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("`{url}` has an unclosed `[` in its host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = port
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("`{p}` in `{url}` is not a port"))
            })
            .transpose()?;
        let destination = match userinfo {
            Some(user) => format!("{user}@{host}"),
            None => host.to_string(),
        };
        (destination, port, path)
    } else {
        let (destination, path) = url
            .split_once(':')
            .filter(|(d, _)| !d.contains('/'))
            .ok_or_else(|| format!("`{url}` is not an SSH address"))?;
        (destination.to_string(), None, path.to_string())
    };
    if path.trim_matches('/').is_empty() {
        return Err(format!("`{url}` names no repository path"));
    }
    let host = destination
        .rsplit_once('@')
        .map_or(destination.as_str(), |(_, h)| h);
    if destination.starts_with('-') || host.starts_with('-') || host.is_empty() {
        return Err(format!("`{url}` has no usable host"));
    }
    Ok(SshAddress {
        destination,
        port,
        path,
    })
}

/// `path` quoted for the server's shell, as Git quotes it.
fn quoted(path: &str) -> String {
    format!("'{}'", path.replace('\'', r"'\''"))
}

/// The `ssh` command line (without the program) that runs `service` on `address`.
pub(crate) fn arguments(
    address: &SshAddress,
    settings: &SshSettings,
    service: &str,
) -> Vec<String> {
    let mut args = vec![
        "-o".to_string(),
        "BatchMode=yes".to_string(),
        "-o".to_string(),
        "ConnectTimeout=30".to_string(),
    ];
    if let Some(port) = address.port {
        args.extend(["-p".to_string(), port.to_string()]);
    }
    if let Some(identity) = &settings.identity {
        args.extend([
            "-i".to_string(),
            identity.display().to_string(),
            "-o".to_string(),
            "IdentitiesOnly=yes".to_string(),
        ]);
    }
    if let Some(known_hosts) = &settings.known_hosts {
        args.extend([
            "-o".to_string(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
        ]);
    }
    args.push(address.destination.clone());
    args.push(format!("git-{service} {}", quoted(&address.path)));
    args
}

/// What ssh's (and the server's) error output means.
fn classify(stderr: &str, status: &str) -> Failure {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    let said = if lines.is_empty() {
        format!("ssh {status} without saying why")
    } else {
        lines[lines.len().saturating_sub(3)..].join("; ")
    };
    if stderr.contains("Host key verification failed")
        || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("No ED25519 host key is known")
    {
        Failure::HostKey(said)
    } else if stderr.contains("Permission denied") {
        Failure::KeyRefused(said)
    } else if stderr.contains("does not appear to be a git repository")
        || stderr.contains("not a git repository")
        || stderr.contains("Repository not found")
    {
        Failure::NotFound(said)
    } else if stderr.contains("git-receive-pack: not found")
        || stderr.contains("git-upload-pack: not found")
        || stderr.contains("command not found")
    {
        Failure::NotGit(said)
    } else {
        Failure::Unreachable(said)
    }
}

/// One remote's transport: the session's SSH settings.
pub(super) struct SshSubtransport {
    settings: SshSettings,
    failure: Arc<Mutex<Option<Failure>>>,
}

impl SshSubtransport {
    /// The transport of a remote opened under `session` (none: ssh's defaults).
    pub(super) fn new(session: Option<&SessionState>) -> SshSubtransport {
        SshSubtransport {
            settings: session.map(|s| s.ssh.clone()).unwrap_or_default(),
            failure: session.map_or_else(Arc::default, |s| Arc::clone(&s.failure)),
        }
    }
}

impl SmartSubtransport for SshSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let service = match action {
            Service::UploadPackLs | Service::UploadPack => "upload-pack",
            Service::ReceivePackLs | Service::ReceivePack => "receive-pack",
        };
        let record = |failure: Failure| {
            git2::Error::from_str(&super::failed(&self.failure, failure).to_string())
        };
        let address = parse(url).map_err(|m| record(Failure::NotGit(m)))?;
        let mut child = Command::new("ssh")
            .args(arguments(&address, &self.settings, service))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                record(Failure::NoSsh(format!(
                    "cannot run `ssh` (OpenSSH's client), which a deploy to an SSH remote runs: {e}"
                )))
            })?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(record(Failure::NoSsh(
                "ssh's pipes were not opened".to_string(),
            )));
        };
        // Read as it comes, so a chatty ssh never blocks on a full pipe.
        let said = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let said = Arc::clone(&said);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    said.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&buffer[..n]);
                }
            })
        };
        Ok(Box::new(SshChannel {
            child,
            stdin: Some(stdin),
            stdout,
            said,
            collector: Some(collector),
            failure: Arc::clone(&self.failure),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// A running `ssh`: libgit2 writes to its input and reads its output.
struct SshChannel {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    said: Arc<Mutex<Vec<u8>>>,
    collector: Option<std::thread::JoinHandle<()>>,
    failure: Arc<Mutex<Option<Failure>>>,
}

impl SshChannel {
    /// The failure ssh ended with, once its output closed early or a write failed.
    fn ended(&mut self) -> std::io::Error {
        self.stdin = None;
        let status = self.child.wait();
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
        let said =
            String::from_utf8_lossy(&self.said.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned();
        let status = match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("could not be waited for ({e})"),
        };
        super::failed(&self.failure, classify(&said, &status))
    }
}

impl Read for SshChannel {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stdout.read(buf) {
            // The end of ssh's output: after the Git protocol's own end (then ssh exits
            // well), or instead of it (then ssh says why it stopped).
            Ok(0) => {
                self.stdin = None;
                match self.child.wait() {
                    Ok(status) if status.success() => Ok(0),
                    _ => Err(self.ended()),
                }
            }
            Ok(n) => Ok(n),
            Err(_) => Err(self.ended()),
        }
    }
}

impl Write for SshChannel {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let written = match &mut self.stdin {
            Some(stdin) => stdin.write_all(data).and_then(|()| stdin.flush()),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        match written {
            Ok(()) => Ok(data.len()),
            Err(_) => Err(self.ended()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SshChannel {
    fn drop(&mut self) {
        self.stdin = None;
        // libgit2 is done with the remote: an ssh still running has nothing left to do.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_git_reads_them() {
        let parsed = |url: &str| parse(url).unwrap();
        assert_eq!(
            parsed("ssh://git@github.com/team/gitops.git"),
            SshAddress {
                destination: "git@github.com".into(),
                port: None,
                path: "/team/gitops.git".into()
            }
        );
        assert_eq!(
            parsed("ssh://deploy@127.0.0.1:2222/srv/git/gitops.git"),
            SshAddress {
                destination: "deploy@127.0.0.1".into(),
                port: Some(2222),
                path: "/srv/git/gitops.git".into()
            }
        );
        assert_eq!(
            parsed("ssh://host/~alice/gitops.git").path,
            "~alice/gitops.git"
        );
        assert_eq!(
            parsed("ssh://git@[::1]:2200/r.git"),
            SshAddress {
                destination: "git@::1".into(),
                port: Some(2200),
                path: "/r.git".into()
            }
        );
        assert_eq!(
            parsed("git@github.com:team/gitops.git"),
            SshAddress {
                destination: "git@github.com".into(),
                port: None,
                path: "team/gitops.git".into()
            }
        );
        for bad in [
            "ssh://-oProxyCommand=evil/x",
            "ssh://git@-oProxyCommand=evil/x",
            "-oProxyCommand=evil:x",
            "ssh://host",
            "ssh://host/",
            "ssh://host:port/x",
            "no-colon-here",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_never_prompts_and_quotes_the_path() {
        let address = parse("ssh://git@host:2222/team/it's.git").unwrap();
        let settings = SshSettings {
            identity: Some("/keys/deploy".into()),
            known_hosts: Some("/keys/known_hosts".into()),
        };
        assert_eq!(
            arguments(&address, &settings, "receive-pack"),
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=30",
                "-p",
                "2222",
                "-i",
                "/keys/deploy",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=/keys/known_hosts",
                "git@host",
                r"git-receive-pack '/team/it'\''s.git'",
            ]
        );
    }

    #[test]
    fn ssh_messages_become_failures() {
        assert!(matches!(
            classify("Host key verification failed.\r\n", "exit status: 255"),
            Failure::HostKey(_)
        ));
        assert!(matches!(
            classify(
                "git@host: Permission denied (publickey).\n",
                "exit status: 255"
            ),
            Failure::KeyRefused(_)
        ));
        assert!(matches!(
            classify(
                "fatal: '/srv/x.git' does not appear to be a git repository\n",
                "exit status: 128"
            ),
            Failure::NotFound(_)
        ));
        assert!(matches!(
            classify("ssh: connect to host h port 22: Connection refused\n", "exit status: 255"),
            Failure::Unreachable(m) if m.contains("Connection refused")
        ));
        assert_eq!(
            classify("", "exit status: 255").to_string(),
            "ssh exit status: 255 without saying why"
        );
    }
}

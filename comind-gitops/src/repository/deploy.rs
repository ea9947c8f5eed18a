//! `comind app deploy`: one application's directory committed to the GitOps
//! repository and pushed, with libgit2 (no `git` binary): to the local Git server
//! (`git://`), a file repository, or an HTTPS remote with a token (Git's smart HTTP
//! protocol over Comind's own HTTPS client: see `smart_http`).
//!
//! The commit holds exactly the application's files: a work tree with changes
//! elsewhere is refused before anything is staged, so a deploy never carries someone's
//! unrelated edits into Git. A deploy with nothing new makes no commit (it still
//! pushes, so a push that failed before is completed).

use std::path::{Path, PathBuf};

use comind_core::config::RepoSettings;
use comind_core::{Error, Result, Secret};
use git2::{
    ErrorCode, IndexAddOption, PushOptions, RemoteCallbacks, Repository, Signature, Status,
    StatusOptions,
};

use super::transport::{BasicAuth, Failure, Session, SshSettings};

/// The private key an SSH remote is reached with.
#[derive(Clone)]
enum SshKey {
    /// A key file, given to ssh as it is.
    File(PathBuf),
    /// The key itself (from an environment variable): written for ssh to a 0600 file
    /// in a private temporary directory for the deploy's length, never to a command
    /// line.
    Inline(Secret),
}

/// Where a deploy pushes, and with which credential.
#[derive(Clone)]
pub struct Remote {
    url: String,
    auth: Option<BasicAuth>,
    ssh_key: Option<SshKey>,
    known_hosts: Option<PathBuf>,
    /// Where the token or key came from, for messages: "the token in $VAR".
    credential_from: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &without_userinfo(&self.url))
            .field(
                "token",
                &self.auth.as_ref().map(|_| comind_core::secret::REDACTED),
            )
            .field(
                "ssh_key",
                &self.ssh_key.as_ref().map(|key| match key {
                    SshKey::File(path) => path.display().to_string(),
                    SshKey::Inline(_) => comind_core::secret::REDACTED.to_string(),
                }),
            )
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl Remote {
    /// A remote reached without credentials of its own: the local Git server
    /// (`git://`), a `file://` repository or a path, an HTTP(S) server that lets anyone
    /// push, or an SSH remote with ssh's own keys (agent, `~/.ssh/config`).
    pub fn new(url: impl Into<String>) -> Remote {
        Remote {
            url: url.into(),
            auth: None,
            ssh_key: None,
            known_hosts: None,
            credential_from: "the credential".to_string(),
        }
    }

    /// The same remote, reached over SSH with the private key in the file `path`.
    #[must_use]
    pub fn with_ssh_key_file(mut self, path: impl Into<PathBuf>) -> Remote {
        let path = path.into();
        self.credential_from = format!("the SSH key {}", path.display());
        self.ssh_key = Some(SshKey::File(path));
        self
    }

    /// The same remote, reached over SSH with the private key `key` (OpenSSH or PEM
    /// text).
    #[must_use]
    pub fn with_ssh_key(mut self, key: Secret) -> Remote {
        self.credential_from = "the SSH key".to_string();
        self.ssh_key = Some(SshKey::Inline(key));
        self
    }

    /// The same remote, checking the SSH server's host key against the known hosts
    /// file `path` instead of ssh's own (`~/.ssh/known_hosts`).
    #[must_use]
    pub fn with_known_hosts(mut self, path: impl Into<PathBuf>) -> Remote {
        self.known_hosts = Some(path.into());
        self
    }

    /// The same remote, authenticating over HTTPS as `username` with `token` (HTTP
    /// Basic, as GitHub, GitLab, Gitea and Bitbucket take an access token).
    #[must_use]
    pub fn with_token(mut self, username: impl Into<String>, token: Secret) -> Remote {
        self.credential_from = "the token".to_string();
        self.auth = Some(BasicAuth {
            username: username.into(),
            token,
        });
        self
    }

    /// The remote `gitops.repo` names, at `url` (the local Git server's address when
    /// `url: local`), with the token `token_file` or `token_env` holds, or the SSH key
    /// `ssh_key_file` or `ssh_key_env` names, and the known hosts `ssh_known_hosts`
    /// names.
    ///
    /// # Errors
    /// `InvalidInput` when the credential's file cannot be read, its variable is
    /// unset, or it is empty.
    pub fn from_settings(repo: &RepoSettings, url: impl Into<String>) -> Result<Remote> {
        let mut remote = Remote::new(url);
        let found = crate::platform::gitops::credential(repo)?;
        if let Some(("password", token)) = found {
            remote = remote.with_token(repo.username.clone(), Secret::new(token));
            if let Some(name) = &repo.token_env {
                remote.credential_from = format!("the token in ${name} (`gitops.repo.token_env`)");
            } else if let Some(path) = &repo.token_file {
                remote.credential_from =
                    format!("the token in {} (`gitops.repo.token_file`)", path.display());
            }
        } else if let Some(path) = &repo.ssh_key_file {
            remote = remote.with_ssh_key_file(crate::access::expand_home(path));
            remote.credential_from = format!(
                "the SSH key {} (`gitops.repo.ssh_key_file`)",
                path.display()
            );
        } else if let (Some(name), Some((_, key))) = (&repo.ssh_key_env, found) {
            remote = remote.with_ssh_key(Secret::new(key));
            remote.credential_from = format!("the SSH key in ${name} (`gitops.repo.ssh_key_env`)");
        }
        if let Some(path) = &repo.ssh_known_hosts {
            remote = remote.with_known_hosts(crate::access::expand_home(path));
        }
        Ok(remote)
    }

    /// ssh's settings for this remote, with an inline key written to a private file
    /// that lives as long as the returned directory.
    fn ssh_settings(&self) -> Result<(SshSettings, Option<tempfile::TempDir>)> {
        let mut settings = SshSettings {
            identity: None,
            known_hosts: self.known_hosts.clone(),
        };
        let kept = match &self.ssh_key {
            None => None,
            Some(SshKey::File(path)) => {
                settings.identity = Some(path.clone());
                None
            }
            Some(SshKey::Inline(key)) => {
                // tempfile makes the directory 0700; the key file is made 0600.
                let dir = tempfile::Builder::new()
                    .prefix("comind-ssh-")
                    .tempdir()
                    .map_err(|e| {
                        Error::internal(format!("cannot make a directory for the SSH key: {e}"))
                            .with_hint("make the temporary directory (TMPDIR) writable")
                    })?;
                let path = dir.path().join("key");
                let mut text = key.expose().trim().to_string();
                // OpenSSH reads a key without its final newline as invalid.
                text.push('\n');
                comind_core::state::write_private_file(&path, text.as_bytes())?;
                settings.identity = Some(path);
                Some(dir)
            }
        };
        Ok((settings, kept))
    }
    /// The URL, without any user name in it.
    pub fn url(&self) -> String {
        without_userinfo(&self.url)
    }
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The commit made, or `None` when the application's files were committed already.
    pub commit: Option<String>,
    /// The commit that was pushed (the branch's head).
    pub head: String,
    /// The files the commit changed, relative to the work tree.
    pub files: Vec<PathBuf>,
    /// The branch it went to.
    pub branch: String,
    /// The repository it went to.
    pub url: String,
}

fn git_error(action: &str, resource: &str, e: &git2::Error) -> Error {
    Error::internal(format!("cannot {action}: {}", e.message())).with_resource(resource.to_string())
}

/// Whether every commit from `tip` (excluded) to `head` is a single-parent commit
/// that changes only paths `inside` accepts, with `tip` an ancestor of `head`.
fn only_inside_since(
    repository: &Repository,
    head: git2::Oid,
    tip: git2::Oid,
    inside: &dyn Fn(&str) -> bool,
) -> std::result::Result<bool, git2::Error> {
    if !repository.graph_descendant_of(head, tip)? {
        return Ok(false);
    }
    let mut walk = repository.revwalk()?;
    walk.push(head)?;
    walk.hide(tip)?;
    for id in walk {
        let commit = repository.find_commit(id?)?;
        if commit.parent_count() != 1 {
            return Ok(false);
        }
        let before = commit.parent(0)?.tree()?;
        let diff = repository.diff_tree_to_tree(Some(&before), Some(&commit.tree()?), None)?;
        let outside = diff.deltas().any(|d| {
            [d.old_file().path(), d.new_file().path()]
                .into_iter()
                .flatten()
                .any(|p| !inside(&p.to_string_lossy().replace('\\', "/")))
        });
        if outside {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `url` without a user or token before its host, for messages.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{scheme}://{host}/{path}")
            }
            None => format!(
                "{scheme}://{}",
                rest.rsplit_once('@').map_or(rest, |(_, h)| h)
            ),
        },
        None => url.to_string(),
    }
}

/// Where `refs/heads/<branch>` of `url` points (`None`: the server has no such branch).
/// Fetched into a ref of Comind's own, read, and removed: libgit2's listing of an
/// empty remote's heads hands back a null array (undefined behaviour in git2 0.20).
fn remote_tip(
    repository: &Repository,
    remote: &Remote,
    session: &Session,
    branch: &str,
    shown: &str,
) -> Result<Option<git2::Oid>> {
    const TIP: &str = "refs/comind/deploy/remote-tip";
    let url = remote.url.as_str();
    let mut anonymous = repository.remote_anonymous(url).map_err(|e| {
        Error::invalid_input(format!("`{shown}` is not a Git URL: {}", e.message()))
    })?;
    if let Ok(mut stale) = repository.find_reference(TIP) {
        let _ = stale.delete();
    }
    let mut options = git2::FetchOptions::new();
    options
        .update_fetchhead(false)
        .download_tags(git2::AutotagOption::None);
    anonymous
        .fetch(
            &[format!("+refs/heads/{branch}:{TIP}")],
            Some(&mut options),
            None,
        )
        .map_err(|e| network_error(session.take_failure(), remote, shown, "fetch from", &e))?;
    match repository.find_reference(TIP) {
        Ok(mut tip) => {
            let id = tip.target();
            let _ = tip.delete();
            Ok(id)
        }
        Err(_) => Ok(None),
    }
}

/// Whether `url` is an SSH remote: `ssh://…`, or scp-like `[user@]host:path`.
fn is_ssh(url: &str) -> bool {
    url.starts_with("ssh://")
        || (!url.contains("://") && !url.starts_with('/') && url.contains(':'))
}

/// Refuses, before anything is touched, a remote a deploy cannot push to: a scheme it
/// does not speak, an SSH address it cannot read, and a token over plain HTTP (it
/// would travel in clear).
fn check_remote(remote: &Remote, shown: &str) -> Result<()> {
    let url = remote.url.as_str();
    let refused = |why: String, hint: &str| {
        Err(Error::invalid_input(why)
            .with_resource("gitops.repo.url")
            .with_hint(hint.to_string()))
    };
    if url.starts_with("https://")
        || url.starts_with("git://")
        || url.starts_with("file://")
        || url.starts_with('/')
    {
        return Ok(());
    }
    if url.starts_with("http://") {
        if remote.auth.is_some() {
            return refused(
                format!(
                    "`{shown}` is plain HTTP: a deploy does not send the repository's token in clear"
                ),
                "use the server's `https://` URL",
            );
        }
        return Ok(());
    }
    if is_ssh(url) {
        return super::transport::ssh::parse(url)
            .map(|_| ())
            .or_else(|why| {
                refused(
                    why,
                    "write it as `ssh://[user@]host[:port]/path` or `[user@]host:path`",
                )
            });
    }
    refused(
        format!("`{shown}` is not a Git URL a deploy can push to"),
        "name an `https://`, `ssh://`, git://, file:// URL, an scp-like `user@host:path` or a path",
    )
}

/// The typed error for a fetch or push to `shown` that failed with `e`, using what the
/// HTTPS exchange reported, if it was one.
fn network_error(
    failure: Option<Failure>,
    remote: &Remote,
    shown: &str,
    doing: &str,
    e: &git2::Error,
) -> Error {
    let Some(failure) = failure else {
        return Error::unavailable(format!("cannot {doing} {shown}: {}", e.message()))
            .with_resource(shown.to_string())
            .with_hint("is the Git server up? `comind status` shows it");
    };
    let has_credential = remote.auth.is_some() || remote.ssh_key.is_some();
    let error = match (&failure, has_credential) {
        (Failure::Unauthorized, true) => Error::permission(format!(
            "the server refused {} ({failure})",
            remote.credential_from
        ))
        .with_hint(
            "give it an access token of the repository (and `gitops.repo.username` the \
             token's user, if the server wants one)",
        ),
        (Failure::Unauthorized, false) => Error::permission(format!(
            "the server asks for a token ({failure}), and `gitops.repo` names none"
        ))
        .with_hint("name the variable or the file that holds one in `gitops.repo.token_env` or `token_file`"),
        (Failure::Forbidden, _) => Error::permission(format!(
            "the server does not let {} {doing} the repository ({failure})",
            if has_credential { remote.credential_from.as_str() } else { "an anonymous client" }
        ))
        .with_hint("a deploy needs a token with write access to the repository"),
        (Failure::KeyRefused(_), true) => Error::permission(format!(
            "the SSH server refused {}: {failure}",
            remote.credential_from
        ))
        .with_hint("add the key's public half to the repository (a deploy key with write access), or name another"),
        (Failure::KeyRefused(_), false) => Error::permission(format!(
            "the SSH server refused every key ssh offered (`gitops.repo` names none): {failure}"
        ))
        .with_hint("name the deploy key in `gitops.repo.ssh_key_file` or `ssh_key_env`, or load it into your ssh agent"),
        (Failure::HostKey(_), _) => {
            let keyscan = super::transport::ssh::parse(&remote.url).map_or_else(
                |_| "ssh-keyscan [-p PORT] HOST".to_string(),
                |address| {
                    let host = address
                        .destination
                        .rsplit_once('@')
                        .map_or(address.destination.as_str(), |(_, h)| h)
                        .to_string();
                    match address.port {
                        Some(port) => format!("ssh-keyscan -p {port} {host}"),
                        None => format!("ssh-keyscan {host}"),
                    }
                },
            );
            Error::permission(format!(
                "the SSH server's host key is not one ssh knows for it: {failure}"
            ))
            .with_hint(format!(
                "check the server's host key fingerprint, then add its line (`{keyscan}`) to \
                 ~/.ssh/known_hosts or to the file `gitops.repo.ssh_known_hosts` names"
            ))
        }
        (Failure::NoSsh(_), _) => Error::not_found(failure.to_string())
            .with_hint("install OpenSSH's client (`apt-get install openssh-client`), or use the repository's `https://` URL with a token"),
        (Failure::NotFound(_), _) => Error::not_found(format!("the server has no repository there: {failure}"))
            .with_hint("check `gitops.repo.url`; a private repository also answers so to a credential without access to it"),
        (Failure::NotGit(_), _) => Error::unavailable(format!("cannot {doing} the repository: {failure}"))
            .with_hint("check `gitops.repo.url`: it names the repository's clone URL"),
        (Failure::Unreachable(_), _) if is_ssh(&remote.url) => {
            Error::unavailable(format!("cannot reach the server: {failure}"))
                .with_hint("check the host and the port, and that ssh reaches them from here")
        }
        (Failure::Unreachable(_), _) => Error::unavailable(format!("cannot reach the server: {failure}"))
            .with_hint(
                "check the network; a server whose certificate is signed by your own CA needs \
                 that CA among the system's roots (or in SSL_CERT_FILE)",
            ),
    };
    error.with_resource(shown.to_string())
}

/// Commits the directory `app` (inside the work tree of the repository at `repo`) and
/// pushes the current branch to `refs/heads/<branch>` of `remote`.
///
/// Blocking (libgit2 and its network exchanges): from async code, call it through
/// `spawn_blocking`. An HTTPS remote is spoken to with this crate's own client, which
/// trusts the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` replace them); it is
/// registered with libgit2 for `https://` and `http://` on the first deploy, unless the
/// process registered its own.
///
/// # Errors
/// `InvalidInput`, touching nothing, when `repo` is not a Git work tree, `app` is not in
/// it or does not exist, the work tree has changes outside `app` (named), `HEAD` is
/// not on a branch, or `remote` is an SSH URL (or plain HTTP with a token); `Permission`
/// when the server refuses the token (nothing is committed when it refuses it on the
/// first exchange); `NotFound` when it has no repository there; `Conflict` when the
/// push is not a fast-forward; `Unavailable` when the server cannot be reached (an
/// untrusted certificate included) or is not a Git server.
pub fn deploy(
    repo: &Path,
    app: &Path,
    remote: &Remote,
    branch: &str,
    message: &str,
) -> Result<Deployed> {
    let resource = repo.display().to_string();
    let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    let is_hash = branch.len() >= 7 && branch.bytes().all(|b| b.is_ascii_hexdigit());
    if branch == "HEAD"
        || is_hash
        || !git2::Reference::is_valid_name(&format!("refs/heads/{branch}"))
    {
        return Err(Error::invalid_input(format!(
            "`{branch}` (gitops.repo.revision) is not a branch: a deploy pushes a branch"
        ))
        .with_resource("gitops.repo.revision")
        .with_hint("set `gitops.repo.revision` to the branch Argo CD follows, such as `main`"));
    }
    let shown = remote.url();
    check_remote(remote, &shown)?;
    let repository = Repository::discover(repo).map_err(|_| {
        Error::invalid_input(format!("{} is not in a Git work tree", repo.display()))
            .with_resource(resource.clone())
            .with_hint(
                "`git init` it (or clone your GitOps repository) and commit its layout first",
            )
    })?;
    let Some(workdir) = repository.workdir().map(Path::to_path_buf) else {
        return Err(
            Error::invalid_input(format!("{} is a bare repository", repo.display()))
                .with_resource(resource),
        );
    };
    let workdir = workdir.canonicalize().unwrap_or(workdir);
    let app_abs = app.canonicalize().map_err(|_| {
        Error::not_found(format!("{} does not exist", app.display()))
            .with_hint("`comind app new NAME --team TEAM` writes it")
    })?;
    let prefix = app_abs
        .strip_prefix(&workdir)
        .map_err(|_| {
            Error::invalid_input(format!(
                "{} is not inside the work tree {}",
                app.display(),
                workdir.display()
            ))
        })?
        .to_path_buf();
    let prefix_text = prefix.to_string_lossy().replace('\\', "/");
    let inside = |path: &str| path == prefix_text || path.starts_with(&format!("{prefix_text}/"));

    // Anything changed outside the application stops the deploy before it stages.
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repository
        .statuses(Some(&mut options))
        .map_err(|e| git_error("read the work tree's status", &resource, &e))?;
    let unrelated: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT && !s.status().contains(Status::IGNORED))
        .filter_map(|s| s.path().map(str::to_string))
        .filter(|p| !inside(p))
        .collect();
    if !unrelated.is_empty() {
        let shown: Vec<&str> = unrelated.iter().take(10).map(String::as_str).collect();
        return Err(Error::invalid_input(format!(
            "the work tree has changes outside {prefix_text}, which a deploy would not commit: {}{}",
            shown.join(", "),
            if unrelated.len() > shown.len() { format!(" and {} more", unrelated.len() - shown.len()) } else { String::new() }
        ))
        .with_resource(resource)
        .with_hint("commit or stash them first, then deploy again"));
    }
    let head_ref = repository
        .find_reference("HEAD")
        .map_err(|e| git_error("read HEAD", &resource, &e))?;
    let Some(local_branch) = head_ref.symbolic_target().map(str::to_string) else {
        return Err(Error::invalid_input("HEAD is not on a branch (detached)")
            .with_resource(resource)
            .with_hint("check out the branch to deploy from"));
    };
    let parent = match repository.head() {
        Ok(head) => Some(
            head.peel_to_commit()
                .map_err(|e| git_error("read HEAD's commit", &resource, &e))?,
        ),
        Err(e) if e.code() == ErrorCode::UnbornBranch => None,
        Err(e) => return Err(git_error("read HEAD", &resource, &e)),
    };

    // The server's branch must be where this work tree's is, or behind it only by
    // commits of this application (an earlier deploy whose push failed): then the
    // push carries the application's commits and nothing else.
    let local_head = parent.as_ref().map(git2::Commit::id);
    // The exchanges over HTTP(S) of this thread take the token from here.
    let (ssh, _key_dir) = remote.ssh_settings()?;
    let session = Session::open(remote.auth.clone(), ssh);
    let remote_tip = remote_tip(&repository, remote, &session, branch, &shown)?;
    let only_app_ahead = match (local_head, remote_tip) {
        (Some(head), Some(tip)) if head != tip => {
            only_inside_since(&repository, head, tip, &inside)
                .map_err(|e| git_error("read the commits the server lacks", &resource, &e))?
        }
        _ => false,
    };
    if remote_tip != local_head && !only_app_ahead {
        let at = |id: Option<git2::Oid>| {
            id.map_or("nothing".to_string(), |id| {
                super::short(&id.to_string()).to_string()
            })
        };
        return Err(Error::invalid_input(format!(
            "branch {branch} of {shown} is at {}, this work tree's HEAD at {}: a deploy would push \
             more than the application",
            at(remote_tip),
            at(local_head)
        ))
        .with_resource(resource)
        .with_hint("bring them together first (`comind gitops push` pushes your committed work, `git pull` takes the server's), then deploy"));
    }
    let mut index = repository
        .index()
        .map_err(|e| git_error("open the index", &resource, &e))?;
    // Every path, filtered by `inside`: a pathspec would read glob characters in the
    // repository's path (`gitops.repo.path`) as patterns.
    let mut only_inside = |path: &Path, _: &[u8]| -> i32 {
        i32::from(!inside(&path.to_string_lossy().replace('\\', "/")))
    };
    index
        .add_all(["*"], IndexAddOption::DEFAULT, Some(&mut only_inside))
        .and_then(|()| index.update_all(["*"], Some(&mut only_inside)))
        .and_then(|()| index.write())
        .map_err(|e| git_error(&format!("stage {prefix_text}"), &resource, &e))?;
    let tree_id = index
        .write_tree()
        .map_err(|e| git_error("write the tree", &resource, &e))?;
    let tree = repository
        .find_tree(tree_id)
        .map_err(|e| git_error("read the tree", &resource, &e))?;
    let parent_tree = parent
        .as_ref()
        .map(git2::Commit::tree)
        .transpose()
        .map_err(|e| git_error("read HEAD's tree", &resource, &e))?;
    let diff = repository
        .diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), None)
        .map_err(|e| git_error("compare with HEAD", &resource, &e))?;
    let files: Vec<PathBuf> = diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or_else(|| d.old_file().path())
                .map(Path::to_path_buf)
        })
        .collect();
    let commit = if files.is_empty() {
        None
    } else {
        let signature = repository
            .signature()
            .or_else(|_| Signature::now("Comind", "comind@localhost"))
            .map_err(|e| git_error("make the commit's signature", &resource, &e))?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repository
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .map_err(|e| git_error("commit", &resource, &e))?;
        Some(id.to_string())
    };
    let head = repository
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|_| {
            Error::invalid_input(format!("{} has no commit to push", repo.display()))
                .with_resource(resource.clone())
        })?
        .id()
        .to_string();

    let mut git_remote = repository.remote_anonymous(&remote.url).map_err(|e| {
        Error::invalid_input(format!("`{shown}` is not a Git URL: {}", e.message()))
    })?;
    let mut rejected: Option<String> = None;
    {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.push_update_reference(|_, status| {
            if let Some(status) = status {
                rejected = Some(status.to_string());
            }
            Ok(())
        });
        let mut push = PushOptions::new();
        push.remote_callbacks(callbacks);
        git_remote
            .push(&[format!("{local_branch}:refs/heads/{branch}")], Some(&mut push))
            .map_err(|e| match e.code() {
                ErrorCode::NotFastForward => Error::conflict(format!(
                    "branch {branch} of {shown} has commits this work tree does not: the push is not a fast-forward"
                ))
                .with_hint("pull them (or rebase onto them), then deploy again"),
                _ => network_error(session.take_failure(), remote, &shown, "push to", &e),
            })?;
    }
    if let Some(status) = rejected {
        return Err(Error::conflict(format!(
            "{shown} refused the push of branch {branch}: {status}"
        )));
    }
    Ok(Deployed {
        commit,
        head,
        files,
        branch: branch.to_string(),
        url: shown,
    })
}

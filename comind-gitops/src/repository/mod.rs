//! The GitOps repository on the user's machine: the layout Argo CD's root
//! application and the ApplicationSet read ([`init`]), and pushing a work tree's
//! committed history to the local Git server ([`push`]) with the `git` binary, and
//! committing and pushing one application's directory with libgit2 ([`deploy`]), to
//! the local Git server, a file repository, an HTTPS remote with a token or an SSH
//! remote.
//!
//! The layout, under `gitops.repo.path` (`<path>`):
//!
//! - `<path>/envs/<env>/`: the app-of-apps directory of environment `<env>`. The
//!   root Application syncs every YAML file here; each is an Argo CD `Application`
//!   (or another manifest) of that environment.
//! - `<path>/apps/<team>/<app>/`: one directory per application, its Helm chart in
//!   `chart/`; the ApplicationSet turns each into an Application (see
//!   [`platform::gitops`](crate::platform::gitops)).
//!
//! Git keeps no empty directory, and a directory source of Argo CD reads only YAML and
//! JSON files, so each directory holds a `README.md` saying what goes there.

mod deploy;
mod transport;

pub use deploy::{Deployed, Remote, deploy};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use comind_core::{Error, Result};

/// What [`init`] did, file by file (paths relative to the directory it was given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Initialized {
    /// Files it wrote: they were missing.
    pub written: Vec<PathBuf>,
    /// Files that already held what it writes.
    pub unchanged: Vec<PathBuf>,
    /// Files that exist with other content (the user's edits): left as they are.
    pub kept: Vec<PathBuf>,
    /// Files that had other content and were overwritten (only when forced).
    pub replaced: Vec<PathBuf>,
}

/// The files of the layout for environment `environment` under `repo_path`
/// (`gitops.repo.path`), relative to the repository's root, with their content.
pub fn layout(repo_path: &str, environment: &str) -> Vec<(PathBuf, String)> {
    let base = if repo_path == "." || repo_path.is_empty() {
        PathBuf::new()
    } else {
        PathBuf::from(repo_path)
    };
    let shown = |p: &str| {
        if repo_path == "." || repo_path.is_empty() {
            p.to_string()
        } else {
            format!("{}/{p}", repo_path.trim_end_matches('/'))
        }
    };
    let envs = shown(&format!("envs/{environment}"));
    let apps = shown("apps");
    let mut top = String::new();
    let _ = write!(
        top,
        "# GitOps repository\n\n\
         Argo CD deploys what this directory holds: it is the source of truth of the\n\
         platform's environments and applications. Commit here, then push (`comind gitops\n\
         push` fills the local Git server; push to your remote otherwise): Argo CD syncs\n\
         what the branch Comind points it at (`gitops.repo.revision`) holds.\n\n\
         | directory | what goes there | who reads it |\n\
         | --- | --- | --- |\n\
         | `{envs}/` | Argo CD `Application` manifests (YAML, subdirectories included) of environment `{environment}`; one directory per environment (`envs/<env>/`) | the root application `root` (app-of-apps) of that environment |\n\
         | `{apps}/<team>/<app>/` | one directory per application, its Helm chart in `chart/` (`Chart.yaml`, `values.yaml`, optionally `values-<env>.yaml`, `templates/`) | the ApplicationSet `apps`, which makes an Application `<team>-<app>` of each directory, deployed to namespace `<team>` |\n\n\
         Files other than YAML and JSON (such as these READMEs) are ignored by Argo CD.\n"
    );
    let env_readme = format!(
        "# Environment `{environment}`\n\n\
         The root Argo CD application of environment `{environment}` (`root`, the\n\
         app-of-apps) syncs every YAML file of this directory and its subdirectories,\n\
         with pruning: put here the `Application` manifests (or other manifests) this\n\
         environment runs; each Application then deploys its own source. Argo CD\n\
         ignores this README.\n"
    );
    let apps_readme = format!(
        "# Applications\n\n\
         One directory per application, `{apps}/<team>/<app>/`, with its Helm chart in\n\
         `chart/` (`Chart.yaml`, `values.yaml`, and `values-<env>.yaml` for what differs\n\
         per environment). The ApplicationSet `apps` Comind installs turns every such\n\
         directory into an Argo CD Application `<team>-<app>`, deployed to namespace\n\
         `<team>` (its project allows only application and team namespaces). Files\n\
         directly in this directory, such as this README, are not applications.\n"
    );
    vec![
        (base.join("README.md"), top),
        (
            base.join("envs").join(environment).join("README.md"),
            env_readme,
        ),
        (base.join("apps").join("README.md"), apps_readme),
    ]
}

/// Writes the repository layout (see [`layout`]) into `dir`, made if it is missing.
/// Idempotent: a file that holds what it writes is left alone, and a file the user
/// changed is never overwritten (it is listed in [`Initialized::kept`]).
///
/// # Errors
/// `InvalidInput` when `dir`, or a path where the layout needs a directory, is a file;
/// `Permission` when a directory or file cannot be made or read.
pub fn init(dir: &Path, repo_path: &str, environment: &str) -> Result<Initialized> {
    write_files(dir, layout(repo_path, environment), Overwrite::Never, false)
}

/// Whether [`write_files`] may overwrite a file whose content differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Never: the user's edits are kept (and reported).
    Never,
    /// Always (`--force`).
    Always,
}

/// Writes `files` (paths relative to `dir`) into `dir`: a missing file is written, one
/// with the same content is left alone, one with other content is kept unless
/// `overwrite` says otherwise. With `dry_run`, nothing is written; the result says
/// what would be.
///
/// # Errors
/// `InvalidInput` when `dir`, or a directory a file needs, is a file (or a file's
/// path is a directory); `Internal` when a file cannot be read or written.
pub fn write_files(
    dir: &Path,
    files: Vec<(PathBuf, String)>,
    overwrite: Overwrite,
    dry_run: bool,
) -> Result<Initialized> {
    if dir.exists() && !dir.is_dir() {
        return Err(not_a_directory(dir, dir));
    }
    let mut done = Initialized::default();
    for (relative, content) in files {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            if dry_run {
                check_dirs(dir, parent)?;
            } else {
                make_dirs(dir, parent)?;
            }
        }
        if path.is_dir() {
            return Err(Error::invalid_input(format!(
                "{} is a directory; a file is needed there",
                path.display()
            ))
            .with_resource(path.display().to_string())
            .with_hint("rename or remove that directory, then run the command again"));
        }
        let write = |path: &Path| {
            if dry_run {
                Ok(())
            } else {
                std::fs::write(path, &content).map_err(|e| cannot("write", path, e))
            }
        };
        match std::fs::read(&path) {
            Ok(existing) if existing == content.as_bytes() => done.unchanged.push(relative),
            Ok(_) if overwrite == Overwrite::Always => {
                write(&path)?;
                done.replaced.push(relative);
            }
            Ok(_) => done.kept.push(relative),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write(&path)?;
                done.written.push(relative);
            }
            Err(e) => return Err(cannot("read", &path, e)),
        }
    }
    Ok(done)
}

/// Refuses a file where `path` or one of its parents should be a directory.
fn check_dirs(root: &Path, path: &Path) -> Result<()> {
    for ancestor in path.ancestors() {
        if ancestor.exists() && !ancestor.is_dir() {
            return Err(not_a_directory(root, ancestor));
        }
    }
    Ok(())
}

/// Makes `path` and its parents, refusing a file on the way.
fn make_dirs(root: &Path, path: &Path) -> Result<()> {
    for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        if ancestor.exists() && !ancestor.is_dir() {
            return Err(not_a_directory(root, ancestor));
        }
    }
    std::fs::create_dir_all(path).map_err(|e| cannot("make the directory", path, e))
}

fn not_a_directory(root: &Path, file: &Path) -> Error {
    let message = if root == file {
        format!(
            "{} is a file, not a directory: the GitOps repository is a directory",
            file.display()
        )
    } else {
        format!(
            "{} is a file; the GitOps layout needs a directory there",
            file.display()
        )
    };
    Error::invalid_input(message)
        .with_resource(file.display().to_string())
        .with_hint("name a directory (it is made if it does not exist), or move the file away")
}

fn cannot(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::permission(format!("cannot {what} {}: {e}", path.display()))
        .with_resource(path.display().to_string())
        .with_hint("check the directory's permissions, or name another directory")
}

/// How the pushed branch changed on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The branch did not exist: it was made.
    Created,
    /// The branch moved forward to the commit.
    FastForward,
    /// The branch was replaced by a history that does not contain it (`--force`).
    Forced,
    /// The branch already was at the commit.
    UpToDate,
}

impl PushOutcome {
    /// A few words for the user.
    pub fn describe(self) -> &'static str {
        match self {
            PushOutcome::Created => "created",
            PushOutcome::FastForward => "fast-forwarded",
            PushOutcome::Forced => "force-updated",
            PushOutcome::UpToDate => "already up to date",
        }
    }
}

/// What [`push`] pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The work tree's top directory.
    pub work_tree: PathBuf,
    /// The commit (`HEAD`), in full.
    pub commit: String,
    /// Its subject line.
    pub subject: String,
    /// The branch it went to.
    pub branch: String,
    /// The repository it went to.
    pub url: String,
    /// What happened to the branch.
    pub outcome: PushOutcome,
    /// The work tree's uncommitted changes (`git status --porcelain` lines), which
    /// were not pushed.
    pub uncommitted: Vec<String>,
}

/// Pushes the `HEAD` commit of the Git work tree at `dir` to `refs/heads/<branch>` of
/// `url`, with the `git` binary on `PATH`. A push that is not a fast-forward is
/// refused unless `force`. Only committed work goes: uncommitted changes are listed in
/// [`Pushed::uncommitted`].
///
/// # Errors
/// `NotFound` when `git` is not on `PATH`; `InvalidInput` when `dir` is not a Git work
/// tree, has no commit yet, or `branch` is not a branch name; `Conflict` for a
/// non-fast-forward without `force`; `Unavailable` when the server cannot be reached
/// or refuses the push (with git's message).
pub fn push(dir: &Path, url: &str, branch: &str, force: bool) -> Result<Pushed> {
    let resource = dir.display().to_string();
    if !dir.is_dir() {
        return Err(Error::invalid_input(format!(
            "{} is not a directory: name the Git work tree of your GitOps repository",
            dir.display()
        ))
        .with_resource(resource)
        .with_hint("`comind gitops init DIR` writes a GitOps repository's layout"));
    }
    if !git(dir, &["check-ref-format", "--branch", branch])?
        .status
        .success()
    {
        return Err(Error::invalid_input(format!(
            "`{branch}` (gitops.repo.revision) is not a branch name; the local Git server \
             is filled by pushing a branch"
        ))
        .with_resource("gitops.repo.revision")
        .with_hint("set `gitops.repo.revision` to a branch name such as `main`"));
    }
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if !top.status.success() {
        return Err(Error::invalid_input(format!(
            "{} is not a Git work tree: only committed work can be pushed",
            dir.display()
        ))
        .with_resource(resource)
        .with_hint(format!(
            "make it one and commit (`git -C {0} init && git -C {0} add -A && git -C {0} \
             commit -m 'GitOps repository'`); `comind gitops init {0}` writes the layout first",
            dir.display()
        )));
    }
    let work_tree = PathBuf::from(text(&top.stdout));
    let head = git(dir, &["log", "-1", "--format=%H%n%s", "HEAD"])?;
    if !head.status.success() {
        return Err(Error::invalid_input(format!(
            "the Git work tree {} has no commit yet: only committed work can be pushed",
            work_tree.display()
        ))
        .with_resource(work_tree.display().to_string())
        .with_hint(format!(
            "commit first: `git -C {0} add -A && git -C {0} commit -m 'GitOps repository'`",
            work_tree.display()
        )));
    }
    let head = text(&head.stdout);
    let (commit, subject) = head.split_once('\n').unwrap_or((head.as_str(), ""));
    let (commit, subject) = (commit.to_string(), subject.to_string());

    let status = git(dir, &["status", "--porcelain"])?;
    let uncommitted: Vec<String> = text(&status.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();

    let refspec = format!("HEAD:refs/heads/{branch}");
    let mut args = vec!["push", "--porcelain"];
    if force {
        args.push("--force");
    }
    args.extend([url, refspec.as_str()]);
    let pushed = git(dir, &args)?;
    let stdout = text(&pushed.stdout);
    let stderr = text(&pushed.stderr);
    // `--porcelain`: one line per ref, `<flag>\t<from>:<to>\t<summary>`.
    let target = format!("refs/heads/{branch}");
    let line = stdout.lines().find_map(|l| {
        let mut fields = l.split('\t');
        let flag = fields.next()?;
        let refs = fields.next()?;
        let summary = fields.next().unwrap_or("");
        refs.ends_with(&target)
            .then(|| (flag.to_string(), summary.to_string()))
    });
    let repository = format!("branch {branch} of {url}");
    match (pushed.status.success(), line) {
        (true, Some((flag, _))) => {
            let outcome = match flag.as_str() {
                "*" => PushOutcome::Created,
                "+" => PushOutcome::Forced,
                "=" => PushOutcome::UpToDate,
                _ => PushOutcome::FastForward,
            };
            Ok(Pushed {
                work_tree,
                commit,
                subject,
                branch: branch.to_string(),
                url: url.to_string(),
                outcome,
                uncommitted,
            })
        }
        (_, Some((flag, summary)))
            if flag == "!"
                && (summary.contains("non-fast-forward") || summary.contains("fetch first")) =>
        {
            Err(Error::conflict(format!(
                "the {repository} holds commits that HEAD of {} ({}) does not: the push \
                 would drop them (not a fast-forward), so it was refused",
                work_tree.display(),
                short(&commit)
            ))
            .with_resource(repository)
            .with_hint(format!(
                "merge them first (`git -C {} pull {url} {branch}`), or pass --force to \
                 replace the branch with your history",
                work_tree.display()
            )))
        }
        _ => {
            let said = if stderr.is_empty() { stdout } else { stderr };
            Err(Error::unavailable(format!(
                "git push to the {repository} failed: {}",
                said.trim()
            ))
            .with_resource(repository)
            .with_hint(
                "check that the Git server is up (`comind status`; `comind up` starts it), \
                 then push again",
            ))
        }
    }
}

/// The first characters of a commit id, as Git shows it.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Runs `git -C dir ARGS` with prompts off and messages in English (they are parsed).
fn git(dir: &Path, args: &[&str]) -> Result<Output> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("`git` is not on PATH; pushing the GitOps repository runs it")
                    .with_resource("git")
                    .with_hint("install Git (`apt-get install git`, `brew install git`)")
            } else {
                Error::internal(format!("cannot run git: {e}")).with_resource("git")
            }
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_follows_the_repository_path() {
        let files = layout(".", "dev");
        let paths: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(paths, ["README.md", "envs/dev/README.md", "apps/README.md"]);
        let nested = layout("gitops/platform", "staging");
        assert_eq!(
            nested[1].0,
            Path::new("gitops/platform/envs/staging/README.md")
        );
        assert!(nested[0].1.contains("`gitops/platform/envs/staging/`"));
        assert!(nested[0].1.contains("`gitops/platform/apps/<team>/<app>/`"));
    }

    #[test]
    fn init_is_idempotent_and_keeps_edits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let first = init(&root, ".", "dev").unwrap();
        assert_eq!(first.written.len(), 3);
        let second = init(&root, ".", "dev").unwrap();
        assert!(second.written.is_empty());
        assert_eq!(second.unchanged.len(), 3);
        std::fs::write(root.join("apps/README.md"), "mine\n").unwrap();
        let third = init(&root, ".", "dev").unwrap();
        assert_eq!(third.kept, [PathBuf::from("apps/README.md")]);
        assert_eq!(
            std::fs::read_to_string(root.join("apps/README.md")).unwrap(),
            "mine\n"
        );
    }

    #[test]
    fn a_file_in_the_way_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = init(&file, ".", "dev").unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
        assert!(err.message().contains("is a file"), "{err}");
        std::fs::write(dir.path().join("envs"), "x").unwrap();
        let err = init(dir.path(), ".", "dev").unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
    }

    #[test]
    fn commits_are_shortened_as_git_shows_them() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}

//! `comind gitops init`: the GitOps repository's layout, written idempotently. Needs
//! nothing but the binary (`gitops push` needs the Git server: see `local`).

use serde_json::Value;

use crate::support::{Scratch, git};

#[test]
fn gitops_init_writes_the_layout_once_and_keeps_edits() {
    let scratch = Scratch::new();
    scratch.config("environment: staging\ngitops:\n  repo:\n    path: deploy\n");
    let dir = scratch.path().join("repo");
    let first = scratch.run(&["gitops", "init", dir.to_str().unwrap()]);
    assert_eq!(first.code, 0, "{}", first.all());
    for file in [
        "deploy/README.md",
        "deploy/envs/staging/README.md",
        "deploy/apps/README.md",
    ] {
        assert!(dir.join(file).is_file(), "{file}: {}", first.all());
        assert!(
            first
                .stdout
                .contains(&format!("wrote {}", dir.join(file).display())),
            "{}",
            first.all()
        );
    }
    let top = std::fs::read_to_string(dir.join("deploy/README.md")).unwrap();
    assert!(top.contains("`deploy/envs/staging/`"), "{top}");
    assert!(top.contains("`deploy/apps/<team>/<app>/`"), "{top}");

    // Again: nothing written.
    let again = scratch.run(&["-o", "json", "gitops", "init", dir.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}", again.all());
    let line: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(line["written"].as_array().unwrap().len(), 0, "{line}");
    assert_eq!(line["unchanged"].as_array().unwrap().len(), 3, "{line}");

    // An edited file is kept and reported.
    let edited = dir.join("deploy/apps/README.md");
    std::fs::write(&edited, "# our apps\n").unwrap();
    let kept = scratch.run(&["gitops", "init", dir.to_str().unwrap()]);
    assert_eq!(kept.code, 0, "{}", kept.all());
    assert!(
        kept.stdout.contains(&format!("kept {}", edited.display())),
        "{}",
        kept.all()
    );
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "# our apps\n");
}

#[test]
fn gitops_init_refuses_a_file_for_a_directory() {
    let scratch = Scratch::new();
    let file = scratch.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = scratch.run(&["gitops", "init", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("is a file"), "{}", run.all());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

/// Every file under `dir`, but `.git`'s.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// `app deploy` against a local bare repository: the commit holds exactly the app's
/// files and reaches the branch; a second deploy makes no commit; unrelated changes
/// in the work tree, and a remote it cannot push to, are refused before anything is
/// staged or committed. (The wait for Argo CD is the e2e's: Argo CD is off here.)
#[test]
fn app_deploy_commits_exactly_the_app_and_pushes_it_once() {
    let scratch = Scratch::new();
    let bare = scratch.path().join("gitops.git");
    std::fs::create_dir(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let config = format!(
        "environment: dev\ngitops:\n  argocd:\n    enabled: false\n  repo:\n    url: file://{}\n    revision: main\n",
        bare.display()
    );
    scratch.config(&config);
    let repo = scratch.path().join("repo");
    let init = scratch.run(&["gitops", "init", repo.to_str().unwrap()]);
    assert_eq!(init.code, 0, "{}", init.all());
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "layout"]);
    let repo_arg = repo.to_str().unwrap();
    // A local commit the server does not have: a deploy would push it too, so it is
    // refused, naming both heads.
    let early = scratch.run(&[
        "app", "new", "early", "--team", "backend", "--repo", repo_arg,
    ]);
    assert_eq!(early.code, 0, "{}", early.all());
    let refused = scratch.run(&["app", "deploy", "early", "--repo", repo_arg]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains("more than the application"),
        "{}",
        refused.all()
    );
    assert!(
        git(&repo, &["diff", "--cached", "--name-only"])
            .trim()
            .is_empty(),
        "nothing staged"
    );
    assert_eq!(
        git(&repo, &["rev-list", "--count", "HEAD"]).trim(),
        "1",
        "nothing committed"
    );
    let early_chart = walk(&repo)
        .into_iter()
        .find(|p| p.ends_with("apps/backend/early/chart/Chart.yaml"))
        .unwrap();
    std::fs::remove_dir_all(early_chart.parent().unwrap().parent().unwrap()).unwrap();
    git(&repo, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let new = scratch.run(&["app", "new", "api", "--team", "backend", "--repo", repo_arg]);
    assert_eq!(new.code, 0, "{}", new.all());

    let deploy = scratch.run(&["-o", "json", "app", "deploy", "api", "--repo", repo_arg]);
    assert_eq!(deploy.code, 0, "{}", deploy.all());
    let line: Value = serde_json::from_str(deploy.stdout.trim()).unwrap();
    let commit = line["commit"].as_str().expect("a commit").to_string();
    assert_eq!(
        git(&bare, &["rev-parse", "main"]).trim(),
        commit,
        "the branch has the commit"
    );
    let files = git(&bare, &["show", "--name-only", "--format=", "main"]);
    assert!(!files.trim().is_empty());
    for file in files.lines() {
        assert!(
            file.contains("apps/backend/api/"),
            "{file} is not the app's: {files}"
        );
    }
    assert_eq!(
        files.lines().count(),
        line["files"].as_array().unwrap().len()
    );
    assert!(
        git(&repo, &["status", "--porcelain"]).trim().is_empty(),
        "the work tree is clean"
    );

    // Again: nothing to commit, nothing new on the branch.
    let again = scratch.run(&["-o", "json", "app", "deploy", "api", "--repo", repo_arg]);
    assert_eq!(again.code, 0, "{}", again.all());
    let line: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert!(line["commit"].is_null(), "{line}");
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);

    // An unrelated change: refused, nothing staged or committed.
    let values = repo.join(format!(
        "{}/values-dev.yaml",
        files
            .lines()
            .next()
            .unwrap()
            .rsplit_once("/chart/")
            .map(|(d, _)| format!("{d}/chart"))
            .unwrap()
    ));
    std::fs::write(&values, "replicaCount: 1\n").unwrap();
    let readme = repo.join("NOTES.md");
    std::fs::write(&readme, "mine\n").unwrap();
    let refused = scratch.run(&["app", "deploy", "api", "--repo", repo_arg]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains("NOTES.md"), "{}", refused.all());
    assert!(
        git(&repo, &["diff", "--cached", "--name-only"])
            .trim()
            .is_empty(),
        "nothing staged"
    );
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]).trim(),
        commit,
        "nothing committed"
    );

    // A deploy whose push failed left a commit of the app's files only: the next
    // deploy pushes it (nothing new to commit).
    std::fs::remove_file(&readme).unwrap();
    git(
        &repo,
        &["commit", "-q", "-am", "the app's values, not pushed"],
    );
    let unpushed = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let retried = scratch.run(&["-o", "json", "app", "deploy", "api", "--repo", repo_arg]);
    assert_eq!(retried.code, 0, "{}", retried.all());
    let line: Value = serde_json::from_str(retried.stdout.trim()).unwrap();
    assert!(line["commit"].is_null(), "{line}");
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), unpushed);
    let commit = unpushed;

    // A remote a deploy cannot read: refused before anything is touched.
    scratch.config(&config.replace(
        &format!("file://{}", bare.display()),
        "ssh://-oProxyCommand=x/platform/gitops.git",
    ));
    let ssh = scratch.run(&["app", "deploy", "api", "--repo", repo_arg]);
    assert_eq!(ssh.code, 2, "{}", ssh.all());
    assert!(ssh.stderr.contains("no usable host"), "{}", ssh.all());
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]).trim(),
        commit,
        "nothing committed"
    );
}

/// A work tree of the GitOps layout, committed and already on `bare`'s `main`, with
/// the application `backend/api` written (not committed): what a deploy starts from.
fn work_tree_with_an_app(scratch: &Scratch, bare: &std::path::Path) -> std::path::PathBuf {
    let repo = scratch.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    let init = scratch.run(&["gitops", "init", repo_arg]);
    assert_eq!(init.code, 0, "{}", init.all());
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "layout"]);
    git(&repo, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let new = scratch.run(&["app", "new", "api", "--team", "backend", "--repo", repo_arg]);
    assert_eq!(new.code, 0, "{}", new.all());
    repo
}

/// `app deploy` to an HTTPS remote: Git's own `git http-backend` behind TLS, signed by
/// a CA of the test's, asking for a token. With the token (from `gitops.repo.token_env`)
/// and the CA trusted (`SSL_CERT_FILE`), the commit reaches the branch and a second
/// deploy pushes nothing new. A wrong token, no token, an untrusted certificate and
/// plain HTTP with a token each fail with their own error, before anything is
/// committed, and no message carries the token.
#[test]
fn app_deploy_pushes_over_https_with_the_token() {
    use comind_test_support::git_https::GitHttpsServer;
    const TOKEN: &str = "s3cret-t0ken-of-the-test";
    let scratch = Scratch::new();
    let root = scratch.path().join("served");
    let bare = root.join("gitops.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let server = GitHttpsServer::start(&root, "deployer", TOKEN);
    let config = format!(
        "environment: dev\ngitops:\n  argocd:\n    enabled: false\n  repo:\n    url: {}\n    \
         revision: main\n    username: deployer\n    token_env: COMIND_TEST_GIT_TOKEN\n",
        server.url("gitops.git")
    );
    scratch.config(&config);
    let repo = work_tree_with_an_app(&scratch, &bare);
    let repo_arg = repo.to_str().unwrap();
    let layout = git(&bare, &["rev-parse", "main"]).trim().to_string();
    let ca = server.ca_file().to_str().unwrap().to_string();
    let deploy_with = |vars: &[(&str, &str)]| {
        scratch.run_with_env(
            &["-o", "json", "app", "deploy", "api", "--repo", repo_arg],
            vars,
        )
    };
    let untouched = |run: &crate::support::Run| {
        assert!(
            !run.all().contains(TOKEN),
            "the token leaked: {}",
            run.all()
        );
        assert_eq!(
            git(&bare, &["rev-parse", "main"]).trim(),
            layout,
            "nothing pushed"
        );
        assert_eq!(
            git(&repo, &["rev-list", "--count", "HEAD"]).trim(),
            "1",
            "nothing committed"
        );
    };

    // A wrong token: refused by the server, reported as such.
    let wrong = deploy_with(&[("COMIND_TEST_GIT_TOKEN", "not-it"), ("SSL_CERT_FILE", &ca)]);
    assert_eq!(wrong.code, 1, "{}", wrong.all());
    assert!(
        wrong
            .stderr
            .contains("refused the token in $COMIND_TEST_GIT_TOKEN"),
        "{}",
        wrong.all()
    );
    untouched(&wrong);
    // The CA not trusted: the certificate is the problem, and it says so.
    let untrusted = deploy_with(&[("COMIND_TEST_GIT_TOKEN", TOKEN)]);
    assert_eq!(untrusted.code, 1, "{}", untrusted.all());
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.all()
    );
    untouched(&untrusted);
    // Plain HTTP with a token: refused before any exchange.
    scratch.config(&config.replace("https://", "http://"));
    let plain = deploy_with(&[("COMIND_TEST_GIT_TOKEN", TOKEN), ("SSL_CERT_FILE", &ca)]);
    assert_eq!(plain.code, 2, "{}", plain.all());
    assert!(plain.stderr.contains("in clear"), "{}", plain.all());
    untouched(&plain);
    // No token configured: the server asks for one.
    scratch.config(&config.replace("    token_env: COMIND_TEST_GIT_TOKEN\n", ""));
    let anonymous = deploy_with(&[("SSL_CERT_FILE", &ca)]);
    assert_eq!(anonymous.code, 1, "{}", anonymous.all());
    assert!(
        anonymous.stderr.contains("asks for a token"),
        "{}",
        anonymous.all()
    );
    untouched(&anonymous);
    scratch.config(&config);
    let refusals = server.served();
    assert!(!refusals.is_empty() && refusals.iter().all(|s| s.status == 401));

    // The token and the CA: pushed.
    let deployed = deploy_with(&[("COMIND_TEST_GIT_TOKEN", TOKEN), ("SSL_CERT_FILE", &ca)]);
    assert_eq!(deployed.code, 0, "{}", deployed.all());
    assert!(!deployed.all().contains(TOKEN));
    let line: Value = serde_json::from_str(deployed.stdout.trim()).unwrap();
    let commit = line["commit"].as_str().expect("a commit").to_string();
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);
    let files = git(&bare, &["show", "--name-only", "--format=", "main"]);
    assert!(
        files.lines().all(|f| f.starts_with("apps/backend/api/")),
        "{files}"
    );
    let pushes: Vec<_> = server
        .served()
        .into_iter()
        .filter(|s| s.authorized)
        .map(|s| (s.method, s.target, s.status))
        .collect();
    assert!(
        pushes.contains(&(
            "POST".to_string(),
            "/gitops.git/git-receive-pack".to_string(),
            200
        )),
        "{pushes:?}"
    );

    // Again: nothing new to commit or push.
    let again = deploy_with(&[("COMIND_TEST_GIT_TOKEN", TOKEN), ("SSL_CERT_FILE", &ca)]);
    assert_eq!(again.code, 0, "{}", again.all());
    let line: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert!(line["commit"].is_null(), "{line}");
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);
}

/// `app deploy` to an SSH remote: OpenSSH's own `sshd`, with a host key and a client
/// key made for the test. With the key (from `gitops.repo.ssh_key_env`, then
/// `ssh_key_file`) and the host key known (`gitops.repo.ssh_known_hosts`), the commit
/// reaches the branch, and a second deploy pushes nothing new. A host key ssh does not
/// know and a key the server refuses each fail with their own error, before anything
/// is committed; the key never shows in a message.
#[test]
fn app_deploy_pushes_over_ssh_with_the_key() {
    use comind_test_support::git_ssh::GitSshServer;
    let scratch = Scratch::new();
    let bare = scratch.path().join("gitops.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let server = GitSshServer::start();
    let empty_known_hosts = scratch.path().join("no_known_hosts");
    std::fs::write(&empty_known_hosts, "").unwrap();
    let config = |credential: &str, known_hosts: &std::path::Path| {
        format!(
            "environment: dev\ngitops:\n  argocd:\n    enabled: false\n  repo:\n    url: {}\n    \
             revision: main\n    {credential}\n    ssh_known_hosts: {}\n",
            server.url(&bare),
            known_hosts.display()
        )
    };
    let by_env = "ssh_key_env: COMIND_TEST_SSH_KEY";
    scratch.config(&config(by_env, &server.known_hosts()));
    let repo = work_tree_with_an_app(&scratch, &bare);
    let repo_arg = repo.to_str().unwrap();
    let layout = git(&bare, &["rev-parse", "main"]).trim().to_string();
    let key = std::fs::read_to_string(server.client_key()).unwrap();
    let stranger = std::fs::read_to_string(server.stranger_key()).unwrap();
    let secret_line = |k: &str| k.lines().nth(2).unwrap().to_string();
    let deploy_with = |key: &str| {
        scratch.run_with_env(
            &["-o", "json", "app", "deploy", "api", "--repo", repo_arg],
            &[("COMIND_TEST_SSH_KEY", key)],
        )
    };
    let untouched = |run: &crate::support::Run| {
        for k in [&key, &stranger] {
            assert!(
                !run.all().contains(&secret_line(k)),
                "the key leaked: {}",
                run.all()
            );
        }
        assert_eq!(
            git(&bare, &["rev-parse", "main"]).trim(),
            layout,
            "nothing pushed"
        );
        assert_eq!(
            git(&repo, &["rev-list", "--count", "HEAD"]).trim(),
            "1",
            "nothing committed"
        );
    };

    // A key the server does not accept: refused, and said so.
    let refused = deploy_with(&stranger);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("refused the SSH key in $COMIND_TEST_SSH_KEY"),
        "{}",
        refused.all()
    );
    untouched(&refused);
    // The host key unknown: ssh will not go on, and the error says how to fix it.
    scratch.config(&config(by_env, &empty_known_hosts));
    let unknown = deploy_with(&key);
    assert_eq!(unknown.code, 1, "{}", unknown.all());
    assert!(unknown.stderr.contains("host key"), "{}", unknown.all());
    assert!(unknown.stderr.contains("ssh-keyscan"), "{}", unknown.all());
    untouched(&unknown);

    // The key and the host key known: pushed.
    scratch.config(&config(by_env, &server.known_hosts()));
    let deployed = deploy_with(&key);
    assert_eq!(deployed.code, 0, "{}", deployed.all());
    let line: Value = serde_json::from_str(deployed.stdout.trim()).unwrap();
    let commit = line["commit"].as_str().expect("a commit").to_string();
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);
    let files = git(&bare, &["show", "--name-only", "--format=", "main"]);
    assert!(
        files.lines().all(|f| f.starts_with("apps/backend/api/")),
        "{files}"
    );

    // Again, with the key from a file: nothing new to commit or push.
    let by_file = format!("ssh_key_file: {}", server.client_key().display());
    scratch.config(&config(&by_file, &server.known_hosts()));
    let again = scratch.run(&["-o", "json", "app", "deploy", "api", "--repo", repo_arg]);
    assert_eq!(again.code, 0, "{}", again.all());
    let line: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert!(line["commit"].is_null(), "{line}");
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), commit);
}

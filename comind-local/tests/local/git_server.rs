//! The local Git server on the real Docker engine, with the Debian `git daemon`
//! stand-in image: the core phase suite, then a push from this machine through the
//! port on 127.0.0.1 and a clone over the environment's network from another
//! container, as Argo CD's repo server would; drift repaired; the repository kept by
//! `down` and removed by `down --purge`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::StopContainerOptionsBuilder;
use comind_core::cluster::{GIT_SERVER_CLUSTER_HOST, GIT_SERVER_CLUSTER_PORT, GITOPS_REPO_URL};
use comind_core::config::Port;
use comind_core::event::RunOutcome;
use comind_core::testing::conformance::{PhaseFixture, phase_suite};
use comind_core::{
    Action, Change, DownOptions, Environment, Operation, Outputs, Phase, PhaseContext, PhaseId,
    Result,
};
use comind_local::{GitServerPhase, LocalProvider, NetworkPhase};
use comind_test_support::docker::{self, GIT_SERVER_IMAGE};
use comind_test_support::{ports, require_peer};

use crate::support::{self, TestEnv, status_of};

struct GitServerFixture {
    env: Arc<Environment>,
    inputs: HashMap<PhaseId, Outputs>,
    docker: Docker,
    name: String,
}

#[async_trait]
impl PhaseFixture for GitServerFixture {
    fn phase(&self) -> Arc<dyn Phase> {
        Arc::new(GitServerPhase::new(
            LocalProvider::new().docker(self.env.config()),
        ))
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        self.inputs.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        let owned = support::owned(&self.docker, &self.name, Some("git-server")).await;
        let mut names = owned.containers;
        names.extend(owned.volumes);
        Ok(names)
    }
}

/// An environment whose Git server runs (Argo CD on, the local repository).
fn git_env(docker: &Docker, prefix: &str) -> TestEnv {
    let mut t = TestEnv::new(docker, prefix);
    t.config.gitops.argocd.enabled = true;
    t
}

#[tokio::test]
async fn the_git_server_passes_the_phase_suite() {
    let docker = require_peer!(docker::ready(&[GIT_SERVER_IMAGE]).await);
    let t = git_env(&docker, "gitsuite");
    let env = t.env();
    let ctx = PhaseContext::standalone(
        PhaseId::new("network"),
        Operation::Apply,
        env.clone(),
        HashMap::new(),
    );
    let net = NetworkPhase::new(LocalProvider::new().docker(env.config()))
        .apply(&ctx)
        .await
        .unwrap()
        .outputs;
    phase_suite(&GitServerFixture {
        env,
        inputs: HashMap::from([(PhaseId::new("network"), net)]),
        docker: docker.clone(),
        name: t.name.clone(),
    })
    .await;
}

/// `git ARGS` in `dir`, with an identity of its own; its stdout, or a panic with
/// everything it said.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Comind Test",
            "-c",
            "user.email=test@comind.invalid",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A work tree with one commit holding `file`; its commit id.
fn work_tree(dir: &Path, file: &str) -> String {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join(file), "kind: List\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// What `refs/heads/main` of `url` is, asked from this machine.
fn remote_main(url: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let line = git(scratch.path(), &["ls-remote", url, "refs/heads/main"]);
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A clone of `git://<host>:<port>/gitops.git` by another container on `network`;
/// the commit its checkout is at.
fn clone_over_the_network(network: &str, host: &str, port: &str) -> String {
    let url = format!("git://{host}:{port}/gitops.git");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            network,
            "--entrypoint",
            "/bin/sh",
            GIT_SERVER_IMAGE,
            "-c",
            &format!("git clone --quiet {url} /tmp/x && git -C /tmp/x rev-parse HEAD"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clone of {url} over {network}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn container_changes(changes: &[Change]) -> Vec<&Change> {
    changes.iter().filter(|c| c.kind == "container").collect()
}

#[tokio::test]
async fn a_push_from_the_host_is_cloned_over_the_network_and_survives_down() {
    let docker = require_peer!(docker::ready(&[GIT_SERVER_IMAGE]).await);
    let mut t = git_env(&docker, "git");
    let only = support::only(&["git-server"]);
    let (first, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        first.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        first.summary
    );
    assert!(!changes.is_empty());
    let outputs = first.merged_outputs();
    let port = t.config.gitops.repo.local.port.get();
    let url = outputs.require(GITOPS_REPO_URL).unwrap().to_string();
    assert_eq!(url, format!("git://127.0.0.1:{port}/gitops.git"));
    assert_eq!(outputs.require(GIT_SERVER_CLUSTER_PORT).unwrap(), "9418");
    let host = outputs
        .require(GIT_SERVER_CLUSTER_HOST)
        .unwrap()
        .to_string();
    let container = format!("comind-{}-git-server", t.name);
    let network = format!("comind-{}", t.name);
    assert_eq!(
        comind_local::git_server::probe(port, "test").await.unwrap(),
        None,
        "the probe sees an empty repository"
    );
    assert_eq!(
        outputs
            .require(comind_core::cluster::GITOPS_REPO_HEAD)
            .unwrap(),
        ""
    );

    // An empty repository whose HEAD is the configured revision.
    assert_eq!(remote_main(&url), "", "nothing pushed yet");
    let tree = tempfile::tempdir().unwrap();
    let commit = work_tree(tree.path(), "app.yaml");
    git(
        tree.path(),
        &["push", "--quiet", &url, "HEAD:refs/heads/main"],
    );
    assert_eq!(remote_main(&url), commit);
    assert_eq!(
        comind_local::git_server::probe(port, "test").await.unwrap(),
        Some(commit.clone()),
        "the probe sees the pushed commit at HEAD"
    );
    assert_eq!(clone_over_the_network(&network, &host, "9418"), commit);

    // A second up changes nothing.
    let (again, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(again.summary.outcome, RunOutcome::Succeeded);
    assert!(changes.is_empty(), "{changes:?}");

    // Stopped: the plan says start it, up does, the repository is still there.
    docker
        .stop_container(
            &container,
            Some(StopContainerOptionsBuilder::new().t(5).build()),
        )
        .await
        .unwrap();
    let plan = t.bootstrap().plan(&only).await.unwrap();
    let planned: Vec<&Change> = plan.plans.values().flat_map(|p| &p.changes).collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].action, Action::Update);
    let (report, _) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(report.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(status_of(&docker, &container).await, "running");
    assert_eq!(remote_main(&url), commit);

    // Another port: the container is replaced on its volume.
    let new_port = ports::free_port();
    t.config.gitops.repo.local.port = Port::new(new_port).unwrap();
    let plan = t.bootstrap().plan(&only).await.unwrap();
    let planned: Vec<&Change> = plan.plans.values().flat_map(|p| &p.changes).collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].action, Action::Replace, "{}", planned[0]);
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(report.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(container_changes(&changes).len(), 1, "{changes:?}");
    let url = report
        .merged_outputs()
        .require(GITOPS_REPO_URL)
        .unwrap()
        .to_string();
    assert_eq!(url, format!("git://127.0.0.1:{new_port}/gitops.git"));
    assert_eq!(remote_main(&url), commit, "the repository is kept");

    // down keeps the volume, so the pushed commit survives down and up.
    let down = t
        .bootstrap()
        .down(&only, &DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);
    let left = t.owned(Some("git-server")).await;
    assert!(left.containers.is_empty(), "{left:?}");
    assert_eq!(
        left.volumes,
        [format!("comind-{}-git-server-data", t.name)],
        "{left:?}"
    );
    let (back, _) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(back.summary.outcome, RunOutcome::Succeeded);
    assert_eq!(remote_main(&url), commit, "the push survived down and up");
    let host = back
        .merged_outputs()
        .require(GIT_SERVER_CLUSTER_HOST)
        .unwrap()
        .to_string();
    assert_eq!(clone_over_the_network(&network, &host, "9418"), commit);

    // purge removes the repository.
    let purge = t
        .bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(purge.succeeded(), "{:?}", purge.summary);
    assert!(t.owned(None).await.is_empty(), "{:?}", t.owned(None).await);
}

#[tokio::test]
async fn the_probe_fails_where_no_git_server_answers() {
    let port = ports::free_port();
    let err = comind_local::git_server::probe(port, "container x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), comind_core::ErrorKind::Unavailable);
    assert!(err.is_transient(), "{err}");
    assert!(err.message().contains("does not answer"), "{err}");
}

//! The k3d cluster phase with the whole local profile (network, registry, services,
//! cluster), through `Bootstrap` as the CLI runs it.
//!
//! k3s cannot run here, so `k3d` is the test double of `scripts/test-env/k3d`
//! (`comind_test_support::k3d`): it validates the configuration file against k3d
//! v5.9's schema and k3d's own checks, makes the Docker objects k3d makes (node
//! containers with their labels, on the environment's network, ports, the
//! `registries.yaml` in every node) and runs a real API server whose nodes it reports
//! Ready. What it cannot prove (k3s, Pods, Traefik serving) is listed in
//! `scripts/test-env/k3d-double.md`.

use std::os::unix::fs::PermissionsExt;

use comind_core::cluster::{KUBE_CONTEXT, KUBECONFIG};
use comind_core::config::Port;
use comind_core::event::RunOutcome;
use comind_core::{Action, Change, DownOptions, ErrorKind, UpOptions};
use comind_test_support::docker::{self, K3S_NODE_IMAGE, REGISTRY_IMAGE, SERVICE_IMAGES};
use comind_test_support::k3d::K3dDouble;
use comind_test_support::{ports, require_peer};
use k8s_openapi::api::core::v1::Node;

use crate::support::{self, TestEnv};

/// The test's environment with its cluster made by `k3d`, on free ports.
fn with_cluster(docker: &bollard::Docker, prefix: &str, k3d: &K3dDouble) -> TestEnv {
    let mut t = TestEnv::new(docker, prefix);
    let cluster = &mut t.config.local.cluster;
    cluster.enabled = true;
    cluster.k3d = k3d.binary().to_path_buf();
    let port = || Port::new(ports::free_port()).unwrap();
    cluster.api_port = port();
    cluster.http_port = port();
    cluster.https_port = port();
    t
}

/// A new `up` of `t`'s environment, which must succeed.
async fn up_succeeds(t: &TestEnv) -> comind_core::engine::RunReport {
    let up = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        up.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        up.summary
    );
    up
}

fn images() -> Vec<&'static str> {
    let mut all = SERVICE_IMAGES.to_vec();
    all.extend([REGISTRY_IMAGE, K3S_NODE_IMAGE]);
    all
}

fn cluster_changes(report: &comind_core::engine::RunReport) -> Vec<Change> {
    report
        .plans
        .get(&comind_core::PhaseId::new("cluster"))
        .map(|p| p.changes.clone())
        .unwrap_or_default()
}

/// A file of container `name`, read with `docker exec`.
fn read_file(name: &str, path: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", name, "cat", path])
        .output()
        .unwrap();
    assert!(out.status.success(), "cat {path} in {name}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn node(t: &TestEnv, role: &str) -> String {
    format!("k3d-comind-{}-{role}", t.name)
}

async fn ready_nodes(kubeconfig: &str, context: &str) -> usize {
    let kubeconfig = comind_core::Secret::new(std::fs::read_to_string(kubeconfig).unwrap());
    let client = comind_local::cluster::ready::client(&kubeconfig, context, "test")
        .await
        .unwrap();
    kube::Api::<Node>::all(client)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

#[tokio::test]
async fn the_whole_profile_comes_up_converges_repairs_its_cluster_and_goes_down() {
    let docker = require_peer!(docker::ready(&images()).await);
    let k3d = require_peer!(K3dDouble::new());
    let t = with_cluster(&docker, "k3d", &k3d);

    // Cold: network, registry, services and the cluster.
    let up = up_succeeds(&t).await;
    let outputs = up.merged_outputs();
    let kubeconfig = outputs.require(KUBECONFIG).unwrap().to_string();
    let context = outputs.require(KUBE_CONTEXT).unwrap().to_string();
    assert_eq!(context, format!("k3d-comind-{}", t.name));
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the kubeconfig holds credentials");
    let config_file = comind_local::ClusterPhase::config_path(&t.env());
    let mode = std::fs::metadata(&config_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "k3d's file holds the registry's credentials");
    assert_eq!(ready_nodes(&kubeconfig, &context).await, 3);

    // What k3d made: labelled nodes on the environment's network, pulling from the
    // registry by its name there, and no edit of ~/.kube/config asked for.
    let server = docker
        .inspect_container(&node(&t, "server-0"), None)
        .await
        .unwrap();
    let labels = server.config.unwrap().labels.unwrap();
    assert_eq!(labels["comind.dev/environment"], t.name);
    assert_eq!(labels["comind.dev/component"], "cluster");
    assert!(labels.contains_key("comind.dev/spec-hash"));
    let networks = server.network_settings.unwrap().networks.unwrap();
    assert!(
        networks.contains_key(&format!("comind-{}", t.name)),
        "{networks:?}"
    );
    let registries = read_file(&node(&t, "agent-1"), "/etc/rancher/k3s/registries.yaml");
    assert!(
        registries.contains(&format!("comind-{}-registry:5000", t.name)),
        "{registries}"
    );
    let record = std::fs::read_to_string(
        k3d.state()
            .join("clusters")
            .join(format!("comind-{}", t.name))
            .join("cluster.json"),
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        record["kubeconfig"]["updateDefaultKubeconfig"], false,
        "{record}"
    );
    assert_eq!(
        record["kubeconfig"]["switchCurrentContext"], false,
        "{record}"
    );

    // Again: nothing to do, and no k3d call at all (the nodes are read from Docker,
    // the readiness asked with the kept kubeconfig).
    let before = k3d.calls();
    let again = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(again.summary.changes, 0, "{:?}", again.summary);
    assert_eq!(k3d.calls(), before, "a no-op up runs no k3d command");

    // Stopped behind Comind's back: started.
    let (stopped, out) = k3d.run(&["cluster", "stop", &format!("comind-{}", t.name)]);
    assert!(stopped, "{out}");
    let plan = t.bootstrap().plan(&Default::default()).await.unwrap();
    let changes = cluster_changes(&plan);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].action, Action::Update);
    assert!(changes[0].reason.as_deref().unwrap().contains("stopped"));
    up_succeeds(&t).await;
    assert_eq!(ready_nodes(&kubeconfig, &context).await, 3);

    // Half-made (what an interrupted create leaves): deleted and made again.
    docker
        .remove_container(
            &node(&t, "agent-1"),
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let plan = t.bootstrap().plan(&Default::default()).await.unwrap();
    let changes = cluster_changes(&plan);
    assert_eq!(changes[0].action, Action::Replace, "{changes:?}");
    assert!(
        changes[0].reason.as_deref().unwrap().contains("half-made"),
        "{changes:?}"
    );
    up_succeeds(&t).await;
    assert_eq!(ready_nodes(&kubeconfig, &context).await, 3);

    // A changed agent count is a replace, planned only.
    let mut more = with_cluster(&docker, "k3d", &k3d);
    more.config = t.config.clone();
    more.config.local.cluster.agents = 3;
    let bootstrap = comind_core::Bootstrap::new(comind_core::Environment::with_state_root(
        more.config.clone(),
        t.state.path(),
    ))
    .with_provider(comind_local::LocalProvider::new());
    let plan = bootstrap.plan(&Default::default()).await.unwrap();
    let changes = cluster_changes(&plan);
    assert_eq!(changes[0].action, Action::Replace, "{changes:?}");
    assert!(
        changes[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("agents 2 -> 3"),
        "{changes:?}"
    );
    drop(more);

    // Deleted behind Comind's back: made again.
    let (deleted, out) = k3d.run(&["cluster", "delete", &format!("comind-{}", t.name)]);
    assert!(deleted, "{out}");
    let plan = t.bootstrap().plan(&Default::default()).await.unwrap();
    assert_eq!(cluster_changes(&plan)[0].action, Action::Create);
    up_succeeds(&t).await;

    // Down: the cluster goes, the registry's and the services' data stay; purge
    // takes those too.
    let down = t
        .bootstrap()
        .down(&Default::default(), &DownOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        down.summary
    );
    let (listed, out) = k3d.run(&["cluster", "list", "-o", "json"]);
    assert!(listed, "{out}");
    assert!(!out.contains(&format!("comind-{}", t.name)), "{out}");
    assert!(!std::path::Path::new(&kubeconfig).exists());
    let left = t.owned(None).await;
    assert!(
        left.volumes
            .contains(&format!("comind-{}-registry-data", t.name)),
        "{left:?}"
    );
    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(t.owned(None).await.is_empty());
}

#[tokio::test]
async fn taken_ports_and_a_foreign_cluster_stop_the_run_before_anything_changes() {
    let docker = require_peer!(docker::ready(&images()).await);
    let k3d = require_peer!(K3dDouble::new());
    let t = with_cluster(&docker, "k3dpre", &k3d);

    // Another program holds the ingress port: refused, nothing made.
    let holder =
        std::net::TcpListener::bind(("127.0.0.1", t.config.local.cluster.http_port.get())).unwrap();
    let up = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(up.summary.outcome, RunOutcome::Rejected, "{:?}", up.summary);
    let error = support::phase_error(&up, "cluster");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
    assert!(
        error.to_string().contains("local.cluster.http_port"),
        "{error}"
    );
    assert!(t.owned(None).await.is_empty(), "nothing was made");
    assert!(k3d.mutating_calls().is_empty());
    drop(holder);

    // A cluster of the name that Comind did not make: never touched.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("foreign.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: k3d.io/v1alpha5\nkind: Simple\nmetadata:\n  name: comind-{}\n\
             servers: 1\nagents: 0\nkubeAPI:\n  hostIP: 127.0.0.1\n  hostPort: \"{}\"\n\
             options:\n  k3d:\n    disableLoadbalancer: true\n  kubeconfig:\n    \
             updateDefaultKubeconfig: false\n",
            t.name,
            ports::free_port()
        ),
    )
    .unwrap();
    let (made, out) = k3d.run(&["cluster", "create", "--config", &file.display().to_string()]);
    assert!(made, "{out}");
    let up = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_ne!(up.summary.outcome, RunOutcome::Succeeded);
    let error = support::phase_error(&up, "cluster");
    assert_eq!(error.kind, ErrorKind::Conflict, "{error}");
    assert!(
        error.to_string().contains("not created by Comind"),
        "{error}"
    );
    let creates = k3d
        .mutating_calls()
        .iter()
        .filter(|c| c.get(1).map(String::as_str) == Some("create"))
        .count();
    assert_eq!(creates, 1, "only the test's own create");
    let down = t
        .bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        down.summary
    );
    let (listed, out) = k3d.run(&["cluster", "list", "-o", "json"]);
    assert!(
        listed && out.contains(&format!("comind-{}", t.name)),
        "kept: {out}"
    );
    let (removed, out) = k3d.run(&["cluster", "delete", &format!("comind-{}", t.name)]);
    assert!(removed, "{out}");
}

//! How long the whole platform layer takes on a real API server: the baseline, the
//! services' bindings, Argo CD, the GitOps wiring and the add-ons, cold and again.
//!
//! ```sh
//! cargo run --release -p comind-gitops --example platform_bench
//! ```
//!
//! It starts the Kubernetes test peer (`comind_test_support::kube`), and runs `up` of
//! an environment with every in-cluster phase on it, through `Bootstrap` as the CLI
//! does, with fake platform services (`comind_core::testing`) and Argo CD v3.5.1 from
//! the test peers' copy of its release. Nothing runs Pods there: `Kubelet` reports
//! Argo CD's Pods running (the real controllers then make its workloads available),
//! and the bench writes each Application's status `Synced`/`Healthy` as soon as it
//! appears, as Argo CD's controller would; so the times are Comind's and the API
//! server's, never Argo CD's syncing.
//!
//! It prints one JSON line: `cold_ms` (the first `up`, the platform's namespaces
//! absent), `noop_ms` and `noop_changes` (the same `up` again; the target is under 1 s
//! with no change), and each phase's duration in both runs. It removes what it made.

use std::time::{Duration, Instant};

use comind_core::config::{Config, EnvironmentName};
use comind_core::engine::{RunOptions, RunReport};
use comind_core::testing::{FakeProvider, FakeService, World};
use comind_core::{Bootstrap, DownOptions, Environment, ServiceKind, UpOptions};
use comind_gitops::GitopsProvider;
use comind_gitops::applications::Health;
use comind_test_support::argo_cd;
use comind_test_support::kube::KubePeer;
use comind_test_support::kubelet::Kubelet;

fn bootstrap(config: &Config, state: &std::path::Path, world: &World) -> Bootstrap {
    let mut services = FakeProvider::new("services");
    for kind in ServiceKind::ALL {
        services = services.with_service(FakeService::new(kind, world));
    }
    Bootstrap::new(Environment::with_state_root(config.clone(), state))
        .with_provider(services)
        .with_provider(GitopsProvider::new())
}

/// Argo CD's part: every Application that is not yet synced and healthy is reported
/// so, until the task is dropped.
async fn play_argo_cd(admin: kube::Client) {
    let apps = argo_cd::applications(&admin);
    let status = argo_cd::synced_and_healthy();
    loop {
        // Until platform/argocd made the CRD, the kind is not served.
        if let Ok(list) = apps.list(&Default::default()).await {
            for app in list.into_iter().filter(|a| !Health::of(a).converged()) {
                argo_cd::report(&admin, &app.metadata.name.unwrap_or_default(), &status).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phases(report: &RunReport) -> serde_json::Value {
    report
        .summary
        .phases
        .iter()
        .map(|p| (p.id.to_string(), serde_json::Value::from(p.duration_ms)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::main]
async fn main() {
    let peer = match KubePeer::shared() {
        Ok(peer) => peer,
        Err(missing) => {
            eprintln!("the Kubernetes test peer is missing: {missing}");
            std::process::exit(2);
        }
    };
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
    let admin = comind_gitops::access::connect(&peer.kubeconfig(), None)
        .await
        .unwrap_or_else(|e| panic!("the test peer does not answer: {e}"))
        .client;
    let mut config = Config::default();
    config.environment =
        EnvironmentName::new("bench").unwrap_or_else(|e| panic!("a valid name: {e}"));
    config.gitops.kubeconfig = Some(peer.kubeconfig());
    config.gitops.argocd.manifest = Some(
        comind_test_support::argo_cd::manifest()
            .display()
            .to_string(),
    );
    config.gitops.argocd.sha256 =
        Some(comind_gitops::platform::argocd::release::PINNED_SHA256.to_string());
    config.gitops.repo.url = "https://git.example.com/platform/gitops.git".to_string();
    let world = World::new();
    let _kubelet = Kubelet::start(admin.clone(), "argocd");
    let argo = tokio::spawn(play_argo_cd(admin.clone()));
    let run = RunOptions::default();

    let started = Instant::now();
    let cold = bootstrap(&config, state.path(), &world)
        .up(&run, &UpOptions::default())
        .await
        .unwrap_or_else(|e| panic!("up: {e}"));
    let cold_ms = started.elapsed().as_millis();
    assert!(cold.succeeded(), "{:?}", cold.summary);

    let started = Instant::now();
    let noop = bootstrap(&config, state.path(), &world)
        .up(&run, &UpOptions::default())
        .await
        .unwrap_or_else(|e| panic!("up again: {e}"));
    let noop_ms = started.elapsed().as_millis();
    assert!(noop.succeeded(), "{:?}", noop.summary);
    argo.abort();

    println!(
        "{}",
        serde_json::json!({
            "cold_ms": cold_ms,
            "noop_ms": noop_ms,
            "noop_changes": noop.summary.changes,
            "cold_phases_ms": phases(&cold),
            "noop_phases_ms": phases(&noop),
        })
    );
    let down = bootstrap(&config, state.path(), &world)
        .down(&run, &DownOptions::default())
        .await
        .unwrap_or_else(|e| panic!("down: {e}"));
    assert!(down.succeeded(), "{:?}", down.summary);
}

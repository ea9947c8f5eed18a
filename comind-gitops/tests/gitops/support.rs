//! What the tests share: the control plane, clients of it, environments pointed at it.

use std::collections::HashMap;
use std::sync::Arc;

use comind_core::config::{Config, EnvironmentName};
use comind_core::{Environment, Operation, PhaseContext, PhaseId};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::names;

/// An environment named `<prefix>-<random>` whose in-cluster phases use the test
/// control plane, with its state in `state`.
pub fn env(
    peer: &KubePeer,
    prefix: &str,
    state: &std::path::Path,
    edit: impl FnOnce(&mut Config),
) -> Arc<Environment> {
    let mut config = Config::default();
    config.environment = EnvironmentName::new(names::unique(prefix)).unwrap();
    config.gitops.kubeconfig = Some(peer.kubeconfig());
    // Argo CD only where a test asks for it (`with_argocd`): its names are
    // cluster-wide, and its workloads need the kubelet played.
    config.gitops.argocd.enabled = false;
    edit(&mut config);
    Arc::new(Environment::with_state_root(config, state))
}

/// A context for running the apply engine outside the engine.
pub fn ctx(env: &Arc<Environment>, operation: Operation) -> PhaseContext {
    PhaseContext::standalone(PhaseId::new("test"), operation, env.clone(), HashMap::new())
}

/// A client of the control plane as `user`.
pub async fn client(peer: &KubePeer, user: User) -> kube::Client {
    let path = match user {
        User::Admin => peer.kubeconfig(),
        other => peer.kubeconfig_for(other),
    };
    comind_gitops::access::connect(&path, None)
        .await
        .unwrap()
        .client
}

/// The released Argo CD manifest of the test peers, with its checksum: what a test
/// that installs Argo CD points `gitops.argocd.manifest` at.
pub fn with_argocd(config: &mut Config) {
    config.gitops.argocd.enabled = true;
    config.gitops.argocd.manifest = Some(
        comind_test_support::argo_cd::manifest()
            .display()
            .to_string(),
    );
    config.gitops.argocd.sha256 =
        Some(comind_gitops::platform::argocd::release::PINNED_SHA256.into());
}

/// Held by every test that lays the platform's cluster-wide names (the namespaces
/// `argocd`, `platform`, `monitoring`, `user-apps`, the ClusterRoles, Argo CD's CRDs):
/// one environment at a time owns them on the one control plane.
pub async fn cluster_wide(peer: &'static KubePeer) -> std::fs::File {
    tokio::task::spawn_blocking(|| peer.exclusive("platform"))
        .await
        .unwrap()
}

/// Waits until none of the baseline's namespaces of `env` is being deleted (a test
/// a moment ago may have removed the platform; the namespace controller empties each
/// namespace first), so `env` can take the same cluster-wide names.
pub async fn settled(admin: &kube::Client, env: &Environment) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(admin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for ns in comind_gitops::platform::baseline::namespaces(env) {
        while namespaces
            .get_opt(&ns.name)
            .await
            .unwrap()
            .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never went",
                ns.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Makes the namespace `name` for a test (which deletes it at its end with
/// [`delete_namespace`]).
pub async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    namespaces
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

/// Deletes the namespace `name` (in the background: the test does not wait for it).
pub async fn delete_namespace(client: &kube::Client, name: &str) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    namespaces
        .delete(name, &kube::api::DeleteParams::background())
        .await
        .unwrap();
}

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

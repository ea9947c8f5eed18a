//! The in-cluster layer as a [`Provider`]: its phases join whichever profile makes the
//! cluster.

use std::sync::Arc;

use async_trait::async_trait;
use comind_core::reconcile::ReconcilePhase;
use comind_core::{
    Diagnosis, Environment, Phase, PhaseId, Provider, Result, SecretStore, ServiceKind,
    StateSecretStore,
};

use crate::access::{self, Cluster, ClusterAccess, Source};
use crate::platform::{
    PhaseSpec, RenderedPhase, addons, argocd, backups, baseline, gitops, load_balancer,
    load_balancer_controller, registry, sealing_key, services,
};

/// The platform laid on a cluster: add it to a bootstrap next to the profile's own
/// provider, as `comind::bootstrap` does.
#[derive(Debug, Clone)]
pub struct GitopsProvider {
    cluster: Option<Cluster>,
    services: Vec<ServiceKind>,
    secret_store: Option<Arc<dyn SecretStore>>,
}

impl Default for GitopsProvider {
    fn default() -> Self {
        GitopsProvider {
            cluster: None,
            services: ServiceKind::ALL.to_vec(),
            secret_store: None,
        }
    }
}

impl GitopsProvider {
    /// The provider: it reaches the cluster through `gitops.kubeconfig`, and binds
    /// every kind of platform service (each profile has a phase per kind, disabled
    /// ones included).
    pub fn new() -> Self {
        GitopsProvider::default()
    }

    /// The same provider, binding only the services of `kinds` into the cluster: for
    /// a bootstrap whose providers have phases for those alone (the in-cluster phase
    /// runs after each, and a dependency on a phase the bootstrap lacks is refused).
    #[must_use]
    pub fn binding(mut self, kinds: &[ServiceKind]) -> Self {
        self.services = kinds.to_vec();
        self
    }

    /// The same provider, keeping the environment's long-lived secrets (the sealing
    /// key) in `store` rather than in the state directory: `comind::bootstrap` passes
    /// AWS Secrets Manager's with `aws.secret_store: secrets-manager`.
    #[must_use]
    pub fn with_secret_store(mut self, store: Arc<dyn SecretStore>) -> Self {
        self.secret_store = Some(store);
        self
    }

    /// The provider, reaching the cluster through `client`, which the embedder built
    /// with credentials of its own (a token source, an in-cluster service account),
    /// with no kubeconfig file and no `comind eks-token`. `description` names the
    /// cluster in messages.
    pub fn with_cluster(client: kube::Client, description: impl Into<String>) -> Self {
        GitopsProvider {
            cluster: Some(Cluster {
                client,
                description: description.into(),
            }),
            ..GitopsProvider::default()
        }
    }

    fn access(&self, env: &Environment) -> Option<ClusterAccess> {
        match &self.cluster {
            Some(cluster) => Some(ClusterAccess::provided(cluster.clone())),
            None => Self::has_cluster(env).then(|| ClusterAccess::new(env)),
        }
    }

    /// Whether `env` has a cluster to lay the platform on: one named in
    /// `gitops.kubeconfig`, or the local profile's k3d cluster. EKS joins once it
    /// provides what the platform needs from it (access entries and add-ons); until
    /// then the in-cluster phases run on AWS only against a configured cluster.
    pub fn has_cluster(env: &Environment) -> bool {
        matches!(Source::of(env), Source::Configured { .. }) || env.config().makes_local_cluster()
    }
}

#[async_trait]
impl Provider for GitopsProvider {
    fn name(&self) -> &str {
        "gitops"
    }

    fn phases(&self, env: &Arc<Environment>) -> Result<Vec<Arc<dyn Phase>>> {
        // One access per run: every in-cluster phase shares its client.
        let Some(access) = self.access(env) else {
            return Ok(Vec::new());
        };
        let baseline = PhaseSpec::rendered(
            baseline::ID,
            "namespaces, quotas, limits, network policies and RBAC",
            baseline::COMPONENT,
            baseline::kinds,
            Vec::new(),
            Arc::new(|ctx| baseline::render(ctx.env())),
        );
        let mut after_services = vec![PhaseId::new(baseline::ID)];
        after_services.extend(self.services.iter().map(|k| PhaseId::new(k.id())));
        let services = PhaseSpec::rendered(
            services::ID,
            "the platform services' in-cluster names and Secrets",
            services::COMPONENT,
            services::kinds,
            after_services,
            services::renderer(self.services.clone()),
        );
        let mut specs = vec![baseline, services];
        // Always there, so that turning backups off prunes the CronJobs (the render
        // is empty then).
        specs.push(PhaseSpec {
            converge: Some(backups::converge()),
            ..PhaseSpec::rendered(
                backups::ID,
                "the daily backups of PostgreSQL and the buckets",
                backups::COMPONENT,
                backups::kinds,
                backups::after(env),
                Arc::new(|ctx| backups::render(ctx.env())),
            )
        });
        if env.config().makes_local_cluster() {
            specs.push(PhaseSpec::rendered(
                registry::ID,
                "the image registry through the ingress",
                registry::COMPONENT,
                registry::kinds,
                vec![
                    PhaseId::new(baseline::ID),
                    PhaseId::new(comind_core::cluster::REGISTRY_PHASE_ID),
                ],
                Arc::new(registry::render),
            ));
        }
        if env.config().gitops.argocd.enabled {
            specs.push(argocd::spec(env));
            specs.push(gitops::spec(env));
            if env.config().gitops.addons.sealed_secrets.enabled {
                let store = self.secret_store.clone().unwrap_or_else(|| {
                    Arc::new(StateSecretStore::new(env.state().clone())) as Arc<dyn SecretStore>
                });
                specs.push(sealing_key::spec(store));
            }
            if load_balancer_controller::runs(env) {
                specs.push(load_balancer_controller::spec());
            }
            specs.push(addons::spec(env));
            if addons::uses_metallb(env) {
                specs.push(PhaseSpec::rendered(
                    load_balancer::ID,
                    "MetalLB's address pool on the cluster's network",
                    load_balancer::COMPONENT,
                    load_balancer::kinds,
                    vec![PhaseId::new(addons::ID)],
                    Arc::new(load_balancer::render),
                ));
            }
        }
        Ok(specs
            .into_iter()
            .map(|spec| {
                Arc::new(ReconcilePhase::new(RenderedPhase::new(
                    spec,
                    access.clone(),
                ))) as Arc<dyn Phase>
            })
            .collect())
    }

    async fn diagnose(&self, env: &Arc<Environment>) -> Vec<Diagnosis> {
        let mut found = Vec::new();
        if env.config().gitops.argocd.enabled && self.access(env).is_some() {
            found.push(match comind_core::state::StateDir::cache_root() {
                Ok(cache) => argocd::release::diagnose(&env.config().gitops.argocd, &cache),
                Err(e) => {
                    Diagnosis::failed("argocd manifest", e.to_string(), "set COMIND_CACHE_DIR")
                }
            });
        }
        found.extend(self.diagnose_cluster(env).await);
        found
    }
}

impl GitopsProvider {
    async fn diagnose_cluster(&self, env: &Arc<Environment>) -> Vec<Diagnosis> {
        let check = "cluster";
        let cluster = match (&self.cluster, Source::of(env)) {
            (Some(cluster), _) => cluster.clone(),
            (None, Source::Configured { path, context }) => {
                match access::connect(&path, context.as_deref()).await {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        return vec![Diagnosis::failed(
                            check,
                            err.to_string(),
                            "point `gitops.kubeconfig` (and `gitops.context`) at a cluster \
                             you can reach",
                        )];
                    }
                }
            }
            (None, _) => return Vec::new(),
        };
        match cluster.client.apiserver_version().await {
            Ok(version) => vec![Diagnosis::ok(
                check,
                format!(
                    "Kubernetes {}.{} answers through {}",
                    version.major, version.minor, cluster.description
                ),
            )],
            Err(err) => vec![Diagnosis::failed(
                check,
                format!("{} does not answer: {err}", cluster.description),
                "check the kubeconfig's server address and credentials",
            )],
        }
    }
}

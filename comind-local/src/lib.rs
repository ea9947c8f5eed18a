//! # comind-local
//!
//! The local profile of Comind: everything the platform needs on one machine, driven
//! through the Docker Engine API with `bollard` (no `docker` CLI). [`LocalProvider`]
//! contributes the phases of an environment: a user-defined Docker network
//! ([`NetworkPhase`]) and, each in a phase of its own so that they start in parallel,
//! PostgreSQL ([`PostgresBackend`]), MinIO ([`MinioBackend`]), Redis
//! ([`RedisBackend`]) and ElasticMQ ([`ElasticMqBackend`]) as containers, and, unless
//! `local.cluster.enabled` is off or `gitops.kubeconfig` names another cluster, the
//! private image registry ([`RegistryPhase`]), and, when Argo CD deploys from the
//! local repository (`gitops.repo.url: local`), a Git server ([`GitServerPhase`])
//! that `comind gitops push` fills and Argo CD pulls from. Everything
//! created carries Comind's ownership labels and a hash of its desired spec, so every
//! run discovers what exists and converges it: a stopped container is started, a
//! changed one replaced on its volume, a deleted one recreated. Data lives in named
//! volumes that a plain `comind down` keeps; credentials are generated once into the
//! state directory. The k3d cluster joins this crate in a later release.
//!
//! ```no_run
//! # async fn demo() -> comind_core::Result<()> {
//! use comind_core::config::{Config, LoadOptions};
//! use comind_core::engine::RunOptions;
//! use comind_core::{Bootstrap, Environment};
//! use comind_local::LocalProvider;
//!
//! let config = Config::load(&LoadOptions::from_process(None))?;
//! let bootstrap = Bootstrap::new(Environment::new(config)?).with_provider(LocalProvider::new());
//! let report = bootstrap.up(&RunOptions::default(), &Default::default()).await?;
//! println!("{}", report.merged_outputs().to_env_lines(false));
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod docker;
mod doctor;
pub mod git_server;
pub mod network;
pub mod registry;
pub mod services;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use comind_core::config::Config;
use comind_core::{
    Diagnosis, Environment, Phase, Provider, Result, ServiceBackend, ServiceKind, ServicePhase,
};

pub use cluster::ClusterPhase;
pub use docker::DockerClient;
pub use doctor::MIN_API_VERSION;
pub use git_server::GitServerPhase;
pub use network::NetworkPhase;
pub use registry::RegistryPhase;
pub use services::{ElasticMqBackend, MinioBackend, PostgresBackend, RedisBackend};

/// The local profile's provider: a Docker network and the service containers.
///
/// Creating one is cheap and connects to nothing. The Docker client is made on first
/// use and shared by every phase it hands out, so a run connects to the daemon once.
#[derive(Debug, Default)]
pub struct LocalProvider {
    clients: Mutex<HashMap<String, DockerClient>>,
}

impl LocalProvider {
    /// A provider; connects to nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared Docker client for the engine that `config` names (see
    /// [`DockerClient::for_config`]).
    pub fn docker(&self, config: &Config) -> DockerClient {
        let candidate = DockerClient::for_config(config);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(candidate.host().to_string())
            .or_insert(candidate)
            .clone()
    }

    /// Whether the profile makes its own cluster and registry in `env`: unless
    /// `local.cluster.enabled` is off, or `gitops.kubeconfig` lays the platform on a
    /// cluster Comind did not make. A cluster and registry made earlier are then not
    /// removed by `down`: take the environment down before switching.
    pub fn makes_cluster(env: &Environment) -> bool {
        env.config().makes_local_cluster()
    }

    /// The service backends of `env`, in phase order: PostgreSQL, MinIO, Redis and
    /// ElasticMQ, whether or not the configuration enables the optional ones (see
    /// [`phases`](Provider::phases)).
    pub fn services(&self, env: &Environment) -> Vec<Arc<dyn ServiceBackend>> {
        let docker = self.docker(env.config());
        vec![
            Arc::new(PostgresBackend::new(docker.clone(), env)),
            Arc::new(MinioBackend::new(docker.clone(), env)),
            Arc::new(RedisBackend::new(docker.clone(), env)),
            Arc::new(ElasticMqBackend::new(docker, env)),
        ]
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn phases(&self, env: &Arc<Environment>) -> Result<Vec<Arc<dyn Phase>>> {
        let mut phases: Vec<Arc<dyn Phase>> =
            vec![Arc::new(NetworkPhase::new(self.docker(env.config())))];
        if Self::makes_cluster(env) {
            phases.push(Arc::new(RegistryPhase::new(self.docker(env.config()))));
            phases.push(Arc::new(ClusterPhase::new(self.docker(env.config()), env)));
        }
        // Like the registry, it is a phase only while it is wanted: switching it off
        // leaves what an earlier run made (take the environment down first).
        if git_server::runs_git_server(env.config()) {
            phases.push(Arc::new(GitServerPhase::new(self.docker(env.config()))));
        }
        // A disabled optional service stays a phase whose desired state is "absent", so
        // turning it off removes what an earlier run made and `down` still finds it.
        let services = &env.config().services;
        phases.extend(self.services(env).into_iter().map(|backend| {
            let enabled = match backend.kind() {
                ServiceKind::Cache => services.cache.enabled,
                ServiceKind::Queue => services.queue.enabled,
                ServiceKind::Postgres | ServiceKind::ObjectStore => true,
            };
            Arc::new(if enabled {
                ServicePhase::new(backend)
            } else {
                ServicePhase::disabled(backend)
            }) as Arc<dyn Phase>
        }));
        Ok(phases)
    }

    async fn diagnose(&self, env: &Arc<Environment>) -> Vec<Diagnosis> {
        doctor::diagnose(&self.docker(env.config()), env).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_and_the_cluster_come_together() {
        let ids = |edit: fn(&mut Config)| -> Vec<String> {
            let mut config = Config::default();
            edit(&mut config);
            let env = Arc::new(Environment::with_state_root(config, "/tmp/x"));
            LocalProvider::new()
                .phases(&env)
                .unwrap()
                .iter()
                .map(|p| p.id().to_string())
                .collect()
        };
        assert_eq!(
            ids(|_| {}),
            [
                "network",
                "registry",
                "cluster",
                "git-server",
                "postgres",
                "object-store",
                "cache",
                "queue"
            ]
        );
        assert!(!ids(|c| c.local.cluster.enabled = false).contains(&"registry".to_string()));
        assert!(
            !ids(|c| c.gitops.argocd.enabled = false).contains(&"git-server".to_string()),
            "no Argo CD, no Git server for it"
        );
        assert!(
            ids(|c| c.local.cluster.enabled = false).contains(&"git-server".to_string()),
            "it runs with the services, for a cluster named by gitops.kubeconfig too"
        );
        assert!(
            !ids(|c| c.gitops.kubeconfig = Some("/k".into())).contains(&"registry".to_string())
        );
    }

    #[test]
    fn phases_are_the_network_then_every_service() {
        let mut config = Config::default();
        config.local.cluster.enabled = false;
        config.gitops.argocd.enabled = false;
        let env = Arc::new(Environment::with_state_root(config.clone(), "/tmp/x"));
        let provider = LocalProvider::new();
        assert_eq!(provider.name(), "local");
        let ids: Vec<String> = provider
            .phases(&env)
            .unwrap()
            .iter()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(
            ids,
            ["network", "postgres", "object-store", "cache", "queue"]
        );
        for phase in provider.phases(&env).unwrap().iter().skip(1) {
            assert_eq!(
                phase.dependencies(),
                vec![comind_core::PhaseId::new("network")]
            );
        }

        config.services.cache.enabled = false;
        config.services.queue.enabled = false;
        let env = Arc::new(Environment::with_state_root(config, "/tmp/x"));
        let ids: Vec<String> = provider
            .phases(&env)
            .unwrap()
            .iter()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(
            ids,
            ["network", "postgres", "object-store", "cache", "queue"],
            "disabled services stay phases, so what they made is still managed"
        );
    }

    #[test]
    fn phases_share_one_docker_client() {
        let provider = LocalProvider::new();
        let config = Config::default();
        let a = provider.docker(&config);
        let b = provider.docker(&config);
        assert_eq!(a.host(), b.host());
        assert_eq!(provider.clients.lock().unwrap().len(), 1);
    }
}

//! The core conformance suites, run against the real Docker engine: the service
//! suite for each of the four backends and the phase suite for the network.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use comind_core::service::{ServiceBackend, ServiceEndpoint, ServiceKind};
use comind_core::testing::conformance::{PhaseFixture, ServiceFixture, phase_suite, service_suite};
use comind_core::{Environment, Operation, Outputs, Phase, PhaseContext, PhaseId, Result};
use comind_local::{LocalProvider, NetworkPhase};
use comind_test_support::docker::{
    self, ELASTICMQ_IMAGE, MINIO_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE,
};
use comind_test_support::require_peer;

use crate::markers;
use crate::support::{self, TestEnv};

struct DockerServiceFixture {
    backend: Arc<dyn ServiceBackend>,
    env: Arc<Environment>,
    inputs: HashMap<PhaseId, Outputs>,
    docker: Docker,
    name: String,
}

#[async_trait]
impl ServiceFixture for DockerServiceFixture {
    fn backend(&self) -> Arc<dyn ServiceBackend> {
        self.backend.clone()
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        self.inputs.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        let owned = support::owned(&self.docker, &self.name, Some(self.backend.kind().id())).await;
        let mut names = owned.containers;
        names.extend(owned.volumes);
        Ok(names)
    }

    async fn write_marker(&self, endpoint: &ServiceEndpoint, marker: &str) -> Result<()> {
        let outputs = endpoint.to_outputs();
        match endpoint.kind() {
            ServiceKind::Postgres => markers::write_postgres(&outputs, marker).await,
            ServiceKind::ObjectStore => markers::write_s3(&outputs, marker).await,
            ServiceKind::Cache => markers::write_redis(&outputs, marker).await,
            ServiceKind::Queue => {
                markers::send_message(&outputs, marker).await;
                // The moto stand-in keeps messages in memory, so they cannot outlive
                // the container the way ElasticMQ's message store on /data does
                // (see `/opt/elasticmq.conf`). The file stands in for that store: it
                // shows that the backend keeps the volume on destroy, attaches the same
                // volume to the new container, and loses it on purge.
                let container = self.env.resource_name("queue");
                markers::write_volume_file(&self.docker, &container, marker).await;
            }
        }
        Ok(())
    }

    async fn has_marker(&self, endpoint: &ServiceEndpoint, marker: &str) -> Result<bool> {
        let outputs = endpoint.to_outputs();
        Ok(match endpoint.kind() {
            ServiceKind::Postgres => markers::has_postgres(&outputs, marker).await,
            ServiceKind::ObjectStore => markers::has_s3(&outputs, marker).await,
            ServiceKind::Cache => markers::has_redis(&outputs, marker).await,
            ServiceKind::Queue => {
                // Whatever else, the queues must be back with their redrive policies.
                markers::assert_queues(&outputs, 5).await;
                let container = self.env.resource_name("queue");
                markers::has_message(&outputs, marker).await
                    || markers::has_volume_file(&self.docker, &container, marker).await
            }
        })
    }
}

async fn run_service_suite(kind: ServiceKind, image: &str) {
    let docker = require_peer!(docker::ready(&[image]).await);
    let t = TestEnv::new(&docker, "conf");
    let env = t.env();
    let provider = LocalProvider::new();
    let network = NetworkPhase::new(provider.docker(env.config()));
    let ctx = PhaseContext::standalone(
        PhaseId::new("network"),
        Operation::Apply,
        env.clone(),
        HashMap::new(),
    );
    let net = network.apply(&ctx).await.unwrap();
    let backend = provider
        .services(&env)
        .into_iter()
        .find(|b| b.kind() == kind)
        .unwrap();
    let fixture = DockerServiceFixture {
        backend,
        env: env.clone(),
        inputs: HashMap::from([(PhaseId::new("network"), net.outputs)]),
        docker: docker.clone(),
        name: t.name.clone(),
    };
    service_suite(&fixture).await;
    assert!(
        t.credential_files().is_empty(),
        "{kind}: credentials left after the suite's purge: {:?}",
        t.credential_files()
    );
    network
        .destroy(&ctx.for_operation(Operation::Destroy), Default::default())
        .await
        .unwrap();
    let left = t.owned(None).await;
    assert!(left.is_empty(), "{kind}: left behind: {left:?}");
}

#[tokio::test]
async fn postgres_passes_the_service_suite() {
    run_service_suite(ServiceKind::Postgres, POSTGRES_IMAGE).await;
}

#[tokio::test]
async fn minio_passes_the_service_suite() {
    run_service_suite(ServiceKind::ObjectStore, MINIO_IMAGE).await;
}

#[tokio::test]
async fn redis_passes_the_service_suite() {
    run_service_suite(ServiceKind::Cache, REDIS_IMAGE).await;
}

#[tokio::test]
async fn elasticmq_passes_the_service_suite() {
    run_service_suite(ServiceKind::Queue, ELASTICMQ_IMAGE).await;
}

struct NetworkFixture {
    phase: Arc<NetworkPhase>,
    env: Arc<Environment>,
    docker: Docker,
    name: String,
}

#[async_trait]
impl PhaseFixture for NetworkFixture {
    fn phase(&self) -> Arc<dyn Phase> {
        self.phase.clone()
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        Ok(support::owned(&self.docker, &self.name, Some("network"))
            .await
            .networks)
    }
}

#[tokio::test]
async fn the_network_passes_the_phase_suite() {
    let docker = require_peer!(docker::ready(&[]).await);
    let t = TestEnv::new(&docker, "net");
    let env = t.env();
    let fixture = NetworkFixture {
        phase: Arc::new(NetworkPhase::new(LocalProvider::new().docker(env.config()))),
        env,
        docker: docker.clone(),
        name: t.name.clone(),
    };
    phase_suite(&fixture).await;
    assert!(t.owned(None).await.is_empty());
}

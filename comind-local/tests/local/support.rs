//! What every test here shares: a unique environment per test that cleans up after
//! itself, listings of what an environment owns, and real clients of the four
//! services.
//!
//! The peer policy, the Docker checks, the stand-in images (described in
//! `comind_test_support::docker`), names and ports come from `comind-test-support`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use comind_core::config::{Config, DurationSetting, EnvironmentName, ImageRef, Port};
use comind_core::engine::RunOptions;
use comind_core::environment::{LABEL_COMPONENT, LABEL_ENVIRONMENT, LABEL_MANAGED_BY};
use comind_core::{Bootstrap, DestroyOptions, Environment, Outputs, PhaseId};
use comind_local::LocalProvider;
use comind_test_support::docker::{
    ELASTICMQ_IMAGE, GIT_SERVER_IMAGE, LabelCleanup, MINIO_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE,
    REGISTRY_IMAGE,
};
use comind_test_support::{names, ports};

/// One test's environment: a unique name, a state directory, free ports, the
/// stand-in images, and a guard that removes everything labelled with its name when
/// the test ends, even by a panic (test helpers such as the registry carry that label
/// too).
pub struct TestEnv {
    pub name: String,
    pub config: Config,
    pub state: tempfile::TempDir,
    pub docker: Docker,
    cleanup: LabelCleanup,
}

impl TestEnv {
    /// An environment named `<prefix>-<random>`; `prefix` at most 12 characters.
    pub fn new(docker: &Docker, prefix: &str) -> Self {
        let name = names::unique(prefix);
        let mut config = Config::default();
        config.environment = EnvironmentName::new(&name).unwrap();
        let s = &mut config.services;
        s.postgres.local.image = ImageRef::new(POSTGRES_IMAGE).unwrap();
        s.postgres.local.port = port();
        s.object_store.local.image = ImageRef::new(MINIO_IMAGE).unwrap();
        s.object_store.local.port = port();
        s.object_store.local.console_port = port();
        s.cache.local.image = ImageRef::new(REDIS_IMAGE).unwrap();
        s.cache.local.port = port();
        s.queue.local.image = ImageRef::new(ELASTICMQ_IMAGE).unwrap();
        s.queue.local.port = port();
        config.local.ready_timeout = DurationSetting::new(Duration::from_secs(90));
        // The services alone: the cluster's own tests make clusters.
        config.local.cluster.enabled = false;
        // Argo CD needs its release manifest and a kubelet: the gitops tests install it.
        config.gitops.argocd.enabled = false;
        config.local.cluster.registry_image = ImageRef::new(REGISTRY_IMAGE).unwrap();
        config.local.cluster.registry_port = port();
        // With Argo CD off there is no Git server either: the Git server's tests turn
        // it back on (their runs select the Git server alone).
        config.gitops.repo.local.image = ImageRef::new(GIT_SERVER_IMAGE).unwrap();
        config.gitops.repo.local.port = port();
        // A run that fails in a test should fail at once, not after the engine's
        // retries.
        config.engine.retries = 0;
        TestEnv {
            cleanup: LabelCleanup::new(name.clone()),
            name,
            config,
            state: tempfile::tempdir().unwrap(),
            docker: docker.clone(),
        }
    }

    /// The environment with the current configuration.
    pub fn env(&self) -> Arc<Environment> {
        Arc::new(self.environment())
    }

    fn environment(&self) -> Environment {
        Environment::with_state_root(self.config.clone(), self.state.path())
    }

    /// A bootstrap of the environment with a new local provider, as a new `comind`
    /// process would make.
    pub fn bootstrap(&self) -> Bootstrap {
        Bootstrap::new(self.environment()).with_provider(LocalProvider::new())
    }

    /// An image to remove when the test ends.
    pub fn remove_image_later(&self, image: &str) {
        self.cleanup.remove_image_later(image);
    }

    /// What carries this environment's labels (optionally of one component).
    pub async fn owned(&self, component: Option<&str>) -> Owned {
        owned(&self.docker, &self.name, component).await
    }

    /// The credentials files in the state directory.
    pub fn credential_files(&self) -> Vec<String> {
        let dir = self
            .state
            .path()
            .join("local")
            .join(&self.name)
            .join("credentials");
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn port() -> Port {
    Port::new(ports::free_port()).unwrap()
}

/// Resources carrying an environment's ownership labels.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
}

impl Owned {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.volumes.is_empty() && self.networks.is_empty()
    }

    /// Every name.
    pub fn all(&self) -> Vec<String> {
        let mut all = self.containers.clone();
        all.extend(self.volumes.iter().cloned());
        all.extend(self.networks.iter().cloned());
        all.sort();
        all
    }
}

/// Label filters for an environment (and component).
fn filters(env: &str, component: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![
        format!("{LABEL_MANAGED_BY}=comind"),
        format!("{LABEL_ENVIRONMENT}={env}"),
    ];
    if let Some(component) = component {
        labels.push(format!("{LABEL_COMPONENT}={component}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// Containers (running or not), volumes and networks carrying the ownership labels
/// of environment `env` (and `component`), found through Docker.
pub async fn owned(docker: &Docker, env: &str, component: Option<&str>) -> Owned {
    let filters = filters(env, component);
    let mut containers: Vec<String> = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let mut volumes: Vec<String> = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut networks: Vec<String> = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    containers.sort();
    volumes.sort();
    networks.sort();
    Owned {
        containers,
        volumes,
        networks,
    }
}

/// Run options selecting `phases` (and what they need).
pub fn only(phases: &[&str]) -> RunOptions {
    RunOptions {
        only: phases.iter().map(|p| PhaseId::new(*p)).collect(),
        ..RunOptions::default()
    }
}

/// Run options of `down --purge`.
pub fn purge() -> RunOptions {
    RunOptions {
        destroy: DestroyOptions { purge: true },
        ..RunOptions::default()
    }
}

// ---- real clients -------------------------------------------------------------------

/// A PostgreSQL client from the outputs' `DATABASE_URL`.
pub async fn postgres(outputs: &Outputs) -> tokio_postgres::Client {
    let url = outputs.require("DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// An S3 client from the outputs.
pub fn s3(outputs: &Outputs) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(
            outputs.require("S3_REGION").unwrap().to_string(),
        ))
        .endpoint_url(outputs.require("S3_ENDPOINT").unwrap())
        .force_path_style(outputs.require("S3_FORCE_PATH_STYLE").unwrap() == "true")
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            outputs.require("S3_ACCESS_KEY_ID").unwrap(),
            outputs.require("S3_SECRET_ACCESS_KEY").unwrap(),
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A Redis connection from the outputs' `REDIS_URL`.
pub async fn redis(outputs: &Outputs) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(outputs.require("REDIS_URL").unwrap()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// An SQS client from the outputs.
pub fn sqs(outputs: &Outputs) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(
            outputs.require("SQS_REGION").unwrap().to_string(),
        ))
        .endpoint_url(outputs.require("SQS_ENDPOINT").unwrap())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            outputs.require("SQS_ACCESS_KEY_ID").unwrap(),
            outputs.require("SQS_SECRET_ACCESS_KEY").unwrap(),
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Runs `up` and returns its report with every change the phases reported (from the
/// event stream, as the CLI sees them).
pub async fn up_with_changes(
    bootstrap: &Bootstrap,
    run: &RunOptions,
) -> (comind_core::engine::RunReport, Vec<comind_core::Change>) {
    let mut events = bootstrap.events().subscribe();
    let report = bootstrap
        .up(run, &comind_core::UpOptions::default())
        .await
        .unwrap();
    let mut changes = Vec::new();
    while let Some(record) = events.try_recv() {
        if let comind_core::event::Event::PhaseFinished { changes: made, .. } = &record.event {
            changes.extend(made.iter().cloned());
        }
    }
    (report, changes)
}

/// The error of phase `id` in `report`.
pub fn phase_error(
    report: &comind_core::engine::RunReport,
    id: &str,
) -> comind_core::error::ErrorReport {
    report
        .summary
        .phases
        .iter()
        .find(|p| p.id.as_str() == id)
        .and_then(|p| p.error.clone())
        .unwrap_or_else(|| panic!("phase {id} has no error: {:?}", report.summary))
}

/// Docker's word for the state of container `name` (`running`, `exited`, `created`).
pub async fn status_of(docker: &Docker, name: &str) -> String {
    docker
        .inspect_container(name, None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

//! What every test here shares: the peer policy, a unique environment per test that
//! cleans up after itself, and real clients of the four services.
//!
//! # Stand-in images
//!
//! No registry can be reached on the development and CI machines, so the tests run
//! images built locally by `scripts/test-env/build-test-images.sh` from Debian
//! packages and PyPI. Each mimics the interface of the official image that the
//! backend relies on (entrypoint, environment variables, ports, data directory,
//! `*_FILE` conventions), so the backend's code path is the one it takes with the
//! official image; `comind.yaml` image overrides point the tests at them.
//!
//! | Stand-in                  | For                              | Server                           | Why this server |
//! |---------------------------|----------------------------------|----------------------------------|-----------------|
//! | `comind-test/postgres:r1` | `postgres:16-alpine`             | Debian PostgreSQL 15             | The real server; the entrypoint honours `POSTGRES_USER`, `POSTGRES_PASSWORD_FILE` and `PGDATA`, initialises once, and runs as uid 70 like the alpine image. |
//! | `comind-test/redis:r1`    | `redis:7-alpine`                 | Debian redis-server 7.0          | The real server, run as uid 999 from `/data`, like the official image. |
//! | `comind-test/minio:r1`    | `minio/minio`                    | SeaweedFS (`weed mini`, S3 API)  | MinIO is not packaged for Debian; SeaweedFS is on PyPI, speaks S3 with SigV4, takes `server DIR --console-address :PORT`, reads `MINIO_CONFIG_ENV_FILE`, rejects other credentials, and keeps its data under `DIR`. |
//! | `comind-test/elasticmq:r1`| `softwaremill/elasticmq-native`  | moto (`moto_server`, SQS API)    | ElasticMQ is not packaged for Debian; moto is on PyPI and speaks the SQS JSON protocol with dead-letter queues and redrive policies, with account id 000000000000 like ElasticMQ. It keeps everything in memory and ignores `/opt/elasticmq.conf`, so messages do not survive a new container (see the queue fixture). |
//! | `comind-test/registry:r1` | `registry:2`                     | Debian docker-registry 2.8       | The same server; used to test a real image pull. |
//!
//! # Peer policy
//!
//! When Docker or a stand-in image is missing, a test fails if `COMIND_REQUIRE_PEERS=1`
//! (CI sets it) and otherwise skips with a loud message: see [`peers`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use comind_core::config::{Config, DurationSetting, EnvironmentName, ImageRef, Port};
use comind_core::engine::RunOptions;
use comind_core::environment::{LABEL_COMPONENT, LABEL_ENVIRONMENT, LABEL_MANAGED_BY};
use comind_core::{Bootstrap, DestroyOptions, Environment, Outputs, PhaseId};
use comind_local::LocalProvider;

/// The stand-in images.
pub const POSTGRES_IMAGE: &str = "comind-test/postgres:r1";
pub const REDIS_IMAGE: &str = "comind-test/redis:r1";
pub const MINIO_IMAGE: &str = "comind-test/minio:r1";
pub const ELASTICMQ_IMAGE: &str = "comind-test/elasticmq:r1";
pub const REGISTRY_IMAGE: &str = "comind-test/registry:r1";

/// Every service image.
pub const SERVICE_IMAGES: [&str; 4] = [POSTGRES_IMAGE, MINIO_IMAGE, REDIS_IMAGE, ELASTICMQ_IMAGE];

/// Whether missing peers fail the test (CI) rather than skip it.
pub fn peers_required() -> bool {
    std::env::var("COMIND_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// A Docker client, when the daemon answers and every image of `images` is present.
/// Otherwise: panics when peers are required, else prints a loud skip notice and
/// returns `None`.
pub async fn peers(test: &str, images: &[&str]) -> Option<Docker> {
    let problem = match check_peers(images).await {
        Ok(docker) => return Some(docker),
        Err(problem) => problem,
    };
    let message = format!(
        "{test}: {problem}. Start Docker (`sudo systemctl start docker` or `sudo dockerd &`) \
         and build the test images with scripts/test-env/build-test-images.sh"
    );
    if peers_required() {
        panic!("COMIND_REQUIRE_PEERS=1 and a peer is missing: {message}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED (no real peer) !!!!!!!!\n!!! {message}\n!!! set COMIND_REQUIRE_PEERS=1 to make this a failure\n"
    );
    None
}

async fn check_peers(images: &[&str]) -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot connect to Docker: {e}"))?
        .negotiate_version()
        .await
        .map_err(|e| format!("the Docker daemon does not answer: {e}"))?;
    for image in images {
        if docker.inspect_image(image).await.is_err() {
            return Err(format!("the test image {image} is missing"));
        }
    }
    Ok(docker)
}

/// Gets the peers or returns from the test.
#[macro_export]
macro_rules! require_peers {
    ($test:expr, $images:expr) => {
        match $crate::support::peers($test, $images).await {
            Some(docker) => docker,
            None => return,
        }
    };
}

static TAKEN_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free port on 127.0.0.1, outside the kernel's ephemeral range (so outgoing
/// connections do not take it meanwhile) and never handed out twice by this process.
pub fn free_port() -> u16 {
    let mut taken = TAKEN_PORTS.lock().unwrap();
    loop {
        let port = fastrand::u16(20_000..32_000);
        if !taken.contains(&port)
            && std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
        {
            taken.insert(port);
            return port;
        }
    }
}

/// One test's environment: a unique name, a state directory, free ports, the
/// stand-in images, and a guard that removes everything labelled with its name when
/// the test ends, even by a panic.
pub struct TestEnv {
    pub name: String,
    pub config: Config,
    pub state: tempfile::TempDir,
    pub docker: Docker,
    cleanup: Cleanup,
}

impl TestEnv {
    /// An environment named `<prefix>-<random>`; `prefix` at most 12 characters.
    pub fn new(docker: &Docker, prefix: &str) -> Self {
        let suffix: String = (0..6).map(|_| fastrand::lowercase()).collect();
        let name = format!("{prefix}-{suffix}");
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
        // A run that fails in a test should fail at once, not after the engine's
        // retries.
        config.engine.retries = 0;
        TestEnv {
            cleanup: Cleanup {
                name: name.clone(),
                extra_images: Arc::default(),
            },
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
        self.cleanup
            .extra_images
            .lock()
            .unwrap()
            .push(image.to_string());
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
    Port::new(free_port()).unwrap()
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

/// Removes, when dropped, everything labelled `comind.dev/environment=<name>`
/// (test helpers such as the registry carry that label too) and the listed images.
struct Cleanup {
    name: String,
    extra_images: Arc<Mutex<Vec<String>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let name = self.name.clone();
        let images = std::mem::take(&mut *self.extra_images.lock().unwrap());
        // Drop cannot await, and may run inside the test's runtime: clean up from a
        // thread with a runtime of its own.
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(remove_environment(&name, &images));
        });
        let _ = cleaner.join();
    }
}

async fn remove_environment(name: &str, images: &[String]) {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return;
    };
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_ENVIRONMENT}={name}")],
    )]);
    if let Ok(containers) = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
    {
        for c in containers {
            if let Some(id) = c.id {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(
                            RemoveContainerOptionsBuilder::new()
                                .force(true)
                                .v(true)
                                .build(),
                        ),
                    )
                    .await;
            }
        }
    }
    if let Ok(list) = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for v in list.volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                .await;
        }
    }
    if let Ok(networks) = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for n in networks {
            if let Some(id) = n.id {
                let _ = docker.remove_network(&id).await;
            }
        }
    }
    for image in images {
        let _ = docker
            .remove_image(
                image,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
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

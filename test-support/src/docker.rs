//! The Docker engine as a test peer: whether the daemon answers and the stand-in
//! images are present, the stand-ins' names, and a guard that removes what carries an
//! environment's label.
//!
//! # Stand-in images
//!
//! No registry can be reached on the development and CI machines, so the tests run
//! images built locally by `scripts/test-env/build-test-images.sh` from Debian
//! packages and PyPI (`scripts/test-env/README.md` describes them). Each mimics the
//! interface of the official image that the backend relies on (entrypoint,
//! environment variables, ports, data directory, `*_FILE` conventions), so the
//! backend's code path is the one it takes with the official image; `comind.yaml`
//! image overrides point the tests at them.
//!
//! | Stand-in                  | For                              | Server                           | Why this server |
//! |---------------------------|----------------------------------|----------------------------------|-----------------|
//! | `comind-test/postgres:r1` | `postgres:16-alpine`             | Debian PostgreSQL 15             | The real server; the entrypoint honours `POSTGRES_USER`, `POSTGRES_PASSWORD_FILE` and `PGDATA`, initialises once, and runs as uid 70 like the alpine image. |
//! | `comind-test/redis:r1`    | `redis:7-alpine`                 | Debian redis-server 7.0          | The real server, run as uid 999 from `/data`, like the official image. |
//! | `comind-test/minio:r1`    | `minio/minio`                    | SeaweedFS (`weed mini`, S3 API)  | MinIO is not packaged for Debian; SeaweedFS is on PyPI, speaks S3 with SigV4, takes `server DIR --console-address :PORT`, reads `MINIO_CONFIG_ENV_FILE`, rejects other credentials, and keeps its data under `DIR`. |
//! | `comind-test/elasticmq:r1`| `softwaremill/elasticmq-native`  | moto (`moto_server`, SQS API)    | ElasticMQ is not packaged for Debian; moto is on PyPI and speaks the SQS JSON protocol with dead-letter queues and redrive policies, with account id 000000000000 like ElasticMQ. It keeps everything in memory and ignores `/opt/elasticmq.conf`, so messages do not survive a new container (see the queue conformance fixture of `comind-local`). |
//! | `comind-test/registry:r1` | `registry:2`                     | Debian docker-registry 2.8       | The same server; used to test a real image pull. |
//! | `comind-test/rclone:r1`   | `rclone/rclone`                  | Debian rclone 1.60               | The same program, older; the backup scripts use only options 1.60 has. |

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptions, RemoveVolumeOptions,
};
use comind_core::environment::LABEL_ENVIRONMENT;

use crate::peers::Missing;

/// Stands in for `postgres:16-alpine` (Debian PostgreSQL 15).
pub const POSTGRES_IMAGE: &str = "comind-test/postgres:r1";
/// Stands in for `redis:7-alpine` (Debian redis-server 7.0).
pub const REDIS_IMAGE: &str = "comind-test/redis:r1";
/// Stands in for `minio/minio` (SeaweedFS's S3 API).
pub const MINIO_IMAGE: &str = "comind-test/minio:r1";
/// Stands in for `softwaremill/elasticmq-native` (moto's SQS API).
pub const ELASTICMQ_IMAGE: &str = "comind-test/elasticmq:r1";
/// Stands in for `registry:2` (Debian docker-registry 2.8).
pub const REGISTRY_IMAGE: &str = "comind-test/registry:r1";
/// The idle placeholder node the k3d double makes its node containers from.
pub const K3S_NODE_IMAGE: &str = "comind-test/k3s-node:r1";
/// Stands in for `alpine/git` (Debian git 2.39): the local Git server's image.
pub const GIT_SERVER_IMAGE: &str = "comind-test/git-server:r1";
/// Stands in for `rclone/rclone` (Debian rclone 1.60): the backup Jobs' object-store
/// steps.
pub const RCLONE_IMAGE: &str = "comind-test/rclone:r1";

/// The image of every local service: PostgreSQL, the object store, the cache, the
/// queue.
pub const SERVICE_IMAGES: [&str; 4] = [POSTGRES_IMAGE, MINIO_IMAGE, REDIS_IMAGE, ELASTICMQ_IMAGE];

const START_DOCKER: &str = "start Docker with scripts/test-env/ensure-docker.sh \
                            (or `sudo systemctl start docker`)";
const BUILD_IMAGES: &str = "build them with scripts/test-env/build-test-images.sh";

/// A client of the local Docker daemon, once it answers and every image of `images`
/// is present.
///
/// # Errors
/// A [`Missing`] peer when the daemon cannot be reached or does not answer, or when
/// images are missing (all of them are named).
pub async fn ready(images: &[&str]) -> Result<Docker, Missing> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| Missing::new(format!("cannot connect to Docker: {e}"), START_DOCKER))?
        .negotiate_version()
        .await
        .map_err(|e| {
            Missing::new(
                format!("the Docker daemon does not answer: {e}"),
                START_DOCKER,
            )
        })?;
    let mut missing = Vec::new();
    for image in images {
        if docker.inspect_image(image).await.is_err() {
            missing.push(*image);
        }
    }
    if missing.is_empty() {
        Ok(docker)
    } else {
        Err(Missing::new(
            format!("test images are missing: {}", missing.join(", ")),
            BUILD_IMAGES,
        ))
    }
}

/// [`ready`] for tests that do not run in an async runtime (or must not block one):
/// checks from a thread with a runtime of its own.
///
/// # Errors
/// As [`ready`].
pub fn ready_blocking(images: &[&str]) -> Result<(), Missing> {
    let images: Vec<String> = images.iter().map(|i| i.to_string()).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    Missing::new(format!("no runtime to reach Docker: {e}"), START_DOCKER)
                })?;
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            runtime.block_on(ready(&images)).map(drop)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Removes, when dropped, every container (with its anonymous volumes), volume and
/// network labelled `comind.dev/environment=<environment>`, and the images it was
/// told about: what a test made, even when the test panicked half-way and whether or
/// not the product's own `down` ran.
///
/// Anything a test starts beside the product (a registry, a squatter) is removed too
/// when it carries the label.
#[derive(Debug)]
pub struct LabelCleanup {
    environment: String,
    images: Mutex<Vec<String>>,
}

impl LabelCleanup {
    /// A guard for `environment`.
    pub fn new(environment: impl Into<String>) -> Self {
        LabelCleanup {
            environment: environment.into(),
            images: Mutex::default(),
        }
    }

    /// The environment whose objects the guard removes.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Removes `image` too when the guard is dropped.
    pub fn remove_image_later(&self, image: &str) {
        self.images
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(image.to_string());
    }
}

impl Drop for LabelCleanup {
    fn drop(&mut self) {
        let environment = self.environment.clone();
        let images =
            std::mem::take(&mut *self.images.lock().unwrap_or_else(PoisonError::into_inner));
        // Drop cannot await and may run inside the test's runtime, where blocking is
        // not allowed: clean up from a thread with a runtime of its own.
        let cleaner = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(remove_labelled(&environment, &images));
            }
        });
        let _ = cleaner.join();
    }
}

/// Removes what carries environment `environment`'s label, then `images`; errors are
/// ignored (this is a best-effort cleanup, the tests assert what must be gone).
async fn remove_labelled(environment: &str, images: &[String]) {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return;
    };
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_ENVIRONMENT}={environment}")],
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
        for id in containers.into_iter().filter_map(|c| c.id) {
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
    if let Ok(list) = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for volume in list.volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(&volume.name, None::<RemoveVolumeOptions>)
                .await;
        }
    }
    if let Ok(networks) = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
    {
        for id in networks.into_iter().filter_map(|n| n.id) {
            let _ = docker.remove_network(&id).await;
        }
    }
    for image in images {
        let _ = docker
            .remove_image(image, None::<RemoveImageOptions>, None)
            .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
    use bollard::query_parameters::InspectNetworkOptions;

    use super::*;
    use crate::{names, require_peer};

    #[tokio::test]
    async fn a_missing_image_is_named() {
        let docker = require_peer!(ready(&[]).await);
        drop(docker);
        let missing = ready(&[POSTGRES_IMAGE, "comind-test/never-built:r0"])
            .await
            .unwrap_err();
        assert!(
            missing.what.contains("comind-test/never-built:r0"),
            "{missing}"
        );
        assert!(missing.remedy.contains("build-test-images.sh"), "{missing}");
    }

    #[test]
    fn the_blocking_check_agrees() {
        require_peer!(ready_blocking(&[]));
        assert!(ready_blocking(&["comind-test/never-built:r0"]).is_err());
    }

    #[tokio::test]
    async fn the_guard_removes_what_carries_the_label_and_nothing_else() {
        let docker = require_peer!(ready(&[]).await);
        let ours = names::unique("clean");
        let theirs = names::unique("keep");
        let ours_guard = LabelCleanup::new(ours.clone());
        let _theirs_guard = LabelCleanup::new(theirs.clone());
        for env in [&ours, &theirs] {
            let labels = HashMap::from([(LABEL_ENVIRONMENT.to_string(), env.to_string())]);
            docker
                .create_volume(VolumeCreateRequest {
                    name: Some(env.to_string()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
            docker
                .create_network(NetworkCreateRequest {
                    name: env.to_string(),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        drop(ours_guard);

        assert!(docker.inspect_volume(&ours).await.is_err(), "volume left");
        assert!(
            docker
                .inspect_network(&ours, None::<InspectNetworkOptions>)
                .await
                .is_err(),
            "network left"
        );
        docker.inspect_volume(&theirs).await.unwrap();
        docker
            .inspect_network(&theirs, None::<InspectNetworkOptions>)
            .await
            .unwrap();
    }
}

//! The four platform services as Docker containers, one file each:
//! [`PostgresBackend`], [`MinioBackend`], [`RedisBackend`] and [`ElasticMqBackend`].
//!
//! Each is a [`ServiceBackend`](comind_core::ServiceBackend) that core wraps as a phase
//! of its own, so they start in parallel once the network exists. They share the
//! container lifecycle in `container.rs`: a container `comind-<env>-<service>` on the
//! environment network (alias: the service id), its data in the volume
//! `comind-<env>-<service>-data`, ports published on 127.0.0.1 only, restart policy
//! `unless-stopped`, ownership labels and the hash of the desired spec. Generated
//! credentials live in the state directory (mode 0600) and reach a container only as a
//! file uploaded before it starts: never in a label, an environment variable, a
//! command line, a log line or an error.

pub(crate) mod container;
mod elasticmq;
mod minio;
pub(crate) mod ports;
mod postgres;
mod redis;
mod sdk;

use std::future::Future;
use std::time::Duration;

use comind_core::environment::Environment;
use comind_core::{Change, Error, PhaseId, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use container::{Assessment, ContainerSpec};

pub use elasticmq::ElasticMqBackend;
pub use minio::MinioBackend;
pub use postgres::PostgresBackend;
pub use redis::RedisBackend;

use crate::network::NETWORK_PHASE_ID;

/// Every service phase needs the network first.
fn network_dependency() -> Vec<PhaseId> {
    vec![PhaseId::new(NETWORK_PHASE_ID)]
}

/// How long a service may take to answer after starting, from `local.ready_timeout`.
fn ready_timeout(env: &Environment) -> Duration {
    env.config().local.ready_timeout.get()
}

/// Credentials of `component` from the state directory, generating them on first use.
/// Returns whether they were generated just now.
///
/// # Errors
/// When the state directory cannot be read or written.
fn stored_or_generated<T, F>(env: &Environment, component: &str, generate: F) -> Result<(T, bool)>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    let fresh = !env.state().has_credentials(component);
    let value = env.state().credentials(component, generate)?;
    Ok((value, fresh))
}

/// Credentials of `component` if they exist; never writes (for plan and status).
///
/// # Errors
/// When the file exists but cannot be read.
fn stored<T>(env: &Environment, component: &str) -> Result<Option<T>>
where
    T: DeserializeOwned,
{
    env.state().stored_credentials(component)
}

/// The error of an endpoint asked for before any credentials were made.
fn no_credentials(env: &Environment, component: &str) -> Error {
    Error::not_found(format!(
        "the credentials of `{component}` are not in the state directory {}",
        env.state().path().display()
    ))
    .with_resource(format!("service {component}"))
    .with_hint("run `comind up` to create the service and its credentials")
}

/// What a plan says about what lives inside a service (databases, buckets, queues):
///
/// - a service starting on a new volume gets all of it (`everything`);
/// - a running service is asked what is missing (`missing`, read-only); if it does not
///   answer yet, the plan says `up` waits for it;
/// - a service being started or recreated on its old volume cannot be asked; `up`
///   creates what is missing once it answers.
///
/// # Errors
/// A permanent error of `missing` (refused credentials).
async fn planned_contents<F, Fut>(
    assessment: &Assessment,
    spec: &ContainerSpec,
    everything: Vec<Change>,
    missing: F,
) -> Result<Vec<Change>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<Change>>>,
{
    if assessment.creates_volume() {
        return Ok(everything);
    }
    if !assessment.in_sync() {
        return Ok(Vec::new());
    }
    match missing().await {
        Ok(changes) => Ok(changes),
        Err(err) if err.is_transient() || err.kind() == comind_core::ErrorKind::Timeout => Ok(
            vec![Change::update("container", &spec.name).because(format!(
                "it does not answer yet ({}); `comind up` waits for it",
                err.message()
            ))],
        ),
        Err(err) => Err(err),
    }
}

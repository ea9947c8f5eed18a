//! The lifecycle every service container shares: assess what exists against the
//! desired [`ContainerSpec`], then plan, ensure, destroy, diagnose and wait for it.
//!
//! Plan and ensure work from the same [`Assessment`], so the plan says exactly what
//! ensure does: create the volume, pull the image, create the container (on its old
//! volume if it is still there), replace a container whose spec hash differs (the
//! volume is kept), start a stopped one, unpause a paused one.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use comind_core::environment::{Environment, spec_hash};
use comind_core::phase::Kept;
use comind_core::service::{ClusterTarget, ServiceKind};
use comind_core::wait::{self, Backoff};
use comind_core::{
    Change, Destroyed, Error, ErrorKind, Input, PhaseContext, PhaseId, Result, Secret,
};
use serde::Serialize;

use super::ports::{PublishedPort, check_ports};
use crate::docker::DockerClient;
use crate::docker::archive::{ContainerFile, tar_archive};
use crate::docker::container::{ContainerInfo, RunState};
use crate::network::{NETWORK_PHASE_ID, OUTPUT_NETWORK_ID};

/// Host ports are published on this address only.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// How many log lines the diagnostics of a failed service show.
const LOG_LINES: usize = 25;

/// What kept volumes are reported with.
pub(crate) const KEPT_VOLUME_REASON: &str = "holds data; `comind down --purge` removes it";

/// The desired state of one service container. Everything in it except `name` and
/// the image field is part of the spec hash; none of it is secret: environment values
/// are plain configuration (secrets reach a container only through `files`, whose
/// hash sees only their templates).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ContainerSpec {
    /// The container's name.
    #[serde(skip)]
    pub name: String,
    /// The image reference.
    pub image: String,
    /// The configuration field that sets the image, for hints.
    #[serde(skip)]
    pub image_field: &'static str,
    /// The entrypoint; `None` keeps the image's own. Left out of the hash when unset,
    /// so the specs of containers made before the field existed hash as they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Arguments; `None` keeps the image's own.
    pub cmd: Option<Vec<String>>,
    /// Environment variables (`NAME`, value); never secret.
    pub env: Vec<(String, String)>,
    /// Ports published on 127.0.0.1.
    pub ports: Vec<PublishedPort>,
    /// The network it joins, and its alias there.
    pub network: String,
    pub alias: String,
    /// The named volume holding its data, and where it is mounted.
    pub volume: String,
    pub data_path: String,
    /// Files placed in the container before it starts.
    pub files: Vec<ContainerFile>,
    /// The restart policy.
    pub restart: &'static str,
}

impl ContainerSpec {
    /// The hash of the spec, for the spec-hash label.
    pub(crate) fn hash(&self) -> String {
        spec_hash(self)
    }

    /// (host port, field) pairs, for errors.
    pub(crate) fn port_fields(&self) -> Vec<(u16, &str)> {
        self.ports.iter().map(|p| (p.host, p.field)).collect()
    }

    fn create_body(&self, labels: HashMap<String, String>) -> ContainerCreateBody {
        let port_bindings = self
            .ports
            .iter()
            .map(|p| {
                (
                    format!("{}/tcp", p.container),
                    Some(vec![PortBinding {
                        host_ip: Some(LOOPBACK.to_string()),
                        host_port: Some(p.host.to_string()),
                    }]),
                )
            })
            .collect();
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(
                self.ports
                    .iter()
                    .map(|p| format!("{}/tcp", p.container))
                    .collect(),
            ),
            host_config: Some(HostConfig {
                port_bindings: Some(port_bindings),
                mounts: Some(vec![Mount {
                    target: Some(self.data_path.clone()),
                    source: Some(self.volume.clone()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![self.alias.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }
}

/// One step that ensure takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    CreateVolume,
    PullImage,
    /// Create the container; `true` when its volume already existed.
    CreateContainer(bool),
    /// Remove and create the container, for this reason.
    ReplaceContainer(String),
    /// Start the stopped container, which stopped for this reason.
    StartContainer(String),
    /// Upload the files of a container that has not got them (it was created by a
    /// run that died before uploading, or they were removed), then start it.
    CompleteContainer(String),
    UnpauseContainer,
}

/// Whether an existing container lacks what it needs before it may start.
enum Unfinished {
    /// It has what it needs.
    No,
    /// Upload the files, then start it; for this reason.
    Complete(String),
    /// Replace it (on its volume); for this reason.
    Replace(String),
}

/// What exists, measured against the spec, and the steps that converge it.
#[derive(Debug)]
pub(crate) struct Assessment {
    steps: Vec<Step>,
    container: Option<ContainerInfo>,
}

impl Assessment {
    /// Whether the container runs as specified (its service may still be starting).
    pub(crate) fn in_sync(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether the data volume is to be created, so the service starts empty.
    pub(crate) fn creates_volume(&self) -> bool {
        self.steps.contains(&Step::CreateVolume)
    }

    /// The steps as planned changes.
    pub(crate) fn changes(&self, spec: &ContainerSpec) -> Vec<Change> {
        self.steps
            .iter()
            .map(|step| match step {
                Step::CreateVolume => Change::create("volume", &spec.volume),
                Step::PullImage => {
                    Change::create("image", &spec.image).because("not present locally: pull it")
                }
                Step::CreateContainer(false) => Change::create("container", &spec.name),
                Step::CreateContainer(true) => Change::create("container", &spec.name)
                    .because(format!("on its existing volume {}, data kept", spec.volume)),
                Step::ReplaceContainer(reason) => Change::replace("container", &spec.name)
                    .because(format!("{reason}; volume {} kept", spec.volume)),
                Step::StartContainer(reason) => {
                    Change::update("container", &spec.name).because(format!("start it: {reason}"))
                }
                Step::CompleteContainer(reason) => Change::update("container", &spec.name).because(
                    format!("complete it: {reason}; upload its configuration files, then start it"),
                ),
                Step::UnpauseContainer => {
                    Change::update("container", &spec.name).because("unpause it: it was paused")
                }
            })
            .collect()
    }
}

/// The container side of one service: Docker, the service kind, and the shared
/// lifecycle.
#[derive(Debug, Clone)]
pub(crate) struct ServiceContainer {
    docker: DockerClient,
    component: &'static str,
}

/// The data volume of the service container named `container`.
pub(crate) fn data_volume(container: &str) -> String {
    format!("{container}-data")
}

impl ServiceContainer {
    /// The container of the service `kind`.
    pub(crate) fn new(docker: DockerClient, kind: ServiceKind) -> Self {
        Self::named(docker, kind.id())
    }

    /// The container of `component`, a local-only service of the profile (the
    /// registry).
    pub(crate) fn named(docker: DockerClient, component: &'static str) -> Self {
        ServiceContainer { docker, component }
    }

    /// The component name on labels: the service id.
    pub(crate) fn component(&self) -> &'static str {
        self.component
    }

    /// The Docker client.
    pub(crate) fn docker(&self) -> &DockerClient {
        &self.docker
    }

    /// The container name: `comind-<env>-<service>`.
    pub(crate) fn name(&self, env: &Environment) -> String {
        env.resource_name(self.component())
    }

    /// The data volume name: `comind-<env>-<service>-data`.
    pub(crate) fn volume(&self, env: &Environment) -> String {
        data_volume(&self.name(env))
    }

    /// Where Pods reach the service: the container's address on the environment's
    /// network (which the cluster's nodes join) and `port` inside the container. The
    /// host-side address (a port published on 127.0.0.1) is the host's alone.
    ///
    /// # Errors
    /// `Unavailable` (transient) while the container has no address on the network:
    /// it is not running, or not attached yet.
    pub(crate) async fn cluster_target(
        &self,
        env: &Environment,
        port: u16,
    ) -> Result<ClusterTarget> {
        let name = self.name(env);
        let network = env.config().local_network();
        let resource = format!("container {name}");
        let info = self.docker.container(&name).await?.ok_or_else(|| {
            Error::not_found(format!("container {name} does not exist"))
                .with_resource(resource.clone())
                .with_hint("run `comind up`, which creates it")
        })?;
        let host = info.addresses.get(&network).cloned().ok_or_else(|| {
            Error::unavailable(format!(
                "container {name} has no address on network {network} ({})",
                info.status
            ))
            .with_resource(resource)
            .with_hint("run `comind up`, which starts it and attaches it to the network")
        })?;
        Ok(ClusterTarget { host, port })
    }

    fn not_ours(&self, env: &Environment, what: &str, name: &str) -> Error {
        Error::conflict(format!(
            "a {what} named `{name}` exists but was not created by Comind for the `{}` \
             service of environment `{}`; it is left untouched",
            self.component(),
            env.name()
        ))
        .with_resource(format!("{what} {name}"))
        .with_hint(format!(
            "remove or rename it (`docker {what} rm {name}`) if it is not needed, or use \
             another environment name"
        ))
    }

    /// Checks, before anything in the run changes, that the container and volume
    /// names are not taken by something else and every host port is free or published
    /// by this service's own running container.
    ///
    /// # Errors
    /// `Conflict` for a foreign container or volume; `InvalidInput` for a taken port.
    pub(crate) async fn preflight(&self, ctx: &PhaseContext, spec: &ContainerSpec) -> Result<()> {
        let env = ctx.env();
        let container = self.docker.container(&spec.name).await?;
        if let Some(c) = &container
            && !env.owns(&c.labels, Some(self.component()))
        {
            return Err(self.not_ours(env, "container", &spec.name));
        }
        if container.is_none()
            && let Some(v) = self.docker.volume(&spec.volume).await?
            && !env.owns(&v.labels, Some(self.component()))
        {
            return Err(self.not_ours(env, "volume", &spec.volume));
        }
        let own = container
            .as_ref()
            .map(|c| (c.host_ports.as_slice(), c.state == RunState::Running));
        check_ports(&self.docker, env, &spec.ports, own).await
    }

    /// Measures what exists against `spec`. `replace_because`, when set, forces a
    /// replacement of an existing container (credentials that were regenerated).
    ///
    /// # Errors
    /// When Docker cannot be read, or a container or volume of the same name is not
    /// ours.
    pub(crate) async fn assess(
        &self,
        ctx: &PhaseContext,
        spec: &ContainerSpec,
        replace_because: Option<&str>,
    ) -> Result<Assessment> {
        let env = ctx.env();
        let container = self.docker.container(&spec.name).await?;
        let mut steps = Vec::new();
        let replace = match &container {
            Some(c) if !env.owns(&c.labels, Some(self.component())) => {
                return Err(self.not_ours(env, "container", &spec.name));
            }
            Some(c) => match self.drift(ctx, c, spec, replace_because) {
                Some(reason) => Some(reason),
                None => match self.unfinished(c, spec).await? {
                    Unfinished::Replace(reason) => Some(reason),
                    Unfinished::Complete(reason) => {
                        steps.push(Step::CompleteContainer(reason));
                        return Ok(Assessment { steps, container });
                    }
                    Unfinished::No => {
                        match c.state {
                            // A broken container is never in sync: `drift` replaces it.
                            RunState::Running | RunState::Restarting | RunState::Broken => {}
                            RunState::Paused => steps.push(Step::UnpauseContainer),
                            // `unfinished` completes every container never started.
                            RunState::Stopped | RunState::Created => {
                                steps.push(Step::StartContainer(c.stopped_reason()));
                            }
                        }
                        return Ok(Assessment { steps, container });
                    }
                },
            },
            None => None,
        };
        // A container is to be made: check its volume and image. The image is pulled
        // first, so an image that cannot be pulled leaves nothing behind.
        // Two independent questions to the engine: asked at once.
        let (volume, has_image) = tokio::try_join!(
            self.docker.volume(&spec.volume),
            self.docker.has_image(&spec.image)
        )?;
        let volume_exists = match volume {
            Some(v) if !env.owns(&v.labels, Some(self.component())) => {
                return Err(self.not_ours(env, "volume", &spec.volume));
            }
            Some(_) => true,
            None => false,
        };
        if !has_image {
            steps.push(Step::PullImage);
        }
        if !volume_exists {
            steps.push(Step::CreateVolume);
        }
        steps.push(match replace {
            Some(reason) => Step::ReplaceContainer(reason),
            None => Step::CreateContainer(volume_exists),
        });
        Ok(Assessment { steps, container })
    }

    /// Whether a container of ours lacks what it needs before it may (re)start: its
    /// configuration files, uploaded between create and first start. A run killed in
    /// between leaves a container that was never started; starting it as it is makes
    /// the service crash-loop on the missing files.
    async fn unfinished(
        &self,
        container: &ContainerInfo,
        spec: &ContainerSpec,
    ) -> Result<Unfinished> {
        if spec.files.is_empty() {
            return Ok(Unfinished::No);
        }
        if container.state == RunState::Created {
            // Uploading again is harmless and cheaper than finding out what is there.
            return Ok(Unfinished::Complete(
                "it was created but never started (the run that created it stopped \
                 before configuring it)"
                    .to_string(),
            ));
        }
        if !matches!(container.state, RunState::Stopped | RunState::Restarting) {
            return Ok(Unfinished::No);
        }
        let paths: Vec<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
        let missing = self.docker.missing_files(&container.id, &paths).await?;
        if missing.is_empty() {
            return Ok(Unfinished::No);
        }
        let what = format!(
            "its configuration files are missing ({})",
            missing.join(", ")
        );
        Ok(if container.state == RunState::Restarting {
            // It keeps crashing on them; a running container cannot be completed safely.
            Unfinished::Replace(format!("it keeps restarting: {what}"))
        } else {
            Unfinished::Complete(format!("it is stopped and {what}"))
        })
    }

    /// Why an existing container of ours must be replaced, if it must.
    fn drift(
        &self,
        ctx: &PhaseContext,
        container: &ContainerInfo,
        spec: &ContainerSpec,
        replace_because: Option<&str>,
    ) -> Option<String> {
        if let Some(reason) = replace_because {
            return Some(reason.to_string());
        }
        let label = container
            .labels
            .get(comind_core::environment::LABEL_SPEC_HASH)
            .map(String::as_str);
        if label != Some(spec.hash().as_str()) {
            let mut what = Vec::new();
            if container.image != spec.image {
                what.push(format!("image {} -> {}", container.image, spec.image));
            }
            let mut wanted: Vec<u16> = spec.ports.iter().map(|p| p.host).collect();
            wanted.sort_unstable();
            if container.host_ports != wanted {
                what.push(format!(
                    "host ports {:?} -> {wanted:?}",
                    container.host_ports
                ));
            }
            return Some(if what.is_empty() {
                "its spec changed".to_string()
            } else {
                format!("its spec changed: {}", what.join(", "))
            });
        }
        if container.state == RunState::Broken {
            return Some(format!("it is {} and cannot be started", container.status));
        }
        match container.networks.get(&spec.network) {
            None => Some(format!("it is not attached to network {}", spec.network)),
            Some(id) => match ctx.input(&PhaseId::new(NETWORK_PHASE_ID), OUTPUT_NETWORK_ID) {
                // A network removed and made again under the same name has a new id; a
                // container attached to the old one cannot start.
                Input::Known(current) if current.expose() != id && !id.is_empty() => Some(format!(
                    "network {} was recreated since it was attached",
                    spec.network
                )),
                _ => None,
            },
        }
    }

    /// Converges the container to `spec`; returns what changed.
    ///
    /// # Errors
    /// When Docker refuses a step (a taken port at start, a failed pull).
    pub(crate) async fn ensure(
        &self,
        ctx: &PhaseContext,
        spec: &ContainerSpec,
        replace_because: Option<&str>,
    ) -> Result<Vec<Change>> {
        let assessment = ctx
            .step("inspect", self.assess(ctx, spec, replace_because))
            .await?;
        let changes = assessment.changes(spec);
        let env = ctx.env();
        for step in &assessment.steps {
            ctx.checkpoint()?;
            match step {
                Step::CreateVolume => {
                    ctx.progress(format!("creating volume {}", spec.volume));
                    ctx.step(
                        "volume",
                        self.docker
                            .create_volume(&spec.volume, &env.labels(self.component(), None)),
                    )
                    .await?;
                }
                Step::PullImage => {
                    ctx.step(
                        "image",
                        self.docker.ensure_image(ctx, &spec.image, spec.image_field),
                    )
                    .await?;
                }
                Step::ReplaceContainer(reason) => {
                    ctx.progress(format!("replacing container {} ({reason})", spec.name));
                    if let Some(old) = &assessment.container {
                        ctx.step("remove", self.docker.remove_container(&old.id))
                            .await?;
                    }
                    self.create_and_start(ctx, spec).await?;
                }
                Step::CreateContainer(_) => {
                    ctx.progress(format!("creating container {}", spec.name));
                    self.create_and_start(ctx, spec).await?;
                }
                Step::CompleteContainer(_) => {
                    ctx.progress(format!("completing container {}", spec.name));
                    ctx.step("upload", self.upload_files(&spec.name, spec))
                        .await?;
                    ctx.step(
                        "start",
                        self.docker.start_container(&spec.name, &spec.port_fields()),
                    )
                    .await?;
                }
                Step::StartContainer(_) => {
                    ctx.progress(format!("starting container {}", spec.name));
                    ctx.step(
                        "start",
                        self.docker.start_container(&spec.name, &spec.port_fields()),
                    )
                    .await?;
                }
                Step::UnpauseContainer => {
                    ctx.step("start", self.docker.unpause_container(&spec.name))
                        .await?;
                }
            }
        }
        Ok(changes)
    }

    async fn create_and_start(&self, ctx: &PhaseContext, spec: &ContainerSpec) -> Result<()> {
        let labels = ctx
            .env()
            .labels(self.component(), Some(&spec.hash()))
            .into_iter()
            .collect();
        let id = match ctx
            .step(
                "create",
                self.docker
                    .create_container(&spec.name, spec.create_body(labels)),
            )
            .await
        {
            Ok(id) => id,
            // Another run (one that is dying, or a second one that took the lock after
            // it) created the name since it was read: the retry reads it again and
            // adopts it if it is ours, or stops on it if it is not.
            Err(err) if err.kind() == ErrorKind::Conflict => {
                return Err(Error::conflict(format!(
                    "container {} appeared while this run was creating it",
                    spec.name
                ))
                .with_resource(format!("container {}", spec.name))
                .with_source(err)
                .transient(true));
            }
            Err(err) => return Err(err),
        };
        // A kill -9 from here until the start leaves a container that was never
        // started; the next run completes it (`unfinished`).
        if let Err(err) = ctx.step("upload", self.upload_files(&id, spec)).await {
            // Tidy up when we still can; a later run would complete it anyway.
            let _ = self.docker.remove_container(&id).await;
            return Err(err);
        }
        ctx.step(
            "start",
            self.docker.start_container(&id, &spec.port_fields()),
        )
        .await
    }

    /// Places the spec's files into the container `name` (before it starts).
    async fn upload_files(&self, name: &str, spec: &ContainerSpec) -> Result<()> {
        if spec.files.is_empty() {
            return Ok(());
        }
        self.docker
            .upload_archive(name, tar_archive(&spec.files)?)
            .await
    }

    /// Removes every container of this service in the environment (found by label).
    /// When purging, also its volumes and then its credentials, which protected the
    /// data that is now gone; otherwise the volumes are reported kept.
    ///
    /// # Errors
    /// When something could not be listed or removed.
    pub(crate) async fn destroy(&self, ctx: &PhaseContext, purge: bool) -> Result<Destroyed> {
        let selector = ctx.env().selector(Some(self.component()));
        let mut destroyed = Destroyed::default();
        for container in self.docker.containers_labelled(&selector).await? {
            ctx.progress(format!("removing container {}", container.name));
            if self.docker.remove_container(&container.id).await? {
                destroyed
                    .changes
                    .push(Change::delete("container", container.name));
            }
        }
        for volume in self.docker.volumes_labelled(&selector).await? {
            if purge {
                ctx.progress(format!("removing volume {}", volume.name));
                if self.docker.remove_volume(&volume.name).await? {
                    destroyed
                        .changes
                        .push(Change::delete("volume", volume.name));
                }
            } else {
                destroyed.kept.push(Kept {
                    kind: "volume".to_string(),
                    name: volume.name,
                    reason: KEPT_VOLUME_REASON.to_string(),
                });
            }
        }
        if purge {
            ctx.env().state().remove_credentials(self.component())?;
        }
        Ok(destroyed)
    }

    /// The container's state and the last lines of its log, with `secrets` masked,
    /// for an error message.
    pub(crate) async fn diagnostics(
        &self,
        env: &Environment,
        secrets: &[&Secret],
    ) -> Option<String> {
        let name = self.name(env);
        let container = self.docker.container(&name).await.ok()??;
        let state = match container.state {
            RunState::Running => "running".to_string(),
            RunState::Restarting => "restarting after a crash".to_string(),
            _ => container.stopped_reason(),
        };
        let lines = self
            .docker
            .log_tail(&container.id, LOG_LINES)
            .await
            .unwrap_or_default();
        let mut text = format!("container {name} is {state}; ");
        if lines.is_empty() {
            text.push_str("its log is empty");
        } else {
            text.push_str(&format!("last {} lines of its log:", lines.len()));
            for line in lines {
                text.push_str("\n  | ");
                text.push_str(&mask(&line, secrets));
            }
        }
        Some(text)
    }

    /// Calls `check` with backoff until it succeeds, fails permanently, or `budget`
    /// runs out; on failure the error carries the container's diagnostics, like the
    /// readiness wait of [`ServicePhase`](comind_core::ServicePhase).
    ///
    /// # Errors
    /// `Timeout` with the last error and the log excerpt, or the permanent error.
    pub(crate) async fn wait_until<T, F, Fut>(
        &self,
        ctx: &PhaseContext,
        what: &str,
        budget: &ReadyBudget,
        secrets: &[&Secret],
        check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match wait::until(ctx, what, budget.remaining(), Backoff::READINESS, check).await {
            Ok(value) => Ok(value),
            Err(failed) => {
                let diagnostics = if failed.last.kind() == ErrorKind::Cancelled {
                    None
                } else {
                    self.diagnostics(ctx.env(), secrets).await
                };
                let subject = self.component;
                Err(failed
                    .into_error(subject, budget.total, diagnostics)
                    .with_resource(format!("container {}", self.name(ctx.env()))))
            }
        }
    }
}

/// The time a started container has to answer and be set up: one
/// `local.ready_timeout` from its start, shared by every wait that follows (the
/// first answer, then the setup), so a slow first answer leaves less for the setup
/// instead of doubling the time a broken service is waited for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadyBudget {
    total: Duration,
    started: Instant,
}

impl ReadyBudget {
    /// A budget of `total` from now.
    pub(crate) fn start(total: Duration) -> Self {
        ReadyBudget {
            total,
            started: Instant::now(),
        }
    }

    /// What is left of it, but never less than [`Self::FLOOR`] (or the whole budget,
    /// when that is shorter): a step that starts
    /// with the budget nearly spent (a first answer just before the timeout) still gets
    /// the time to do its work once, instead of a check cut off after a millisecond.
    pub(crate) fn remaining(&self) -> Duration {
        self.total
            .saturating_sub(self.started.elapsed())
            .max(Self::FLOOR.min(self.total))
    }

    /// The least time a wait drawing on the budget gets.
    pub(crate) const FLOOR: Duration = Duration::from_secs(10);
}

/// `line` with every secret replaced by `<redacted>`.
pub(crate) fn mask(line: &str, secrets: &[&Secret]) -> String {
    let mut out = line.to_string();
    for secret in secrets {
        let value = secret.expose();
        if !value.is_empty() {
            out = out.replace(value, comind_core::secret::REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::archive::{Ownership, Template};

    fn spec(password: &str) -> ContainerSpec {
        ContainerSpec {
            name: "comind-dev-cache".into(),
            image: "redis:7".into(),
            image_field: "services.cache.local.image",
            entrypoint: None,
            cmd: Some(vec!["redis-server".into()]),
            env: vec![("A".into(), "b".into())],
            ports: vec![PublishedPort {
                container: 6379,
                host: 6379,
                field: "services.cache.local.port",
            }],
            network: "comind-dev".into(),
            alias: "cache".into(),
            volume: "comind-dev-cache-data".into(),
            data_path: "/data".into(),
            files: vec![ContainerFile {
                path: "/etc/redis.conf".into(),
                file: Ownership {
                    uid: 999,
                    gid: 999,
                    mode: 0o600,
                },
                dir: None,
                content: Template::new()
                    .text("requirepass ")
                    .secret("password", &Secret::new(password)),
            }],
            restart: "unless-stopped",
        }
    }

    #[test]
    fn the_hash_ignores_secret_values_but_not_the_spec() {
        let a = spec("first-password-123");
        let b = spec("other-password-456");
        assert_eq!(a.hash(), b.hash());
        let mut c = spec("first-password-123");
        c.image = "redis:8".into();
        assert_ne!(a.hash(), c.hash());
        let mut d = spec("first-password-123");
        d.ports[0].host = 6380;
        assert_ne!(a.hash(), d.hash());
    }

    #[test]
    fn the_create_body_publishes_on_loopback_and_holds_no_secret() {
        let spec = spec("first-password-123");
        let body = spec.create_body(HashMap::from([("k".into(), "v".into())]));
        let json = serde_json::to_string(&body).unwrap();
        assert!(!json.contains("first-password-123"), "{json}");
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let binding = bindings["6379/tcp"].as_ref().unwrap()[0].clone();
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("6379"));
    }

    #[test]
    fn masking_hides_secrets_in_log_lines() {
        let secret = Secret::new("s3cr3t-value");
        assert_eq!(
            mask("auth with s3cr3t-value failed", &[&secret]),
            "auth with <redacted> failed"
        );
    }

    #[test]
    fn the_readiness_budget_is_spent_by_every_wait_that_draws_on_it() {
        let budget = ReadyBudget::start(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
        let left = budget.remaining();
        assert!(left < Duration::from_secs(60), "{left:?}");
        assert!(left > Duration::from_secs(30), "{left:?}");
        let spent = ReadyBudget {
            total: Duration::from_secs(60),
            started: Instant::now() - Duration::from_secs(61),
        };
        assert_eq!(
            spent.remaining(),
            ReadyBudget::FLOOR,
            "a spent budget keeps its floor"
        );
        let short = ReadyBudget::start(Duration::from_secs(2));
        assert!(
            short.remaining() <= Duration::from_secs(2),
            "never more than the budget"
        );
    }
}

//! The environment's private image registry (`registry`): a CNCF Distribution
//! container like the services' (`comind-<env>-registry`, on the environment network,
//! its data in a named volume that survives `down`, 127.0.0.1 only), with htpasswd
//! authentication from generated credentials.
//!
//! The user pushes to `127.0.0.1:<registry_port>` (`REGISTRY_URL`); the cluster's nodes
//! pull from it by its name on the network (`REGISTRY_CLUSTER_NAME`,
//! `comind-<env>-registry:5000`), with the same credentials, which the cluster phase
//! writes into k3d's registry configuration. The credentials live in the state
//! directory (mode 0600); the container gets only the bcrypt hash, as a file uploaded
//! before it starts. Deleting blobs is enabled, so `comind registry gc` can reclaim the
//! space of untagged images.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use comind_core::environment::Environment;
use comind_core::phase::status_from_plan;
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Error, Outputs, Phase, PhaseContext, PhaseId,
    PhaseStatus, Plan, Result, Secret,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docker::DockerClient;
use crate::docker::archive::{ContainerFile, Ownership, Template};
use crate::network::NETWORK_PHASE_ID;
use crate::services::container::{ContainerSpec, LOOPBACK, ReadyBudget, ServiceContainer};
use crate::services::ports::PublishedPort;

/// The id of the registry phase, and the component name on its labels (core's
/// contract, which the in-cluster layer reads).
pub use comind_core::cluster::REGISTRY_PHASE_ID;
use comind_core::cluster::{
    REGISTRY_CLUSTER_HOST, REGISTRY_CLUSTER_PORT, REGISTRY_CONFIG, REGISTRY_CONFIG_PATH,
};
/// Output: where to push from this machine (`127.0.0.1:<port>`).
pub const OUTPUT_REGISTRY_URL: &str = "REGISTRY_URL";
/// Output: the registry as the cluster's nodes reach it, for image references.
pub const OUTPUT_REGISTRY_CLUSTER_NAME: &str = "REGISTRY_CLUSTER_NAME";
/// Output: the user name.
pub const OUTPUT_REGISTRY_USER: &str = "REGISTRY_USER";
/// Output: the password (a secret).
pub const OUTPUT_REGISTRY_PASSWORD: &str = "REGISTRY_PASSWORD";

/// The port the registry listens on in the container.
pub const REGISTRY_PORT: u16 = 5000;
/// Where the htpasswd file goes.
const HTPASSWD_PATH: &str = "/auth/htpasswd";
/// Where the image's configuration keeps the blobs.
const DATA_PATH: &str = "/var/lib/registry";
/// The user Comind generates.
const USERNAME: &str = "comind";
/// bcrypt's cost: the registry checks the hash on every authenticated request, so
/// this trades a brute-force margin (the password is 32 random characters anyway)
/// against pull latency; htpasswd's own default is 5.
const BCRYPT_COST: u32 = 10;
/// Why an existing container is replaced when the credentials were just generated.
const REGENERATED: &str = "its credentials were regenerated";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The registry's credentials, kept in the state directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    #[serde(with = "comind_core::secret::revealing")]
    pub password: Secret,
    /// The htpasswd line (`user:bcrypt`), computed once: bcrypt is salted, so
    /// hashing again would give another line for the same password.
    #[serde(with = "comind_core::secret::revealing")]
    pub htpasswd: Secret,
}

impl RegistryCredentials {
    fn generate() -> Result<Self> {
        let password = Secret::generate(32)?;
        let hash = bcrypt::hash(password.expose(), BCRYPT_COST)
            .map_err(|e| Error::internal(format!("cannot hash the registry password: {e}")))?;
        Ok(RegistryCredentials {
            username: USERNAME.to_string(),
            htpasswd: Secret::new(format!("{USERNAME}:{hash}")),
            password,
        })
    }

    /// Stand-ins for a plan before any exist: the spec hash does not depend on them.
    fn placeholder() -> Self {
        RegistryCredentials {
            username: USERNAME.to_string(),
            password: Secret::new(""),
            htpasswd: Secret::new(""),
        }
    }
}

/// What a garbage collection of the registry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// How many blobs it deleted.
    pub deleted_blobs: usize,
    /// What the collector printed.
    pub output: String,
}

/// The registry phase (after `network`).
#[derive(Debug, Clone)]
pub struct RegistryPhase {
    container: ServiceContainer,
}

impl RegistryPhase {
    /// The phase, talking to Docker through `docker`.
    pub fn new(docker: DockerClient) -> Self {
        RegistryPhase {
            container: ServiceContainer::named(docker, REGISTRY_PHASE_ID),
        }
    }

    /// The registry's container name, which is also its name on the network.
    pub fn container_name(env: &Environment) -> String {
        env.resource_name(REGISTRY_PHASE_ID)
    }

    /// The named volume that holds the registry's data (kept by `down`), which the
    /// cluster's server nodes also mount for the garbage-collection CronJob.
    pub fn data_volume(env: &Environment) -> String {
        crate::services::container::data_volume(&Self::container_name(env))
    }

    /// `comind-<env>-registry:5000`: how the cluster's nodes reach it.
    pub fn cluster_name(env: &Environment) -> String {
        format!("{}:{REGISTRY_PORT}", Self::container_name(env))
    }

    fn host_port(env: &Environment) -> u16 {
        env.config().local.cluster.registry_port.get()
    }

    fn spec(&self, env: &Environment, credentials: &RegistryCredentials) -> ContainerSpec {
        let htpasswd = Template::new()
            .secret("htpasswd", &credentials.htpasswd)
            .text("\n");
        let settings = |k: &str, v: &str| (k.to_string(), v.to_string());
        ContainerSpec {
            name: self.container.name(env),
            image: env.config().local.cluster.registry_image.to_string(),
            image_field: "local.cluster.registry_image",
            entrypoint: None,
            // The image's entrypoint serves the configuration file it is given (the
            // official images' and the stand-in's alike); Comind's has no blob
            // descriptor cache, which a garbage collection would leave stale.
            cmd: Some(vec![REGISTRY_CONFIG_PATH.to_string()]),
            env: vec![
                settings("REGISTRY_AUTH", "htpasswd"),
                settings("REGISTRY_AUTH_HTPASSWD_REALM", "comind"),
                settings("REGISTRY_AUTH_HTPASSWD_PATH", HTPASSWD_PATH),
            ],
            ports: vec![PublishedPort {
                container: REGISTRY_PORT,
                host: Self::host_port(env),
                field: "local.cluster.registry_port",
            }],
            network: env.config().local_network(),
            alias: REGISTRY_PHASE_ID.to_string(),
            volume: self.container.volume(env),
            data_path: DATA_PATH.to_string(),
            files: vec![
                ContainerFile {
                    path: HTPASSWD_PATH.to_string(),
                    // The registry runs as root in the official image; the file holds a
                    // hash, not the password.
                    file: Ownership {
                        uid: 0,
                        gid: 0,
                        mode: 0o600,
                    },
                    dir: Some(Ownership {
                        uid: 0,
                        gid: 0,
                        mode: 0o700,
                    }),
                    content: htpasswd,
                },
                ContainerFile {
                    path: REGISTRY_CONFIG_PATH.to_string(),
                    file: Ownership {
                        uid: 0,
                        gid: 0,
                        mode: 0o644,
                    },
                    dir: Some(Ownership {
                        uid: 0,
                        gid: 0,
                        mode: 0o755,
                    }),
                    content: Template::new().text(REGISTRY_CONFIG),
                },
            ],
            restart: "unless-stopped",
        }
    }

    /// Deletes what no tag references any more (`registry garbage-collect
    /// --delete-untagged`), in the running registry container. Run it when nothing
    /// pushes: Distribution's collector does not see a push in flight.
    ///
    /// # Errors
    /// `InvalidInput` when `env` has no registry of Comind's (not the local profile
    /// with its cluster); `NotFound` when the registry is not running; `Internal` with
    /// the collector's output when it fails.
    pub async fn garbage_collect(&self, env: &Environment) -> Result<Collected> {
        if !env.config().makes_local_cluster() {
            return Err(Error::invalid_input(format!(
                "environment `{}` has no registry of Comind's: the local profile makes one \
                 with its cluster",
                env.name()
            ))
            .with_hint("select the local profile, with `local.cluster.enabled: true`"));
        }
        let name = self.container.name(env);
        let resource = format!("container {name}");
        match self.container.docker().container(&name).await? {
            Some(info) if info.state == crate::docker::container::RunState::Running => {}
            _ => {
                return Err(
                    Error::not_found(format!("the registry {name} is not running"))
                        .with_resource(resource)
                        .with_hint("run `comind up` first"),
                );
            }
        }
        // The configuration the container serves (the phase uploads it before start).
        let ran = self
            .container
            .docker()
            .exec(
                &name,
                &[
                    "registry",
                    "garbage-collect",
                    "--delete-untagged",
                    REGISTRY_CONFIG_PATH,
                ],
            )
            .await?;
        // A registry nothing was ever pushed to has no repositories directory, and the
        // collector says so as an error: there is nothing to collect.
        let empty =
            ran.output.contains("Path not found") && ran.output.contains("/v2/repositories");
        if ran.exit_code != 0 && empty {
            return Ok(Collected {
                deleted_blobs: 0,
                output: ran.output,
            });
        }
        if ran.exit_code == 0 {
            // Distribution logs one line per blob it removes.
            let deleted_blobs = ran
                .output
                .lines()
                .filter(|l| l.to_lowercase().contains("deleting blob"))
                .count();
            Ok(Collected {
                deleted_blobs,
                output: ran.output,
            })
        } else {
            let tail: Vec<&str> = ran.output.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(Error::internal(format!(
                "the registry's garbage collector failed (exit {}):\n{}",
                ran.exit_code,
                tail.join("\n")
            ))
            .with_resource(resource))
        }
    }

    fn stored(env: &Environment) -> Result<Option<RegistryCredentials>> {
        env.state().stored_credentials(REGISTRY_PHASE_ID)
    }

    fn credentials(env: &Environment) -> Result<RegistryCredentials> {
        Self::stored(env)?.ok_or_else(|| {
            Error::not_found(format!(
                "the registry's credentials are not in the state directory {}",
                env.state().path().display()
            ))
            .with_resource(format!("container {}", Self::container_name(env)))
            .with_hint("run `comind up` to create the registry and its credentials")
        })
    }

    /// The outputs, with where the cluster reaches the container.
    async fn outputs_with_target(
        &self,
        env: &Environment,
        credentials: &RegistryCredentials,
    ) -> Result<Outputs> {
        let target = self.container.cluster_target(env, REGISTRY_PORT).await?;
        let mut outputs = Self::outputs(env, credentials);
        outputs.insert_text(REGISTRY_CLUSTER_HOST, target.host);
        outputs.insert_text(REGISTRY_CLUSTER_PORT, target.port.to_string());
        Ok(outputs)
    }

    fn outputs(env: &Environment, credentials: &RegistryCredentials) -> Outputs {
        Outputs::new()
            .text(
                OUTPUT_REGISTRY_URL,
                format!("{LOOPBACK}:{}", Self::host_port(env)),
            )
            .text(OUTPUT_REGISTRY_CLUSTER_NAME, Self::cluster_name(env))
            .text(OUTPUT_REGISTRY_USER, &credentials.username)
            .secret(OUTPUT_REGISTRY_PASSWORD, credentials.password.clone())
    }

    async fn planned_changes(&self, ctx: &PhaseContext) -> Result<Vec<Change>> {
        let env = ctx.env();
        let (credentials, fresh) = match Self::stored(env)? {
            Some(credentials) => (credentials, false),
            None => (RegistryCredentials::placeholder(), true),
        };
        let spec = self.spec(env, &credentials);
        let assessment = self
            .container
            .assess(ctx, &spec, fresh.then_some(REGENERATED))
            .await?;
        Ok(assessment.changes(&spec))
    }
}

/// `GET /v2/` with `credentials`, as a client of the registry API would: `Ok` on 200,
/// `Unavailable` (transient) while it does not answer or refuses them.
///
/// # Errors
/// As above.
pub async fn probe(port: u16, credentials: &RegistryCredentials, resource: &str) -> Result<()> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        credentials.username,
        credentials.password.expose()
    ));
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nAuthorization: Basic {auth}\r\n\
         Connection: close\r\n\r\n"
    );
    match status_of(port, request.as_bytes()).await {
        Ok(200) => Ok(()),
        Ok(status) => Err(Error::unavailable(format!(
            "the registry answered GET /v2/ with HTTP {status}"
        ))
        .with_resource(resource)),
        Err(e) => Err(
            Error::unavailable(format!("the registry does not answer: {e}"))
                .with_resource(resource),
        ),
    }
}

/// The HTTP status of the answer to `request` on 127.0.0.1:`port`.
async fn status_of(port: u16, request: &[u8]) -> std::io::Result<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((LOOPBACK, port)).await?;
        stream.write_all(request).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        // The status line is all that is needed.
        while !head.contains(&b'\n') {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status line"))
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 3 s"))?
}

#[async_trait]
impl Phase for RegistryPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(REGISTRY_PHASE_ID)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new(NETWORK_PHASE_ID)]
    }

    fn description(&self) -> String {
        "the private image registry".to_string()
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let spec = self.spec(ctx.env(), &RegistryCredentials::placeholder());
        self.container.preflight(ctx, &spec).await
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let changes = self.planned_changes(ctx).await?;
        if !changes.is_empty() {
            return Ok(Plan::changes(changes));
        }
        let env = ctx.env();
        let outputs = self
            .outputs_with_target(env, &Self::credentials(env)?)
            .await?;
        Ok(Plan::in_sync(outputs))
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let env = ctx.env();
        let fresh = !env.state().has_credentials(REGISTRY_PHASE_ID);
        let credentials: RegistryCredentials = env
            .state()
            .credentials(REGISTRY_PHASE_ID, RegistryCredentials::generate)?;
        let spec = self.spec(env, &credentials);
        let changes = self
            .container
            .ensure(ctx, &spec, fresh.then_some(REGENERATED))
            .await?;
        let resource = format!("container {}", spec.name);
        let secrets = [&credentials.password, &credentials.htpasswd];
        self.container
            .wait_until(
                ctx,
                "waiting for the registry to answer GET /v2/",
                &ReadyBudget::start(env.config().local.ready_timeout.get()),
                &secrets,
                || probe(Self::host_port(env), &credentials, &resource),
            )
            .await?;
        Ok(Applied {
            changes,
            outputs: self.outputs_with_target(env, &credentials).await?,
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.container.destroy(ctx, options.purge).await
    }

    async fn status(&self, ctx: &PhaseContext) -> Result<PhaseStatus> {
        let plan = self.plan(ctx).await?;
        let mut status = status_from_plan(plan);
        if status.outputs.is_some() {
            let env = ctx.env();
            let resource = format!("container {}", Self::container_name(env));
            if let Err(err) = probe(Self::host_port(env), &Self::credentials(env)?, &resource).await
            {
                status.health = comind_core::Health::Degraded;
                status.detail = format!("not answering GET /v2/: {err}");
                status.outputs = None;
            }
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_htpasswd_line_verifies_the_password_and_never_holds_it() {
        let credentials = RegistryCredentials::generate().unwrap();
        let line = credentials.htpasswd.expose();
        let (user, hash) = line.split_once(':').unwrap();
        assert_eq!(user, USERNAME);
        assert!(hash.starts_with("$2"), "a bcrypt hash: {hash}");
        assert!(!line.contains(credentials.password.expose()));
        assert!(bcrypt::verify(credentials.password.expose(), hash).unwrap());
    }

    #[test]
    fn the_spec_holds_no_secret_and_does_not_change_with_the_credentials() {
        let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        let phase = RegistryPhase::new(DockerClient::for_config(env.config()));
        let one = RegistryCredentials::generate().unwrap();
        let spec = phase.spec(&env, &one);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains(one.password.expose()));
        assert!(!json.contains(one.htpasswd.expose()));
        let other = phase.spec(&env, &RegistryCredentials::placeholder());
        assert_eq!(spec.hash(), other.hash());
        assert_eq!(spec.ports[0].host, 5000);
        assert_eq!(
            RegistryPhase::cluster_name(&env),
            "comind-dev-registry:5000"
        );
    }
}

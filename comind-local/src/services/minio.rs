//! MinIO (the `object-store` service) in a container: an S3 API and a console, the
//! configured buckets created through the S3 API.
//!
//! The root credentials are generated and reach MinIO as a file,
//! `/etc/minio/config.env` (`MINIO_ROOT_USER`, `MINIO_ROOT_PASSWORD`), named by
//! `MINIO_CONFIG_ENV_FILE` and uploaded before the container starts (mode 0600,
//! root: MinIO runs as root in its image). The container runs `server /data
//! --console-address :9001`; the API (9000) and console (9001) are published on the
//! configured host ports. Buckets are named `comind-<env>-<bucket>`. The probe is
//! `ListBuckets`.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use comind_core::environment::Environment;
use comind_core::reconcile::{Mode, Pass};
use comind_core::service::{ClusterTarget, ObjectStoreEndpoint, ServiceEndpoint, ServiceKind};
use comind_core::state::Credentials;
use comind_core::{
    Change, DestroyOptions, Destroyed, PhaseContext, PhaseId, Result, Secret, ServiceBackend,
};

use super::container::{ContainerSpec, LOOPBACK, ReadyBudget, ServiceContainer};
use super::ports::PublishedPort;
use super::sdk::{ClientCache, REGION, error_code, s3_client, sdk_error};
use crate::docker::DockerClient;
use crate::docker::archive::{ContainerFile, Ownership, Template};

/// The S3 API port in the container.
pub const MINIO_API_PORT: u16 = 9000;
/// The console port in the container.
pub const MINIO_CONSOLE_PORT: u16 = 9001;
/// The file holding the root credentials.
pub const MINIO_CONFIG_ENV_FILE: &str = "/etc/minio/config.env";
const DATA_PATH: &str = "/data";
/// The root user's name (MinIO wants at least 3 characters).
const ROOT_USER: &str = "comind-root";

/// MinIO (the `object-store` service) as a Docker container.
#[derive(Debug)]
pub struct MinioBackend {
    container: ServiceContainer,
    ready_timeout: Duration,
    clients: ClientCache<aws_sdk_s3::Client>,
}

impl MinioBackend {
    /// The backend for `env`, talking to Docker through `docker`; its readiness
    /// timeout is `local.ready_timeout`.
    pub fn new(docker: DockerClient, env: &Environment) -> Self {
        MinioBackend {
            container: ServiceContainer::new(docker, ServiceKind::ObjectStore),
            ready_timeout: super::ready_timeout(env),
            clients: ClientCache::default(),
        }
    }

    /// Overrides how long the service may take to answer after starting.
    #[must_use]
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn component(&self) -> &'static str {
        self.container.component()
    }

    fn spec(&self, env: &Environment, credentials: &Credentials) -> ContainerSpec {
        let settings = &env.config().services.object_store.local;
        let config = Template::new()
            .text(format!(
                "# Written by Comind when the container was created.\n\
                 MINIO_ROOT_USER={}\n\
                 MINIO_ROOT_PASSWORD=",
                credentials.username
            ))
            .secret("root-password", &credentials.password)
            .text("\n");
        ContainerSpec {
            name: self.container.name(env),
            image: settings.image.to_string(),
            image_field: "services.object_store.local.image",
            entrypoint: None,
            cmd: Some(
                ["server", DATA_PATH, "--console-address", ":9001"]
                    .map(str::to_string)
                    .to_vec(),
            ),
            env: vec![(
                "MINIO_CONFIG_ENV_FILE".to_string(),
                MINIO_CONFIG_ENV_FILE.to_string(),
            )],
            ports: vec![
                PublishedPort {
                    container: MINIO_API_PORT,
                    host: settings.port.get(),
                    field: "services.object_store.local.port",
                },
                PublishedPort {
                    container: MINIO_CONSOLE_PORT,
                    host: settings.console_port.get(),
                    field: "services.object_store.local.console_port",
                },
            ],
            network: env.config().local_network(),
            alias: self.component().to_string(),
            volume: self.container.volume(env),
            data_path: DATA_PATH.to_string(),
            files: vec![ContainerFile {
                path: MINIO_CONFIG_ENV_FILE.to_string(),
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
                content: config,
            }],
            restart: "unless-stopped",
        }
    }

    fn endpoint_url(env: &Environment) -> String {
        format!(
            "http://{LOOPBACK}:{}",
            env.config().services.object_store.local.port.get()
        )
    }

    /// (name in comind.yaml, real bucket name) of every configured bucket.
    fn buckets(env: &Environment) -> Vec<(String, String)> {
        env.config()
            .services
            .object_store
            .buckets
            .iter()
            .map(|b| (b.to_string(), env.resource_name(b.as_str())))
            .collect()
    }

    fn client(&self, env: &Environment, credentials: &Credentials) -> aws_sdk_s3::Client {
        let endpoint = Self::endpoint_url(env);
        self.clients.get(
            &endpoint,
            &credentials.username,
            &credentials.password,
            || s3_client(&endpoint, &credentials.username, &credentials.password),
        )
    }

    fn credentials(&self, env: &Environment) -> Result<Credentials> {
        super::stored(env, self.component())?
            .ok_or_else(|| super::no_credentials(env, self.component()))
    }

    /// Names of the buckets that exist.
    async fn existing_buckets(
        &self,
        env: &Environment,
        credentials: &Credentials,
    ) -> Result<BTreeSet<String>> {
        let resource = format!("container {}", self.container.name(env));
        let listed = self
            .client(env, credentials)
            .list_buckets()
            .send()
            .await
            .map_err(|e| sdk_error("list buckets", &resource, e))?;
        Ok(listed
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_string))
            .collect())
    }

    /// Creates the configured buckets that are missing (or, on a planning pass, says
    /// which would be). Idempotent; each call is a pass of its own from live state.
    async fn converge_buckets(
        &self,
        env: &Environment,
        credentials: &Credentials,
        mode: Mode,
    ) -> Result<Vec<Change>> {
        let existing = self.existing_buckets(env, credentials).await?;
        let mut pass = Pass::new(mode);
        for (name, bucket) in Self::buckets(env) {
            if existing.contains(&bucket) {
                continue;
            }
            if pass.will(Change::create("bucket", &bucket)) {
                let created = self
                    .client(env, credentials)
                    .create_bucket()
                    .bucket(&bucket)
                    .send()
                    .await;
                if let Err(err) = created {
                    let code = error_code(&err).unwrap_or_default();
                    if code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
                        return Err(sdk_error("create", &format!("bucket {bucket}"), err)
                            .with_hint(format!(
                                "check `services.object_store.buckets` (`{name}`) in \
                                 comind.yaml"
                            )));
                    }
                }
            }
        }
        Ok(pass.into_changes())
    }
}

fn placeholder() -> Credentials {
    Credentials {
        username: ROOT_USER.to_string(),
        password: Secret::new(""),
    }
}

/// Why an existing container is replaced when the credentials were just generated:
/// its configuration file holds the old ones.
const REGENERATED: &str = "its root credentials were regenerated";

impl MinioBackend {
    /// The planning pass: reads only, with placeholder credentials when none are
    /// stored yet.
    async fn plan(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let stored = super::stored::<Credentials>(env, self.component())?;
        let fresh = stored.is_none();
        let credentials = stored.unwrap_or_else(placeholder);
        let spec = self.spec(env, &credentials);
        let assessment = self
            .container
            .assess(ctx, &spec, fresh.then_some(REGENERATED))
            .await?;
        let mut changes = assessment.changes(&spec);
        let everything = Self::buckets(env)
            .into_iter()
            .map(|(_, bucket)| Change::create("bucket", bucket))
            .collect();
        changes.extend(
            super::planned_contents(&assessment, &spec, everything, || {
                self.converge_buckets(env, &credentials, Mode::Plan)
            })
            .await?,
        );
        pass.record(changes);
        Ok(())
    }

    /// The applying pass: credentials are generated once, the container is made and
    /// started, then its contents converge once it answers.
    async fn ensure(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let (credentials, fresh) =
            super::stored_or_generated(env, self.component(), || Credentials::generate(ROOT_USER))?;
        let spec = self.spec(env, &credentials);
        let mut changes = self
            .container
            .ensure(ctx, &spec, fresh.then_some(REGENERATED))
            .await?;
        ctx.checkpoint()?;
        // The first answer and the setup share one readiness timeout.
        let budget = ReadyBudget::start(self.ready_timeout);
        ctx.step(
            "first_answer",
            self.container.wait_until(
                ctx,
                "waiting for the S3 API to answer",
                &budget,
                &[&credentials.password],
                || self.existing_buckets(env, &credentials),
            ),
        )
        .await?;
        let buckets = ctx
            .step(
                "setup",
                self.container.wait_until(
                    ctx,
                    "waiting for the S3 API to create the buckets",
                    &budget,
                    &[&credentials.password],
                    || self.converge_buckets(env, &credentials, Mode::Apply),
                ),
            )
            .await?;
        changes.extend(buckets);
        pass.record(changes);
        Ok(())
    }
}

#[async_trait]
impl ServiceBackend for MinioBackend {
    fn kind(&self) -> ServiceKind {
        ServiceKind::ObjectStore
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        super::network_dependency()
    }

    fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let spec = self.spec(ctx.env(), &placeholder());
        self.container.preflight(ctx, &spec).await
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        // Planning cannot generate credentials or wait for the container, so the two
        // modes take their own route to the container; what lives inside it is
        // converged by one function on the same pass.
        if pass.is_apply() {
            self.ensure(ctx, pass).await
        } else {
            self.plan(ctx, pass).await
        }
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        self.existing_buckets(env, &credentials).await.map(|_| ())
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        Ok(ServiceEndpoint::ObjectStore(ObjectStoreEndpoint {
            endpoint_url: Self::endpoint_url(env),
            region: REGION.to_string(),
            credentials: Some((credentials.username, credentials.password)),
            path_style: true,
            buckets: Self::buckets(env),
        }))
    }

    async fn cluster_target(
        &self,
        ctx: &PhaseContext,
        _endpoint: &ServiceEndpoint,
    ) -> Result<ClusterTarget> {
        self.container
            .cluster_target(ctx.env(), MINIO_API_PORT)
            .await
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.container.destroy(ctx, options.purge).await
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        let credentials = self.credentials(ctx.env()).ok();
        let secrets: Vec<&Secret> = credentials.iter().map(|c| &c.password).collect();
        self.container.diagnostics(ctx.env(), &secrets).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_prefixed_with_the_environment() {
        let env =
            comind_core::Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        assert_eq!(
            MinioBackend::buckets(&env),
            vec![
                ("backups".to_string(), "comind-dev-backups".to_string()),
                ("uploads".to_string(), "comind-dev-uploads".to_string()),
            ]
        );
    }

    #[test]
    fn no_secret_reaches_the_spec_hash_or_environment() {
        let env =
            comind_core::Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        let backend = MinioBackend::new(DockerClient::new("unix:///nonexistent"), &env);
        let credentials = Credentials {
            username: ROOT_USER.into(),
            password: Secret::new("very-secret-root-password"),
        };
        let spec = backend.spec(&env, &credentials);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("very-secret-root-password"), "{json}");
        assert_eq!(spec.hash(), backend.spec(&env, &placeholder()).hash());
    }
}

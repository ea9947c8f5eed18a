//! Redis in a container, password-protected (the seed ran it without auth; Comind
//! does not), persisting to its volume with the append-only file.
//!
//! The configuration file, with `requirepass`, is uploaded to
//! `/usr/local/etc/redis/redis.conf` before the container starts (mode 0600, owned by
//! the image's `redis` user, uid 999 in both the alpine and the Debian images), and
//! the container runs `redis-server /usr/local/etc/redis/redis.conf`. The probe is
//! `AUTH` and `PING`.

use std::time::Duration;

use async_trait::async_trait;
use comind_core::environment::Environment;
use comind_core::reconcile::Pass;
use comind_core::service::{CacheEndpoint, ClusterTarget, ServiceEndpoint, ServiceKind};
use comind_core::state::Credentials;
use comind_core::{
    DestroyOptions, Destroyed, Error, PhaseContext, PhaseId, Result, Secret, ServiceBackend,
};
use redis::IntoConnectionInfo;

use super::container::{ContainerSpec, LOOPBACK, ServiceContainer};
use super::ports::PublishedPort;
use crate::docker::DockerClient;
use crate::docker::archive::{ContainerFile, Ownership, Template};

/// The port Redis listens on in the container.
pub const REDIS_PORT: u16 = 6379;
/// Where the configuration file is placed.
pub const REDIS_CONFIG_PATH: &str = "/usr/local/etc/redis/redis.conf";
/// Where the data volume is mounted (the image's working directory).
const DATA_PATH: &str = "/data";
/// The uid and gid of `redis` in the official images.
const REDIS_UID: u64 = 999;
/// Redis's built-in user, the one `requirepass` protects.
const USERNAME: &str = "default";

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Redis (the `cache` service) as a Docker container.
#[derive(Debug, Clone)]
pub struct RedisBackend {
    container: ServiceContainer,
    ready_timeout: Duration,
}

impl RedisBackend {
    /// The backend for `env`, talking to Docker through `docker`; its readiness
    /// timeout is `local.ready_timeout`.
    pub fn new(docker: DockerClient, env: &Environment) -> Self {
        RedisBackend {
            container: ServiceContainer::new(docker, ServiceKind::Cache),
            ready_timeout: super::ready_timeout(env),
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
        let settings = &env.config().services.cache.local;
        let config = Template::new()
            .text(
                "# Written by Comind when the container was created.\n\
                 bind 0.0.0.0\n\
                 port 6379\n\
                 dir /data\n\
                 appendonly yes\n\
                 requirepass ",
            )
            .secret("password", &credentials.password)
            .text("\n");
        ContainerSpec {
            name: self.container.name(env),
            image: settings.image.to_string(),
            image_field: "services.cache.local.image",
            entrypoint: None,
            cmd: Some(vec![
                "redis-server".to_string(),
                REDIS_CONFIG_PATH.to_string(),
            ]),
            env: Vec::new(),
            ports: vec![PublishedPort {
                container: REDIS_PORT,
                host: settings.port.get(),
                field: "services.cache.local.port",
            }],
            network: env.config().local_network(),
            alias: self.component().to_string(),
            volume: self.container.volume(env),
            data_path: DATA_PATH.to_string(),
            files: vec![ContainerFile {
                path: REDIS_CONFIG_PATH.to_string(),
                file: Ownership {
                    uid: REDIS_UID,
                    gid: REDIS_UID,
                    mode: 0o600,
                },
                dir: Some(Ownership {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                }),
                content: config,
            }],
            restart: "unless-stopped",
        }
    }

    /// The stored password, or a placeholder when none exists yet (plan only: the
    /// spec hash does not depend on it).
    fn planned_credentials(&self, env: &Environment) -> Result<(Credentials, bool)> {
        Ok(match super::stored::<Credentials>(env, self.component())? {
            Some(credentials) => (credentials, false),
            None => (placeholder(), true),
        })
    }

    fn credentials(&self, env: &Environment) -> Result<Credentials> {
        super::stored(env, self.component())?
            .ok_or_else(|| super::no_credentials(env, self.component()))
    }
}

fn placeholder() -> Credentials {
    Credentials {
        username: USERNAME.to_string(),
        password: Secret::new(""),
    }
}

/// Why an existing container is replaced when the password was just generated: its
/// configuration file holds the old one.
const REGENERATED: &str = "its password was regenerated";

impl RedisBackend {
    /// The planning pass: reads only, with placeholder credentials when none are
    /// stored yet.
    async fn plan(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let (credentials, fresh) = self.planned_credentials(ctx.env())?;
        let spec = self.spec(ctx.env(), &credentials);
        let assessment = self
            .container
            .assess(ctx, &spec, fresh.then_some(REGENERATED))
            .await?;
        pass.record(assessment.changes(&spec));
        Ok(())
    }

    /// The applying pass: credentials are generated once, the container is made and
    /// started, then its contents converge once it answers.
    async fn ensure(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let (credentials, fresh) =
            super::stored_or_generated(env, self.component(), || Credentials::generate(USERNAME))?;
        let spec = self.spec(env, &credentials);
        let changes = self
            .container
            .ensure(ctx, &spec, fresh.then_some(REGENERATED))
            .await?;
        pass.record(changes);
        Ok(())
    }
}

#[async_trait]
impl ServiceBackend for RedisBackend {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Cache
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
        let port = env.config().services.cache.local.port.get();
        ping(port, &credentials.password, &self.container.name(env)).await
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        Ok(ServiceEndpoint::Cache(CacheEndpoint {
            host: LOOPBACK.to_string(),
            port: env.config().services.cache.local.port.get(),
            password: credentials.password,
            tls: false,
        }))
    }

    async fn cluster_target(
        &self,
        ctx: &PhaseContext,
        _endpoint: &ServiceEndpoint,
    ) -> Result<ClusterTarget> {
        self.container.cluster_target(ctx.env(), REDIS_PORT).await
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

/// `AUTH` with `password`, then `PING`, on 127.0.0.1:`port`.
async fn ping(port: u16, password: &Secret, container: &str) -> Result<()> {
    let resource = format!("container {container}");
    let info = redis::ConnectionAddr::Tcp(LOOPBACK.to_string(), port)
        .into_connection_info()
        .map_err(|e| redis_error("connect to Redis", &resource, &e))?
        .set_redis_settings(redis::RedisConnectionInfo::default().set_password(password.expose()));
    let client =
        redis::Client::open(info).map_err(|e| redis_error("connect to Redis", &resource, &e))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PROBE_TIMEOUT))
        .set_response_timeout(Some(PROBE_TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| redis_error("connect to Redis and AUTH", &resource, &e))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .map_err(|e| redis_error("PING Redis", &resource, &e))?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(
            Error::unavailable(format!("Redis answered PING with `{pong}`"))
                .with_resource(resource),
        )
    }
}

/// Wrong or missing password: permission, permanent. Loading the dataset, refused,
/// dropped or timed-out connections: unavailable, transient.
fn redis_error(action: &str, resource: &str, err: &redis::RedisError) -> Error {
    let message = format!("cannot {action}: {err}");
    let code = err.code().unwrap_or_default();
    let error = if err.kind() == redis::ErrorKind::AuthenticationFailed
        || code == "WRONGPASS"
        || code == "NOAUTH"
    {
        Error::permission(message).with_hint(
            "Redis refused the password in the state directory; `comind up` recreates the \
             container with it when it was regenerated",
        )
    } else if code == "LOADING"
        || err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
    {
        Error::unavailable(message)
    } else {
        Error::internal(message)
    };
    error.with_resource(resource)
}

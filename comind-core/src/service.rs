//! Service backends: one platform service on one provider.
//!
//! A [`ServiceBackend`] reconciles its service (one function for plan and apply, on a
//! [`Pass`]), probes it over its own protocol, reports its [`ServiceEndpoint`] and
//! destroys it. [`ServicePhase`] wraps a backend as a [`Phase`]: plan is a planning
//! pass; apply is an applying pass, then a wait until the probe passes, then the
//! endpoint's outputs.
//!
//! Endpoints are typed per service kind and turned into outputs in one place, so a
//! local and an AWS backend of the same kind hand applications the same keys
//! (`DATABASE_URL`, `REDIS_URL`, `S3_BUCKET_<NAME>`, `SQS_QUEUE_URL_<NAME>`): the
//! local/cloud parity the platform promises.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::output::{Outputs, key_suffix};
use crate::phase::{
    Action, Applied, Change, DestroyOptions, Destroyed, Health, Phase, PhaseContext, PhaseId,
    PhaseStatus, Plan,
};
use crate::reconcile::Pass;
use crate::secret::Secret;
use crate::wait::{self, Backoff};

mod in_cluster;
pub use in_cluster::ClusterTarget;

/// The kinds of platform service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// PostgreSQL.
    Postgres,
    /// S3-compatible object storage.
    ObjectStore,
    /// Redis.
    Cache,
    /// SQS-compatible queues.
    Queue,
}

impl ServiceKind {
    /// Every kind.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Postgres,
        ServiceKind::ObjectStore,
        ServiceKind::Cache,
        ServiceKind::Queue,
    ];

    /// The phase id and component name of the service.
    pub fn id(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "postgres",
            ServiceKind::ObjectStore => "object-store",
            ServiceKind::Cache => "cache",
            ServiceKind::Queue => "queue",
        }
    }

    /// The kind whose [`id`](Self::id) is `id` (`object_store` is taken for
    /// `object-store`, as in `comind.yaml`).
    pub fn from_id(id: &str) -> Option<Self> {
        let id = id.replace('_', "-");
        Self::ALL.into_iter().find(|k| k.id() == id)
    }

    /// Output keys every backend of this kind must publish.
    pub fn required_outputs(self) -> &'static [&'static str] {
        match self {
            ServiceKind::Postgres => &[
                "DATABASE_URL",
                "POSTGRES_HOST",
                "POSTGRES_PORT",
                "POSTGRES_USER",
                "POSTGRES_PASSWORD",
                "POSTGRES_DATABASES",
            ],
            ServiceKind::ObjectStore => &["S3_ENDPOINT", "S3_REGION", "S3_BUCKETS"],
            ServiceKind::Cache => &["REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"],
            ServiceKind::Queue => &["SQS_ENDPOINT", "SQS_REGION", "SQS_QUEUES"],
        }
    }

    /// Output keys that must be secrets.
    pub fn secret_outputs(self) -> &'static [&'static str] {
        match self {
            ServiceKind::Postgres => &["DATABASE_URL", "POSTGRES_PASSWORD"],
            ServiceKind::ObjectStore => &["S3_SECRET_ACCESS_KEY"],
            ServiceKind::Cache => &["REDIS_URL", "REDIS_PASSWORD"],
            ServiceKind::Queue => &["SQS_SECRET_ACCESS_KEY"],
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// How to reach a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresEndpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Application role.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// Databases, the first being the default.
    pub databases: Vec<String>,
    /// Whether clients must use TLS (`sslmode=require`).
    pub require_tls: bool,
}

/// How to reach S3-compatible storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStoreEndpoint {
    /// The S3 endpoint URL.
    pub endpoint_url: String,
    /// Region.
    pub region: String,
    /// Static credentials, where the service uses them (local); on AWS applications use
    /// their workload identity instead.
    pub credentials: Option<(String, Secret)>,
    /// Whether clients must use path-style addressing.
    pub path_style: bool,
    /// Buckets: (name in `comind.yaml`, real bucket name).
    pub buckets: Vec<(String, String)>,
}

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEndpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The password (Redis `AUTH`).
    pub password: Secret,
    /// Whether clients must use TLS (`rediss://`).
    pub tls: bool,
}

/// One queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The name in `comind.yaml`.
    pub name: String,
    /// The queue URL.
    pub url: String,
    /// The dead-letter queue URL.
    pub dlq_url: String,
}

/// How to reach SQS-compatible queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEndpoint {
    /// The SQS endpoint URL.
    pub endpoint_url: String,
    /// Region.
    pub region: String,
    /// Static credentials, where the service uses them (local).
    pub credentials: Option<(String, Secret)>,
    /// The queues.
    pub queues: Vec<QueueInfo>,
}

/// Where a service is and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEndpoint {
    /// PostgreSQL.
    Postgres(PostgresEndpoint),
    /// Object storage.
    ObjectStore(ObjectStoreEndpoint),
    /// Redis.
    Cache(CacheEndpoint),
    /// Queues.
    Queue(QueueEndpoint),
}

impl ServiceEndpoint {
    /// The kind of service.
    pub fn kind(&self) -> ServiceKind {
        match self {
            ServiceEndpoint::Postgres(_) => ServiceKind::Postgres,
            ServiceEndpoint::ObjectStore(_) => ServiceKind::ObjectStore,
            ServiceEndpoint::Cache(_) => ServiceKind::Cache,
            ServiceEndpoint::Queue(_) => ServiceKind::Queue,
        }
    }

    /// The standard outputs of this endpoint.
    pub fn to_outputs(&self) -> Outputs {
        let mut out = Outputs::new();
        match self {
            ServiceEndpoint::Postgres(pg) => {
                let tls = if pg.require_tls {
                    "?sslmode=require"
                } else {
                    ""
                };
                let url = |db: &str| {
                    Secret::new(format!(
                        "postgres://{}:{}@{}:{}/{db}{tls}",
                        pg.username,
                        pg.password.expose(),
                        pg.host,
                        pg.port
                    ))
                };
                out.insert_text("POSTGRES_HOST", &pg.host);
                out.insert_text("POSTGRES_PORT", pg.port.to_string());
                out.insert_text("POSTGRES_USER", &pg.username);
                out.insert_secret("POSTGRES_PASSWORD", pg.password.clone());
                out.insert_text("POSTGRES_DATABASES", pg.databases.join(","));
                if let Some(first) = pg.databases.first() {
                    out.insert_secret("DATABASE_URL", url(first));
                }
                for db in &pg.databases {
                    out.insert_secret(format!("DATABASE_URL_{}", key_suffix(db)), url(db));
                }
            }
            ServiceEndpoint::ObjectStore(s3) => {
                out.insert_text("S3_ENDPOINT", &s3.endpoint_url);
                out.insert_text("S3_REGION", &s3.region);
                out.insert_text("S3_FORCE_PATH_STYLE", s3.path_style.to_string());
                if let Some((key, secret)) = &s3.credentials {
                    out.insert_text("S3_ACCESS_KEY_ID", key);
                    out.insert_secret("S3_SECRET_ACCESS_KEY", secret.clone());
                }
                let names: Vec<&str> = s3.buckets.iter().map(|(_, real)| real.as_str()).collect();
                out.insert_text("S3_BUCKETS", names.join(","));
                for (name, real) in &s3.buckets {
                    out.insert_text(format!("S3_BUCKET_{}", key_suffix(name)), real);
                }
            }
            ServiceEndpoint::Cache(redis) => {
                let scheme = if redis.tls { "rediss" } else { "redis" };
                out.insert_text("REDIS_HOST", &redis.host);
                out.insert_text("REDIS_PORT", redis.port.to_string());
                out.insert_secret("REDIS_PASSWORD", redis.password.clone());
                out.insert_secret(
                    "REDIS_URL",
                    Secret::new(format!(
                        "{scheme}://:{}@{}:{}/0",
                        redis.password.expose(),
                        redis.host,
                        redis.port
                    )),
                );
            }
            ServiceEndpoint::Queue(sqs) => {
                out.insert_text("SQS_ENDPOINT", &sqs.endpoint_url);
                out.insert_text("SQS_REGION", &sqs.region);
                if let Some((key, secret)) = &sqs.credentials {
                    out.insert_text("SQS_ACCESS_KEY_ID", key);
                    out.insert_secret("SQS_SECRET_ACCESS_KEY", secret.clone());
                }
                let names: Vec<&str> = sqs.queues.iter().map(|q| q.name.as_str()).collect();
                out.insert_text("SQS_QUEUES", names.join(","));
                for queue in &sqs.queues {
                    let suffix = key_suffix(&queue.name);
                    out.insert_text(format!("SQS_QUEUE_URL_{suffix}"), &queue.url);
                    out.insert_text(format!("SQS_DLQ_URL_{suffix}"), &queue.dlq_url);
                }
            }
        }
        out
    }
}

/// One platform service on one provider.
///
/// Every implementation must pass `testing::conformance::service_suite` (crate
/// feature `testing`): reconcile twice changes nothing the second time, a plan lists
/// what the applying pass then does, the probe passes after apply, outputs are complete and secrets redacted, destroy removes
/// what was created and keeps data unless purging, destroy twice is harmless.
///
#[async_trait]
pub trait ServiceBackend: Send + Sync + 'static {
    /// The kind of service.
    fn kind(&self) -> ServiceKind;

    /// The phase id; by default the kind's id.
    fn id(&self) -> PhaseId {
        PhaseId::new(self.kind().id())
    }

    /// Phases this service needs first (a network).
    fn dependencies(&self) -> Vec<PhaseId> {
        Vec::new()
    }

    /// How long the service may take to pass its probe after `ensure`.
    fn ready_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    /// Checks before anything in the run changes (a host port taken by another
    /// program).
    ///
    /// # Errors
    /// What is in the way and how to fix it.
    async fn preflight(&self, _ctx: &PhaseContext) -> Result<()> {
        Ok(())
    }

    /// Creates or repairs the service, idempotently, as one [`Pass`]: every change is
    /// recorded with [`Pass::will`] and made only when that returns `true`. A planning
    /// pass reads live state and changes nothing, so the plan lists exactly what an
    /// applying pass of the same state does. It need not wait for readiness: the phase
    /// polls [`probe`](ServiceBackend::probe) afterwards.
    ///
    /// # Errors
    /// When live state cannot be read, or the service cannot be created or repaired.
    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()>;

    /// Talks to the service over its own protocol with the generated credentials.
    ///
    /// # Errors
    /// Transient while the service starts; permanent when it cannot succeed.
    async fn probe(&self, ctx: &PhaseContext) -> Result<()>;

    /// Where the service is and how to use it.
    ///
    /// # Errors
    /// When it cannot be discovered.
    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint>;

    /// Where Pods in the environment's cluster connect to reach the service, given
    /// its [`endpoint`](ServiceBackend::endpoint). By default the endpoint's own
    /// address (a managed service's); a backend whose clients reach it at another
    /// address than Pods do (a container's port published on the host's loopback)
    /// gives the address Pods use.
    ///
    /// # Errors
    /// When it cannot be discovered.
    async fn cluster_target(
        &self,
        _ctx: &PhaseContext,
        endpoint: &ServiceEndpoint,
    ) -> Result<ClusterTarget> {
        ClusterTarget::of(endpoint)
    }

    /// Removes the service, keeping data unless `options.purge`.
    ///
    /// # Errors
    /// When something could not be removed.
    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed>;

    /// Why this plan is incomplete, when it depends on outputs of a dependency that are
    /// known only after apply (check [`PhaseContext::input`] for
    /// [`Input::KnownAfterApply`](crate::Input::KnownAfterApply)); `None` when the plan
    /// is complete.
    fn deferred(&self, _ctx: &PhaseContext) -> Option<String> {
        None
    }

    /// Extra context for an error, such as the last lines of a container's log. Must
    /// not contain secrets.
    async fn diagnostics(&self, _ctx: &PhaseContext) -> Option<String> {
        None
    }
}

/// A [`ServiceBackend`] run as a [`Phase`].
pub struct ServicePhase<B: ?Sized> {
    backend: std::sync::Arc<B>,
    timeout: Option<Duration>,
    enabled: bool,
}

impl<B: ServiceBackend + ?Sized> ServicePhase<B> {
    /// Wraps `backend`.
    pub fn new(backend: std::sync::Arc<B>) -> Self {
        ServicePhase {
            backend,
            timeout: None,
            enabled: true,
        }
    }

    /// Wraps the backend of a service the configuration disables. Its desired state is
    /// "absent": `up` removes what an earlier run created (keeping data, as a plain
    /// `down` does), and `down` still finds and removes it, so turning a service off
    /// never leaves resources that nothing manages. It publishes no outputs and has no
    /// preflight checks.
    pub fn disabled(backend: std::sync::Arc<B>) -> Self {
        ServicePhase {
            enabled: false,
            ..Self::new(backend)
        }
    }

    /// Whether the configuration enables the service.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether anything of a disabled service is running: when nothing runs, its plan
    /// asks only to create (everything, or the container on kept data).
    async fn is_running(&self, ctx: &PhaseContext) -> Result<bool> {
        let changes = self.planned(ctx).await?;
        // In sync (no changes) means it runs; only creations means nothing does.
        Ok(changes.is_empty() || changes.iter().any(|c| c.action != Action::Create))
    }

    /// Gives the phase a timeout of its own, for services that take longer than the
    /// engine's default (an RDS instance can take most of an hour).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What an applying pass would change now.
    async fn planned(&self, ctx: &PhaseContext) -> Result<Vec<Change>> {
        let mut pass = Pass::plan();
        self.backend.reconcile(ctx, &mut pass).await?;
        Ok(pass.into_changes())
    }

    /// The endpoint's standard outputs and its [`ClusterTarget`].
    async fn outputs(&self, ctx: &PhaseContext) -> Result<Outputs> {
        let endpoint = self.backend.endpoint(ctx).await?;
        let target = self.backend.cluster_target(ctx, &endpoint).await?;
        let mut outputs = endpoint.to_outputs();
        outputs.extend(target.to_outputs(self.backend.kind()));
        Ok(outputs)
    }

    async fn wait_ready(&self, ctx: &PhaseContext) -> Result<()> {
        let kind = self.backend.kind();
        let timeout = self.backend.ready_timeout();
        let what = format!("waiting for {kind} to answer its probe");
        match wait::until(ctx, &what, timeout, Backoff::READINESS, || {
            self.backend.probe(ctx)
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(failed) => {
                let diagnostics = if failed.last.kind() == crate::ErrorKind::Cancelled {
                    None
                } else {
                    self.backend.diagnostics(ctx).await
                };
                Err(failed.into_error(kind.id(), timeout, diagnostics))
            }
        }
    }
}

#[async_trait]
impl<B: ServiceBackend + ?Sized> Phase for ServicePhase<B> {
    fn id(&self) -> PhaseId {
        self.backend.id()
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        self.backend.dependencies()
    }

    fn description(&self) -> String {
        format!("{} service", self.backend.kind())
    }

    fn default_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.backend.preflight(ctx).await
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        if !self.enabled {
            let kind = self.backend.kind();
            return Ok(if self.is_running(ctx).await? {
                Plan::changes(vec![
                    Change::delete("service", kind.id())
                        .because("disabled in comind.yaml; its data is kept"),
                ])
            } else {
                Plan::in_sync(Outputs::new())
            });
        }
        let changes = self.planned(ctx).await?;
        if let Some(reason) = self.backend.deferred(ctx) {
            return Ok(Plan {
                changes,
                outputs: None,
                deferred: Some(reason),
            });
        }
        if changes.is_empty() {
            Ok(Plan::in_sync(self.outputs(ctx).await?))
        } else {
            Ok(Plan::changes(changes))
        }
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        if !self.enabled {
            let changes = if self.is_running(ctx).await? {
                self.backend
                    .destroy(ctx, DestroyOptions { purge: false })
                    .await?
                    .changes
            } else {
                Vec::new()
            };
            return Ok(Applied {
                changes,
                outputs: Outputs::new(),
            });
        }
        let mut pass = Pass::apply();
        // The backend reports the steps of its own reconcile (container, first
        // answer, setup); the probe and the outputs are the phase's.
        self.backend.reconcile(ctx, &mut pass).await?;
        let changes = pass.into_changes();
        ctx.step("probe", self.wait_ready(ctx)).await?;
        let outputs = ctx.step("outputs", self.outputs(ctx)).await?;
        Ok(Applied { changes, outputs })
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.backend.destroy(ctx, options).await
    }

    async fn status(&self, ctx: &PhaseContext) -> Result<PhaseStatus> {
        if !self.enabled {
            let running = self.is_running(ctx).await?;
            return Ok(PhaseStatus {
                health: if running {
                    Health::Degraded
                } else {
                    Health::Ready
                },
                detail: if running {
                    "disabled in comind.yaml but still running; `comind up` removes it".into()
                } else {
                    "disabled in comind.yaml".into()
                },
                outputs: Some(Outputs::new()),
            });
        }
        let changes = self.planned(ctx).await?;
        if !changes.is_empty() {
            let absent = changes.iter().all(|c| c.action == Action::Create);
            let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
            return Ok(PhaseStatus {
                health: if absent {
                    Health::Absent
                } else {
                    Health::Degraded
                },
                detail: list.join("; "),
                outputs: None,
            });
        }
        match self.backend.probe(ctx).await {
            Ok(()) => Ok(PhaseStatus {
                health: Health::Ready,
                detail: "running and answering its probe".to_string(),
                outputs: Some(self.outputs(ctx).await?),
            }),
            Err(err) => Ok(PhaseStatus {
                health: Health::Degraded,
                detail: format!("not answering its probe: {err}"),
                outputs: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_give_the_standard_outputs_with_secrets_hidden() {
        let pg = ServiceEndpoint::Postgres(PostgresEndpoint {
            host: "127.0.0.1".into(),
            port: 5432,
            username: "app".into(),
            password: Secret::new("pw123"),
            databases: vec!["dev".into(), "audit_log".into()],
            require_tls: false,
        });
        let out = pg.to_outputs();
        for key in ServiceKind::Postgres.required_outputs() {
            assert!(out.get(key).is_some(), "missing {key}");
        }
        for key in ServiceKind::Postgres.secret_outputs() {
            assert!(out.get(key).unwrap().is_secret(), "{key} must be secret");
        }
        assert_eq!(
            out.require("DATABASE_URL").unwrap(),
            "postgres://app:pw123@127.0.0.1:5432/dev"
        );
        assert!(out.get("DATABASE_URL_AUDIT_LOG").is_some());
        assert!(!format!("{out:?}").contains("pw123"));

        let redis = ServiceEndpoint::Cache(CacheEndpoint {
            host: "h".into(),
            port: 6379,
            password: Secret::new("pw"),
            tls: true,
        });
        assert_eq!(
            redis.to_outputs().require("REDIS_URL").unwrap(),
            "rediss://:pw@h:6379/0"
        );

        let sqs = ServiceEndpoint::Queue(QueueEndpoint {
            endpoint_url: "http://127.0.0.1:9324".into(),
            region: "us-east-1".into(),
            credentials: None,
            queues: vec![QueueInfo {
                name: "jobs".into(),
                url: "http://q/jobs".into(),
                dlq_url: "http://q/jobs-dlq".into(),
            }],
        });
        let out = sqs.to_outputs();
        assert_eq!(out.require("SQS_QUEUE_URL_JOBS").unwrap(), "http://q/jobs");
        assert_eq!(
            out.require("SQS_DLQ_URL_JOBS").unwrap(),
            "http://q/jobs-dlq"
        );
    }
}

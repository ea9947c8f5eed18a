//! [`AwsProvider`]: the phases of the AWS profile, and `comind doctor`'s AWS checks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use comind_core::{
    Diagnosis, Environment, ErrorKind, Phase, Provider, Reconcile, ReconcilePhase, Result,
    ServiceBackend, ServiceKind, ServicePhase,
};

use crate::clients::{Connector, Source};
use crate::datastore::Datastore;
use crate::eks::ClusterPhase;
use crate::elasticache::ElastiCacheRedis;
use crate::error::AwsResultExt;
use crate::iam::IamPhase;
use crate::network::NetworkPhase;
use crate::rds::RdsPostgres;
use crate::s3::S3ObjectStore;
use crate::secrets_manager::SecretsManagerStore;
use crate::sqs::SqsQueues;

/// The AWS profile: a VPC, IAM roles, EKS, RDS PostgreSQL, S3, ElastiCache Redis and
/// SQS.
///
/// Cheap to create and to clone: the AWS SDK configuration is loaded on first use,
/// once, and its clients are shared by every phase.
///
/// ```no_run
/// # async fn demo() -> comind_core::Result<()> {
/// use comind_core::{Bootstrap, Environment, config::{Config, LoadOptions}};
///
/// let config = Config::load(&LoadOptions::from_process(None))?;
/// let bootstrap = Bootstrap::new(Environment::new(config)?)
///     .with_provider(comind_aws::AwsProvider::new());
/// let report = bootstrap.plan(&Default::default()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AwsProvider {
    aws: Arc<Connector>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("aws", &self.aws)
            .finish()
    }
}

impl Default for AwsProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl AwsProvider {
    /// A provider whose region, credentials and endpoint come from the standard AWS
    /// chain (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, SSO, instance roles),
    /// overridden by `aws.region` and `aws.endpoint_url` in comind.yaml.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A provider that uses `config` instead of the standard chain (tests, embedders
    /// that already hold one). comind.yaml's `aws.region` and `aws.endpoint_url`
    /// still win over it.
    pub fn from_sdk_config(config: SdkConfig) -> Self {
        Self::builder().sdk_config(config).build()
    }

    /// A builder, to add interceptors.
    pub fn builder() -> AwsProviderBuilder {
        AwsProviderBuilder {
            source: Source::Environment,
            interceptors: Vec::new(),
        }
    }

    /// The AWS backend of `kind` for `env`, as the provider's phases use it.
    pub fn backend(&self, kind: ServiceKind, env: &Environment) -> Arc<dyn ServiceBackend> {
        match kind {
            ServiceKind::Postgres => Arc::new(RdsPostgres::new(self.aws.clone(), env)),
            ServiceKind::ObjectStore => Arc::new(S3ObjectStore::new(self.aws.clone())),
            ServiceKind::Cache => Arc::new(ElastiCacheRedis::new(self.aws.clone(), env)),
            ServiceKind::Queue => Arc::new(SqsQueues::new(self.aws.clone())),
        }
    }

    /// `env`'s [`SecretStore`](comind_core::SecretStore) in AWS Secrets Manager, with
    /// this provider's SDK configuration and interceptors: what `aws.secret_store:
    /// secrets-manager` selects for the Sealed Secrets key.
    pub fn secret_store(&self, env: Arc<Environment>) -> SecretsManagerStore {
        SecretsManagerStore::new(self.aws.clone(), env)
    }
}

/// Builds an [`AwsProvider`].
pub struct AwsProviderBuilder {
    source: Source,
    interceptors: Vec<SharedInterceptor>,
}

impl std::fmt::Debug for AwsProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProviderBuilder")
            .field("interceptors", &self.interceptors.len())
            .finish_non_exhaustive()
    }
}

impl AwsProviderBuilder {
    /// Uses `config` instead of the standard AWS chain.
    #[must_use]
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.source = Source::Given(Box::new(config));
        self
    }

    /// Adds an interceptor to every AWS client: to audit, count or trace each call.
    #[must_use]
    pub fn interceptor(mut self, interceptor: impl Intercept + 'static) -> Self {
        self.interceptors.push(SharedInterceptor::new(interceptor));
        self
    }

    /// The provider.
    pub fn build(self) -> AwsProvider {
        AwsProvider {
            aws: Arc::new(Connector::new(self.source, self.interceptors)),
        }
    }
}

/// A service as a phase whose timeout covers its AWS resource's own wait: the engine's
/// default (30 minutes) is shorter than an RDS instance may need
/// (`aws.timeouts.database`).
/// A disabled service stays a phase whose desired state is "absent" (see
/// [`ServicePhase::disabled`]), so turning it off removes what an earlier run made and
/// `down` still finds it.
fn service(
    backend: Arc<dyn ServiceBackend>,
    timeout: Option<Duration>,
    enabled: bool,
) -> Arc<dyn Phase> {
    let phase = if enabled {
        ServicePhase::new(backend)
    } else {
        ServicePhase::disabled(backend)
    };
    Arc::new(match timeout {
        Some(timeout) => phase.with_timeout(timeout),
        None => phase,
    })
}

/// A phase written as one reconcile function, run as a phase whose plan and apply are
/// two passes of that function.
fn reconciled(phase: impl Reconcile) -> Arc<dyn Phase> {
    Arc::new(ReconcilePhase::new(Arc::new(phase)))
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &str {
        "aws"
    }

    fn phases(&self, env: &Arc<Environment>) -> Result<Vec<Arc<dyn Phase>>> {
        let services = &env.config().services;
        let postgres = RdsPostgres::new(self.aws.clone(), env);
        let postgres_timeout = postgres.phase_timeout();
        let mut phases: Vec<Arc<dyn Phase>> = vec![reconciled(NetworkPhase::new(self.aws.clone()))];
        // With `gitops.kubeconfig` the platform goes on a cluster Comind did not make:
        // no EKS cluster, and none of the IAM roles only it and its nodes use.
        if env.config().gitops.kubeconfig.is_none() {
            phases.push(reconciled(IamPhase::new(self.aws.clone())));
            phases.push(reconciled(ClusterPhase::new(self.aws.clone(), env)));
        }
        phases.push(service(Arc::new(postgres), Some(postgres_timeout), true));
        phases.push(service(
            Arc::new(S3ObjectStore::new(self.aws.clone())),
            None,
            true,
        ));
        let cache = ElastiCacheRedis::new(self.aws.clone(), env);
        let cache_timeout = cache.phase_timeout();
        phases.push(service(
            Arc::new(cache),
            Some(cache_timeout),
            services.cache.enabled,
        ));
        phases.push(service(
            Arc::new(SqsQueues::new(self.aws.clone())),
            None,
            services.queue.enabled,
        ));
        Ok(phases)
    }

    /// Resolves the SDK configuration once, so that a missing region is invalid input
    /// reported before anything runs, not a failure of every phase.
    async fn prepare(&self, env: &Arc<Environment>) -> Result<()> {
        self.aws.clients(env).await.map(|_| ())
    }

    async fn diagnose(&self, env: &Arc<Environment>) -> Vec<Diagnosis> {
        let mut checks = Vec::new();
        let clients = match self.aws.clients(env).await {
            Ok(clients) => clients,
            Err(err) => {
                checks.push(Diagnosis::failed(
                    "aws region",
                    err.message().to_string(),
                    err.hint()
                        .unwrap_or("set `aws.region` in comind.yaml or AWS_REGION"),
                ));
                return checks;
            }
        };
        if env.config().gitops.kubeconfig.is_none()
            && env.config().aws.cluster.public_access_cidrs.is_none()
        {
            checks.push(Diagnosis::warning(
                "eks public endpoint",
                "the cluster's API answers on a public endpoint open to 0.0.0.0/0 \
                 (still behind IAM authentication)",
                "limit it: `aws.cluster.public_access_cidrs: [<your office or VPN CIDR>]` \
                 in comind.yaml",
            ));
        }
        let from = if env.config().aws.region.is_some() {
            "from comind.yaml"
        } else {
            "from the AWS chain"
        };
        checks.push(Diagnosis::ok(
            "aws region",
            format!("{} ({from})", clients.region),
        ));
        if let Some(url) = &clients.endpoint_url {
            checks.push(Diagnosis::warning(
                "aws endpoint",
                format!("every AWS call goes to {url}"),
                "unset `aws.endpoint_url` and AWS_ENDPOINT_URL to use AWS itself",
            ));
        }
        let Some(provider) = clients.sdk.credentials_provider() else {
            checks.push(Diagnosis::failed(
                "aws credentials",
                "no credentials provider is configured",
                "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
            return checks;
        };
        if let Err(err) = provider.provide_credentials().await {
            checks.push(Diagnosis::failed(
                "aws credentials",
                format!("no credentials were found: {err}"),
                "set AWS_PROFILE (and run `aws sso login` for SSO profiles), or \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
            return checks;
        }
        let endpoint = clients.service_url("sts");
        match clients
            .sts
            .get_caller_identity()
            .send()
            .await
            .aws("sts:GetCallerIdentity", "aws credentials")
        {
            Ok(identity) => {
                checks.push(Diagnosis::ok("aws endpoint", format!("{endpoint} answers")));
                checks.push(Diagnosis::ok(
                    "aws credentials",
                    format!(
                        "account {} as {}",
                        identity.account().unwrap_or("?"),
                        identity.arn().unwrap_or("?")
                    ),
                ));
            }
            Err(err) if matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) => {
                checks.push(Diagnosis::failed(
                    "aws endpoint",
                    format!("{endpoint} cannot be reached: {err}"),
                    "check the network and proxy settings, and `aws.endpoint_url` or \
                     AWS_ENDPOINT_URL if one is set",
                ));
            }
            Err(err) => {
                checks.push(Diagnosis::failed(
                    "aws credentials",
                    format!("AWS rejected the credentials: {}", err.message()),
                    "refresh them (`aws sso login`, or new access keys) and check AWS_PROFILE",
                ));
            }
        }
        checks
    }
}

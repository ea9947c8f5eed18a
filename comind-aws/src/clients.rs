//! The AWS SDK clients, built once and shared by every phase of a run.
//!
//! Loading the SDK configuration is asynchronous (it may read profiles, ask IMDS or
//! SSO), while [`AwsProvider::new`](crate::AwsProvider::new) must be cheap and
//! synchronous. So the provider holds a [`Connector`]: the first phase that needs AWS
//! loads the configuration from the standard chain, once per process, and builds the
//! clients; every later phase shares them.
//!
//! Region and credentials come from the standard AWS chain (`AWS_REGION`,
//! `AWS_PROFILE`, SSO, instance roles...). `aws.region` in comind.yaml overrides the
//! region; `aws.endpoint_url` overrides the endpoint, which the chain already takes
//! from `AWS_ENDPOINT_URL` (so the file wins over the variable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use aws_smithy_types::timeout::TimeoutConfig;
use comind_core::{Environment, Error, Result};
use tokio::sync::OnceCell;

/// Where the SDK configuration comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The standard AWS chain, loaded on first use.
    Environment,
    /// A configuration the embedder built.
    Given(Box<SdkConfig>),
}

/// The settings of comind.yaml that shape the clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    region: Option<String>,
    endpoint_url: Option<String>,
}

impl Target {
    fn of(env: &Environment) -> Self {
        let aws = &env.config().aws;
        Target {
            region: aws.region.clone().filter(|r| !r.is_empty()),
            endpoint_url: aws.endpoint_url.clone().filter(|u| !u.is_empty()),
        }
    }
}

/// Builds the clients on first use and hands out shared copies.
pub(crate) struct Connector {
    source: Source,
    interceptors: Vec<SharedInterceptor>,
    base: OnceCell<SdkConfig>,
    built: Mutex<HashMap<Target, Arc<Clients>>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field(
                "source",
                &match self.source {
                    Source::Environment => "environment",
                    Source::Given(_) => "given",
                },
            )
            .field("interceptors", &self.interceptors.len())
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub(crate) fn new(source: Source, interceptors: Vec<SharedInterceptor>) -> Self {
        Connector {
            source,
            interceptors,
            base: OnceCell::new(),
            built: Mutex::new(HashMap::new()),
        }
    }

    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                match &self.source {
                    Source::Given(config) => (**config).clone(),
                    Source::Environment => load_sdk_config(None, None).await,
                }
            })
            .await
    }

    /// The clients for `env`'s region and endpoint.
    ///
    /// # Errors
    /// `InvalidInput` when no region is set anywhere.
    pub(crate) async fn clients(&self, env: &Environment) -> Result<Arc<Clients>> {
        let target = Target::of(env);
        if let Some(clients) = self.cached(&target) {
            return Ok(clients);
        }
        let clients = Arc::new(Clients::new(
            self.base().await,
            &target,
            &self.interceptors,
        )?);
        let mut built = self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(built.entry(target).or_insert(clients).clone())
    }

    fn cached(&self, target: &Target) -> Option<Arc<Clients>> {
        self.built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(target)
            .cloned()
    }
}

/// Loads the SDK configuration from the standard AWS chain, with an optional region
/// and endpoint that win over it.
///
/// Connection and per-attempt timeouts are bounded so that a stalled connection
/// becomes a transient error instead of a run that hangs.
pub async fn load_sdk_config(region: Option<&str>, endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// One client per AWS service, for one region and endpoint.
#[derive(Clone)]
pub(crate) struct Clients {
    /// The effective SDK configuration (credentials, region, endpoint).
    pub(crate) sdk: SdkConfig,
    /// The region.
    pub(crate) region: String,
    /// The endpoint override, if any (moto, LocalStack, a VPC endpoint).
    pub(crate) endpoint_url: Option<String>,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) iam: aws_sdk_iam::Client,
    pub(crate) eks: aws_sdk_eks::Client,
    pub(crate) rds: aws_sdk_rds::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) elasticache: aws_sdk_elasticache::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sts: aws_sdk_sts::Client,
    pub(crate) kms: aws_sdk_kms::Client,
    pub(crate) secrets_manager: aws_sdk_secretsmanager::Client,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

macro_rules! client {
    ($sdk:ident, $base:expr, $endpoint:expr, $interceptors:expr) => {{
        let mut builder = $sdk::config::Builder::from($base);
        if let Some(url) = $endpoint {
            builder = builder.endpoint_url(url);
        }
        for interceptor in $interceptors {
            builder.push_interceptor(interceptor.clone());
        }
        builder
    }};
}

impl Clients {
    fn new(base: &SdkConfig, target: &Target, interceptors: &[SharedInterceptor]) -> Result<Self> {
        let mut builder = base.to_builder();
        if let Some(region) = &target.region {
            builder.set_region(Some(Region::new(region.clone())));
        }
        if let Some(url) = &target.endpoint_url {
            builder.set_endpoint_url(Some(url.clone()));
        }
        let sdk = builder.build();
        let region = sdk
            .region()
            .map(ToString::to_string)
            .ok_or_else(no_region)?;
        // comind.yaml's endpoint is also set on each service so that it wins over
        // service-specific variables such as AWS_ENDPOINT_URL_S3.
        let endpoint = target.endpoint_url.as_deref();
        let endpoint_url = sdk.endpoint_url().map(str::to_string);
        // Custom endpoints (moto, LocalStack, MinIO) rarely resolve virtual-host
        // bucket names; AWS's own endpoints do.
        let s3 = client!(aws_sdk_s3, &sdk, endpoint, interceptors)
            .force_path_style(endpoint_url.is_some())
            .build();
        Ok(Clients {
            ec2: aws_sdk_ec2::Client::from_conf(
                client!(aws_sdk_ec2, &sdk, endpoint, interceptors).build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                client!(aws_sdk_iam, &sdk, endpoint, interceptors).build(),
            ),
            eks: aws_sdk_eks::Client::from_conf(
                client!(aws_sdk_eks, &sdk, endpoint, interceptors).build(),
            ),
            rds: aws_sdk_rds::Client::from_conf(
                client!(aws_sdk_rds, &sdk, endpoint, interceptors).build(),
            ),
            s3: aws_sdk_s3::Client::from_conf(s3),
            elasticache: aws_sdk_elasticache::Client::from_conf(
                client!(aws_sdk_elasticache, &sdk, endpoint, interceptors).build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                client!(aws_sdk_sqs, &sdk, endpoint, interceptors).build(),
            ),
            sts: aws_sdk_sts::Client::from_conf(
                client!(aws_sdk_sts, &sdk, endpoint, interceptors).build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                client!(aws_sdk_kms, &sdk, endpoint, interceptors).build(),
            ),
            secrets_manager: aws_sdk_secretsmanager::Client::from_conf(
                client!(aws_sdk_secretsmanager, &sdk, endpoint, interceptors).build(),
            ),
            sdk,
            region,
            endpoint_url,
        })
    }

    /// The AWS partition of the region (`aws`, `aws-cn`, `aws-us-gov`), for ARNs.
    pub(crate) fn partition(&self) -> &'static str {
        partition_of(&self.region)
    }

    /// The DNS suffix of the region's partition.
    pub(crate) fn dns_suffix(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }

    /// The URL applications use for `service` (`s3`, `sqs`): the endpoint override if
    /// one is set, else the regional AWS endpoint.
    pub(crate) fn service_url(&self, service: &str) -> String {
        match &self.endpoint_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("https://{service}.{}.{}", self.region, self.dns_suffix()),
        }
    }
}

/// The partition of `region`.
pub(crate) fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn no_region() -> Error {
    Error::invalid_input("no AWS region is set")
        .with_resource("aws region")
        .with_hint(
            "set `aws.region` in comind.yaml, or AWS_REGION, or a region in the AWS profile \
             in use",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_service_urls() {
        assert_eq!(partition_of("us-east-1"), "aws");
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
    }

    #[tokio::test]
    async fn region_and_endpoint_from_the_file_win() {
        let base = SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .endpoint_url("http://from-variable:1")
            .behavior_version(BehaviorVersion::latest())
            .build();
        let target = Target {
            region: Some("us-west-2".into()),
            endpoint_url: Some("http://from-file:2/".into()),
        };
        let clients = Clients::new(&base, &target, &[]).unwrap();
        assert_eq!(clients.region, "us-west-2");
        assert_eq!(clients.service_url("s3"), "http://from-file:2");
        let plain = Clients::new(
            &SdkConfig::builder()
                .region(Region::new("eu-west-1"))
                .behavior_version(BehaviorVersion::latest())
                .build(),
            &Target {
                region: None,
                endpoint_url: None,
            },
            &[],
        )
        .unwrap();
        assert_eq!(plain.region, "eu-west-1");
        assert_eq!(
            plain.service_url("sqs"),
            "https://sqs.eu-west-1.amazonaws.com"
        );
        let none = Clients::new(
            &SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .build(),
            &Target {
                region: None,
                endpoint_url: None,
            },
            &[],
        );
        assert_eq!(
            none.unwrap_err().kind(),
            comind_core::ErrorKind::InvalidInput
        );
    }
}

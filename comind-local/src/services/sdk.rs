//! The AWS SDK pointed at a local S3- or SQS-compatible container: how its clients
//! are configured, and how its errors map onto core errors.
//!
//! The SDK configuration is built directly (no `aws-config`, which would read the
//! user's AWS profile and environment): static credentials, region `us-east-1`, the
//! container's published endpoint, no SDK retries (the caller polls with its own
//! backoff) and short timeouts.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials as SdkCredentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use comind_core::{Error, Secret};

/// The region local clients sign requests for.
pub(crate) const REGION: &str = "us-east-1";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

fn credentials(access_key: &str, secret: &Secret) -> SdkCredentials {
    SdkCredentials::new(access_key, secret.expose(), None, None, "comind")
}

/// An S3 client for the object store at `endpoint` (path-style addressing).
pub(crate) fn s3_client(endpoint: &str, access_key: &str, secret: &Secret) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials(access_key, secret))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An SQS client for the queue server at `endpoint`.
pub(crate) fn sqs_client(endpoint: &str, access_key: &str, secret: &Secret) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            access_key,
            secret.expose(),
            None,
            None,
            "comind",
        ))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Maps an SDK error of `action` on `resource`:
///
/// - not dispatched, timed out, no (or a garbled) answer, or a 5xx: `Unavailable`,
///   transient (the server is starting);
/// - 401/403 (bad credentials, bad signature): `Permission`, permanent;
/// - 404: `NotFound`; 409: `Conflict`; other 4xx: `InvalidInput`;
/// - a request that could not be built: `Internal`.
pub(crate) fn sdk_error<E>(action: &str, resource: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    let message = format!("cannot {action}: {detail}");
    let error = match &err {
        SdkError::ConstructionFailure(_) => Error::internal(message),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Error::unavailable(message)
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match status {
                401 | 403 => Error::permission(message).with_hint(
                    "the credentials in the state directory do not match the container; \
                     `comind up` recreates the container with them, or `comind down \
                     --purge` starts over",
                ),
                404 => Error::not_found(message),
                409 => Error::conflict(message),
                500..=599 => Error::unavailable(message),
                _ => Error::invalid_input(message),
            }
        }
        _ => Error::unavailable(message),
    };
    error.with_resource(resource)
}

/// The error code of a service error, if the server sent one.
pub(crate) fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<String> {
    err.as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string)
}

/// One SDK client, kept while the endpoint and credentials it was made for stay the
/// same: making one sets up an HTTP client, which readiness polling would otherwise
/// repeat every few milliseconds.
pub(crate) struct ClientCache<C> {
    /// The client, with the endpoint and credentials it was made for; the secret stays
    /// a [`Secret`] so nothing can print it.
    slot: std::sync::Mutex<Option<(CacheKey, C)>>,
}

type CacheKey = (String, String, Secret);

impl<C> Default for ClientCache<C> {
    fn default() -> Self {
        ClientCache {
            slot: std::sync::Mutex::new(None),
        }
    }
}

impl<C> std::fmt::Debug for ClientCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCache")
    }
}

impl<C: Clone> ClientCache<C> {
    /// The client for `endpoint` and the credentials, made by `make` if needed.
    pub(crate) fn get(
        &self,
        endpoint: &str,
        access_key: &str,
        secret: &Secret,
        make: impl FnOnce() -> C,
    ) -> C {
        let key: CacheKey = (endpoint.to_string(), access_key.to_string(), secret.clone());
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            Some((cached, client)) if *cached == key => client.clone(),
            _ => {
                let client = make();
                *slot = Some((key, client.clone()));
                client
            }
        }
    }
}

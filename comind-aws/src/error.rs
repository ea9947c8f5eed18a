//! AWS errors, mapped once per call onto Comind's error kinds.
//!
//! Every AWS call in this crate ends in [`AwsResultExt::aws`] (or
//! [`found`](AwsResultExt::found) for a lookup where "not found" is an answer), which
//! turns the SDK's error into a [`comind_core::Error`] here and nowhere else. What the
//! engine needs from it: throttling, 5xx answers, timeouts and dropped connections are
//! transient (the engine retries the phase); invalid parameters, exhausted quotas and
//! denied access are permanent, with the AWS error code and what to do about it.
//!
//! Messages are built from the operation, the resource and the error AWS returned;
//! never from request parameters, so passwords and auth tokens cannot leak into them.

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use comind_core::{Error, ErrorKind, Result};

/// How an AWS call failed, before it becomes a [`comind_core::Error`] (whose source
/// it then is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// AWS answered with an error.
    #[error("{}", service_detail(*status, request_id.as_deref()))]
    Service {
        /// The AWS error code (`ThrottlingException`, `InvalidParameterValue`).
        code: Option<String>,
        /// The AWS error message.
        message: Option<String>,
        /// The HTTP status.
        status: Option<u16>,
        /// The request id, which AWS support asks for.
        request_id: Option<String>,
    },
    /// The request did not finish in time.
    #[error("{0}")]
    Timeout(String),
    /// The request could not be sent or no answer arrived (connection refused or reset,
    /// DNS).
    #[error("{0}")]
    Connection(String),
    /// The request could not be built (no region, no credentials, a bad endpoint).
    #[error("{0}")]
    Setup(String),
    /// AWS answered something the SDK could not read.
    #[error("{detail}")]
    Unreadable {
        /// The HTTP status.
        status: Option<u16>,
        /// What the SDK said.
        detail: String,
    },
}

impl Failure {
    /// Reads an SDK error. Only the error's code, message and status are kept; the
    /// request itself (which may carry a password) is never looked at.
    pub(crate) fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match err {
            SdkError::ServiceError(_) => Failure::Service {
                code: err.code().map(str::to_string),
                message: err.message().map(str::to_string),
                status,
                request_id: err.meta().extra("aws_request_id").map(str::to_string),
            },
            SdkError::TimeoutError(_) => Failure::Timeout(DisplayErrorContext(err).to_string()),
            // No credentials is not a network failure: retrying cannot help, and the
            // fix is the credentials, not the endpoint.
            SdkError::DispatchFailure(_) if lacks_credentials(err) => {
                Failure::Setup(display_chain(err))
            }
            SdkError::DispatchFailure(dispatch) => {
                let detail = DisplayErrorContext(err).to_string();
                if dispatch.is_timeout() {
                    Failure::Timeout(detail)
                } else if dispatch.is_user() {
                    Failure::Setup(detail)
                } else {
                    Failure::Connection(detail)
                }
            }
            SdkError::ResponseError(_) => Failure::Unreadable {
                status,
                detail: DisplayErrorContext(err).to_string(),
            },
            _ => Failure::Setup(DisplayErrorContext(err).to_string()),
        }
    }

    /// The AWS error code, for a service error.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Failure::Service { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether AWS may have acted on the request although no answer says so: the
    /// connection dropped or timed out after the request was sent, or the answer could
    /// not be read. A create that failed this way may have created its resource.
    pub(crate) fn may_have_acted(&self) -> bool {
        matches!(
            self,
            Failure::Connection(_) | Failure::Timeout(_) | Failure::Unreadable { .. }
        )
    }

    /// The failure behind a Comind error made by [`to_error`], if it came from an AWS
    /// call.
    pub(crate) fn of(error: &Error) -> Option<&Failure> {
        std::error::Error::source(error).and_then(|s| s.downcast_ref::<Failure>())
    }

    /// Whether AWS said the thing asked about does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            Failure::Service { code, status, .. } => match code.as_deref() {
                Some(code) => is_not_found_code(code),
                // S3 answers HEAD on a missing bucket with an empty 404.
                None => *status == Some(404),
            },
            _ => false,
        }
    }
}

/// Whether `err` failed because no credentials could be loaded (the SDK wraps the
/// credentials provider's error somewhere in the source chain).
fn lacks_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The messages of `err` and its causes, outermost first, without the SDK's debug
/// dump of the request.
fn display_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// What a service error's source says: the HTTP status and the request id AWS
/// support asks for.
fn service_detail(status: Option<u16>, request_id: Option<&str>) -> String {
    let status = status.map_or_else(|| "no HTTP status".to_string(), |s| format!("HTTP {s}"));
    match request_id {
        Some(id) => format!("{status}, AWS request id {id}"),
        None => status,
    }
}

fn is_not_found_code(code: &str) -> bool {
    code.contains("NotFound")
        || code.starts_with("NoSuch")
        || matches!(
            code,
            "ResourceNotFoundException"
                | "AWS.SimpleQueueService.NonExistentQueue"
                | "QueueDoesNotExist"
                | "NonExistentQueue"
        )
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "SlowDown"
            | "EC2ThrottledException"
            | "PriorRequestNotComplete"
    )
}

fn is_server_side(code: &str) -> bool {
    matches!(
        code,
        "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "InternalServerException"
            | "ServerException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "ServiceFailure"
            | "Unavailable"
            | "RequestTimeout"
            | "RequestTimeoutException"
    )
}

fn is_access_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedException"
            | "AuthFailure"
            | "AuthorizationError"
            | "InvalidClientTokenId"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "RequestExpired"
            | "MissingAuthenticationToken"
            | "UnrecognizedClientException"
            | "OptInRequired"
            | "InvalidToken"
            | "NotAuthorized"
            | "Forbidden"
    )
}

fn is_quota(code: &str) -> bool {
    code.contains("LimitExceeded")
        || code.contains("QuotaExceeded")
        || code.contains("QuotaForCustomerExceeded")
        || matches!(
            code,
            "TooManyBuckets" | "InsufficientCapacity" | "InsufficientDBInstanceCapacity"
        )
}

/// Conflicts that resolve by themselves: a resource still being created, modified or
/// deleted, or still referenced by something AWS is removing (ENIs of a deleted
/// cluster keep a subnet busy for minutes).
fn is_transient_conflict(code: &str) -> bool {
    matches!(
        code,
        "DependencyViolation"
            | "ResourceInUseException"
            | "InvalidDBInstanceState"
            | "InvalidDBInstanceStateFault"
            | "InvalidDBSubnetGroupStateFault"
            | "InvalidDBSnapshotState"
            | "InvalidDBSnapshotStateFault"
            | "InvalidReplicationGroupState"
            | "InvalidReplicationGroupStateFault"
            | "InvalidCacheClusterState"
            | "InvalidCacheClusterStateFault"
            | "CacheSubnetGroupInUse"
            | "InvalidSnapshotState"
            | "InvalidSnapshotStateFault"
            | "IncorrectState"
            | "IncorrectInstanceState"
            | "OperationAborted"
            | "ConcurrentModification"
            | "ConcurrentModificationException"
            | "QueueDeletedRecently"
            | "AWS.SimpleQueueService.QueueDeletedRecently"
    )
}

fn is_conflict(code: &str) -> bool {
    code.contains("AlreadyExists")
        || code.contains("AlreadyOwnedByYou")
        || code.contains("Duplicate")
        || matches!(
            code,
            "EntityAlreadyExists" | "DeleteConflict" | "BucketNotEmpty" | "QueueNameExists"
        )
}

fn is_invalid_input(code: &str) -> bool {
    code.starts_with("Invalid")
        || code.starts_with("Malformed")
        || code.starts_with("Missing")
        || code.starts_with("Illegal")
        || code.starts_with("Unsupported")
        || matches!(
            code,
            "ValidationError"
                | "ValidationException"
                | "BadRequestException"
                | "ClientException"
                | "StorageTypeNotSupported"
                | "StorageTypeNotSupportedFault"
                | "KMSKeyNotAccessibleFault"
        )
}

/// Turns a failed call `op` on `resource` into a Comind error.
pub(crate) fn to_error(op: &str, resource: &str, failure: Failure) -> Error {
    let error = classify(op, resource, failure);
    // Names, codes and AWS's own words only: requests are never looked at, so no
    // secret can get here.
    tracing::debug!(
        operation = op,
        resource,
        kind = %error.kind(),
        transient = error.is_transient(),
        "AWS call failed: {}",
        error.message()
    );
    error
}

fn classify(op: &str, resource: &str, failure: Failure) -> Error {
    let failed = format!("AWS {op} on {resource} failed");
    match failure {
        Failure::Timeout(detail) => Error::timeout(format!("{failed}: the request timed out"))
            .transient(true)
            .with_resource(resource)
            .with_source(Failure::Timeout(detail))
            .with_hint("AWS or the network is slow; the run retries it, or run `comind up` again"),
        Failure::Connection(detail) => {
            Error::unavailable(format!("{failed}: AWS could not be reached"))
                .with_resource(resource)
                .with_source(Failure::Connection(detail))
                .with_hint(
                    "check the network, and the endpoint (`aws.endpoint_url` in comind.yaml or \
                     AWS_ENDPOINT_URL) if one is set; `comind doctor` checks both",
                )
        }
        Failure::Setup(detail) => {
            Error::invalid_input(format!("{failed}: the request could not be made"))
                .with_resource(resource)
                .with_source(Failure::Setup(detail))
                .with_hint(
                    "check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, `aws sso login`) \
                     and the region (`aws.region` in comind.yaml or AWS_REGION); \
                     `comind doctor` checks both",
                )
        }
        Failure::Unreadable { status, detail } => {
            let server = status.is_some_and(|s| s >= 500);
            let answered = status.map_or_else(String::new, |s| format!(" (HTTP {s})"));
            Error::new(
                if server {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Internal
                },
                format!("{failed}: AWS answered something that could not be read{answered}"),
            )
            .transient(server)
            .with_resource(resource)
            .with_source(Failure::Unreadable { status, detail })
            .with_hint(
                "if an endpoint override is set, check that it serves this AWS API; otherwise \
                 run again, and report it if it persists",
            )
        }
        Failure::Service {
            code,
            message,
            status,
            request_id,
        } => service_error(&failed, resource, code.as_deref(), message, status).with_source(
            Failure::Service {
                code,
                message: None,
                status,
                request_id,
            },
        ),
    }
}

fn service_error(
    failed: &str,
    resource: &str,
    code: Option<&str>,
    message: Option<String>,
    status: Option<u16>,
) -> Error {
    let shown_code = code.unwrap_or("an error without a code");
    let said = message
        .filter(|m| !m.is_empty())
        .map_or_else(String::new, |m| format!(": {m}"));
    let text = format!("{failed}: {shown_code}{said}");
    let server = status.is_some_and(|s| s >= 500);
    let (kind, transient, hint) = match code {
        Some(c) if is_throttling(c) => (
            ErrorKind::Unavailable,
            true,
            "AWS is throttling requests; the run retries with backoff".to_string(),
        ),
        Some(c) if is_server_side(c) => (
            ErrorKind::Unavailable,
            true,
            "AWS had an internal error; the run retries it".to_string(),
        ),
        Some(c) if is_access_denied(c) => (
            ErrorKind::Permission,
            false,
            format!(
                "the AWS identity in use may not perform this call ({c}): check the credentials \
                 (`comind doctor` shows the identity) and grant the IAM permission it needs"
            ),
        ),
        Some(c) if is_quota(c) => (
            ErrorKind::Conflict,
            false,
            format!(
                "an AWS quota or capacity limit was reached ({c}): remove unused resources or \
                 request a higher quota in the Service Quotas console, then run `comind up` again"
            ),
        ),
        Some(c) if is_not_found_code(c) => (
            ErrorKind::NotFound,
            false,
            "a resource this call needs does not exist; run `comind up` to create it".to_string(),
        ),
        Some(c) if is_transient_conflict(c) => (
            ErrorKind::Conflict,
            true,
            "the resource is busy (still being created, changed or deleted, or still in use); \
             the run retries, or run the command again in a few minutes"
                .to_string(),
        ),
        Some(c) if is_conflict(c) => (
            ErrorKind::Conflict,
            false,
            "something with this name already exists or is still in use; see the message"
                .to_string(),
        ),
        Some(c) if is_invalid_input(c) => (
            ErrorKind::InvalidInput,
            false,
            format!(
                "AWS rejected a parameter ({c}); check the matching setting in comind.yaml \
                 (instance class, engine version, sizes, CIDR)"
            ),
        ),
        _ if server => (
            ErrorKind::Unavailable,
            true,
            "AWS answered with a server error; the run retries it".to_string(),
        ),
        _ => (
            ErrorKind::Internal,
            false,
            "unexpected AWS error; see the message and the AWS documentation of the code"
                .to_string(),
        ),
    };
    let err = Error::new(kind, text)
        .transient(transient)
        .with_resource(resource)
        .with_hint(hint);
    match code {
        // SQS keeps a deleted queue's name for 60 seconds; retrying sooner only burns
        // the attempts.
        Some("QueueDeletedRecently" | "AWS.SimpleQueueService.QueueDeletedRecently") => {
            err.retry_after(std::time::Duration::from_secs(61))
        }
        _ => err,
    }
}

/// The value of an SDK builder that refuses to build without a required field.
/// Callers set every required field, so this fails only on a bug.
///
/// # Errors
/// `Internal` naming `what`.
pub(crate) fn built<T>(
    result: std::result::Result<T, aws_smithy_types::error::operation::BuildError>,
    what: &str,
) -> Result<T> {
    result.map_err(|e| Error::internal(format!("cannot build {what}: {e}")))
}

/// Maps the result of one AWS call onto Comind's errors.
pub(crate) trait AwsResultExt<T> {
    /// The value, or the mapped error of call `op` on `resource`.
    fn aws(self, op: &str, resource: impl fmt::Display) -> Result<T>;

    /// `Some(value)`; `None` when AWS says the resource does not exist; the mapped
    /// error otherwise. Anything but an explicit "not found" is an error: a failed
    /// lookup means "unknown", never "absent".
    fn found(self, op: &str, resource: impl fmt::Display) -> Result<Option<T>>;

    /// Like [`found`](AwsResultExt::found), also taking these codes to mean "absent"
    /// (for example `NoSuchTagSet`: a bucket without tags).
    fn found_or(self, op: &str, resource: impl fmt::Display, absent: &[&str]) -> Result<Option<T>>;
}

impl<T, E> AwsResultExt<T> for std::result::Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn aws(self, op: &str, resource: impl fmt::Display) -> Result<T> {
        self.map_err(|err| to_error(op, &resource.to_string(), Failure::from_sdk(&err)))
    }

    fn found(self, op: &str, resource: impl fmt::Display) -> Result<Option<T>> {
        self.found_or(op, resource, &[])
    }

    fn found_or(self, op: &str, resource: impl fmt::Display, absent: &[&str]) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                let failure = Failure::from_sdk(&err);
                if failure.is_not_found() || failure.code().is_some_and(|c| absent.contains(&c)) {
                    Ok(None)
                } else {
                    Err(to_error(op, &resource.to_string(), failure))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, status: u16) -> Failure {
        Failure::Service {
            code: Some(code.to_string()),
            message: Some("AWS says no".to_string()),
            status: Some(status),
            request_id: Some("req-1".to_string()),
        }
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for (code, status) in [
            ("ThrottlingException", 400),
            ("Throttling", 400),
            ("RequestLimitExceeded", 503),
            ("SlowDown", 503),
            ("InternalFailure", 500),
            ("SomethingNew", 502),
        ] {
            let err = to_error("ec2:DescribeVpcs", "vpc x", service(code, status));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{code}");
            assert!(err.is_transient(), "{code}");
        }
        let err = to_error("op", "r", Failure::Timeout("timed out".into()));
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.is_transient());
        let err = to_error("op", "r", Failure::Connection("connection reset".into()));
        assert!(err.is_transient());
        assert!(err.to_string().contains("connection reset"), "{err}");
    }

    #[test]
    fn permanent_errors_carry_the_code_and_what_to_do() {
        let cases = [
            ("AccessDenied", ErrorKind::Permission),
            ("UnauthorizedOperation", ErrorKind::Permission),
            ("ExpiredToken", ErrorKind::Permission),
            ("VpcLimitExceeded", ErrorKind::Conflict),
            ("InstanceQuotaExceeded", ErrorKind::Conflict),
            ("InvalidParameterValue", ErrorKind::InvalidInput),
            ("InvalidParameterCombination", ErrorKind::InvalidInput),
            ("ValidationException", ErrorKind::InvalidInput),
            ("BucketAlreadyExists", ErrorKind::Conflict),
            ("DBInstanceNotFound", ErrorKind::NotFound),
        ];
        for (code, kind) in cases {
            let err = to_error("rds:CreateDBInstance", "db-instance x", service(code, 400));
            assert_eq!(err.kind(), kind, "{code}");
            assert!(!err.is_transient(), "{code} must not be retried");
            assert!(err.message().contains(code), "{code}: {err}");
            assert!(err.message().contains("AWS says no"), "{code}: {err}");
            assert!(err.hint().is_some(), "{code}");
            assert_eq!(err.resource(), Some("db-instance x"));
            assert!(
                err.to_string().contains("HTTP 400, AWS request id req-1"),
                "{err}"
            );
        }
    }

    #[test]
    fn busy_resources_are_transient_conflicts() {
        for code in [
            "DependencyViolation",
            "InvalidDBInstanceState",
            "QueueDeletedRecently",
        ] {
            let err = to_error("op", "r", service(code, 400));
            assert_eq!(err.kind(), ErrorKind::Conflict, "{code}");
            assert!(err.is_transient(), "{code}");
        }
    }

    #[test]
    fn not_found_is_recognised_across_services() {
        for code in [
            "InvalidVpcID.NotFound",
            "NoSuchEntity",
            "NoSuchBucket",
            "ResourceNotFoundException",
            "DBInstanceNotFound",
            "DBSubnetGroupNotFoundFault",
            "ReplicationGroupNotFoundFault",
            "AWS.SimpleQueueService.NonExistentQueue",
            "InvalidLaunchTemplateName.NotFoundException",
        ] {
            assert!(service(code, 400).is_not_found(), "{code}");
        }
        let empty_404 = Failure::Service {
            code: None,
            message: None,
            status: Some(404),
            request_id: None,
        };
        assert!(empty_404.is_not_found());
        assert!(!service("AccessDenied", 403).is_not_found());
        assert!(!Failure::Connection("refused".into()).is_not_found());
    }

    #[test]
    fn unreadable_answers_are_not_mistaken_for_absence() {
        let html_404 = Failure::Unreadable {
            status: Some(404),
            detail: "<html>".into(),
        };
        assert!(!html_404.is_not_found());
        let err = to_error("eks:CreateAddon", "cluster x", html_404);
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(!err.is_transient());
    }

    #[test]
    fn missing_credentials_are_a_permanent_setup_error_not_an_outage() {
        use aws_credential_types::provider::error::CredentialsError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        use aws_smithy_types::error::ErrorMetadata;

        let connector = ConnectorError::other(
            Box::new(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            )),
            None,
        );
        let sdk: SdkError<ErrorMetadata, HttpResponse> = SdkError::dispatch_failure(connector);
        let failure = Failure::from_sdk(&sdk);
        assert!(matches!(failure, Failure::Setup(_)), "{failure:?}");
        let err = to_error("ec2:DescribeVpcs", "vpc comind-dev", failure);
        assert!(
            !err.is_transient(),
            "retrying cannot make credentials appear"
        );
        assert!(err.hint().unwrap().contains("credentials"));
        assert!(
            !err.to_string().contains("DispatchFailure {"),
            "no debug dump: {err}"
        );
    }
}

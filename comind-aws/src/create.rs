//! Creating a resource once, whatever happens to the answer.
//!
//! A create can take effect and still fail for its caller: the connection drops after
//! AWS acted, the answer times out, or an earlier run that died with the same create in
//! flight makes the resource a moment before this run does. Repeating the create then
//! makes a second resource (VPCs, internet gateways, elastic IPs, route tables and NAT
//! gateways have no unique name) or fails on "already exists" (subnets, security
//! groups, roles, launch templates, DB instances, subnet groups, replication groups,
//! buckets, queues, EKS clusters and node groups).
//!
//! So every create goes through [`once`]:
//!
//! - the SDK does not retry it by itself ([`single_attempt`]): its retry would repeat
//!   the create blindly;
//! - when the create may have happened (no answer, or one that could not be read), the
//!   resource is looked for by its tags or name before anything is tried again;
//! - "already exists" is answered the same way: the resource is looked for, and if it
//!   carries our ownership tags it is ours (made by the lost attempt, or by a dying
//!   earlier run) and the run goes on with it; one without our tags stops the run with
//!   the usual conflict, untouched;
//! - errors AWS answered without acting (throttling, 5xx) are retried here, a few times
//!   with backoff, and then left to the engine, which retries the phase (whose
//!   discovery runs first).
//!
//! Idempotency tokens: the SDK fills the `ClientToken`/`clientRequestToken` of the
//! operations that have one (EC2 CreateNatGateway, CreateRouteTable,
//! CreateLaunchTemplate and CreateLaunchTemplateVersion; EKS CreateCluster,
//! CreateNodegroup and the Update calls) once per operation call and reuses it across
//! its own retries, so AWS deduplicates those retries. That is not enough on its own: a
//! token lives only as long as one operation call, so a retry of the phase, or the next
//! run after a crash, sends a new one (a token Comind derived itself and reused across
//! runs would be worse: AWS answers a repeated token with the original resource even
//! after it was deleted), and test backends such as moto ignore tokens. So:
//!
//! - creates that take a token but whose resource has no unique name (NAT gateways,
//!   route tables) get one attempt and [`once`]'s discovery, like the creates that take
//!   no token (VPCs, internet gateways, elastic IPs, subnets, security groups; RDS,
//!   ElastiCache, IAM, S3 and SQS, which have no tokens at all; KMS keys, which have
//!   no name either and are found by their tags); the token is still sent;
//! - creates that take a token and whose name is unique (launch templates, EKS clusters
//!   and node groups) keep the SDK's retries with their token: a repeat can only answer
//!   "already exists", which [`once`] adopts;
//! - CreateLaunchTemplateVersion keeps the SDK's retries and token: a duplicate version
//!   is harmless, and the next run compares the latest one with the spec.

use std::future::Future;
use std::time::Duration;

use aws_smithy_types::retry::RetryConfig;
use comind_core::Result;
use comind_core::engine::RetryPolicy;

use crate::error::Failure;

/// How often [`once`] tries a create that AWS refused without acting (throttling, a
/// server error) before it gives the error to the engine.
const ATTEMPTS: u32 = 3;

/// The backoff between those attempts.
const BACKOFF: RetryPolicy = RetryPolicy {
    retries: ATTEMPTS - 1,
    initial_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(5),
};

/// What [`once`] ended with.
#[derive(Debug)]
pub(crate) enum Made<C, F> {
    /// The create answered: the resource is new.
    Created(C),
    /// The resource was there already (made by a create whose answer was lost, or by
    /// an earlier run), and carries our tags.
    Found(F),
}

/// Runs `create` until it answers, looking for the resource with `find` whenever the
/// create may have happened or AWS says it exists (see the module documentation).
/// `find` answers `Ok(None)` when the resource is not there, and the conflict of
/// [`crate::tags::require_owned`] when it is there but not ours.
///
/// # Errors
/// The create's error when it is permanent, or still transient after [`ATTEMPTS`];
/// `find`'s error; a transient conflict when AWS says the resource exists but it
/// cannot be seen yet (the engine retries the phase, which looks again).
pub(crate) async fn once<C, F, CF, FF>(
    resource: &str,
    mut create: impl FnMut() -> CF,
    mut find: impl FnMut() -> FF,
) -> Result<Made<C, F>>
where
    CF: Future<Output = Result<C>>,
    FF: Future<Output = Result<Option<F>>>,
{
    let mut attempt = 1;
    loop {
        let error = match create().await {
            Ok(made) => return Ok(Made::Created(made)),
            Err(error) => error,
        };
        let (exists, uncertain) = match Failure::of(&error) {
            Some(failure) => (
                failure.code().is_some_and(says_it_exists),
                failure.may_have_acted(),
            ),
            None => (false, false),
        };
        if exists || uncertain {
            if let Some(found) = find().await? {
                tracing::debug!(
                    resource,
                    "found {resource} after its create {}: going on with it",
                    if exists {
                        "said it already exists"
                    } else {
                        "got no answer"
                    }
                );
                return Ok(Made::Found(found));
            }
            if exists {
                // AWS says it exists, yet no resource of that name can be seen (listings
                // lag behind creates): the phase's retry looks again.
                return Err(error.transient(true));
            }
        }
        if !error.is_transient() || attempt >= ATTEMPTS {
            return Err(error);
        }
        tokio::time::sleep(BACKOFF.delay(attempt)).await;
        attempt += 1;
    }
}

/// Whether an AWS error code of a create says its resource exists.
pub(crate) fn says_it_exists(code: &str) -> bool {
    // EntityAlreadyExists, DBInstanceAlreadyExists(Fault), DBSubnetGroupAlreadyExists,
    // CacheSubnetGroupAlreadyExists(Fault), ReplicationGroupAlreadyExists(Fault),
    // InvalidLaunchTemplateName.AlreadyExistsException, QueueAlreadyExists,
    // BucketAlreadyExists (another account's: looking for it says so).
    code.contains("AlreadyExists")
        || code.contains("AlreadyOwnedByYou")
        || matches!(
            code,
            // A security group's name is unique in its VPC.
            "InvalidGroup.Duplicate"
            // A subnet's CIDR block is taken, by the subnet a lost answer made or by
            // another one; looking tells which.
            | "InvalidSubnet.Conflict"
            // EKS: a cluster or node group of that name exists.
            | "ResourceInUseException"
            | "QueueNameExists"
            | "AWS.SimpleQueueService.QueueNameExists"
        )
}

/// SDK configuration overrides for calls the SDK must not retry by itself (see the
/// module documentation): `.customize().config_override(single_attempt::ec2())`.
pub(crate) mod single_attempt {
    use super::RetryConfig;

    /// For an EC2 create.
    pub(crate) fn ec2() -> aws_sdk_ec2::config::Builder {
        aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled())
    }

    /// For an RDS create.
    pub(crate) fn rds() -> aws_sdk_rds::config::Builder {
        aws_sdk_rds::config::Builder::default().retry_config(RetryConfig::disabled())
    }

    /// For an ElastiCache create.
    pub(crate) fn elasticache() -> aws_sdk_elasticache::config::Builder {
        aws_sdk_elasticache::config::Builder::default().retry_config(RetryConfig::disabled())
    }

    /// For an IAM create.
    pub(crate) fn iam() -> aws_sdk_iam::config::Builder {
        aws_sdk_iam::config::Builder::default().retry_config(RetryConfig::disabled())
    }

    /// For an S3 create.
    pub(crate) fn s3() -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled())
    }

    /// For an SQS create.
    pub(crate) fn sqs() -> aws_sdk_sqs::config::Builder {
        aws_sdk_sqs::config::Builder::default().retry_config(RetryConfig::disabled())
    }

    /// For a KMS create.
    pub(crate) fn kms() -> aws_sdk_kms::config::Builder {
        aws_sdk_kms::config::Builder::default().retry_config(RetryConfig::disabled())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use comind_core::{Error, ErrorKind};

    use super::*;
    use crate::error::to_error;

    fn service(code: &str, status: u16) -> Error {
        to_error(
            "ec2:CreateVpc",
            "vpc v",
            Failure::Service {
                code: Some(code.to_string()),
                message: None,
                status: Some(status),
                request_id: None,
            },
        )
    }

    fn lost() -> Error {
        to_error(
            "ec2:CreateVpc",
            "vpc v",
            Failure::Connection("connection reset".into()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_is_followed_by_discovery_not_by_a_second_create() {
        let creates = AtomicU32::new(0);
        let made = once(
            "vpc v",
            || async {
                creates.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(lost())
            },
            || async { Ok(Some("vpc-1")) },
        )
        .await
        .unwrap();
        assert!(matches!(made, Made::Found("vpc-1")));
        assert_eq!(creates.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_with_nothing_made_is_created_again() {
        let creates = AtomicU32::new(0);
        let made = once(
            "vpc v",
            || async {
                if creates.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(lost())
                } else {
                    Ok("vpc-2")
                }
            },
            || async { Ok(None::<&str>) },
        )
        .await
        .unwrap();
        assert!(matches!(made, Made::Created("vpc-2")));
        assert_eq!(creates.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn already_exists_is_ours_or_a_conflict() {
        let ours = once(
            "security-group g",
            || async { Err::<(), _>(service("InvalidGroup.Duplicate", 400)) },
            || async { Ok(Some("sg-1")) },
        )
        .await
        .unwrap();
        assert!(matches!(ours, Made::Found("sg-1")));
        let foreign = once(
            "security-group g",
            || async { Err::<(), _>(service("InvalidGroup.Duplicate", 400)) },
            || async { Err::<Option<()>, _>(Error::conflict("not ours")) },
        )
        .await
        .unwrap_err();
        assert_eq!(foreign.message(), "not ours");
        let unseen = once(
            "security-group g",
            || async { Err::<(), _>(service("InvalidGroup.Duplicate", 400)) },
            || async { Ok(None::<()>) },
        )
        .await
        .unwrap_err();
        assert_eq!(unseen.kind(), ErrorKind::Conflict);
        assert!(unseen.is_transient(), "the phase's retry looks again");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_retried_a_few_times_and_permanent_errors_not_at_all() {
        let creates = AtomicU32::new(0);
        let err = once(
            "vpc v",
            || async {
                creates.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(service("RequestLimitExceeded", 503))
            },
            || async { panic!("a throttled create made nothing: no need to look") },
        )
        .await
        .map(|_: Made<(), ()>| ())
        .unwrap_err();
        assert!(err.is_transient());
        assert_eq!(creates.load(Ordering::SeqCst), ATTEMPTS);
        let creates = AtomicU32::new(0);
        once(
            "vpc v",
            || async {
                creates.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(service("VpcLimitExceeded", 400))
            },
            || async { Ok(None::<()>) },
        )
        .await
        .unwrap_err();
        assert_eq!(creates.load(Ordering::SeqCst), 1);
    }
}

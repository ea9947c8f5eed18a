//! The fault proxy of `comind_test_support::aws_faults` against moto with the plain
//! SDK: it names each protocol's calls, and each fault does what it says (what the
//! crash-safety tests rely on).

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use comind_test_support::aws_faults::{Fault, FaultProxy, Outcome, Rule};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

fn clients(proxy: &FaultProxy) -> (aws_sdk_ec2::Client, aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let sdk = proxy.sdk_config();
    (
        aws_sdk_ec2::Client::new(&sdk),
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        ),
        aws_sdk_sqs::Client::new(&sdk),
    )
}

async fn vpcs(moto: &Moto) -> usize {
    aws_sdk_ec2::Client::new(&moto.sdk_config())
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:test")
                .values("proxy")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .vpcs()
        .len()
}

fn tagged() -> TagSpecification {
    TagSpecification::builder()
        .resource_type(ResourceType::Vpc)
        .tags(Tag::builder().key("test").value("proxy").build())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_is_forwarded_and_named() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let sdk = proxy.sdk_config();
    let (ec2, s3, sqs) = clients(&proxy);
    ec2.describe_vpcs().send().await.unwrap();
    s3.create_bucket()
        .bucket("proxy-bucket")
        .send()
        .await
        .unwrap();
    s3.get_bucket_tagging()
        .bucket("proxy-bucket")
        .send()
        .await
        .unwrap_err();
    let url = sqs
        .create_queue()
        .queue_name("proxy-queue")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    assert!(url.contains(&proxy.port().to_string()), "{url}");
    aws_sdk_eks::Client::new(&sdk)
        .list_clusters()
        .send()
        .await
        .unwrap();
    aws_sdk_rds::Client::new(&sdk)
        .describe_db_instances()
        .send()
        .await
        .unwrap();
    aws_sdk_iam::Client::new(&sdk)
        .list_roles()
        .send()
        .await
        .unwrap();
    let seen: Vec<String> = proxy
        .calls()
        .iter()
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect();
    assert_eq!(
        seen,
        [
            "ec2:DescribeVpcs",
            "s3:CreateBucket",
            "s3:GetBucketTagging",
            "sqs:CreateQueue",
            "eks:ListClusters",
            "rds:DescribeDBInstances",
            "iam:ListRoles",
        ]
    );
    assert!(
        proxy
            .calls()
            .iter()
            .all(|c| c.attempt == Some(1) && c.invocation.is_some()),
        "{:?}",
        proxy.calls()
    );
    assert_eq!(
        proxy.calls_of("GetBucketTagging")[0].outcome,
        Outcome::Forwarded(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_503s_are_answered_in_the_services_shape_and_retried_by_the_sdk() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let (ec2, s3, sqs) = clients(&proxy);
    proxy.inject(Rule::first(2, "DescribeVpcs", Fault::Throttle));
    proxy.inject(Rule::first(1, "ListBuckets", Fault::Throttle));
    proxy.inject(Rule::first(1, "ListQueues", Fault::Unavailable));
    ec2.describe_vpcs().send().await.unwrap();
    s3.list_buckets().send().await.unwrap();
    sqs.list_queues().send().await.unwrap();
    let vpc_calls = proxy.calls_of("DescribeVpcs");
    let outcomes: Vec<_> = vpc_calls.iter().map(|c| c.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Throttled,
            Outcome::Throttled,
            Outcome::Forwarded(200)
        ]
    );
    let attempts: Vec<_> = vpc_calls.iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    assert!(
        vpc_calls
            .iter()
            .all(|c| c.invocation == vpc_calls[0].invocation),
        "one operation call, three attempts"
    );
    assert_eq!(proxy.count("ListBuckets"), 2);
    assert_eq!(proxy.count("ListQueues"), 2);

    // Three answers of 503 exhaust the SDK's three attempts: the caller sees the code.
    proxy.inject(Rule::first(3, "DescribeSubnets", Fault::Unavailable));
    let err = ec2.describe_subnets().send().await.unwrap_err();
    let code = aws_smithy_types::error::metadata::ProvideErrorMetadata::code(&err);
    assert_eq!(code, Some("Unavailable"), "{err:?}");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reaches_no_one_and_a_lost_answer_reaches_aws() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let (ec2, _, _) = clients(&proxy);

    proxy.inject(Rule::first(1, "CreateVpc", Fault::ResetBeforeForwarding));
    ec2.create_vpc()
        .cidr_block("10.1.0.0/16")
        .tag_specifications(tagged())
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs(&moto).await, 1, "the reset call never reached moto");
    let outcomes: Vec<_> = proxy
        .calls_of("CreateVpc")
        .into_iter()
        .map(|c| c.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [Outcome::ResetBeforeForwarding, Outcome::Forwarded(200)]
    );

    // The hazard the product code must handle: the SDK retries a create whose answer
    // was lost, and moto made both.
    proxy.inject(Rule::first(1, "CreateVpc", Fault::LoseAnswer));
    ec2.create_vpc()
        .cidr_block("10.2.0.0/16")
        .tag_specifications(tagged())
        .send()
        .await
        .unwrap();
    assert_eq!(
        vpcs(&moto).await,
        3,
        "moto acted on the call whose answer was lost"
    );
    assert_eq!(
        proxy.calls_of("CreateVpc")[2].outcome,
        Outcome::AnswerLost(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_waits_for_the_test_and_can_be_forwarded_or_dropped() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let (_, _, sqs) = clients(&proxy);
    let direct = aws_sdk_sqs::Client::new(&moto.sdk_config());
    proxy.inject(Rule::first(1, "CreateQueue", Fault::Hold));

    let client = sqs.clone();
    let call = tokio::spawn(async move { client.create_queue().queue_name("held").send().await });
    let held = proxy.held("CreateQueue").await;
    assert_eq!(held.call().operation, "CreateQueue");
    assert_eq!(proxy.calls_of("CreateQueue")[0].outcome, Outcome::Held);
    let listed = direct.list_queues().send().await.unwrap();
    assert!(listed.queue_urls().is_empty(), "nothing reached moto yet");
    assert_eq!(held.forward().await, Outcome::Forwarded(200));
    let created = call.await.unwrap().unwrap();
    assert!(created.queue_url().unwrap().ends_with("/held"));

    // Dropped: the client's connection is reset (its SDK then tries again, and that
    // attempt is held too), and moto never sees it.
    proxy.inject(Rule::first(3, "CreateQueue", Fault::Hold));
    let client = sqs.clone();
    let call =
        tokio::spawn(async move { client.create_queue().queue_name("dropped").send().await });
    for _ in 0..3 {
        let held = proxy.held("CreateQueue").await;
        assert_eq!(held.drop_call().await, Outcome::Dropped);
    }
    call.await.unwrap().unwrap_err();
    let listed = direct.list_queues().send().await.unwrap();
    assert_eq!(listed.queue_urls().len(), 1, "{:?}", listed.queue_urls());
}

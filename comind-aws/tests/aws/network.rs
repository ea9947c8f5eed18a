//! The network phase with a VPC the environment does not own.

use std::collections::HashMap;

use comind_core::{DestroyOptions, ErrorKind, Operation, PhaseContext, PhaseId};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

use crate::support::{self, CallLog, Peek};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_vpc_is_used_and_never_deleted() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let vpc = peek
        .ec2
        .create_vpc()
        .cidr_block("10.50.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [
        ("10.50.0.0/20", "us-east-1a"),
        ("10.50.16.0/20", "us-east-1b"),
    ] {
        let subnet = peek
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let state = tempfile::tempdir().unwrap();
    let env = support::env("byo", state.path(), |c| {
        c.aws.vpc.id = Some(vpc.clone());
        c.aws.vpc.subnet_ids = subnets.clone();
    });
    let log = CallLog::default();
    let provider = support::provider(&moto, &log);
    let phase = support::phase(&provider, &env, "network");
    let ctx =
        |op| PhaseContext::standalone(PhaseId::new("network"), op, env.clone(), HashMap::new());

    phase.preflight(&ctx(Operation::Apply)).await.unwrap();
    let applied = phase.apply(&ctx(Operation::Apply)).await.unwrap();
    assert_eq!(applied.outputs.require("VPC_ID").unwrap(), vpc);
    assert_eq!(
        applied.outputs.require("SUBNET_IDS").unwrap(),
        subnets.join(",")
    );
    assert_eq!(applied.outputs.require("VPC_CIDR").unwrap(), "10.50.0.0/16");
    assert_eq!(
        applied.outputs.require("AVAILABILITY_ZONES").unwrap(),
        "us-east-1a,us-east-1b"
    );
    assert!(applied.outputs.get("PUBLIC_SUBNET_IDS").is_none());
    assert_eq!(
        applied.changes.len(),
        3,
        "only the three security groups: {:?}",
        applied.changes
    );
    let made = log.mutating();
    assert!(
        made.iter()
            .all(|c| c == "EC2:CreateSecurityGroup" || c == "EC2:AuthorizeSecurityGroupIngress"),
        "{made:?}"
    );
    let groups = peek
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let database = groups
        .security_groups()
        .iter()
        .find(|g| g.group_name() == Some("comind-byo-database"))
        .unwrap();
    let rule = &database.ip_permissions()[0];
    assert_eq!(rule.from_port(), Some(5432));
    assert_eq!(
        rule.user_id_group_pairs()[0].group_id(),
        Some(
            applied
                .outputs
                .require("CLUSTER_SECURITY_GROUP_ID")
                .unwrap()
        ),
        "the database admits the cluster group only"
    );
    assert!(rule.ip_ranges().is_empty());

    let again = phase.apply(&ctx(Operation::Apply)).await.unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    let destroyed = phase
        .destroy(&ctx(Operation::Destroy), DestroyOptions { purge: true })
        .await
        .unwrap();
    assert_eq!(destroyed.changes.len(), 3, "{:?}", destroyed.changes);
    assert!(destroyed.changes.iter().all(|c| c.kind == "security-group"));
    let still = peek.ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
    assert_eq!(still.vpcs().len(), 1, "the VPC is not ours to delete");
    let still = peek
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(subnets.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.subnets().len(),
        2,
        "the subnets are not ours to delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subnet_of_an_existing_vpc_is_refused_before_anything_changes() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let vpc = peek
        .ec2
        .create_vpc()
        .cidr_block("10.51.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let env = support::env("byo-bad", state.path(), |c| {
        c.aws.vpc.id = Some(vpc.clone());
        c.aws.vpc.subnet_ids = vec!["subnet-0000aaaa".into(), "subnet-0000bbbb".into()];
    });
    let provider = support::provider(&moto, &CallLog::default());
    let phase = support::phase(&provider, &env, "network");
    let ctx = PhaseContext::standalone(
        PhaseId::new("network"),
        Operation::Apply,
        env.clone(),
        HashMap::new(),
    );
    let err = phase.preflight(&ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("aws.vpc.subnet_ids"), "{err}");
}

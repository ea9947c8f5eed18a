//! Creates whose answer is lost (AWS acted, the connection was reset before the
//! answer arrived), through the fault proxy: each leaves exactly one resource, and the
//! next `up` changes nothing. And resources duplicated by an interrupted run are
//! collapsed by the next `up`, which says so in its plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use comind_core::engine::RunOptions;
use comind_core::{Action, Environment, UpOptions};
use comind_test_support::aws_faults::{Fault, FaultProxy, Outcome, Rule};
use comind_test_support::moto::Moto;
use comind_test_support::{names, require_peer};

use crate::support::runs::{
    self, IAM_ROLES, assert_second_up_changes_nothing, assert_succeeded, counts, drain,
    everything_owned, one_network, only,
};
use crate::support::{CallLog, Peek, owned};

/// Brings up `phases` (all if empty) of a new environment with the first answer to
/// each of `operations` lost, and checks that the proxy saw each operation as many
/// times as given (once per resource: nothing repeated a create blindly; 0: not
/// checked), that the run succeeded, and that a second `up` changes nothing. Returns
/// what the environment owns afterwards.
async fn up_with_lost_answers(
    operations: &[(&str, usize)],
    phases: &[&str],
) -> Option<(Vec<String>, Arc<Environment>)> {
    let moto = match comind_test_support::peers::available(Moto::start()) {
        Some(moto) => moto,
        None => return None,
    };
    let proxy = FaultProxy::start(&moto).unwrap();
    for (operation, _) in operations {
        proxy.inject(Rule::first(1, operation, Fault::LoseAnswer));
    }
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let name = names::unique("lost");
    let bootstrap = runs::bootstrap(proxy.sdk_config(), &log, &name, state.path(), |_| {});
    let run = if phases.is_empty() {
        RunOptions::default()
    } else {
        only(phases)
    };
    let up = bootstrap.up(&run, &UpOptions::default()).await.unwrap();
    assert_succeeded(&up, "up with lost answers");
    for (operation, sent) in operations {
        let calls = proxy.calls_of(operation);
        assert_eq!(
            calls.first().map(|c| c.outcome.clone()),
            Some(Outcome::AnswerLost(200)),
            "the first {operation} took effect and its answer was lost: {calls:?}"
        );
        if *sent > 0 {
            assert_eq!(
                calls.len(),
                *sent,
                "{operation} must not be repeated blindly after its answer was lost: {calls:?}"
            );
        }
    }
    assert_second_up_changes_nothing(&bootstrap, &log, &run).await;
    let env = bootstrap.env().clone();
    let peek = Peek::new(&moto);
    Some((everything_owned(&peek, &env).await, env))
}

fn with(base: BTreeMap<String, usize>, extra: &[(&str, usize)]) -> BTreeMap<String, usize> {
    let mut all = base;
    for (kind, count) in extra {
        all.insert(kind.to_string(), *count);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_create_vpc_leaves_one_vpc() {
    let Some((owned, _)) = up_with_lost_answers(&[("CreateVpc", 1)], &["network"]).await else {
        return;
    };
    assert_eq!(counts(&owned), one_network(), "{owned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_create_internet_gateway_leaves_one_gateway() {
    let Some((owned, _)) =
        up_with_lost_answers(&[("CreateInternetGateway", 1)], &["network"]).await
    else {
        return;
    };
    assert_eq!(counts(&owned), one_network(), "{owned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_allocate_address_leaves_one_address() {
    let Some((owned, _)) = up_with_lost_answers(&[("AllocateAddress", 1)], &["network"]).await
    else {
        return;
    };
    assert_eq!(counts(&owned), one_network(), "{owned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_a_uniquely_named_create_is_adopted() {
    // A security group, a role and the database: names AWS keeps unique, so a repeat
    // would answer "already exists".
    let Some((owned, env)) = up_with_lost_answers(
        // Three groups, the roles, one instance: one call each.
        &[
            ("CreateSecurityGroup", 3),
            ("CreateRole", IAM_ROLES),
            ("CreateDBInstance", 1),
        ],
        &["network", "iam", "postgres"],
    )
    .await
    else {
        return;
    };
    let want = with(one_network(), &[("iam-role", IAM_ROLES)]);
    let counted = counts(&owned);
    for (kind, count) in &want {
        assert_eq!(counted.get(kind), Some(count), "{kind}: {owned:?}");
    }
    for resource in [
        env.resource_name("postgres"),
        format!("subnet-group:{}", env.resource_name("postgres")),
    ] {
        assert_eq!(
            owned.iter().filter(|r| **r == resource).count(),
            1,
            "{resource}: {owned:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_create_of_a_full_up_survives_a_lost_answer() {
    // Creates that take an idempotency token and a unique name (launch template, EKS
    // cluster and node group) keep the SDK's retries with their token, so only the
    // first answer's fate is checked for them (0).
    let creates = [
        ("CreateVpc", 1),
        ("CreateInternetGateway", 1),
        ("CreateSubnet", 6),
        ("AllocateAddress", 1),
        ("CreateNatGateway", 1),
        ("CreateRouteTable", 4),
        ("CreateSecurityGroup", 3),
        ("CreateRole", IAM_ROLES),
        ("CreateLaunchTemplate", 0),
        ("CreateCluster", 0),
        ("CreateNodegroup", 0),
        // A KMS key has no name nor token: found by its tags; its alias is unique.
        ("CreateKey", 1),
        ("CreateAlias", 0),
        // The runner's access entry, the managed add-ons, the Pod Identity
        // associations: EKS creates with a token too (moto ignores it and answers
        // the retry "in use", which Comind must adopt).
        ("CreateAccessEntry", 0),
        ("CreateAddon", 0),
        ("CreatePodIdentityAssociation", 0),
        ("CreateDBSubnetGroup", 1),
        ("CreateDBInstance", 1),
        ("CreateBucket", 2),
        ("CreateCacheSubnetGroup", 1),
        ("CreateReplicationGroup", 1),
        ("CreateQueue", 2),
        // Not creates, but as unsafe to repeat blindly.
        ("AttachInternetGateway", 0),
        ("CreateRoute", 0),
        ("AssociateRouteTable", 0),
        ("AuthorizeSecurityGroupIngress", 0),
    ];
    let Some((owned, env)) = up_with_lost_answers(&creates, &[]).await else {
        return;
    };
    // RDS's own automated snapshots (`rds:...`) are not Comind's doing.
    let owned: Vec<String> = owned
        .into_iter()
        .filter(|r| !r.starts_with("rds:"))
        .collect();
    let name = |suffix: &str| env.resource_name(suffix);
    let mut want = with(
        one_network(),
        &[
            ("iam-role", IAM_ROLES),
            ("eks-cluster", 1),
            ("eks-nodegroup", 1),
            ("launch-template", 1),
        ],
    );
    for resource in [
        format!("alias/{}", name("cluster-secrets")),
        name("postgres"),
        format!("subnet-group:{}", name("postgres")),
        name("cache"),
        format!("subnet-group:{}", name("cache")),
        name("backups"),
        name("uploads"),
        name("jobs"),
        format!("{}-dlq", name("jobs")),
    ] {
        assert_eq!(
            owned.iter().filter(|r| **r == resource).count(),
            1,
            "{resource}: {owned:?}"
        );
        want.insert(resource, 1);
    }
    assert_eq!(counts(&owned), want, "{owned:?}");
}

fn network_tags(env: &Environment, name: &str) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Vpc);
    for (k, v) in env.labels("network", None) {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    spec.tags(Tag::builder().key("Name").value(name).build())
        .tags(Tag::builder().key("comind.dev/role").value("vpc").build())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vpcs_tagged_for_one_environment_are_collapsed_and_the_plan_says_so() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let name = names::unique("twovpc");
    let bootstrap = runs::bootstrap(moto.sdk_config(), &log, &name, state.path(), |_| {});
    let env = bootstrap.env().clone();
    // What an interrupted run leaves: two VPCs carrying our tags, one of them holding
    // a subnet of ours. The kept one is the one in use, not the lowest id.
    let vpc_name = env.resource_name("network");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let vpc = peek
            .ec2
            .create_vpc()
            .cidr_block("10.40.0.0/16")
            .tag_specifications(network_tags(&env, &vpc_name))
            .send()
            .await
            .unwrap();
        ids.push(vpc.vpc().unwrap().vpc_id().unwrap().to_string());
    }
    ids.sort();
    let (extra, in_use) = (ids[0].clone(), ids[1].clone());
    let subnet_name = env.resource_name("private-us-east-1a");
    let mut subnet_tags = TagSpecification::builder().resource_type(ResourceType::Subnet);
    for (k, v) in env.labels("network", None) {
        subnet_tags = subnet_tags.tags(Tag::builder().key(k).value(v).build());
    }
    peek.ec2
        .create_subnet()
        .vpc_id(&in_use)
        .cidr_block("10.40.0.0/20")
        .availability_zone("us-east-1a")
        .tag_specifications(
            subnet_tags
                .tags(Tag::builder().key("Name").value(&subnet_name).build())
                .tags(
                    Tag::builder()
                        .key("comind.dev/role")
                        .value("private")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();

    let run = only(&["network"]);
    let plan = bootstrap.plan(&run).await.unwrap();
    assert_succeeded(&plan, "plan over two VPCs");
    let network = &plan.plans[&comind_core::PhaseId::new("network")];
    let deletes: Vec<_> = network
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete && c.kind == "vpc")
        .collect();
    assert_eq!(deletes.len(), 1, "{:?}", network.changes);
    assert_eq!(deletes[0].name, extra);
    let reason = deletes[0].reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!("duplicate of {in_use}")),
        "the plan says why: {reason}"
    );
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "the plan changed something"
    );

    let mut events = bootstrap.events().subscribe();
    let up = bootstrap.up(&run, &UpOptions::default()).await.unwrap();
    assert_succeeded(&up, "up over two VPCs");
    let finished = drain(&mut events);
    assert!(
        finished.changes["network"].contains(deletes[0]),
        "apply did what the plan said: {:?}",
        finished.changes["network"]
    );
    let vpcs: Vec<String> = owned::network(&peek, &env)
        .await
        .into_iter()
        .filter(|r| r.starts_with("vpc "))
        .collect();
    assert_eq!(vpcs, [format!("vpc {in_use}")]);
    assert_eq!(counts(&owned::network(&peek, &env).await), one_network());
    assert_second_up_changes_nothing(&bootstrap, &log, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_survives_lost_answers_and_keeps_one_final_snapshot_each() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let name = names::unique("lostdown");
    let bootstrap = runs::bootstrap(proxy.sdk_config(), &log, &name, state.path(), |_| {});
    let env = bootstrap.env().clone();
    let up = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&up, "up");
    let calls = [
        "CreateSnapshot",
        "DeleteReplicationGroup",
        "DeleteDBInstance",
        "DeleteNodegroup",
        "DeleteCluster",
        "DeleteLaunchTemplate",
        "DeleteNatGateway",
        "ReleaseAddress",
        "DeleteSecurityGroup",
        "DeleteRouteTable",
        "DetachInternetGateway",
        "DeleteInternetGateway",
        "DeleteSubnet",
        "DeleteVpc",
        "DeleteRole",
        "DeleteBucket",
        "DeleteQueue",
    ];
    for call in calls {
        proxy.inject(Rule::first(1, call, Fault::LoseAnswer));
    }
    let down = bootstrap
        .down(&RunOptions::default(), &comind_core::DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down with lost answers");
    for call in calls {
        assert!(
            matches!(
                proxy.calls_of(call).first().map(|c| &c.outcome),
                Some(Outcome::AnswerLost(_))
            ),
            "{call}: {:?}",
            proxy.calls_of(call)
        );
    }
    let left = everything_owned(&peek, &env).await;
    let snapshots: Vec<&String> = left.iter().filter(|r| r.contains("-final-")).collect();
    assert_eq!(snapshots.len(), 2, "one final snapshot each: {left:?}");
    assert_eq!(
        counts(&owned::network(&peek, &env).await),
        BTreeMap::new(),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_throttled_then_reset_are_tried_again_and_make_one_of_each() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let peek = Peek::new(&moto);
    // The first call of each create is throttled, the second never reaches AWS: the
    // create is tried again, after looking for what the reset one might have made.
    for create in [
        "CreateVpc",
        "CreateInternetGateway",
        "CreateSubnet",
        "AllocateAddress",
        "CreateNatGateway",
        "CreateRouteTable",
        "CreateSecurityGroup",
        "CreateRole",
        "CreateDBSubnetGroup",
        "CreateDBInstance",
        "CreateBucket",
        "CreateQueue",
    ] {
        proxy.inject(Rule::first(1, create, Fault::Throttle));
        proxy.inject(Rule::first(1, create, Fault::ResetBeforeForwarding).after(1));
    }
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let run = only(&["network", "iam", "postgres", "object-store", "queue"]);
    let bootstrap = runs::bootstrap(
        proxy.sdk_config(),
        &log,
        &names::unique("flaky"),
        state.path(),
        |_| {},
    );
    let up = bootstrap.up(&run, &UpOptions::default()).await.unwrap();
    assert_succeeded(&up, "up through throttled and reset creates");
    let counted = counts(&everything_owned(&peek, bootstrap.env()).await);
    for (kind, count) in one_network() {
        assert_eq!(counted.get(&kind), Some(&count), "{kind}: {counted:?}");
    }
    assert_eq!(counted.get("iam-role"), Some(&IAM_ROLES), "{counted:?}");
    assert_eq!(
        proxy.count("CreateVpc"),
        3,
        "{:?}",
        proxy.calls_of("CreateVpc")
    );
    assert_second_up_changes_nothing(&bootstrap, &log, &run).await;
}

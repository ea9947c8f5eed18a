//! Ownership from the first moment and to the last: resources are tagged by the call
//! that creates them (no window in which a resource of ours looks like someone
//! else's), and what a tag-filtered describe returns is checked against its tags
//! before anything is adopted or deleted (moto, like a lax backend, ignores the tag
//! filter of `DescribeNatGateways`).

use comind_core::event::RunOutcome;
use comind_core::{DownOptions, ErrorKind, UpOptions};
use comind_test_support::aws_faults::{Fault, FaultProxy, Outcome, Rule};
use comind_test_support::moto::Moto;
use comind_test_support::{names, require_peer};

use crate::support::runs::{self, assert_succeeded, only, purge};
use crate::support::{self, CallLog, Peek, owned};

async fn bucket_tags(peek: &Peek, bucket: &str) -> Vec<(String, String)> {
    match peek.s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(out) => {
            let mut tags: Vec<(String, String)> = out
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            tags.sort();
            tags
        }
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_carry_their_tags_from_the_create_and_an_untagged_namesake_is_refused() {
    let moto = require_peer!(Moto::start());
    let proxy = require_peer!(FaultProxy::start(&moto));
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let name = names::unique("tagged");
    let env = support::env(&name, state.path(), |_| {});
    let uploads = env.resource_name("uploads");
    let ours: Vec<(String, String)> = env.labels("object-store", None).into_iter().collect();

    // Stop the run at the call right after the first bucket's create: the bucket is
    // ours by its tags already, so a crash there leaves nothing that looks foreign.
    proxy.inject(Rule::first(1, "CreateBucket", Fault::Hold));
    let run = only(&["object-store"]);
    let bootstrap = runs::bootstrap(proxy.sdk_config(), &log, &name, state.path(), |_| {});
    let options = UpOptions::default();
    // The bootstrap's run is not `Send`; it runs beside the test's own steps instead.
    let (up, ()) = tokio::join!(bootstrap.up(&run, &options), async {
        let created = proxy.held("CreateBucket").await;
        proxy.inject(Rule::next(1, Fault::Hold).on("s3"));
        assert_eq!(created.forward().await, Outcome::Forwarded(200));
        let after = proxy.held_any().await;
        assert_ne!(after.call().operation, "PutBucketTagging");
        let listed = peek.s3.list_buckets().send().await.unwrap();
        let bucket = listed.buckets()[0].name().unwrap().to_string();
        assert_eq!(
            bucket_tags(&peek, &bucket).await,
            ours,
            "the bucket is tagged by its create, before {}",
            after.call().operation
        );
        assert_eq!(after.forward().await, Outcome::Forwarded(200));
    });
    let up = up.unwrap();
    assert_succeeded(&up, "up of the buckets");
    assert_eq!(proxy.count("CreateBucket"), 2);
    assert_eq!(
        proxy.count("PutBucketTagging"),
        0,
        "no create-then-tag: {:?}",
        proxy.calls()
    );
    for bucket in [env.resource_name("backups"), uploads.clone()] {
        assert_eq!(bucket_tags(&peek, &bucket).await, ours, "{bucket}");
    }

    // A bucket with another environment's name and no tags is not ours: refused,
    // untouched.
    let other = names::unique("foreign");
    let taken = format!("comind-{other}-uploads");
    peek.s3.create_bucket().bucket(&taken).send().await.unwrap();
    let foreign = runs::bootstrap(proxy.sdk_config(), &log, &other, state.path(), |_| {});
    log.clear();
    let refused = foreign.up(&run, &UpOptions::default()).await.unwrap();
    assert_eq!(
        refused.summary.outcome,
        RunOutcome::Rejected,
        "{:?}",
        refused.summary
    );
    let error = refused
        .summary
        .phases
        .iter()
        .find(|p| p.id.as_str() == "object-store")
        .and_then(|p| p.error.clone())
        .unwrap();
    assert_eq!(error.kind, ErrorKind::Conflict, "{error}");
    assert!(
        error.message.contains(&format!("bucket `{taken}`")),
        "{error}"
    );
    assert_eq!(log.mutating(), Vec::<String>::new());
    assert_eq!(bucket_tags(&peek, &taken).await, Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_environment_never_adopts_nor_deletes_the_first_ones_nat_gateway() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let run = only(&["network"]);
    let first = runs::bootstrap(
        moto.sdk_config(),
        &log,
        &names::unique("first"),
        state.path(),
        |_| {},
    );
    let up = first.up(&run, &UpOptions::default()).await.unwrap();
    assert_succeeded(&up, "up of the first environment");
    let first_network = owned::network(&peek, first.env()).await;
    let first_nat: Vec<String> = first_network
        .iter()
        .filter(|r| r.starts_with("nat-gateway "))
        .cloned()
        .collect();
    assert_eq!(first_nat.len(), 1, "{first_network:?}");

    let second = runs::bootstrap(
        moto.sdk_config(),
        &log,
        &names::unique("second"),
        state.path(),
        // Another CIDR, as a user running two environments in one account would pick.
        |c| c.aws.vpc.cidr = "10.41.0.0/16".to_string(),
    );
    log.clear();
    let up = second.up(&run, &UpOptions::default()).await.unwrap();
    assert_succeeded(&up, "up of the second environment");
    assert!(
        log.mutating().iter().any(|c| c == "EC2:CreateNatGateway"),
        "the second environment made its own NAT gateway: {:?}",
        log.mutating()
    );
    let second_nat: Vec<String> = owned::network(&peek, second.env())
        .await
        .into_iter()
        .filter(|r| r.starts_with("nat-gateway "))
        .collect();
    assert_eq!(second_nat.len(), 1, "{second_nat:?}");
    assert_ne!(second_nat, first_nat);
    // Its private routes go through its own NAT gateway.
    let second_vpc = up.merged_outputs().require("VPC_ID").unwrap().to_string();
    let tables = peek
        .ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&second_vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let first_nat_id = first_nat[0].trim_start_matches("nat-gateway ");
    for table in tables.route_tables() {
        for route in table.routes() {
            assert_ne!(route.nat_gateway_id(), Some(first_nat_id), "{table:?}");
        }
    }

    let down = second
        .down(&purge(), &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down --purge of the second environment");
    assert_eq!(
        owned::network(&peek, second.env()).await,
        Vec::<String>::new()
    );
    assert_eq!(
        owned::network(&peek, first.env()).await,
        first_network,
        "the first environment's network is intact"
    );
    let nat = peek
        .ec2
        .describe_nat_gateways()
        .nat_gateway_ids(first_nat_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        nat.nat_gateways()[0].state().map(|s| s.as_str()),
        Some("available")
    );
}

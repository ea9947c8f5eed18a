//! Whole runs through `comind_core::Bootstrap` with `AwsProvider`, as the CLI makes
//! them: up, a second up, plan, status, down, down --purge, an interrupted run, a
//! production environment, and names taken by resources that are not ours.

use std::os::unix::fs::PermissionsExt;

use aws_sdk_kms::types::KeyState;
use comind_core::config::Config;
use comind_core::engine::RunOptions;
use comind_core::event::{Outcome, RunOutcome};
use comind_core::{
    Action, Bootstrap, Change, DownOptions, ErrorKind, Health, PhaseId, ServiceKind, UpOptions,
};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

use crate::support::runs::{assert_succeeded, drain, everything_owned, purge};
use crate::support::{CallLog, Peek, owned, runs};

fn bootstrap(
    moto: &Moto,
    log: &CallLog,
    name: &str,
    state: &std::path::Path,
    edit: impl FnOnce(&mut Config),
) -> Bootstrap {
    runs::bootstrap(moto.sdk_config(), log, name, state, edit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_converges_and_a_second_up_makes_no_mutating_call() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "full", state.path(), |_| {});

    // Plan on nothing: changes everywhere, nothing touched.
    let plan = bootstrap.plan(&RunOptions::default()).await.unwrap();
    assert_succeeded(&plan, "plan on nothing");
    for id in [
        "network",
        "iam",
        "cluster",
        "postgres",
        "object-store",
        "cache",
        "queue",
    ] {
        let p = &plan.plans[&PhaseId::new(id)];
        assert!(!p.changes.is_empty(), "plan of `{id}` on nothing: {p:?}");
        assert!(p.outputs.is_none(), "plan of `{id}` on nothing has outputs");
    }
    assert!(
        plan.plans[&PhaseId::new("cluster")].deferred.is_some(),
        "the cluster's plan depends on network and iam"
    );
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "plan made mutating calls"
    );

    let up = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&up, "first up");
    assert!(up.summary.changes > 20, "{:?}", up.summary);
    // The recorder sees mutating calls, so its silence below means something.
    let made = log.mutating();
    for call in [
        "EC2:CreateVpc",
        "EKS:CreateCluster",
        "RDS:CreateDBInstance",
        "S3:CreateBucket",
    ] {
        assert!(
            made.iter().any(|c| c == call),
            "{call} not recorded: {made:?}"
        );
    }

    // The same keys as any provider of the same kinds.
    let outputs = up.merged_outputs();
    for kind in ServiceKind::ALL {
        for key in kind.required_outputs() {
            assert!(outputs.get(key).is_some(), "{kind}: `{key}` missing");
        }
        for key in kind.secret_outputs() {
            if let Some(value) = outputs.get(key) {
                assert!(value.is_secret(), "`{key}` must be a secret");
            }
        }
    }
    for key in [
        "DATABASE_URL_DEV",
        "S3_BUCKET_BACKUPS",
        "S3_BUCKET_UPLOADS",
        "SQS_QUEUE_URL_JOBS",
        "SQS_DLQ_URL_JOBS",
        "VPC_ID",
        "CLUSTER_ENDPOINT",
        "KUBECONFIG",
    ] {
        assert!(outputs.get(key).is_some(), "`{key}` missing");
    }
    assert_eq!(
        outputs.require("S3_BUCKET_UPLOADS").unwrap(),
        "comind-full-uploads"
    );
    assert!(
        outputs
            .require("DATABASE_URL")
            .unwrap()
            .ends_with("/dev?sslmode=require")
    );
    assert!(
        outputs
            .require("REDIS_URL")
            .unwrap()
            .starts_with("rediss://:")
    );
    assert_eq!(outputs.require("S3_ENDPOINT").unwrap(), moto.url());
    // What the AWS Load Balancer Controller's add-on is told of its cluster.
    assert_eq!(
        outputs.require("CLUSTER_VPC_ID").unwrap(),
        outputs.require("VPC_ID").unwrap()
    );
    assert_eq!(
        outputs.require("CLUSTER_NAME").unwrap(),
        "comind-full-cluster"
    );
    assert!(!outputs.require("CLUSTER_REGION").unwrap().is_empty());

    // The kubeconfig: private, and its user runs `comind eks-token`.
    let path = std::path::PathBuf::from(outputs.require("KUBECONFIG").unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let kubeconfig: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exec = &kubeconfig["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "comind");
    assert_eq!(exec["args"][0], "eks-token");
    assert_eq!(exec["args"][2], "comind-full-cluster");

    // A second up: nothing to do, and not a single mutating call.
    log.clear();
    let mut events = bootstrap.events().subscribe();
    let again = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&again, "second up");
    let finished = drain(&mut events);
    for (phase, changes) in &finished.changes {
        assert!(
            changes.is_empty(),
            "second up changed `{phase}`: {changes:?}"
        );
    }
    assert_eq!(again.summary.changes, 0);
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "the second up made mutating calls"
    );
    let looked = log.calls();
    assert!(
        looked.len() > 30,
        "the second up must still look at everything: {looked:?}"
    );
    assert_eq!(again.merged_outputs(), outputs);

    // Plan and status agree.
    let plan = bootstrap.plan(&RunOptions::default()).await.unwrap();
    for (id, p) in &plan.plans {
        assert!(p.is_empty(), "plan of `{id}` after up: {p:?}");
        assert!(
            p.outputs.is_some(),
            "plan of `{id}` after up has no outputs"
        );
    }
    let status = bootstrap.status(&RunOptions::default()).await.unwrap();
    for (id, s) in &status.statuses {
        assert_eq!(s.health, Health::Ready, "status of `{id}`: {s:?}");
    }
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "plan or status made mutating calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_keeps_data_up_restores_it_and_purge_removes_everything() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "keep", state.path(), |_| {});
    let env = bootstrap.env().clone();
    let up = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&up, "up");
    let outputs = up.merged_outputs();
    let uploads = outputs.require("S3_BUCKET_UPLOADS").unwrap().to_string();
    let jobs = outputs.require("SQS_QUEUE_URL_JOBS").unwrap().to_string();
    peek.s3
        .put_object()
        .bucket(&uploads)
        .key("report.pdf")
        .body(b"data".to_vec().into())
        .send()
        .await
        .unwrap();
    peek.sqs
        .send_message()
        .queue_url(&jobs)
        .message_body("job-1")
        .send()
        .await
        .unwrap();
    let password = outputs.require("POSTGRES_PASSWORD").unwrap().to_string();

    let mut events = bootstrap.events().subscribe();
    let down = bootstrap
        .down(&RunOptions::default(), &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down");
    let finished = drain(&mut events);
    let kept = |phase: &str| -> Vec<String> {
        finished.kept[phase]
            .iter()
            .map(|k| format!("{} {}", k.kind, k.name))
            .collect()
    };
    let pg_kept = kept("postgres");
    assert_eq!(pg_kept.len(), 1, "{pg_kept:?}");
    assert!(
        pg_kept[0].starts_with("db-snapshot comind-keep-postgres-final-"),
        "{pg_kept:?}"
    );
    assert!(
        finished.changes["postgres"]
            .iter()
            .any(|c| c.action == Action::Create && c.kind == "db-snapshot"),
        "the final snapshot is reported as made"
    );
    assert_eq!(
        kept("object-store"),
        vec!["bucket comind-keep-uploads".to_string()]
    );
    assert!(
        finished.changes["object-store"].contains(&Change::delete("bucket", "comind-keep-backups")),
        "the empty bucket goes"
    );
    let mut queue_kept = kept("queue");
    queue_kept.sort();
    assert_eq!(
        queue_kept,
        vec![
            "queue comind-keep-jobs".to_string(),
            "queue comind-keep-jobs-dlq".to_string()
        ]
    );
    assert!(kept("cache")[0].starts_with("cache-snapshot comind-keep-cache-final-"));
    for phase in ["network", "iam", "cluster"] {
        assert!(
            !finished.changes[phase].is_empty(),
            "down removed nothing of `{phase}`"
        );
    }
    // The key that encrypted the cluster's Secrets stays: deleting it cannot be undone.
    assert_eq!(
        kept("cluster"),
        vec!["kms-key alias/comind-keep-cluster-secrets".to_string()]
    );
    let key = peek
        .kms
        .describe_key()
        .key_id("alias/comind-keep-cluster-secrets")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(key.key_state(), Some(&KeyState::Enabled));
    let left = everything_owned(&peek, &env).await;
    assert_eq!(left.len(), 6, "only data and the key are left: {left:?}");
    assert!(!state.path().join("aws/keep/kubeconfig").exists());

    // up again: the database comes back from its snapshot, the data is still there.
    let mut events = bootstrap.events().subscribe();
    let up = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&up, "up after down");
    let finished = drain(&mut events);
    assert!(
        finished.changes["postgres"]
            .iter()
            .any(|c| c.kind == "db-instance"
                && c.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("restored from final snapshot"))),
        "{:?}",
        finished.changes["postgres"]
    );
    assert!(
        finished.changes["cache"].iter().any(|c| c
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("restored from final snapshot"))),
        "{:?}",
        finished.changes["cache"]
    );
    assert_eq!(
        up.merged_outputs().require("POSTGRES_PASSWORD").unwrap(),
        password
    );
    let cluster = peek
        .eks
        .describe_cluster()
        .name("comind-keep-cluster")
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        cluster.encryption_config()[0].provider().unwrap().key_arn(),
        key.arn(),
        "the new cluster encrypts with the kept key"
    );
    peek.s3
        .head_object()
        .bucket(&uploads)
        .key("report.pdf")
        .send()
        .await
        .unwrap();
    let messages = peek
        .sqs
        .receive_message()
        .queue_url(&jobs)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    assert_eq!(messages.messages()[0].body(), Some("job-1"));

    // down --purge: nothing at all is left, credentials included.
    let mut events = bootstrap.events().subscribe();
    let down = bootstrap
        .down(&purge(), &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down --purge");
    let finished = drain(&mut events);
    for (phase, kept) in &finished.kept {
        assert!(kept.is_empty(), "purge kept in `{phase}`: {kept:?}");
    }
    assert_eq!(everything_owned(&peek, &env).await, Vec::<String>::new());
    let purged = peek
        .kms
        .describe_key()
        .key_id(key.key_id())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(purged.key_state(), Some(&KeyState::PendingDeletion));
    assert!(
        finished.changes["cluster"]
            .iter()
            .any(|c| c.action == Action::Delete
                && c.kind == "kms-key"
                && c.name == "alias/comind-keep-cluster-secrets"),
        "{:?}",
        finished.changes["cluster"]
    );
    assert!(!env.state().has_credentials("postgres"));
    assert!(!env.state().has_credentials("cache"));
    let buckets = peek.s3.list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "{:?}", buckets.buckets());
}

/// The final snapshots of ours in the account, oldest first: RDS by instance,
/// ElastiCache by name (its names end with the time they were taken).
async fn final_snapshots(peek: &Peek, env: &str) -> (Vec<String>, Vec<String>) {
    let rds = peek
        .rds
        .describe_db_snapshots()
        .db_instance_identifier(format!("comind-{env}-postgres"))
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    let mut rds: Vec<String> = rds
        .db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier().map(str::to_string))
        .collect();
    rds.sort();
    let cache = peek
        .elasticache
        .describe_snapshots()
        .snapshot_source("manual")
        .send()
        .await
        .unwrap();
    let prefix = format!("comind-{env}-cache-");
    let mut cache: Vec<String> = cache
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_name().filter(|n| n.starts_with(&prefix)))
        .map(str::to_string)
        .collect();
    cache.sort();
    (rds, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_keeps_the_newest_final_snapshots_the_settings_ask_for_and_removes_older_ones() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    // PostgreSQL keeps two, the cache the default one.
    let bootstrap = bootstrap(&moto, &log, "snaps", state.path(), |config| {
        config.services.postgres.aws.final_snapshots = 2;
    });
    let run = runs::only(&["postgres", "cache"]);
    let (b, r) = (&bootstrap, &run);
    let cycle = || async move {
        let up = b.up(r, &UpOptions::default()).await.unwrap();
        assert_succeeded(&up, "up");
        let mut events = b.events().subscribe();
        let down = b.down(r, &DownOptions::default()).await.unwrap();
        assert_succeeded(&down, "down");
        drain(&mut events)
    };

    let first = cycle().await;
    let (pg_1, cache_1) = final_snapshots(&peek, "snaps").await;
    assert_eq!((pg_1.len(), cache_1.len()), (1, 1), "{pg_1:?} {cache_1:?}");
    // A snapshot with our prefix that Comind did not make (no tags) is never removed.
    let foreign = "comind-snaps-cache-final-19990101000000".to_string();
    let up = bootstrap.up(&run, &UpOptions::default()).await.unwrap();
    assert_succeeded(&up, "up");
    peek.elasticache
        .create_snapshot()
        .replication_group_id("comind-snaps-cache")
        .snapshot_name(&foreign)
        .send()
        .await
        .unwrap();
    let mut events = bootstrap.events().subscribe();
    let down = bootstrap.down(&run, &DownOptions::default()).await.unwrap();
    assert_succeeded(&down, "second down");
    let second = drain(&mut events);
    let (pg_2, cache_2) = final_snapshots(&peek, "snaps").await;
    assert_eq!(pg_2.len(), 2, "PostgreSQL keeps two: {pg_2:?}");
    assert!(pg_2.contains(&pg_1[0]), "{pg_2:?}");
    assert_eq!(
        cache_2.len(),
        2,
        "the newest of ours and the foreign one: {cache_2:?}"
    );
    assert!(cache_2.contains(&foreign), "{cache_2:?}");
    assert!(
        !cache_2.contains(&cache_1[0]),
        "the older one of ours went: {cache_2:?}"
    );
    let removed: Vec<&Change> = second.changes["cache"]
        .iter()
        .filter(|c| c.action == Action::Delete && c.kind == "cache-snapshot")
        .collect();
    assert_eq!(removed.len(), 1, "{:?}", second.changes["cache"]);
    assert_eq!(removed[0].name, cache_1[0]);
    assert!(
        removed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("services.cache.aws.final_snapshots")),
        "{removed:?}"
    );
    let kept = |finished: &runs::Finished, phase: &str| -> Vec<String> {
        finished.kept[phase]
            .iter()
            .map(|k| k.name.clone())
            .collect()
    };
    assert_eq!(kept(&first, "cache"), cache_1);
    assert_eq!(
        kept(&second, "postgres"),
        pg_2,
        "down reports what it keeps"
    );
    assert!(
        !kept(&second, "cache").contains(&cache_1[0]),
        "{:?}",
        second.kept["cache"]
    );

    // A third cycle: the oldest PostgreSQL snapshot goes, the second stays; each up
    // restored the newest, so nothing the databases held is lost.
    let third = cycle().await;
    let (pg_3, cache_3) = final_snapshots(&peek, "snaps").await;
    assert_eq!(pg_3.len(), 2, "{pg_3:?}");
    assert!(
        !pg_3.contains(&pg_1[0]) && pg_3.contains(&pg_2[1]),
        "{pg_3:?}"
    );
    assert!(
        third.changes["postgres"]
            .iter()
            .any(|c| c.action == Action::Delete && c.name == pg_1[0]),
        "{:?}",
        third.changes["postgres"]
    );
    assert_eq!(cache_3.len(), 2, "{cache_3:?}");
    assert!(cache_3.contains(&foreign));

    // --purge removes ours and still leaves the foreign one.
    let purge_them = RunOptions {
        destroy: purge().destroy,
        ..runs::only(&["postgres", "cache"])
    };
    let down = bootstrap
        .down(&purge_them, &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down --purge");
    let (pg_4, cache_4) = final_snapshots(&peek, "snaps").await;
    assert_eq!(pg_4, Vec::<String>::new());
    assert_eq!(cache_4, vec![foreign]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_taken_by_resources_without_our_tags_stop_the_run_before_anything_changes() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    peek.s3
        .create_bucket()
        .bucket("comind-adopt-uploads")
        .send()
        .await
        .unwrap();
    peek.sqs
        .create_queue()
        .queue_name("comind-adopt-jobs")
        .send()
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "adopt", state.path(), |_| {});
    let env = bootstrap.env().clone();

    let up = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(up.summary.outcome, RunOutcome::Rejected, "{:?}", up.summary);
    for (phase, kind, name) in [
        ("object-store", "bucket", "comind-adopt-uploads"),
        ("queue", "queue", "comind-adopt-jobs"),
    ] {
        let summary = up
            .summary
            .phases
            .iter()
            .find(|p| p.id.as_str() == phase)
            .unwrap();
        assert_eq!(summary.outcome, Outcome::Failed, "{phase}");
        let error = summary.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::Conflict, "{phase}: {error}");
        assert!(!error.transient, "{phase}");
        assert!(
            error.message.contains(&format!("{kind} `{name}`")),
            "{phase}: {error}"
        );
        assert!(error.message.contains("not tagged"), "{phase}: {error}");
        assert!(error.hint.is_some(), "{phase}");
    }
    assert_eq!(
        up.phases_with(Outcome::Skipped).len(),
        5,
        "nothing else ran: {:?}",
        up.summary
    );
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "the rejected run changed something"
    );
    assert_eq!(everything_owned(&peek, &env).await, Vec::<String>::new());
    // Never touched: no tags, no settings.
    let tagging = peek
        .s3
        .get_bucket_tagging()
        .bucket("comind-adopt-uploads")
        .send()
        .await;
    assert!(tagging.is_err(), "the foreign bucket was tagged");
    assert!(
        peek.s3
            .get_public_access_block()
            .bucket("comind-adopt-uploads")
            .send()
            .await
            .is_err(),
        "the foreign bucket was changed"
    );

    // `down --purge` leaves them alone too, and says so.
    let mut events = bootstrap.events().subscribe();
    let down = bootstrap
        .down(&purge(), &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down --purge");
    let finished = drain(&mut events);
    for (phase, name) in [
        ("object-store", "comind-adopt-uploads"),
        ("queue", "comind-adopt-jobs"),
    ] {
        assert!(
            finished.kept[phase]
                .iter()
                .any(|k| k.name == name && k.reason.contains("not created by Comind")),
            "{:?}",
            finished.kept
        );
    }
    peek.s3
        .head_bucket()
        .bucket("comind-adopt-uploads")
        .send()
        .await
        .unwrap();
    peek.sqs
        .get_queue_url()
        .queue_name("comind-adopt-jobs")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_from_what_exists() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let first = bootstrap(&moto, &log, "resume", state.path(), |_| {});
    let env = first.env().clone();
    // Interrupt while EKS creates the cluster: the phase stops at its next safe point.
    log.cancel_on("CreateCluster", first.cancellation());
    let report = first
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Cancelled,
        "{:?}",
        report.summary
    );
    let cluster = report
        .summary
        .phases
        .iter()
        .find(|p| p.id.as_str() == "cluster")
        .unwrap();
    assert_eq!(cluster.outcome, Outcome::Cancelled, "{cluster:?}");
    assert_eq!(
        owned::cluster(&peek, &env).await,
        vec![
            "eks-cluster comind-resume-cluster",
            "alias/comind-resume-cluster-secrets"
        ]
    );

    // Run again: what exists is adopted, the rest is made.
    let second = bootstrap(&moto, &log, "resume", state.path(), |_| {});
    let mut events = second.events().subscribe();
    let report = second
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&report, "resumed up");
    let finished = drain(&mut events);
    assert!(
        finished.changes["network"].is_empty(),
        "{:?}",
        finished.changes["network"]
    );
    let cluster = &finished.changes["cluster"];
    assert!(
        !cluster.iter().any(|c| c.kind == "eks-cluster"),
        "the cluster was adopted, not made again: {cluster:?}"
    );
    assert!(
        cluster
            .iter()
            .any(|c| c.kind == "eks-nodegroup" && c.action == Action::Create)
    );
    let vpcs = owned::network(&peek, &env)
        .await
        .into_iter()
        .filter(|r| r.starts_with("vpc "))
        .count();
    assert_eq!(vpcs, 1);
    let clusters = peek.eks.list_clusters().send().await.unwrap();
    assert_eq!(clusters.clusters().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_protects_the_database_and_refuses_an_unconfirmed_purge() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "prod", state.path(), |c| {
        c.production = true;
        // Required in production (the default would open the API to 0.0.0.0/0).
        c.aws.cluster.public_access_cidrs = Some(vec!["198.51.100.0/24".to_string()]);
    });
    let up = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&up, "up");
    let db = peek
        .rds
        .describe_db_instances()
        .db_instance_identifier("comind-prod-postgres")
        .send()
        .await
        .unwrap();
    let db = &db.db_instances()[0];
    assert_eq!(db.deletion_protection(), Some(true));
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(db.publicly_accessible(), Some(false));
    let nats = owned::network(&peek, bootstrap.env())
        .await
        .into_iter()
        .filter(|r| r.starts_with("nat-gateway"))
        .count();
    assert_eq!(nats, 3, "production runs a NAT gateway per zone");

    log.clear();
    let refused = bootstrap
        .down(&purge(), &DownOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    assert!(refused.message().contains("production"), "{refused}");
    assert!(
        refused.hint().unwrap().contains("--confirm prod"),
        "{refused}"
    );
    assert_eq!(
        log.mutating(),
        Vec::<String>::new(),
        "a refused down changed something"
    );

    let mut events = bootstrap.events().subscribe();
    let confirmed = DownOptions {
        confirm: Some("prod".to_string()),
    };
    let down = bootstrap.down(&purge(), &confirmed).await.unwrap();
    assert_succeeded(&down, "confirmed down --purge");
    let finished = drain(&mut events);
    assert!(
        finished.changes["postgres"].iter().any(|c| c
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("deletion protection turned off"))),
        "{:?}",
        finished.changes["postgres"]
    );
    assert_eq!(
        owned::postgres(&peek, bootstrap.env()).await,
        Vec::<String>::new()
    );
}

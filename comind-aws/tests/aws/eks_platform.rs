//! What the platform needs from EKS, against moto (its EKS gaps are filled by
//! `scripts/test-env/moto_eks.py`): access entries, managed add-ons, Pod Identity
//! roles and associations, the API endpoint, control-plane logging and the KMS key of
//! the Secrets' envelope encryption.

use std::collections::{BTreeMap, BTreeSet};

use comind_core::config::{ClusterAccess, Config};
use comind_core::engine::RunOptions;
use comind_core::event::{Event, Outcome};
use comind_core::{Bootstrap, ErrorKind, UpOptions};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;
use serde_json::Value;

use crate::support::runs::{assert_second_up_changes_nothing, assert_succeeded};
use crate::support::{CallLog, Peek, runs};

const DEVELOPERS: &str = "arn:aws:iam::123456789012:role/Developers";
const AUDITOR: &str = "arn:aws:iam::123456789012:user/auditor";

fn access(principal: &str, groups: &[&str]) -> ClusterAccess {
    ClusterAccess {
        principal: principal.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn bootstrap(
    moto: &Moto,
    log: &CallLog,
    name: &str,
    state: &std::path::Path,
    edit: impl FnOnce(&mut Config),
) -> Bootstrap {
    runs::bootstrap(moto.sdk_config(), log, name, state, |config| {
        // The services are not what these tests look at.
        config.services.cache.enabled = false;
        config.services.queue.enabled = false;
        edit(config);
    })
}

async fn up(bootstrap: &Bootstrap, what: &str) -> comind_core::engine::RunReport {
    let report = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&report, what);
    report
}

/// Every access entry of `cluster`: principal → (groups, tags, policies).
async fn entries(
    peek: &Peek,
    cluster: &str,
) -> BTreeMap<String, (BTreeSet<String>, BTreeMap<String, String>, Vec<String>)> {
    let listed = peek
        .eks
        .list_access_entries()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for principal in listed.access_entries() {
        let entry = peek
            .eks
            .describe_access_entry()
            .cluster_name(cluster)
            .principal_arn(principal)
            .send()
            .await
            .unwrap()
            .access_entry
            .unwrap();
        let policies = peek
            .eks
            .list_associated_access_policies()
            .cluster_name(cluster)
            .principal_arn(principal)
            .send()
            .await
            .unwrap();
        out.insert(
            principal.clone(),
            (
                entry.kubernetes_groups().iter().cloned().collect(),
                entry
                    .tags()
                    .map(|t| t.clone().into_iter().collect())
                    .unwrap_or_default(),
                policies
                    .associated_access_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string))
                    .collect(),
            ),
        );
    }
    out
}

fn groups(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|g| g.to_string()).collect()
}

/// IAM answers policy documents URL-encoded (AWS) or not (moto).
fn policy(text: &str) -> Value {
    if let Ok(value) = serde_json::from_str(text) {
        return value;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    serde_json::from_slice(&out).unwrap_or_else(|_| panic!("not a policy: {text}"))
}

async fn inline_policy(peek: &Peek, role: &str, name: &str) -> Value {
    let out = peek
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .unwrap();
    policy(out.policy_document())
}

/// The principal moto's caller stands for (moto's caller is `arn:aws:sts::…:user/moto`).
async fn runner(moto: &Moto) -> String {
    let sts = aws_sdk_sts::Client::new(&moto.sdk_config());
    let caller = sts.get_caller_identity().send().await.unwrap();
    caller.arn().unwrap().replacen(":sts::", ":iam::", 1)
}

/// The error of the phase that failed in `report`.
fn failure(report: &comind_core::engine::RunReport) -> comind_core::error::ErrorReport {
    report
        .summary
        .phases
        .iter()
        .find(|p| p.outcome == Outcome::Failed)
        .and_then(|p| p.error.clone())
        .unwrap_or_else(|| panic!("no phase failed: {:?}", report.summary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_up_gives_the_cluster_what_the_platform_needs_and_a_second_changes_nothing() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "plat", state.path(), |config| {
        config.aws.cluster.access = vec![
            access(DEVELOPERS, &["platform:developer"]),
            access(AUDITOR, &["platform:readonly"]),
        ];
        config.aws.cluster.public_access_cidrs = Some(vec!["203.0.113.0/24".to_string()]);
    });
    let env = bootstrap.env().clone();
    let report = up(&bootstrap, "cold up").await;
    let cluster = "comind-plat-cluster";
    let outputs = report.merged_outputs();

    // The cluster: access entries only, private endpoint, public one limited,
    // control-plane logs on.
    let live = peek
        .eks
        .describe_cluster()
        .name(cluster)
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        live.access_config()
            .and_then(|a| a.authentication_mode())
            .map(|m| m.as_str()),
        Some("API")
    );
    let vpc = live.resources_vpc_config().unwrap();
    assert!(vpc.endpoint_private_access());
    assert_eq!(vpc.public_access_cidrs(), ["203.0.113.0/24".to_string()]);
    let logged: BTreeSet<&str> = live
        .logging()
        .unwrap()
        .cluster_logging()
        .iter()
        .filter(|s| s.enabled() == Some(true))
        .flat_map(|s| s.types().iter().map(|t| t.as_str()))
        .collect();
    assert_eq!(logged, BTreeSet::from(["api", "audit", "authenticator"]));

    // Secrets are envelope-encrypted with a key Comind made, tagged, named by its
    // alias, rotated.
    let encryption = live.encryption_config();
    assert_eq!(encryption.len(), 1, "{encryption:?}");
    assert_eq!(encryption[0].resources(), ["secrets".to_string()]);
    let key_arn = encryption[0].provider().unwrap().key_arn().unwrap();
    let key = peek
        .kms
        .describe_key()
        .key_id("alias/comind-plat-cluster-secrets")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(key.arn(), Some(key_arn));
    assert_eq!(
        crate::support::owned::kms_keys(&peek, &env).await,
        vec!["alias/comind-plat-cluster-secrets".to_string()]
    );
    let rotation = peek
        .kms
        .get_key_rotation_status()
        .key_id(key.key_id())
        .send()
        .await
        .unwrap();
    assert!(rotation.key_rotation_enabled());

    // Access entries: the runner is cluster admin, the listed principals have their
    // groups, EKS's own entry for the node role is there and not Comind's.
    let runner = runner(&moto).await;
    let found = entries(&peek, cluster).await;
    let node_role = outputs.require("NODE_ROLE_ARN").unwrap().to_string();
    assert_eq!(
        found.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            runner.clone(),
            DEVELOPERS.to_string(),
            AUDITOR.to_string(),
            node_role.clone()
        ]),
        "{found:?}"
    );
    let (runner_groups, runner_tags, runner_policies) = &found[&runner];
    assert!(runner_groups.is_empty());
    assert!(env.owns(&runner_tags.clone(), Some("cluster")));
    assert_eq!(
        runner_policies,
        &["arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy".to_string()]
    );
    assert_eq!(found[DEVELOPERS].0, groups(&["platform:developer"]));
    assert!(
        found[DEVELOPERS].2.is_empty(),
        "no access policy beyond the groups"
    );
    assert_eq!(found[AUDITOR].0, groups(&["platform:readonly"]));
    assert!(
        !env.owns(&found[&node_role].1, None),
        "EKS's entry is not Comind's"
    );

    // The managed add-ons, exactly these, ours, with their configuration.
    let addons = peek
        .eks
        .list_addons()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    assert_eq!(
        addons
            .addons()
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "aws-ebs-csi-driver",
            "coredns",
            "eks-pod-identity-agent",
            "kube-proxy",
            "vpc-cni"
        ])
    );
    for name in addons.addons() {
        let addon = peek
            .eks
            .describe_addon()
            .cluster_name(cluster)
            .addon_name(name)
            .send()
            .await
            .unwrap()
            .addon
            .unwrap();
        let tags: BTreeMap<String, String> = addon.tags().unwrap().clone().into_iter().collect();
        assert!(env.owns(&tags, Some("cluster")), "{name}: {tags:?}");
        assert_eq!(addon.status().unwrap().as_str(), "ACTIVE");
        // The catalog's default (moto_eks.py's CATALOG, first of each).
        assert!(
            addon.addon_version().unwrap().starts_with('v'),
            "{name}: {:?}",
            addon.addon_version()
        );
    }
    let cni = peek
        .eks
        .describe_addon()
        .cluster_name(cluster)
        .addon_name("vpc-cni")
        .send()
        .await
        .unwrap()
        .addon
        .unwrap();
    assert_eq!(cni.addon_version(), Some("v1.20.4-eksbuild.2"));
    let values: Value = serde_json::from_str(cni.configuration_values().unwrap()).unwrap();
    assert_eq!(values["enableNetworkPolicy"], "true");

    // Pod Identity: one association per service account, with the roles published.
    let associations = peek
        .eks
        .list_pod_identity_associations()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    let mut roles = BTreeMap::new();
    for summary in associations.associations() {
        let association = peek
            .eks
            .describe_pod_identity_association()
            .cluster_name(cluster)
            .association_id(summary.association_id().unwrap())
            .send()
            .await
            .unwrap()
            .association
            .unwrap();
        let tags: BTreeMap<String, String> =
            association.tags().unwrap().clone().into_iter().collect();
        assert!(env.owns(&tags, Some("cluster")));
        roles.insert(
            format!(
                "{}/{}",
                association.namespace().unwrap(),
                association.service_account().unwrap()
            ),
            association.role_arn().unwrap().to_string(),
        );
    }
    let lbc_role = outputs
        .require("LOAD_BALANCER_CONTROLLER_ROLE_ARN")
        .unwrap()
        .to_string();
    let backup_role = outputs.require("BACKUP_ROLE_ARN").unwrap().to_string();
    assert_eq!(
        roles,
        BTreeMap::from([
            (
                "kube-system/aws-load-balancer-controller".to_string(),
                lbc_role.clone()
            ),
            (
                "kube-system/ebs-csi-controller-sa".to_string(),
                outputs
                    .require("EBS_CSI_DRIVER_ROLE_ARN")
                    .unwrap()
                    .to_string()
            ),
            (
                "platform-plat/comind-backup".to_string(),
                backup_role.clone()
            ),
        ])
    );

    // The roles: trusted by Pod Identity, least privilege.
    for role in [
        "comind-plat-lb-controller",
        "comind-plat-backups",
        "comind-plat-ebs-csi-driver",
    ] {
        let live = peek.iam.get_role().role_name(role).send().await.unwrap();
        let trust = live.role().unwrap().assume_role_policy_document().unwrap();
        let trust = policy(trust).to_string();
        assert!(trust.contains("pods.eks.amazonaws.com"), "{role}: {trust}");
        assert!(trust.contains("sts:TagSession"), "{role}: {trust}");
    }
    let lbc = inline_policy(
        &peek,
        "comind-plat-lb-controller",
        "aws-load-balancer-controller-v3.5.0",
    )
    .await;
    let published: Value = serde_json::from_str(include_str!(
        "../../src/iam_policies/aws-load-balancer-controller-v3.5.0.json"
    ))
    .unwrap();
    assert_eq!(
        lbc, published,
        "the controller's role carries its release's policy"
    );
    let backups = inline_policy(&peek, "comind-plat-backups", "comind-backups").await;
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for statement in backups["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        let resources: Vec<String> = match &statement["Resource"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect(),
            other => panic!("resource {other}"),
        };
        for resource in resources {
            for action in statement["Action"].as_array().unwrap() {
                granted
                    .entry(resource.clone())
                    .or_default()
                    .insert(action.as_str().unwrap().to_string());
            }
        }
    }
    let set = |actions: &[&str]| {
        actions
            .iter()
            .map(|a| a.to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        granted,
        BTreeMap::from([
            (
                "arn:aws:s3:::comind-plat-backups".to_string(),
                set(&["s3:ListBucket", "s3:ListBucketMultipartUploads"])
            ),
            (
                "arn:aws:s3:::comind-plat-backups/*".to_string(),
                set(&[
                    "s3:AbortMultipartUpload",
                    "s3:DeleteObject",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:PutObject"
                ])
            ),
            (
                "arn:aws:s3:::comind-plat-uploads".to_string(),
                set(&["s3:ListBucket"])
            ),
            (
                "arn:aws:s3:::comind-plat-uploads/*".to_string(),
                set(&["s3:GetObject"])
            ),
        ]),
        "write and list on the backup bucket, read on the others, nothing else"
    );
    let ebs = peek
        .iam
        .list_attached_role_policies()
        .role_name("comind-plat-ebs-csi-driver")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ebs.attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .collect::<Vec<_>>(),
        ["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]
    );

    assert_second_up_changes_nothing(&bootstrap, &log, &RunOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_principal_loses_its_entry_and_entries_comind_did_not_make_are_left_alone() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let cluster = "comind-acc-cluster";
    let both = vec![
        access(DEVELOPERS, &["platform:developer"]),
        access(AUDITOR, &["platform:readonly"]),
    ];
    let first = bootstrap(&moto, &log, "acc", state.path(), |c| {
        c.aws.cluster.access = both.clone()
    });
    up(&first, "first up").await;
    // An administrator's own entry, made behind Comind's back.
    let foreign = "arn:aws:iam::123456789012:role/BreakGlass";
    peek.eks
        .create_access_entry()
        .cluster_name(cluster)
        .principal_arn(foreign)
        .kubernetes_groups("platform:admin")
        .send()
        .await
        .unwrap();

    // The auditor leaves the list; the developers get a second group.
    let second = bootstrap(&moto, &log, "acc", state.path(), |c| {
        c.aws.cluster.access = vec![access(
            DEVELOPERS,
            &["platform:developer", "platform:readonly"],
        )];
    });
    up(&second, "up without the auditor").await;
    let found = entries(&peek, cluster).await;
    assert!(!found.contains_key(AUDITOR), "{found:?}");
    assert_eq!(
        found[DEVELOPERS].0,
        groups(&["platform:developer", "platform:readonly"])
    );
    assert_eq!(found[foreign].0, groups(&["platform:admin"]), "left alone");
    assert!(
        found.contains_key(&runner(&moto).await),
        "the runner keeps its entry"
    );

    // A listed principal whose entry Comind did not make: a conflict, nothing changed.
    let third = bootstrap(&moto, &log, "acc", state.path(), |c| {
        c.aws.cluster.access = vec![
            access(DEVELOPERS, &["platform:developer", "platform:readonly"]),
            access(foreign, &["platform:readonly"]),
        ];
    });
    let report = third
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    let failed = failure(&report);
    assert_eq!(failed.kind, ErrorKind::Conflict, "{failed}");
    assert!(failed.message.contains(foreign), "{failed}");
    assert_eq!(
        entries(&peek, cluster).await[foreign].0,
        groups(&["platform:admin"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_addon_is_waited_for_until_active_and_a_degraded_one_fails_with_its_issues() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    moto.script(
        r#"{"eks-addon:comind-wait-cluster/coredns": ["CREATING", "CREATING", "ACTIVE"],
            "eks-addon:comind-wait-cluster/aws-ebs-csi-driver": ["CREATING", "DEGRADED"]}"#,
    );
    let bootstrap = bootstrap(&moto, &log, "wait", state.path(), |_| {});
    let mut events = bootstrap.events().subscribe();
    let report = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    let failed = failure(&report);
    let text = failed.to_string();
    assert!(text.contains("aws-ebs-csi-driver"), "{text}");
    assert!(text.contains("DEGRADED"), "{text}");
    assert!(text.contains("InsufficientNumberOfReplicas"), "{text}");
    let mut progress = Vec::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseProgress { message, .. } = &record.event {
            progress.push(message.clone());
        }
    }
    assert!(
        progress
            .iter()
            .any(|m| m.contains("coredns") && m.contains("CREATING")),
        "coredns was seen CREATING, then active: {progress:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_without_a_secrets_key_gets_comind_s_once() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "enc", state.path(), |_| {});
    let env = bootstrap.env().clone();
    // A cluster of ours made without envelope encryption (as an older Comind did).
    let base = bootstrap
        .up(&runs::only(&["network", "iam"]), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&base, "network and iam");
    let outputs = base.merged_outputs();
    let subnets: Vec<String> = outputs
        .require("SUBNET_IDS")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    peek.eks
        .create_cluster()
        .name("comind-enc-cluster")
        .version(&env.config().aws.cluster.version)
        .role_arn(outputs.require("CLUSTER_ROLE_ARN").unwrap())
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .set_subnet_ids(Some(subnets))
                .security_group_ids(outputs.require("CLUSTER_SECURITY_GROUP_ID").unwrap())
                .build(),
        )
        .set_tags(Some(env.labels("cluster", None).into_iter().collect()))
        .send()
        .await
        .unwrap();

    let mut events = bootstrap.events().subscribe();
    up(&bootstrap, "up over the unencrypted cluster").await;
    let finished = runs::drain(&mut events);
    assert!(
        finished.changes["cluster"]
            .iter()
            .any(|c| c.kind == "eks-cluster"
                && c.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("envelope encryption"))),
        "{:?}",
        finished.changes["cluster"]
    );
    let live = peek
        .eks
        .describe_cluster()
        .name("comind-enc-cluster")
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    let key = peek
        .kms
        .describe_key()
        .key_id("alias/comind-enc-cluster-secrets")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(
        live.encryption_config()[0].provider().unwrap().key_arn(),
        key.arn()
    );
    assert_second_up_changes_nothing(&bootstrap, &log, &RunOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_schedules_the_key_and_one_an_interrupted_run_left_without_its_alias() {
    let moto = require_peer!(Moto::start());
    let peek = Peek::new(&moto);
    let state = tempfile::tempdir().unwrap();
    let log = CallLog::default();
    let bootstrap = bootstrap(&moto, &log, "orph", state.path(), |_| {});
    let env = bootstrap.env().clone();
    up(&bootstrap, "up").await;
    // What an `up` stopped between CreateKey and CreateAlias leaves: a key of ours
    // that no alias names.
    let orphan = peek
        .kms
        .create_key()
        .set_tags(Some(
            env.labels("cluster", None)
                .into_iter()
                .map(|(k, v)| {
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key(k)
                        .tag_value(v)
                        .build()
                        .unwrap()
                })
                .collect(),
        ))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let down = bootstrap
        .down(&runs::purge(), &comind_core::DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down --purge");
    assert_eq!(
        crate::support::owned::kms_keys(&peek, &env).await,
        Vec::<String>::new()
    );
    let state = peek
        .kms
        .describe_key()
        .key_id(orphan.key_id())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_state;
    assert_eq!(state, Some(aws_sdk_kms::types::KeyState::PendingDeletion));
    let aliases = peek.kms.list_aliases().send().await.unwrap();
    assert!(
        !aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/comind-orph-cluster-secrets")),
        "the alias goes with a purge"
    );
}

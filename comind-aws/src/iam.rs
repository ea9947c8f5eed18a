//! The `iam` phase: the roles of the EKS cluster and nodes, and of the platform's
//! service accounts (through EKS Pod Identity).
//!
//! Each role has the trust policy of the service that assumes it and only the
//! policies it needs: the AWS managed policies EKS documents for the cluster, the
//! nodes and the EBS CSI driver; for the AWS Load Balancer Controller the IAM policy
//! published with its pinned version (a file of this crate, not a download); for the
//! backup jobs write and list on the backup bucket, read on the other buckets, and
//! nothing else. Managed or inline policies that someone else attached to our roles
//! are removed on the next `up` (a plan shows it first).
//!
//! IAM names are global to the account, so a role named like ours but without our
//! tags is someone else's and stops the run.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, Outputs, Pass, PhaseContext, PhaseId,
    Reconcile, Result,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clients::{Clients, Connector};
use crate::create::{self, Made, single_attempt};
use crate::error::AwsResultExt;
use crate::tags;

/// The phase id.
pub const ID: &str = "iam";
/// Output: the ARN of the role the EKS control plane assumes.
pub const CLUSTER_ROLE_ARN: &str = "CLUSTER_ROLE_ARN";
/// Output: the ARN of the role the EKS nodes assume.
pub const NODE_ROLE_ARN: &str = "NODE_ROLE_ARN";

const COMPONENT: &str = ID;

/// Output: the ARN of the role of the backup jobs' service account.
pub use comind_core::cluster::BACKUP_ROLE_ARN;
/// Output: the ARN of the role of the AWS Load Balancer Controller's service account.
pub use comind_core::cluster::LOAD_BALANCER_CONTROLLER_ROLE_ARN;
/// Output: the ARN of the role of the EBS CSI driver's controller.
pub const EBS_CSI_DRIVER_ROLE_ARN: &str = "EBS_CSI_DRIVER_ROLE_ARN";

/// The AWS Load Balancer Controller release whose IAM policy the controller's role
/// carries; the in-cluster add-on pins the same release. v3.5.0 (August 2026) is the
/// newest release line, maintained upstream (kubernetes-sigs).
pub const LOAD_BALANCER_CONTROLLER_VERSION: &str = "v3.5.0";

/// That release's `docs/install/iam_policy.json`, as published.
const LOAD_BALANCER_CONTROLLER_POLICY: &str =
    include_str!("iam_policies/aws-load-balancer-controller-v3.5.0.json");

/// The trust of Pod Identity: EKS's agent assumes the role for a service account and
/// tags the session with the Pod's namespace, service account and cluster.
const POD_IDENTITY: &str = "pods.eks.amazonaws.com";

/// A policy written for one role, put inline on it.
#[derive(Debug, Clone, Copy, Serialize)]
enum InlinePolicy {
    LoadBalancerController,
    Backups,
}

impl InlinePolicy {
    fn name(self) -> String {
        match self {
            InlinePolicy::LoadBalancerController => {
                format!("aws-load-balancer-controller-{LOAD_BALANCER_CONTROLLER_VERSION}")
            }
            InlinePolicy::Backups => "comind-backups".to_string(),
        }
    }

    fn document(self, env: &Environment, partition: &str) -> Result<Value> {
        match self {
            InlinePolicy::LoadBalancerController => {
                // Published for the `aws` partition; the same ARNs elsewhere.
                let text = LOAD_BALANCER_CONTROLLER_POLICY
                    .replace("arn:aws:", &format!("arn:{partition}:"));
                serde_json::from_str(&text).map_err(|err| {
                    Error::internal(format!(
                        "the AWS Load Balancer Controller's IAM policy does not parse: {err}"
                    ))
                })
            }
            InlinePolicy::Backups => Ok(backup_policy(env, partition)),
        }
    }
}

/// Write and list on the backup bucket, read on the others, nothing else.
fn backup_policy(env: &Environment, partition: &str) -> Value {
    let store = &env.config().services.object_store;
    let arn = |bucket: &str| format!("arn:{partition}:s3:::{}", env.resource_name(bucket));
    let backup = arn(store.backup_bucket.as_str());
    let others: Vec<String> = store
        .buckets
        .iter()
        .filter(|b| **b != store.backup_bucket)
        .map(|b| arn(b.as_str()))
        .collect();
    let mut statements = vec![
        json!({
            "Sid": "ListBackups",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
            "Resource": backup,
        }),
        // GetObject too: rclone reads back the size and checksum of what it wrote
        // (HeadObject), and DeleteObject for the retention of the dumps.
        json!({
            "Sid": "WriteBackups",
            "Effect": "Allow",
            "Action": [
                "s3:PutObject",
                "s3:GetObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"
            ],
            "Resource": format!("{backup}/*"),
        }),
    ];
    if !others.is_empty() {
        statements.push(json!({
            "Sid": "ReadBuckets",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": others,
        }));
        statements.push(json!({
            "Sid": "ReadObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": others.iter().map(|b| format!("{b}/*")).collect::<Vec<_>>(),
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// One role: who may assume it and which policies it carries.
#[derive(Debug, Clone, Serialize)]
struct RoleSpec {
    suffix: &'static str,
    service: &'static str,
    policies: &'static [&'static str],
    inline: Option<InlinePolicy>,
    #[serde(skip)]
    output: &'static str,
    #[serde(skip)]
    description: &'static str,
}

const ROLES: [RoleSpec; 5] = [
    RoleSpec {
        suffix: "cluster-role",
        service: "eks.amazonaws.com",
        policies: &["AmazonEKSClusterPolicy"],
        inline: None,
        output: CLUSTER_ROLE_ARN,
        description: "Comind: assumed by the EKS control plane",
    },
    RoleSpec {
        suffix: "node-role",
        service: "ec2.amazonaws.com",
        policies: &[
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryReadOnly",
        ],
        inline: None,
        output: NODE_ROLE_ARN,
        description: "Comind: assumed by the EKS nodes",
    },
    RoleSpec {
        suffix: "lb-controller",
        service: POD_IDENTITY,
        policies: &[],
        inline: Some(InlinePolicy::LoadBalancerController),
        output: LOAD_BALANCER_CONTROLLER_ROLE_ARN,
        description: "Comind: the AWS Load Balancer Controller (kube-system/aws-load-balancer-controller)",
    },
    RoleSpec {
        suffix: "ebs-csi-driver",
        service: POD_IDENTITY,
        policies: &["service-role/AmazonEBSCSIDriverPolicy"],
        inline: None,
        output: EBS_CSI_DRIVER_ROLE_ARN,
        description: "Comind: the EBS CSI driver (kube-system/ebs-csi-controller-sa)",
    },
    RoleSpec {
        suffix: "backups",
        service: POD_IDENTITY,
        policies: &[],
        inline: Some(InlinePolicy::Backups),
        output: BACKUP_ROLE_ARN,
        description: "Comind: the platform's backup jobs (platform-<env>/comind-backup)",
    },
];

impl RoleSpec {
    fn trust(&self) -> Value {
        // Pod Identity's agent also tags the session (the Pod's namespace and service
        // account), which needs sts:TagSession.
        let action = if self.service == POD_IDENTITY {
            json!(["sts:AssumeRole", "sts:TagSession"])
        } else {
            json!("sts:AssumeRole")
        };
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": self.service},
                "Action": action
            }]
        })
    }

    fn policy_arns(&self, partition: &str) -> BTreeSet<String> {
        self.policies
            .iter()
            .map(|p| format!("arn:{partition}:iam::aws:policy/{p}"))
            .collect()
    }
}

/// The `iam` phase, written as one reconcile function: the provider runs it as a
/// [`ReconcilePhase`](comind_core::ReconcilePhase).
pub struct IamPhase {
    aws: Arc<Connector>,
}

impl std::fmt::Debug for IamPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamPhase").finish_non_exhaustive()
    }
}

impl IamPhase {
    pub(crate) fn new(aws: Arc<Connector>) -> Self {
        IamPhase { aws }
    }
}

/// The live state of one role.
struct LiveRole {
    arn: String,
    trust: Option<Value>,
    tags: tags::Tags,
    managed: BTreeSet<String>,
    inline: Vec<String>,
}

async fn live_role(clients: &Clients, name: &str) -> Result<Option<LiveRole>> {
    let resource = format!("iam-role {name}");
    let Some(out) = clients
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .found("iam:GetRole", &resource)?
    else {
        return Ok(None);
    };
    let Some(role) = out.role() else {
        return Ok(None);
    };
    let attached = clients
        .iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .aws("iam:ListAttachedRolePolicies", &resource)?;
    let inline = clients
        .iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .aws("iam:ListRolePolicies", &resource)?;
    Ok(Some(LiveRole {
        arn: role.arn().to_string(),
        trust: role.assume_role_policy_document().and_then(parse_policy),
        tags: tags::from_iam(role.tags()),
        managed: attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_string))
            .collect(),
        inline: inline.policy_names().to_vec(),
    }))
}

/// IAM returns policy documents URL-encoded.
fn parse_policy(document: &str) -> Option<Value> {
    serde_json::from_str(&percent_decode(document))
        .ok()
        .or_else(|| serde_json::from_str(document).ok())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Brings one role to its spec; its ARN, or `None` while planning a new one.
async fn reconcile_role(
    env: &Environment,
    clients: &Clients,
    spec: &RoleSpec,
    pass: &mut Pass,
) -> Result<Option<String>> {
    let name = env.resource_name(spec.suffix);
    let resource = format!("iam-role {name}");
    let hash = comind_core::environment::spec_hash(spec);
    let desired_tags = tags::ownership(env, COMPONENT, Some(&hash));
    let wanted = spec.policy_arns(clients.partition());
    let trust = spec.trust();

    let live = match live_role(clients, &name).await? {
        Some(live) => live,
        None => {
            if !pass.will(Change::create("iam-role", &name).because(spec.policies.join(", "))) {
                return Ok(None);
            }
            let iam_tags = tags::to_iam(&desired_tags)?;
            let made = create::once(
                &resource,
                || async {
                    let created = clients
                        .iam
                        .create_role()
                        .role_name(&name)
                        .assume_role_policy_document(trust.to_string())
                        .description(spec.description)
                        .set_tags(Some(iam_tags.clone()))
                        .customize()
                        .config_override(single_attempt::iam())
                        .send()
                        .await
                        .aws("iam:CreateRole", &resource)?;
                    created
                        .role()
                        .map(|r| r.arn().to_string())
                        .ok_or_else(|| Error::internal("CreateRole returned no role"))
                },
                || async {
                    match live_role(clients, &name).await? {
                        Some(live) => {
                            tags::require_owned(env, COMPONENT, "iam-role", &name, &live.tags)?;
                            Ok(Some(live))
                        }
                        None => Ok(None),
                    }
                },
            )
            .await?;
            match made {
                Made::Created(arn) => {
                    for arn in &wanted {
                        attach(clients, &name, arn).await?;
                    }
                    if let Some(policy) = spec.inline {
                        let document = policy.document(env, clients.partition())?;
                        put_inline(clients, &name, &policy.name(), &document).await?;
                    }
                    return Ok(Some(arn));
                }
                // Made by a create whose answer was lost, or by a dying earlier run:
                // converged below like any role of ours.
                Made::Found(live) => live,
            }
        }
    };
    tags::require_owned(env, COMPONENT, "iam-role", &name, &live.tags)?;

    if live.trust.as_ref() != Some(&trust)
        && pass.will(Change::update("iam-role", &name).because("trust policy differs"))
    {
        clients
            .iam
            .update_assume_role_policy()
            .role_name(&name)
            .policy_document(trust.to_string())
            .send()
            .await
            .aws("iam:UpdateAssumeRolePolicy", &resource)?;
    }
    for arn in wanted.difference(&live.managed) {
        if pass.will(Change::update("iam-role", &name).because(format!("attach {arn}"))) {
            attach(clients, &name, arn).await?;
        }
    }
    for arn in live.managed.difference(&wanted) {
        if pass.will(Change::update("iam-role", &name).because(format!("detach {arn}: not needed")))
        {
            clients
                .iam
                .detach_role_policy()
                .role_name(&name)
                .policy_arn(arn)
                .send()
                .await
                .found("iam:DetachRolePolicy", &resource)?;
        }
    }
    let wanted_inline = match spec.inline {
        Some(policy) => Some((policy.name(), policy.document(env, clients.partition())?)),
        None => None,
    };
    if let Some((policy, document)) = &wanted_inline {
        let live_document = if live.inline.contains(policy) {
            inline_document(clients, &name, policy).await?
        } else {
            None
        };
        if live_document.as_ref() != Some(document) {
            let why = if live_document.is_none() {
                format!("put inline policy {policy}")
            } else {
                format!("inline policy {policy} differs")
            };
            if pass.will(Change::update("iam-role", &name).because(why)) {
                put_inline(clients, &name, policy, document).await?;
            }
        }
    }
    let keep = wanted_inline.as_ref().map(|(policy, _)| policy.as_str());
    for policy in live.inline.iter().filter(|p| Some(p.as_str()) != keep) {
        if pass.will(
            Change::update("iam-role", &name)
                .because(format!("delete inline policy {policy}: not needed")),
        ) {
            clients
                .iam
                .delete_role_policy()
                .role_name(&name)
                .policy_name(policy)
                .send()
                .await
                .found("iam:DeleteRolePolicy", &resource)?;
        }
    }
    let missing = tags::missing(&desired_tags, &live.tags);
    if !missing.is_empty()
        && pass.will(Change::update("iam-role", &name).because("spec changed: tags"))
    {
        clients
            .iam
            .tag_role()
            .role_name(&name)
            .set_tags(Some(tags::to_iam(&missing)?))
            .send()
            .await
            .aws("iam:TagRole", &resource)?;
    }
    Ok(Some(live.arn))
}

async fn inline_document(clients: &Clients, role: &str, policy: &str) -> Result<Option<Value>> {
    let found = clients
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(policy)
        .send()
        .await
        .found("iam:GetRolePolicy", format!("iam-role {role}"))?;
    Ok(found.and_then(|out| parse_policy(out.policy_document())))
}

async fn put_inline(clients: &Clients, role: &str, policy: &str, document: &Value) -> Result<()> {
    clients
        .iam
        .put_role_policy()
        .role_name(role)
        .policy_name(policy)
        .policy_document(document.to_string())
        .send()
        .await
        .aws("iam:PutRolePolicy", format!("iam-role {role}"))?;
    Ok(())
}

async fn attach(clients: &Clients, name: &str, arn: &str) -> Result<()> {
    clients
        .iam
        .attach_role_policy()
        .role_name(name)
        .policy_arn(arn)
        .send()
        .await
        .aws("iam:AttachRolePolicy", format!("iam-role {name}"))?;
    Ok(())
}

async fn delete_role(
    env: &Environment,
    clients: &Clients,
    spec: &RoleSpec,
) -> Result<Option<Change>> {
    let name = env.resource_name(spec.suffix);
    let resource = format!("iam-role {name}");
    let Some(live) = live_role(clients, &name).await? else {
        return Ok(None);
    };
    if !env.owns(&live.tags, Some(COMPONENT)) {
        // Someone else's role with our name: never touched.
        return Ok(None);
    }
    for arn in &live.managed {
        clients
            .iam
            .detach_role_policy()
            .role_name(&name)
            .policy_arn(arn)
            .send()
            .await
            .found("iam:DetachRolePolicy", &resource)?;
    }
    for policy in &live.inline {
        clients
            .iam
            .delete_role_policy()
            .role_name(&name)
            .policy_name(policy)
            .send()
            .await
            .found("iam:DeleteRolePolicy", &resource)?;
    }
    // EKS puts the node role into instance profiles of its own; they keep the role
    // from being deleted if a node group went away uncleanly.
    let profiles = clients
        .iam
        .list_instance_profiles_for_role()
        .role_name(&name)
        .send()
        .await
        .aws("iam:ListInstanceProfilesForRole", &resource)?;
    for profile in profiles.instance_profiles() {
        clients
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(profile.instance_profile_name())
            .role_name(&name)
            .send()
            .await
            .found("iam:RemoveRoleFromInstanceProfile", &resource)?;
    }
    clients
        .iam
        .delete_role()
        .role_name(&name)
        .send()
        .await
        .found("iam:DeleteRole", &resource)?;
    Ok(Some(Change::delete("iam-role", name)))
}

#[async_trait]
impl Reconcile for IamPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(ID)
    }

    fn description(&self) -> String {
        "IAM roles of the EKS cluster, its nodes, and the platform's service accounts".to_string()
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        for spec in &ROLES {
            let name = ctx.env().resource_name(spec.suffix);
            if let Some(live) = live_role(&clients, &name).await? {
                tags::require_owned(ctx.env(), COMPONENT, "iam-role", &name, &live.tags)?;
            }
        }
        Ok(())
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<Option<Outputs>> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut outputs = Some(Outputs::new());
        for spec in &ROLES {
            ctx.checkpoint()?;
            let arn = reconcile_role(ctx.env(), &clients, spec, pass).await?;
            match (arn, outputs.as_mut()) {
                (Some(arn), Some(out)) => out.insert_text(spec.output, arn),
                _ => outputs = None,
            }
        }
        Ok(outputs)
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut changes = Vec::new();
        for spec in &ROLES {
            changes.extend(delete_role(ctx.env(), &clients, spec).await?);
        }
        Ok(Destroyed {
            changes,
            kept: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_read_url_encoded_or_not() {
        let doc = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(parse_policy(encoded), serde_json::from_str(doc).ok());
        assert_eq!(parse_policy(doc), serde_json::from_str(doc).ok());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn roles_carry_only_the_documented_policies() {
        let node = &ROLES[1];
        let arns = node.policy_arns("aws-cn");
        assert_eq!(arns.len(), 3);
        assert!(arns.contains("arn:aws-cn:iam::aws:policy/AmazonEKS_CNI_Policy"));
        assert_eq!(
            ROLES[0].trust()["Statement"][0]["Principal"]["Service"],
            "eks.amazonaws.com"
        );
    }
}

//! The `cluster` phase: the EKS cluster, its managed node group and the kubeconfig.
//!
//! The control plane wears the cluster security group of the `network` phase; the
//! nodes wear it too, through a launch template (alongside the security group EKS
//! creates for the cluster), so that pods reach the database and the cache, whose
//! groups admit only the cluster group. The launch template also requires IMDSv2
//! and encrypts the nodes' root volumes.
//!
//! Waiting follows the resources' status with progress events: about 15 minutes for
//! the cluster, a few more for the node group (`aws.timeouts.cluster`,
//! `aws.timeouts.node_group`). The node group's desired size is left to the cluster
//! autoscaler once created; only a desired size outside `min_size..=max_size`, or a
//! changed minimum or maximum, is converged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType, VolumeType,
};
use aws_sdk_eks::types::{
    AmiTypes, AuthenticationMode, CapacityTypes, Cluster, ClusterStatus, CreateAccessConfigRequest,
    LaunchTemplateSpecification, Nodegroup, NodegroupScalingConfig, NodegroupStatus,
    NodegroupUpdateConfig, VpcConfigRequest,
};
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Environment, Error, Input, Kept, Outputs, Phase,
    PhaseContext, PhaseId, Plan, Result,
};
use serde::Serialize;

use super::kubeconfig::{Kubeconfig, comind_command};
use crate::clients::{Clients, Connector};
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};
use crate::waiter::{Observed, Status, Wait};
use crate::{iam, network};

/// The phase id.
pub const ID: &str = "cluster";
/// Output: the EKS cluster name.
pub const CLUSTER_NAME: &str = "CLUSTER_NAME";
/// Output: the cluster ARN.
pub const CLUSTER_ARN: &str = "CLUSTER_ARN";
/// Output: the Kubernetes API server URL.
pub const CLUSTER_ENDPOINT: &str = "CLUSTER_ENDPOINT";
/// Output: the cluster's CA bundle (base64).
pub const CLUSTER_CA_DATA: &str = "CLUSTER_CA_DATA";
/// Output: the Kubernetes version.
pub const CLUSTER_VERSION: &str = "CLUSTER_VERSION";
/// Output: the region of the cluster.
pub const CLUSTER_REGION: &str = "CLUSTER_REGION";
/// Output: the OIDC issuer, for IAM roles of service accounts.
pub const CLUSTER_OIDC_ISSUER: &str = "CLUSTER_OIDC_ISSUER";
/// Output: the managed node group's name.
pub const NODE_GROUP_NAME: &str = "NODE_GROUP_NAME";
/// Output: the path of the kubeconfig in the state directory.
pub const KUBECONFIG: &str = "KUBECONFIG";
/// Output: the kubeconfig's context.
pub const KUBE_CONTEXT: &str = "KUBE_CONTEXT";

const COMPONENT: &str = ID;
/// The root device of the EKS-optimized Amazon Linux AMIs.
const ROOT_DEVICE: &str = "/dev/xvda";
/// Pods (the load balancer controller) reach IMDS through one extra network hop.
const IMDS_HOP_LIMIT: i32 = 2;

/// What the node group should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct NodeSpec {
    instance_types: Vec<String>,
    ami_type: String,
    capacity: &'static str,
}

/// What the launch template should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemplateSpec {
    disk_gb: i32,
    encrypted: bool,
    imds_v2: bool,
    hop_limit: i32,
    security_groups: BTreeSet<String>,
}

/// What the cluster phase needs from `network` and `iam`.
#[derive(Debug, Clone)]
struct Inputs {
    private_subnets: Vec<String>,
    public_subnets: Vec<String>,
    security_group: String,
    cluster_role: String,
    node_role: String,
}

impl Inputs {
    fn subnets(&self) -> Vec<String> {
        self.private_subnets
            .iter()
            .chain(&self.public_subnets)
            .cloned()
            .collect()
    }
}

/// The dependencies' outputs; `None` while they are known only after apply (plan).
fn inputs(ctx: &PhaseContext) -> Result<Option<Inputs>> {
    let net = PhaseId::new(network::ID);
    let roles = PhaseId::new(iam::ID);
    let keys = [
        (&net, network::SUBNET_IDS),
        (&net, network::CLUSTER_SECURITY_GROUP_ID),
        (&roles, iam::CLUSTER_ROLE_ARN),
        (&roles, iam::NODE_ROLE_ARN),
    ];
    if keys
        .iter()
        .any(|(from, key)| matches!(ctx.input(from, key), Input::KnownAfterApply))
    {
        return Ok(None);
    }
    let public = match ctx.input(&net, network::PUBLIC_SUBNET_IDS) {
        Input::Known(value) => network::split_ids(value.expose()),
        _ => Vec::new(),
    };
    Ok(Some(Inputs {
        private_subnets: network::split_ids(ctx.require_input(&net, network::SUBNET_IDS)?.expose()),
        public_subnets: public,
        security_group: ctx
            .require_input(&net, network::CLUSTER_SECURITY_GROUP_ID)?
            .expose()
            .to_string(),
        cluster_role: ctx
            .require_input(&roles, iam::CLUSTER_ROLE_ARN)?
            .expose()
            .to_string(),
        node_role: ctx
            .require_input(&roles, iam::NODE_ROLE_ARN)?
            .expose()
            .to_string(),
    }))
}

/// The AMI type for `instance_types`: Graviton families (a `g` after the generation
/// digit: `t4g`, `m7g`, `c7gn`) run the ARM image.
fn ami_type(instance_types: &[String]) -> Result<AmiTypes> {
    let arm = |t: &String| {
        let family = t.split('.').next().unwrap_or_default();
        family
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .contains('g')
    };
    let arms = instance_types.iter().filter(|t| arm(t)).count();
    if arms == 0 {
        Ok(AmiTypes::Al2023X8664Standard)
    } else if arms == instance_types.len() {
        Ok(AmiTypes::Al2023Arm64Standard)
    } else {
        Err(Error::invalid_input(format!(
            "`aws.cluster.node_group.instance_types` mixes ARM (Graviton) and x86 types: {}; \
             one node group runs one architecture",
            instance_types.join(", ")
        ))
        .with_resource("comind.yaml aws.cluster.node_group.instance_types"))
    }
}

/// (major, minor) of a Kubernetes version such as `1.31`.
fn version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Checks the cluster settings of `env` without touching anything.
///
/// # Errors
/// `InvalidInput` naming the setting.
pub(crate) fn check_settings(env: &Environment) -> Result<()> {
    let cluster = &env.config().aws.cluster;
    let ng = &cluster.node_group;
    let bad = |message: String, field: &str| {
        Err(Error::invalid_input(message).with_resource(format!("comind.yaml {field}")))
    };
    if version(&cluster.version).is_none() {
        return bad(
            format!(
                "`{}` is not a Kubernetes version such as 1.31",
                cluster.version
            ),
            "aws.cluster.version",
        );
    }
    if ng.instance_types.is_empty() {
        return bad(
            "the node group needs at least one instance type".into(),
            "aws.cluster.node_group.instance_types",
        );
    }
    ami_type(&ng.instance_types)?;
    if ng.min_size > ng.desired_size || ng.desired_size > ng.max_size || ng.max_size == 0 {
        return bad(
            format!(
                "node group sizes must satisfy min_size <= desired_size <= max_size and \
                 max_size >= 1; got {} <= {} <= {}",
                ng.min_size, ng.desired_size, ng.max_size
            ),
            "aws.cluster.node_group",
        );
    }
    if ng.disk_gb < 20 {
        return bad(
            format!(
                "nodes need a root volume of at least 20 GiB, got {}",
                ng.disk_gb
            ),
            "aws.cluster.node_group.disk_gb",
        );
    }
    Ok(())
}

fn int(value: u32, field: &str) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        Error::invalid_input(format!("`{field}` = {value} is too large"))
            .with_resource(format!("comind.yaml {field}"))
    })
}

/// The `cluster` phase.
pub struct ClusterPhase {
    aws: Arc<Connector>,
    cluster_timeout: Duration,
    node_group_timeout: Duration,
}

impl std::fmt::Debug for ClusterPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPhase")
            .field("cluster_timeout", &self.cluster_timeout)
            .field("node_group_timeout", &self.node_group_timeout)
            .finish_non_exhaustive()
    }
}

impl ClusterPhase {
    pub(crate) fn new(aws: Arc<Connector>, env: &Environment) -> Self {
        let timeouts = &env.config().aws.timeouts;
        ClusterPhase {
            aws,
            cluster_timeout: timeouts.cluster.get(),
            node_group_timeout: timeouts.node_group.get(),
        }
    }

    /// Plans (`apply` false) or applies; what changed, the outputs when every id is
    /// known, and why the plan is incomplete if it is.
    async fn reconcile(
        &self,
        ctx: &PhaseContext,
        apply: bool,
    ) -> Result<(Vec<Change>, Option<Outputs>, Option<String>)> {
        let clients = self.aws.clients(ctx.env()).await?;
        let inputs = inputs(ctx)?;
        let mut run = self.run(ctx, &clients, apply);
        let outputs = run.converge(inputs.as_ref()).await?;
        let deferred = inputs.is_none().then(|| {
            "subnets, security group and roles come from `network` and `iam`, which are \
             not applied yet"
                .to_string()
        });
        Ok((run.changes, outputs, deferred))
    }

    fn run<'a>(&self, ctx: &'a PhaseContext, clients: &'a Clients, apply: bool) -> Run<'a> {
        Run {
            ctx,
            env: ctx.env(),
            clients,
            apply,
            changes: Vec::new(),
            name: ctx.env().resource_name("cluster"),
            node_group: ctx.env().resource_name("nodes"),
            template: ctx.env().resource_name("nodes"),
            cluster_timeout: self.cluster_timeout,
            node_group_timeout: self.node_group_timeout,
        }
    }
}

#[async_trait]
impl Phase for ClusterPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(ID)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new(network::ID), PhaseId::new(iam::ID)]
    }

    fn description(&self) -> String {
        "EKS cluster, managed node group and kubeconfig".to_string()
    }

    fn default_timeout(&self) -> Option<Duration> {
        // Both waits, and room for the calls around them and one retry of a step.
        Some(self.cluster_timeout + self.node_group_timeout + Duration::from_secs(15 * 60))
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        check_settings(ctx.env())?;
        let clients = self.aws.clients(ctx.env()).await?;
        let run = self.run(ctx, &clients, false);
        if let Some(cluster) = describe_cluster(&clients, &run.name).await? {
            let live = tags::from_map(cluster.tags());
            tags::require_owned(ctx.env(), COMPONENT, "eks-cluster", &run.name, &live)?;
        }
        let resource = format!("launch-template {}", run.template);
        let found = clients
            .ec2
            .describe_launch_templates()
            .launch_template_names(&run.template)
            .send()
            .await
            .found("ec2:DescribeLaunchTemplates", &resource)?;
        if let Some(template) = found.as_ref().and_then(|o| o.launch_templates().first()) {
            let live = tags::from_ec2(template.tags());
            tags::require_owned(
                ctx.env(),
                COMPONENT,
                "launch-template",
                &run.template,
                &live,
            )?;
        }
        Ok(())
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let (changes, outputs, deferred) = self.reconcile(ctx, false).await?;
        Ok(Plan {
            outputs: if changes.is_empty() && deferred.is_none() {
                outputs
            } else {
                None
            },
            changes,
            deferred,
        })
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let (changes, outputs, deferred) = self.reconcile(ctx, true).await?;
        if let Some(why) = deferred {
            return Err(Error::internal(format!(
                "the cluster cannot be applied yet: {why}"
            )));
        }
        let outputs = outputs.ok_or_else(|| {
            Error::internal("the cluster was applied but its outputs are unknown")
        })?;
        Ok(Applied { changes, outputs })
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        // The cluster holds no data of its own (workloads keep theirs in RDS, S3 and
        // volumes managed elsewhere), so purge or not, all of it goes.
        let clients = self.aws.clients(ctx.env()).await?;
        let mut run = self.run(ctx, &clients, true);
        let kept = run.destroy().await?;
        Ok(Destroyed {
            changes: run.changes,
            kept,
        })
    }
}

async fn describe_cluster(clients: &Clients, name: &str) -> Result<Option<Cluster>> {
    Ok(clients
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .found("eks:DescribeCluster", format!("eks-cluster {name}"))?
        .and_then(|out| out.cluster))
}

async fn describe_node_group(
    clients: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<Nodegroup>> {
    Ok(clients
        .eks
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await
        .found("eks:DescribeNodegroup", format!("eks-nodegroup {name}"))?
        .and_then(|out| out.nodegroup))
}

fn cluster_issues(cluster: &Cluster) -> Option<String> {
    let issues = cluster.health().map(|h| h.issues()).unwrap_or_default();
    joined_issues(
        issues
            .iter()
            .map(|i| (i.code().map(|c| c.as_str()), i.message())),
    )
}

fn node_group_issues(ng: &Nodegroup) -> Option<String> {
    let issues = ng.health().map(|h| h.issues()).unwrap_or_default();
    joined_issues(
        issues
            .iter()
            .map(|i| (i.code().map(|c| c.as_str()), i.message())),
    )
}

/// EKS health issues as `code: message; ...`, or `None` when there are none.
fn joined_issues<'a>(
    issues: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Option<String> {
    let issues: Vec<String> = issues
        .map(|(code, message)| format!("{}: {}", code.unwrap_or("issue"), message.unwrap_or("")))
        .collect();
    (!issues.is_empty()).then(|| issues.join("; "))
}

fn outputs_of(env: &Environment, clients: &Clients, cluster: &Cluster) -> Outputs {
    let name = cluster.name().unwrap_or_default();
    let mut out = Outputs::new()
        .text(CLUSTER_NAME, name)
        .text(CLUSTER_ARN, cluster.arn().unwrap_or_default())
        .text(
            CLUSTER_ENDPOINT,
            cluster.endpoint().unwrap_or_default().trim_end_matches('/'),
        )
        .text(
            CLUSTER_CA_DATA,
            cluster
                .certificate_authority()
                .and_then(|c| c.data())
                .unwrap_or_default(),
        )
        .text(CLUSTER_VERSION, cluster.version().unwrap_or_default())
        .text(CLUSTER_REGION, &clients.region)
        .text(NODE_GROUP_NAME, env.resource_name("nodes"))
        .text(
            KUBECONFIG,
            env.state().kubeconfig_path().display().to_string(),
        )
        .text(KUBE_CONTEXT, context_name(env));
    if let Some(issuer) = cluster
        .identity()
        .and_then(|i| i.oidc())
        .and_then(|o| o.issuer())
    {
        out.insert_text(CLUSTER_OIDC_ISSUER, issuer);
    }
    out
}

fn context_name(env: &Environment) -> String {
    format!("comind-{}", env.name())
}

/// The kubeconfig for `cluster`.
fn kubeconfig_of(env: &Environment, clients: &Clients, cluster: &Cluster) -> Kubeconfig {
    Kubeconfig {
        cluster: cluster.name().unwrap_or_default().to_string(),
        server: cluster.endpoint().unwrap_or_default().to_string(),
        certificate_authority_data: cluster
            .certificate_authority()
            .and_then(|c| c.data())
            .unwrap_or_default()
            .to_string(),
        region: clients.region.clone(),
        endpoint_url: clients.endpoint_url.clone(),
        context: context_name(env),
        command: comind_command(),
        aws_profile: std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()),
    }
}

/// One pass over the cluster: planning (reads only) or applying.
struct Run<'a> {
    ctx: &'a PhaseContext,
    env: &'a Environment,
    clients: &'a Clients,
    apply: bool,
    changes: Vec<Change>,
    name: String,
    node_group: String,
    template: String,
    cluster_timeout: Duration,
    node_group_timeout: Duration,
}

impl Run<'_> {
    /// Records `change`; whether to make it now.
    fn will(&mut self, change: Change) -> bool {
        self.changes.push(change);
        self.apply
    }

    fn resource(&self) -> String {
        format!("eks-cluster {}", self.name)
    }

    async fn converge(&mut self, inputs: Option<&Inputs>) -> Result<Option<Outputs>> {
        let Some(cluster) = self.cluster(inputs).await? else {
            self.changes
                .push(Change::create("launch-template", &self.template));
            self.changes
                .push(Change::create("eks-nodegroup", &self.node_group));
            self.changes.push(Change::create(
                "kubeconfig",
                self.env.state().kubeconfig_path().display().to_string(),
            ));
            return Ok(None);
        };
        self.ctx.checkpoint()?;
        let template = self.launch_template(&cluster, inputs).await?;
        self.ctx.checkpoint()?;
        self.node_group(&cluster, inputs, template.as_ref()).await?;
        self.kubeconfig(&cluster)?;
        Ok(Some(outputs_of(self.env, self.clients, &cluster)))
    }

    fn cluster_tags(&self) -> Tags {
        let cluster = &self.env.config().aws.cluster;
        let hash = comind_core::environment::spec_hash(&cluster.version);
        tags::ownership(self.env, COMPONENT, Some(&hash))
    }

    /// The cluster, active; `None` while planning a new one.
    async fn cluster(&mut self, inputs: Option<&Inputs>) -> Result<Option<Cluster>> {
        let desired_version = self.env.config().aws.cluster.version.clone();
        let Some(live) = describe_cluster(self.clients, &self.name).await? else {
            if !self.will(
                Change::create("eks-cluster", &self.name)
                    .because(format!("Kubernetes {desired_version}")),
            ) {
                return Ok(None);
            }
            return self.create_cluster(inputs).await.map(Some);
        };
        let live_tags = tags::from_map(live.tags());
        tags::require_owned(self.env, COMPONENT, "eks-cluster", &self.name, &live_tags)?;
        let status = live.status().cloned().unwrap_or(ClusterStatus::Active);
        match status {
            ClusterStatus::Failed => {
                return Err(self.failed_cluster(&live));
            }
            ClusterStatus::Deleting => {
                if !self.will(
                    Change::create("eks-cluster", &self.name)
                        .because("the previous one is still being deleted"),
                ) {
                    return Ok(None);
                }
                self.wait_cluster_gone().await?;
                return self.create_cluster(inputs).await.map(Some);
            }
            ClusterStatus::Active => {}
            _ => {
                if !self.apply {
                    return Ok(Some(live));
                }
                self.wait_cluster_active().await?;
            }
        }
        let mut live = live;
        if live.role_arn().is_some()
            && let Some(inputs) = inputs
            && live.role_arn() != Some(inputs.cluster_role.as_str())
        {
            return Err(Error::conflict(format!(
                "EKS cluster {} runs with role {} but the `iam` phase made {}; a cluster's \
                 role cannot change",
                self.name,
                live.role_arn().unwrap_or_default(),
                inputs.cluster_role
            ))
            .with_resource(self.resource())
            .with_hint("take the cluster down (`comind down --only cluster`) and up again"));
        }
        if let (Some(want), Some(have)) =
            (version(&desired_version), live.version().and_then(version))
        {
            if want < have {
                return Err(Error::invalid_input(format!(
                    "EKS cluster {} runs Kubernetes {}.{} and `aws.cluster.version` asks for \
                     {desired_version}; Kubernetes cannot be downgraded",
                    self.name, have.0, have.1
                ))
                .with_resource(self.resource())
                .with_hint("set `aws.cluster.version` to the running version or newer"));
            }
            if want > have {
                // EKS upgrades one minor version at a time; the next run goes on.
                let next = format!("{}.{}", have.0, have.1 + 1);
                if self.will(
                    Change::update("eks-cluster", &self.name)
                        .because(format!("Kubernetes {}.{} to {next}", have.0, have.1)),
                ) {
                    self.clients
                        .eks
                        .update_cluster_version()
                        .name(&self.name)
                        .version(&next)
                        .send()
                        .await
                        .aws("eks:UpdateClusterVersion", self.resource())?;
                    live = self.wait_cluster_active().await?;
                }
            }
        }
        if let Some(inputs) = inputs {
            let vpc = live.resources_vpc_config();
            let subnets: BTreeSet<&str> = vpc
                .map(|v| v.subnet_ids().iter().map(String::as_str).collect())
                .unwrap_or_default();
            let groups: BTreeSet<&str> = vpc
                .map(|v| v.security_group_ids().iter().map(String::as_str).collect())
                .unwrap_or_default();
            let want_subnets: Vec<String> = inputs.subnets();
            let want_subnets: BTreeSet<&str> = want_subnets.iter().map(String::as_str).collect();
            let want_groups = BTreeSet::from([inputs.security_group.as_str()]);
            if (subnets != want_subnets || groups != want_groups)
                && self.will(
                    Change::update("eks-cluster", &self.name)
                        .because("subnets or security groups differ from the network's"),
                )
            {
                self.clients
                    .eks
                    .update_cluster_config()
                    .name(&self.name)
                    .resources_vpc_config(
                        VpcConfigRequest::builder()
                            .set_subnet_ids(Some(inputs.subnets()))
                            .security_group_ids(&inputs.security_group)
                            .endpoint_public_access(true)
                            .endpoint_private_access(true)
                            .build(),
                    )
                    .send()
                    .await
                    .aws("eks:UpdateClusterConfig", self.resource())?;
                live = self.wait_cluster_active().await?;
            }
        }
        let missing = tags::missing(&self.cluster_tags(), &live_tags);
        if !missing.is_empty()
            && self.will(Change::update("eks-cluster", &self.name).because("spec changed: tags"))
        {
            self.clients
                .eks
                .tag_resource()
                .resource_arn(live.arn().unwrap_or_default())
                .set_tags(Some(tags::to_map(&missing)))
                .send()
                .await
                .aws("eks:TagResource", self.resource())?;
        }
        Ok(Some(live))
    }

    async fn create_cluster(&mut self, inputs: Option<&Inputs>) -> Result<Cluster> {
        let inputs = inputs.ok_or_else(|| {
            Error::internal("the cluster cannot be created before the network and roles")
        })?;
        let version = &self.env.config().aws.cluster.version;
        self.clients
            .eks
            .create_cluster()
            .name(&self.name)
            .version(version)
            .role_arn(&inputs.cluster_role)
            .resources_vpc_config(
                VpcConfigRequest::builder()
                    .set_subnet_ids(Some(inputs.subnets()))
                    .security_group_ids(&inputs.security_group)
                    .endpoint_public_access(true)
                    .endpoint_private_access(true)
                    .build(),
            )
            // The identity that creates the cluster administers it, through access
            // entries; the aws-auth ConfigMap stays usable for the node role.
            .access_config(
                CreateAccessConfigRequest::builder()
                    .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                    .bootstrap_cluster_creator_admin_permissions(true)
                    .build(),
            )
            .set_tags(Some(tags::to_map(&self.cluster_tags())))
            .send()
            .await
            .aws("eks:CreateCluster", self.resource())?;
        self.wait_cluster_active().await
    }

    fn failed_cluster(&self, cluster: &Cluster) -> Error {
        let issues = cluster_issues(cluster)
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        Error::unavailable(format!(
            "EKS cluster {} is in status FAILED{issues}",
            self.name
        ))
        .transient(false)
        .with_resource(self.resource())
        .with_hint(
            "take it down (`comind down --only cluster`), fix the cause, and bring it up again",
        )
    }

    async fn wait_cluster_active(&self) -> Result<Cluster> {
        let wait = Wait::new(
            "eks-cluster",
            &self.name,
            "active",
            self.cluster_timeout,
            "aws.timeouts.cluster",
        );
        wait.until(self.ctx, || async {
            let Some(cluster) = describe_cluster(self.clients, &self.name).await? else {
                return Ok(Observed::Failed(Status::new("gone")));
            };
            let status = Status::new(cluster.status().map(|s| s.as_str()).unwrap_or("unknown"))
                .with_message(cluster_issues(&cluster));
            Ok(match cluster.status() {
                Some(ClusterStatus::Active) => Observed::Ready(cluster),
                Some(ClusterStatus::Failed | ClusterStatus::Deleting) => Observed::Failed(status),
                _ => Observed::Pending(status),
            })
        })
        .await
    }

    async fn wait_cluster_gone(&self) -> Result<()> {
        let wait = Wait::new(
            "eks-cluster",
            &self.name,
            "deleted",
            self.cluster_timeout,
            "aws.timeouts.cluster",
        );
        wait.until(self.ctx, || async {
            Ok(match describe_cluster(self.clients, &self.name).await? {
                None => Observed::Ready(()),
                Some(c) if c.status() == Some(&ClusterStatus::Failed) => {
                    Observed::Failed(Status::new("FAILED").with_message(cluster_issues(&c)))
                }
                Some(c) => Observed::Pending(Status::new(
                    c.status().map(|s| s.as_str()).unwrap_or("unknown"),
                )),
            })
        })
        .await
    }

    // ---- launch template -------------------------------------------------------------

    fn template_spec(&self, cluster: &Cluster, inputs: &Inputs) -> Result<TemplateSpec> {
        let mut security_groups = BTreeSet::from([inputs.security_group.clone()]);
        // The group EKS made for the cluster lets nodes and control plane talk; a
        // launch template that names groups must name it too.
        if let Some(eks_group) = cluster
            .resources_vpc_config()
            .and_then(|v| v.cluster_security_group_id())
        {
            security_groups.insert(eks_group.to_string());
        }
        Ok(TemplateSpec {
            disk_gb: int(
                self.env.config().aws.cluster.node_group.disk_gb,
                "aws.cluster.node_group.disk_gb",
            )?,
            encrypted: true,
            imds_v2: true,
            hop_limit: IMDS_HOP_LIMIT,
            security_groups,
        })
    }

    fn template_data(&self, spec: &TemplateSpec) -> RequestLaunchTemplateData {
        let mut instance_tags =
            tags::named(self.env, COMPONENT, None, &self.env.resource_name("node"));
        instance_tags.remove(comind_core::environment::LABEL_SPEC_HASH);
        RequestLaunchTemplateData::builder()
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(ROOT_DEVICE)
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(spec.disk_gb)
                            .volume_type(VolumeType::Gp3)
                            .encrypted(spec.encrypted)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(spec.hop_limit)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .set_security_group_ids(Some(spec.security_groups.iter().cloned().collect()))
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags::to_ec2(&instance_tags)))
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags::to_ec2(&instance_tags)))
                    .build(),
            )
            .build()
    }

    async fn live_template_spec(&self, id: &str) -> Result<Option<(i64, TemplateSpec)>> {
        let out = self
            .clients
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .versions("$Latest")
            .send()
            .await
            .found(
                "ec2:DescribeLaunchTemplateVersions",
                format!("launch-template {}", self.template),
            )?;
        let Some(version) = out
            .as_ref()
            .and_then(|o| o.launch_template_versions().first())
        else {
            return Ok(None);
        };
        let Some(data) = version.launch_template_data() else {
            return Ok(None);
        };
        let root = data
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(ROOT_DEVICE))
            .and_then(|m| m.ebs());
        let metadata = data.metadata_options();
        Ok(Some((
            version.version_number().unwrap_or(1),
            TemplateSpec {
                disk_gb: root.and_then(|e| e.volume_size()).unwrap_or(0),
                encrypted: root.and_then(|e| e.encrypted()).unwrap_or(false),
                imds_v2: metadata.and_then(|m| m.http_tokens())
                    == Some(&LaunchTemplateHttpTokensState::Required),
                hop_limit: metadata
                    .and_then(|m| m.http_put_response_hop_limit())
                    .unwrap_or(1),
                security_groups: data.security_group_ids().iter().cloned().collect(),
            },
        )))
    }

    /// The launch template: (id, version); `None` while its inputs are unknown or
    /// while planning a new one.
    async fn launch_template(
        &mut self,
        cluster: &Cluster,
        inputs: Option<&Inputs>,
    ) -> Result<Option<(String, String)>> {
        let resource = format!("launch-template {}", self.template);
        let found = self
            .clients
            .ec2
            .describe_launch_templates()
            .launch_template_names(&self.template)
            .send()
            .await
            .found("ec2:DescribeLaunchTemplates", &resource)?;
        let live = found.as_ref().and_then(|o| o.launch_templates().first());
        let Some(inputs) = inputs else {
            if live.is_none() {
                self.changes
                    .push(Change::create("launch-template", &self.template));
            }
            return Ok(None);
        };
        let spec = self.template_spec(cluster, inputs)?;
        if let Some(live) = live {
            let live_tags = tags::from_ec2(live.tags());
            tags::require_owned(
                self.env,
                COMPONENT,
                "launch-template",
                &self.template,
                &live_tags,
            )?;
            let id = live.launch_template_id().unwrap_or_default().to_string();
            let current = self.live_template_spec(&id).await?;
            if let Some((number, have)) = &current
                && have == &spec
            {
                return Ok(Some((id, number.to_string())));
            }
            if !self.will(
                Change::update("launch-template", &self.template)
                    .because("root volume, metadata options or security groups differ"),
            ) {
                return Ok(Some((id, "$Latest".to_string())));
            }
            let created = self
                .clients
                .ec2
                .create_launch_template_version()
                .launch_template_id(&id)
                .launch_template_data(self.template_data(&spec))
                .send()
                .await
                .aws("ec2:CreateLaunchTemplateVersion", &resource)?;
            let number = created
                .launch_template_version()
                .and_then(|v| v.version_number())
                .ok_or_else(|| {
                    Error::internal("CreateLaunchTemplateVersion returned no version")
                })?;
            return Ok(Some((id, number.to_string())));
        }
        if !self.will(Change::create("launch-template", &self.template)) {
            return Ok(None);
        }
        let template_tags = tags::named(self.env, COMPONENT, None, &self.template);
        let created = self
            .clients
            .ec2
            .create_launch_template()
            .launch_template_name(&self.template)
            .launch_template_data(self.template_data(&spec))
            .tag_specifications(tags::ec2_spec(ResourceType::LaunchTemplate, &template_tags))
            .send()
            .await
            .aws("ec2:CreateLaunchTemplate", &resource)?;
        let template = created
            .launch_template()
            .ok_or_else(|| Error::internal("CreateLaunchTemplate returned no template"))?;
        Ok(Some((
            template
                .launch_template_id()
                .unwrap_or_default()
                .to_string(),
            template.latest_version_number().unwrap_or(1).to_string(),
        )))
    }

    // ---- node group ------------------------------------------------------------------

    fn node_spec(&self) -> Result<NodeSpec> {
        let ng = &self.env.config().aws.cluster.node_group;
        Ok(NodeSpec {
            instance_types: ng.instance_types.clone(),
            ami_type: ami_type(&ng.instance_types)?.as_str().to_string(),
            capacity: CapacityTypes::OnDemand.as_str(),
        })
    }

    fn node_tags(&self, spec: &NodeSpec) -> Tags {
        let hash = comind_core::environment::spec_hash(spec);
        tags::ownership(self.env, COMPONENT, Some(&hash))
    }

    fn scaling(&self, desired: Option<i32>) -> Result<NodegroupScalingConfig> {
        let ng = &self.env.config().aws.cluster.node_group;
        let min = int(ng.min_size, "aws.cluster.node_group.min_size")?;
        let max = int(ng.max_size, "aws.cluster.node_group.max_size")?;
        let configured = int(ng.desired_size, "aws.cluster.node_group.desired_size")?;
        Ok(NodegroupScalingConfig::builder()
            .min_size(min)
            .max_size(max)
            .desired_size(desired.map_or(configured, |d| d.clamp(min, max)))
            .build())
    }

    async fn node_group(
        &mut self,
        cluster: &Cluster,
        inputs: Option<&Inputs>,
        template: Option<&(String, String)>,
    ) -> Result<()> {
        let spec = self.node_spec()?;
        let live = describe_node_group(self.clients, &self.name, &self.node_group).await?;
        let (Some(inputs), Some(template)) = (inputs, template) else {
            if live.is_none() {
                self.changes
                    .push(Change::create("eks-nodegroup", &self.node_group));
            }
            return Ok(());
        };
        let Some(live) = live else {
            if self.will(
                Change::create("eks-nodegroup", &self.node_group).because(format!(
                    "{} x {}",
                    self.env.config().aws.cluster.node_group.desired_size,
                    spec.instance_types.join("/")
                )),
            ) {
                self.create_node_group(cluster, inputs, template, &spec)
                    .await?;
            }
            return Ok(());
        };
        let live_tags = tags::from_map(live.tags());
        tags::require_owned(
            self.env,
            COMPONENT,
            "eks-nodegroup",
            &self.node_group,
            &live_tags,
        )?;
        match live.status() {
            Some(NodegroupStatus::CreateFailed | NodegroupStatus::DeleteFailed) => {
                return Err(self.failed_node_group(&live));
            }
            Some(NodegroupStatus::Deleting) => {
                if self.will(
                    Change::create("eks-nodegroup", &self.node_group)
                        .because("the previous one is still being deleted"),
                ) {
                    self.wait_node_group_gone().await?;
                    self.create_node_group(cluster, inputs, template, &spec)
                        .await?;
                }
                return Ok(());
            }
            Some(NodegroupStatus::Creating | NodegroupStatus::Updating) => {
                if !self.apply {
                    return Ok(());
                }
                self.wait_node_group_active().await?;
            }
            _ => {}
        }
        let live_types: Vec<String> = live.instance_types().to_vec();
        let live_ami = live.ami_type().map(|a| a.as_str().to_string());
        if live_types != spec.instance_types || live_ami.as_deref() != Some(spec.ami_type.as_str())
        {
            // Instance types of a managed node group cannot change in place.
            if self.will(
                Change::replace("eks-nodegroup", &self.node_group).because(format!(
                    "instance types {} to {}",
                    live_types.join("/"),
                    spec.instance_types.join("/")
                )),
            ) {
                self.delete_node_group().await?;
                self.create_node_group(cluster, inputs, template, &spec)
                    .await?;
            }
            return Ok(());
        }
        let ng = &self.env.config().aws.cluster.node_group;
        let scaling = live.scaling_config();
        let (min, max, desired) = (
            scaling.and_then(|s| s.min_size()),
            scaling.and_then(|s| s.max_size()),
            scaling.and_then(|s| s.desired_size()),
        );
        let want_min = int(ng.min_size, "aws.cluster.node_group.min_size")?;
        let want_max = int(ng.max_size, "aws.cluster.node_group.max_size")?;
        let outside = desired.is_none_or(|d| d < want_min || d > want_max);
        if (min != Some(want_min) || max != Some(want_max) || outside)
            && self.will(
                Change::update("eks-nodegroup", &self.node_group).because(format!(
                    "scaling {}..{} to {want_min}..{want_max}",
                    min.unwrap_or(0),
                    max.unwrap_or(0)
                )),
            )
        {
            self.clients
                .eks
                .update_nodegroup_config()
                .cluster_name(&self.name)
                .nodegroup_name(&self.node_group)
                .scaling_config(self.scaling(desired)?)
                .send()
                .await
                .aws(
                    "eks:UpdateNodegroupConfig",
                    format!("eks-nodegroup {}", self.node_group),
                )?;
            self.wait_node_group_active().await?;
        }
        let live_template = live
            .launch_template()
            .map(|t| (t.id().unwrap_or_default(), t.version().unwrap_or_default()));
        let template_differs = live_template != Some((template.0.as_str(), template.1.as_str()));
        let cluster_version = cluster.version().unwrap_or_default();
        let version_differs =
            live.version() != Some(cluster_version) && !cluster_version.is_empty();
        if (template_differs || version_differs)
            && self.will(Change::update("eks-nodegroup", &self.node_group).because(
                if version_differs {
                    format!(
                        "Kubernetes {} to {cluster_version}",
                        live.version().unwrap_or("?")
                    )
                } else {
                    format!("launch template version {}", template.1)
                },
            ))
        {
            let mut request = self
                .clients
                .eks
                .update_nodegroup_version()
                .cluster_name(&self.name)
                .nodegroup_name(&self.node_group)
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .id(&template.0)
                        .version(&template.1)
                        .build(),
                );
            if version_differs {
                request = request.version(cluster_version);
            }
            request.send().await.aws(
                "eks:UpdateNodegroupVersion",
                format!("eks-nodegroup {}", self.node_group),
            )?;
            self.wait_node_group_active().await?;
        }
        Ok(())
    }

    async fn create_node_group(
        &mut self,
        cluster: &Cluster,
        inputs: &Inputs,
        template: &(String, String),
        spec: &NodeSpec,
    ) -> Result<()> {
        let mut labels = HashMap::new();
        labels.insert(
            comind_core::environment::LABEL_ENVIRONMENT.to_string(),
            self.env.name().to_string(),
        );
        self.clients
            .eks
            .create_nodegroup()
            .cluster_name(&self.name)
            .nodegroup_name(&self.node_group)
            .set_subnets(Some(inputs.private_subnets.clone()))
            .node_role(&inputs.node_role)
            .scaling_config(self.scaling(None)?)
            .set_instance_types(Some(spec.instance_types.clone()))
            .ami_type(AmiTypes::from(spec.ami_type.as_str()))
            .capacity_type(CapacityTypes::OnDemand)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .id(&template.0)
                    .version(&template.1)
                    .build(),
            )
            .set_version(cluster.version().map(str::to_string))
            .set_labels(Some(labels))
            .update_config(NodegroupUpdateConfig::builder().max_unavailable(1).build())
            .set_tags(Some(tags::to_map(&self.node_tags(spec))))
            .send()
            .await
            .aws(
                "eks:CreateNodegroup",
                format!("eks-nodegroup {}", self.node_group),
            )?;
        self.wait_node_group_active().await
    }

    fn failed_node_group(&self, ng: &Nodegroup) -> Error {
        let issues = node_group_issues(ng)
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        Error::unavailable(format!(
            "EKS node group {} is in status {}{issues}",
            self.node_group,
            ng.status().map(|s| s.as_str()).unwrap_or("unknown")
        ))
        .transient(false)
        .with_resource(format!("eks-nodegroup {}", self.node_group))
        .with_hint(
            "the usual causes are nodes that cannot reach the cluster (routes, NAT) or an \
             instance type the zones do not offer; fix it, then `comind down --only cluster` \
             and `comind up`",
        )
    }

    async fn wait_node_group_active(&self) -> Result<()> {
        let wait = Wait::new(
            "eks-nodegroup",
            &self.node_group,
            "active",
            self.node_group_timeout,
            "aws.timeouts.node_group",
        );
        wait.until(self.ctx, || async {
            let Some(ng) = describe_node_group(self.clients, &self.name, &self.node_group).await?
            else {
                return Ok(Observed::Failed(Status::new("gone")));
            };
            let status = Status::new(ng.status().map(|s| s.as_str()).unwrap_or("unknown"))
                .with_message(node_group_issues(&ng));
            Ok(match ng.status() {
                Some(NodegroupStatus::Active) => Observed::Ready(()),
                Some(
                    NodegroupStatus::CreateFailed
                    | NodegroupStatus::DeleteFailed
                    | NodegroupStatus::Degraded
                    | NodegroupStatus::Deleting,
                ) => Observed::Failed(status),
                _ => Observed::Pending(status),
            })
        })
        .await
    }

    async fn wait_node_group_gone(&self) -> Result<()> {
        let wait = Wait::new(
            "eks-nodegroup",
            &self.node_group,
            "deleted",
            self.node_group_timeout,
            "aws.timeouts.node_group",
        );
        wait.until(self.ctx, || async {
            Ok(
                match describe_node_group(self.clients, &self.name, &self.node_group).await? {
                    None => Observed::Ready(()),
                    Some(ng) if ng.status() == Some(&NodegroupStatus::DeleteFailed) => {
                        Observed::Failed(
                            Status::new("DELETE_FAILED").with_message(node_group_issues(&ng)),
                        )
                    }
                    Some(ng) => Observed::Pending(Status::new(
                        ng.status().map(|s| s.as_str()).unwrap_or("unknown"),
                    )),
                },
            )
        })
        .await
    }

    async fn delete_node_group(&self) -> Result<()> {
        self.clients
            .eks
            .delete_nodegroup()
            .cluster_name(&self.name)
            .nodegroup_name(&self.node_group)
            .send()
            .await
            .found(
                "eks:DeleteNodegroup",
                format!("eks-nodegroup {}", self.node_group),
            )?;
        self.wait_node_group_gone().await
    }

    // ---- kubeconfig ------------------------------------------------------------------

    fn kubeconfig(&mut self, cluster: &Cluster) -> Result<()> {
        let path = self.env.state().kubeconfig_path();
        let wanted = kubeconfig_of(self.env, self.clients, cluster).to_yaml()?;
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        let change = if current.is_none() {
            Change::create("kubeconfig", path.display().to_string())
        } else {
            Change::update("kubeconfig", path.display().to_string())
        };
        if self.will(change) {
            self.env
                .state()
                .write_private("kubeconfig", wanted.as_bytes())?;
        }
        Ok(())
    }

    // ---- down ------------------------------------------------------------------------

    async fn destroy(&mut self) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        let cluster = describe_cluster(self.clients, &self.name).await?;
        if let Some(cluster) = &cluster {
            if !self
                .env
                .owns(&tags::from_map(cluster.tags()), Some(COMPONENT))
            {
                kept.push(Kept {
                    kind: "eks-cluster".into(),
                    name: self.name.clone(),
                    reason: "not created by Comind (no ownership tags); left untouched".into(),
                });
                return Ok(kept);
            }
            if let Some(ng) =
                describe_node_group(self.clients, &self.name, &self.node_group).await?
                && self.env.owns(&tags::from_map(ng.tags()), Some(COMPONENT))
            {
                self.changes
                    .push(Change::delete("eks-nodegroup", &self.node_group));
                if ng.status() == Some(&NodegroupStatus::Deleting) {
                    self.wait_node_group_gone().await?;
                } else {
                    self.delete_node_group().await?;
                }
            }
            self.ctx.checkpoint()?;
            self.changes.push(Change::delete("eks-cluster", &self.name));
            if cluster.status() != Some(&ClusterStatus::Deleting) {
                self.clients
                    .eks
                    .delete_cluster()
                    .name(&self.name)
                    .send()
                    .await
                    .found("eks:DeleteCluster", self.resource())?;
            }
            self.wait_cluster_gone().await?;
        }
        let resource = format!("launch-template {}", self.template);
        let found = self
            .clients
            .ec2
            .describe_launch_templates()
            .launch_template_names(&self.template)
            .send()
            .await
            .found("ec2:DescribeLaunchTemplates", &resource)?;
        if let Some(template) = found.as_ref().and_then(|o| o.launch_templates().first())
            && self
                .env
                .owns(&tags::from_ec2(template.tags()), Some(COMPONENT))
        {
            self.changes
                .push(Change::delete("launch-template", &self.template));
            self.clients
                .ec2
                .delete_launch_template()
                .launch_template_id(template.launch_template_id().unwrap_or_default())
                .send()
                .await
                .found("ec2:DeleteLaunchTemplate", &resource)?;
        }
        let path = self.env.state().kubeconfig_path();
        match std::fs::remove_file(&path) {
            Ok(()) => self
                .changes
                .push(Change::delete("kubeconfig", path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::internal(format!("cannot remove {}", path.display()))
                    .with_source(e)
                    .with_resource(path.display().to_string()));
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_types_run_the_arm_image() {
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ami_type(&types(&["t3.large"])).unwrap(),
            AmiTypes::Al2023X8664Standard
        );
        assert_eq!(
            ami_type(&types(&["m7g.large", "c7gn.xlarge", "t4g.medium"])).unwrap(),
            AmiTypes::Al2023Arm64Standard
        );
        assert_eq!(
            ami_type(&types(&["m5dn.large", "g5.xlarge"])).unwrap(),
            AmiTypes::Al2023X8664Standard
        );
        assert!(ami_type(&types(&["t3.large", "t4g.large"])).is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version("1.31").unwrap() > version("1.9").unwrap());
        assert_eq!(version("1.31"), Some((1, 31)));
        assert_eq!(version("latest"), None);
    }

    #[test]
    fn settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = comind_core::Config::default();
        config.aws.cluster.node_group.min_size = 5;
        let env = Environment::with_state_root(config, dir.path());
        let err = check_settings(&env).unwrap_err();
        assert!(err.message().contains("min_size <= desired_size"), "{err}");
        let env = Environment::with_state_root(comind_core::Config::default(), dir.path());
        assert!(check_settings(&env).is_ok());
    }
}

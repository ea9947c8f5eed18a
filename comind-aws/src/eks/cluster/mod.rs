//! The `cluster` phase: the EKS cluster, the KMS key that encrypts its Secrets, who may
//! use it (access entries), its managed node group, its managed add-ons and the
//! kubeconfig: what the in-cluster phases need from EKS, as k3d gives it locally.
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, Input, Outputs, Pass, PhaseContext,
    PhaseId, Reconcile, Result,
};

use crate::clients::{Clients, Connector};
use crate::error::AwsResultExt;
use crate::tags;
use crate::{iam, network};

mod access;
mod addons;
mod control_plane;
mod destroy;
mod health;
mod launch_template;
mod node_group;
mod outputs;
mod pod_identity;
mod secrets_key;

use control_plane::describe_cluster;
use outputs::outputs_of;

/// The phase id.
pub const ID: &str = comind_core::cluster::CLUSTER_PHASE_ID;
/// Output: the EKS cluster name, the region of the cluster and its VPC: the core
/// contract's (the AWS Load Balancer Controller's add-on reads them).
pub use comind_core::cluster::{CLUSTER_NAME, CLUSTER_REGION, CLUSTER_VPC_ID};
/// Output: the cluster ARN.
pub const CLUSTER_ARN: &str = "CLUSTER_ARN";
/// Output: the Kubernetes API server URL.
pub const CLUSTER_ENDPOINT: &str = "CLUSTER_ENDPOINT";
/// Output: the cluster's CA bundle (base64).
pub const CLUSTER_CA_DATA: &str = "CLUSTER_CA_DATA";
/// Output: the Kubernetes version.
pub const CLUSTER_VERSION: &str = "CLUSTER_VERSION";
/// Output: the OIDC issuer, for IAM roles of service accounts.
pub const CLUSTER_OIDC_ISSUER: &str = "CLUSTER_OIDC_ISSUER";
/// Output: the managed node group's name.
pub const NODE_GROUP_NAME: &str = "NODE_GROUP_NAME";
/// Output: the path of the kubeconfig in the state directory, and the kubeconfig's
/// context: the core contract of the in-cluster phases.
pub use comind_core::cluster::{KUBE_CONTEXT, KUBECONFIG};

const COMPONENT: &str = ID;

/// What the cluster phase needs from `network` and `iam`.
#[derive(Debug, Clone)]
struct Inputs {
    private_subnets: Vec<String>,
    public_subnets: Vec<String>,
    security_group: String,
    cluster_role: String,
    node_role: String,
    load_balancer_controller_role: String,
    ebs_csi_driver_role: String,
    backup_role: String,
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
        (&roles, iam::LOAD_BALANCER_CONTROLLER_ROLE_ARN),
        (&roles, iam::EBS_CSI_DRIVER_ROLE_ARN),
        (&roles, iam::BACKUP_ROLE_ARN),
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
        load_balancer_controller_role: ctx
            .require_input(&roles, iam::LOAD_BALANCER_CONTROLLER_ROLE_ARN)?
            .expose()
            .to_string(),
        ebs_csi_driver_role: ctx
            .require_input(&roles, iam::EBS_CSI_DRIVER_ROLE_ARN)?
            .expose()
            .to_string(),
        backup_role: ctx
            .require_input(&roles, iam::BACKUP_ROLE_ARN)?
            .expose()
            .to_string(),
    }))
}

/// (major, minor) of a Kubernetes version such as `1.31`.
fn version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn int(value: u32, field: &str) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        Error::invalid_input(format!("`{field}` = {value} is too large"))
            .with_resource(format!("comind.yaml {field}"))
    })
}

/// The `cluster` phase, written as one reconcile function: the provider runs it as a
/// [`ReconcilePhase`](comind_core::ReconcilePhase).
pub struct ClusterPhase {
    aws: Arc<Connector>,
    cluster_timeout: Duration,
    node_group_timeout: Duration,
    addon_timeout: Duration,
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
            addon_timeout: timeouts.addon.get(),
        }
    }

    fn run<'a>(&self, ctx: &'a PhaseContext, clients: &'a Clients, pass: &'a mut Pass) -> Run<'a> {
        Run {
            ctx,
            env: ctx.env(),
            clients,
            pass,
            name: ctx.env().resource_name("cluster"),
            node_group: ctx.env().resource_name("nodes"),
            template: ctx.env().resource_name("nodes"),
            cluster_timeout: self.cluster_timeout,
            node_group_timeout: self.node_group_timeout,
            addon_timeout: self.addon_timeout,
        }
    }
}

#[async_trait]
impl Reconcile for ClusterPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(ID)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new(network::ID), PhaseId::new(iam::ID)]
    }

    fn description(&self) -> String {
        "EKS cluster, Secrets key, access entries, managed node group, add-ons and kubeconfig"
            .to_string()
    }

    fn default_timeout(&self) -> Option<Duration> {
        // The waits, and room for the calls around them and one retry of a step.
        let addons = u32::try_from(comind_core::config::EKS_ADDONS.len()).unwrap_or(u32::MAX);
        Some(
            self.cluster_timeout
                + self.node_group_timeout
                + self.addon_timeout.saturating_mul(addons)
                + Duration::from_secs(15 * 60),
        )
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut pass = Pass::plan();
        let run = self.run(ctx, &clients, &mut pass);
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

    fn deferred(&self, ctx: &PhaseContext) -> Option<String> {
        matches!(inputs(ctx), Ok(None)).then(|| {
            "subnets, security group and roles come from `network` and `iam`, which are \
             not applied yet"
                .to_string()
        })
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<Option<Outputs>> {
        let clients = self.aws.clients(ctx.env()).await?;
        let inputs = inputs(ctx)?;
        let outputs = self
            .run(ctx, &clients, pass)
            .converge(inputs.as_ref())
            .await?;
        if pass.is_apply()
            && let Some(why) = self.deferred(ctx)
        {
            return Err(Error::internal(format!(
                "the cluster cannot be applied yet: {why}"
            )));
        }
        Ok(outputs)
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        // The cluster holds no data of its own (workloads keep theirs in RDS, S3 and
        // volumes managed elsewhere), so purge or not, all of it goes but the key that
        // encrypted its Secrets, which only a purge schedules for deletion.
        let clients = self.aws.clients(ctx.env()).await?;
        let mut pass = Pass::apply();
        let kept = self
            .run(ctx, &clients, &mut pass)
            .destroy(options.purge)
            .await?;
        Ok(Destroyed {
            changes: pass.into_changes(),
            kept,
        })
    }
}

/// One pass over the cluster: it records each change on `pass`, and makes it only
/// when `pass` applies.
struct Run<'a> {
    ctx: &'a PhaseContext,
    env: &'a Environment,
    clients: &'a Clients,
    pass: &'a mut Pass,
    name: String,
    node_group: String,
    template: String,
    cluster_timeout: Duration,
    node_group_timeout: Duration,
    addon_timeout: Duration,
}

impl Run<'_> {
    fn resource(&self) -> String {
        format!("eks-cluster {}", self.name)
    }

    async fn converge(&mut self, inputs: Option<&Inputs>) -> Result<Option<Outputs>> {
        let Some(cluster) = self.cluster(inputs).await? else {
            self.plan_new_access().await?;
            self.pass.record([
                Change::create("launch-template", &self.template),
                Change::create("eks-nodegroup", &self.node_group),
            ]);
            self.plan_new_associations();
            self.plan_new_addons();
            self.pass.record([Change::create(
                "kubeconfig",
                self.env.state().kubeconfig_path().display().to_string(),
            )]);
            return Ok(None);
        };
        self.ctx.checkpoint()?;
        // Access first: whoever runs Comind can reach the cluster from here on.
        self.access_entries().await?;
        self.ctx.checkpoint()?;
        // Before the add-ons, so that the EBS driver starts with its role.
        self.pod_identity(inputs).await?;
        self.ctx.checkpoint()?;
        let template = self.launch_template(&cluster, inputs).await?;
        self.ctx.checkpoint()?;
        self.node_group(&cluster, inputs, template.as_ref()).await?;
        self.ctx.checkpoint()?;
        // After the nodes: coredns and the EBS driver's controller need somewhere to
        // run before EKS calls them active.
        self.addons(&cluster).await?;
        self.kubeconfig(&cluster)?;
        let mut outputs = outputs_of(self.env, self.clients, &cluster);
        // The in-cluster phases annotate service accounts with these where a chart
        // wants it (Pod Identity itself needs no annotation).
        if let Some(inputs) = inputs {
            outputs.insert_text(
                iam::LOAD_BALANCER_CONTROLLER_ROLE_ARN,
                &inputs.load_balancer_controller_role,
            );
            outputs.insert_text(iam::BACKUP_ROLE_ARN, &inputs.backup_role);
        }
        Ok(Some(outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version("1.31").unwrap() > version("1.9").unwrap());
        assert_eq!(version("1.31"), Some((1, 31)));
        assert_eq!(version("latest"), None);
    }
}

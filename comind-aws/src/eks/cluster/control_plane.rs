//! The EKS control plane: created, upgraded one minor version at a time, kept on the
//! network's subnets and security group, and waited for.

use std::collections::BTreeSet;

use aws_sdk_eks::types::{
    AuthenticationMode, Cluster, ClusterStatus, CreateAccessConfigRequest, VpcConfigRequest,
};
use comind_core::{Change, Error, Result};

use super::health::cluster_issues;
use super::{COMPONENT, Inputs, Run, version};
use crate::clients::Clients;
use crate::create;
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};
use crate::waiter::{Observed, Status, Wait};

pub(super) async fn describe_cluster(clients: &Clients, name: &str) -> Result<Option<Cluster>> {
    Ok(clients
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .found("eks:DescribeCluster", format!("eks-cluster {name}"))?
        .and_then(|out| out.cluster))
}

impl Run<'_> {
    fn cluster_tags(&self) -> Tags {
        let cluster = &self.env.config().aws.cluster;
        let hash = comind_core::environment::spec_hash(&cluster.version);
        tags::ownership(self.env, COMPONENT, Some(&hash))
    }

    /// The cluster, active; `None` while planning a new one.
    pub(super) async fn cluster(&mut self, inputs: Option<&Inputs>) -> Result<Option<Cluster>> {
        let desired_version = self.env.config().aws.cluster.version.clone();
        let Some(live) = describe_cluster(self.clients, &self.name).await? else {
            if !self.pass.will(
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
                if !self.pass.will(
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
                if !self.pass.is_apply() {
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
                if self.pass.will(
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
                && self.pass.will(
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
            && self
                .pass
                .will(Change::update("eks-cluster", &self.name).because("spec changed: tags"))
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
        let resource = self.resource();
        let cluster_tags = tags::to_map(&self.cluster_tags());
        // The SDK's retries keep their client request token: EKS makes one cluster of
        // a name anyway, and "in use" after a lost answer is adopted below.
        create::once(
            &resource,
            || async {
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
                    // The identity that creates the cluster administers it, through
                    // access entries; the aws-auth ConfigMap stays usable for the node
                    // role.
                    .access_config(
                        CreateAccessConfigRequest::builder()
                            .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                            .bootstrap_cluster_creator_admin_permissions(true)
                            .build(),
                    )
                    .set_tags(Some(cluster_tags.clone()))
                    .send()
                    .await
                    .aws("eks:CreateCluster", &resource)
                    .map(drop)
            },
            || async {
                match describe_cluster(self.clients, &self.name).await? {
                    Some(cluster) => {
                        let live = tags::from_map(cluster.tags());
                        tags::require_owned(self.env, COMPONENT, "eks-cluster", &self.name, &live)?;
                        Ok(Some(()))
                    }
                    None => Ok(None),
                }
            },
        )
        .await?;
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

    pub(super) async fn wait_cluster_gone(&self) -> Result<()> {
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
}

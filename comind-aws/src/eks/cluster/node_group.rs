//! The managed node group: its instance types and AMI, its scaling bounds (the desired
//! size is the autoscaler's once created), and its Kubernetes and launch template
//! versions.

use std::collections::HashMap;

use aws_sdk_eks::types::{
    AmiTypes, CapacityTypes, Cluster, LaunchTemplateSpecification, Nodegroup,
    NodegroupScalingConfig, NodegroupStatus, NodegroupUpdateConfig,
};
use comind_core::{Change, Error, Result};
use serde::Serialize;

use super::health::node_group_issues;
use super::{COMPONENT, Inputs, Run, int};
use crate::clients::Clients;
use crate::create;
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};
use crate::waiter::{Observed, Status, Wait};

/// What the node group should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct NodeSpec {
    instance_types: Vec<String>,
    ami_type: String,
    capacity: &'static str,
}

/// The AMI type for `instance_types`: Graviton families (a `g` after the generation
/// digit: `t4g`, `m7g`, `c7gn`) run the ARM image.
pub(super) fn ami_type(instance_types: &[String]) -> Result<AmiTypes> {
    // The rule core's validation applies to the same list: one place says what ARM is.
    let arm = |t: &String| comind_core::config::is_arm_instance_type(t);
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

pub(super) async fn describe_node_group(
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

impl Run<'_> {
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

    pub(super) async fn node_group(
        &mut self,
        cluster: &Cluster,
        inputs: Option<&Inputs>,
        template: Option<&(String, String)>,
    ) -> Result<()> {
        let spec = self.node_spec()?;
        let live = describe_node_group(self.clients, &self.name, &self.node_group).await?;
        let (Some(inputs), Some(template)) = (inputs, template) else {
            if live.is_none() {
                self.pass
                    .record([Change::create("eks-nodegroup", &self.node_group)]);
            }
            return Ok(());
        };
        let Some(live) = live else {
            if self.pass.will(
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
                if self.pass.will(
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
                if !self.pass.is_apply() {
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
            if self.pass.will(
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
            && self.pass.will(
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
            && self
                .pass
                .will(Change::update("eks-nodegroup", &self.node_group).because(
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
        let resource = format!("eks-nodegroup {}", self.node_group);
        let scaling = self.scaling(None)?;
        let node_tags = tags::to_map(&self.node_tags(spec));
        // As for the cluster: the SDK's retries keep their token, the name is unique,
        // and "in use" after a lost answer is adopted.
        create::once(
            &resource,
            || async {
                self.clients
                    .eks
                    .create_nodegroup()
                    .cluster_name(&self.name)
                    .nodegroup_name(&self.node_group)
                    .set_subnets(Some(inputs.private_subnets.clone()))
                    .node_role(&inputs.node_role)
                    .scaling_config(scaling.clone())
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
                    .set_labels(Some(labels.clone()))
                    .update_config(NodegroupUpdateConfig::builder().max_unavailable(1).build())
                    .set_tags(Some(node_tags.clone()))
                    .send()
                    .await
                    .aws("eks:CreateNodegroup", &resource)
                    .map(drop)
            },
            || async {
                match describe_node_group(self.clients, &self.name, &self.node_group).await? {
                    Some(ng) => {
                        let live = tags::from_map(ng.tags());
                        tags::require_owned(
                            self.env,
                            COMPONENT,
                            "eks-nodegroup",
                            &self.node_group,
                            &live,
                        )?;
                        Ok(Some(()))
                    }
                    None => Ok(None),
                }
            },
        )
        .await?;
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

    pub(super) async fn wait_node_group_gone(&self) -> Result<()> {
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

    pub(super) async fn delete_node_group(&self) -> Result<()> {
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
}

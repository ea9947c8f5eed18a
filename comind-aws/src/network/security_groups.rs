//! The cluster, database and cache security groups: the database and cache groups admit
//! only the cluster group, on their one port.

use aws_sdk_ec2::types::{Filter, IpPermission, ResourceType, UserIdGroupPair};
use comind_core::{Change, Error, Outputs, Result};

use super::{
    CACHE_SECURITY_GROUP_ID, CLUSTER_SECURITY_GROUP_ID, COMPONENT, DATABASE_SECURITY_GROUP_ID, Run,
};
use crate::error::AwsResultExt;
use crate::tags;

impl Run<'_> {
    /// Stops the run when a security group in `vpc_id` has one of our names but not
    /// our tags.
    pub(super) async fn check_group_names(&self, vpc_id: &str) -> Result<()> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(tags::ec2_filter("vpc-id", vpc_id))
            .filters(
                Filter::builder()
                    .name("group-name")
                    .set_values(Some(
                        ["cluster", "database", "cache"]
                            .iter()
                            .map(|n| self.name(n))
                            .collect(),
                    ))
                    .build(),
            )
            .send()
            .await
            .aws(
                "ec2:DescribeSecurityGroups",
                format!("security groups of {vpc_id}"),
            )?;
        for group in out.security_groups() {
            let name = group.group_name().unwrap_or_default();
            let live = tags::from_ec2(group.tags());
            tags::require_owned(self.env, COMPONENT, "security-group", name, &live)?;
        }
        Ok(())
    }

    /// The cluster, database and cache groups; their outputs, or `None` while
    /// planning new ones.
    pub(super) async fn security_groups(&mut self, vpc_id: &str) -> Result<Option<Outputs>> {
        let names = [
            ("cluster", CLUSTER_SECURITY_GROUP_ID, None),
            ("database", DATABASE_SECURITY_GROUP_ID, Some(5432)),
            ("cache", CACHE_SECURITY_GROUP_ID, Some(6379)),
        ];
        let out = self
            .ec2
            .describe_security_groups()
            .filters(tags::ec2_filter("vpc-id", vpc_id))
            .filters(
                Filter::builder()
                    .name("group-name")
                    .set_values(Some(names.iter().map(|(n, _, _)| self.name(n)).collect()))
                    .build(),
            )
            .send()
            .await
            .aws(
                "ec2:DescribeSecurityGroups",
                format!("security groups of {vpc_id}"),
            )?;
        let live = out.security_groups();
        let mut outputs = Outputs::new();
        let mut cluster_id: Option<String> = None;
        let mut complete = true;
        for (role, key, port) in names {
            let name = self.name(role);
            let group = live.iter().find(|g| g.group_name() == Some(name.as_str()));
            let id = match group {
                Some(group) => {
                    let tags = tags::from_ec2(group.tags());
                    tags::require_owned(self.env, COMPONENT, "security-group", &name, &tags)?;
                    let id = group.group_id().unwrap_or_default().to_string();
                    if let (Some(port), Some(source)) = (port, &cluster_id) {
                        self.only_from(&id, &name, group.ip_permissions(), port, source)
                            .await?;
                    }
                    Some(id)
                }
                None => {
                    if self.pass.will(Change::create("security-group", &name)) {
                        let id = self.create_group(vpc_id, role, &name).await?;
                        if let (Some(port), Some(source)) = (port, &cluster_id) {
                            self.allow(&id, &name, port, source).await?;
                        }
                        Some(id)
                    } else {
                        None
                    }
                }
            };
            match &id {
                Some(id) => outputs.insert_text(key, id),
                None => complete = false,
            }
            if role == "cluster" {
                cluster_id = id;
            }
        }
        Ok(complete.then_some(outputs))
    }

    async fn create_group(&self, vpc_id: &str, role: &str, name: &str) -> Result<String> {
        let description = match role {
            "cluster" => "Comind: the EKS control plane and nodes",
            "database" => "Comind: PostgreSQL, reachable from the cluster only",
            _ => "Comind: Redis, reachable from the cluster only",
        };
        let tags = self.tags(role, name, None);
        let created = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description(description)
            .vpc_id(vpc_id)
            .tag_specifications(tags::ec2_spec(ResourceType::SecurityGroup, &tags))
            .send()
            .await
            .aws("ec2:CreateSecurityGroup", format!("security-group {name}"))?;
        created
            .group_id()
            .map(str::to_string)
            .ok_or_else(|| Error::internal("CreateSecurityGroup returned no id"))
    }

    fn rule(port: i32, source: &str) -> IpPermission {
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .user_id_group_pairs(
                UserIdGroupPair::builder()
                    .group_id(source)
                    .description("from the Comind cluster")
                    .build(),
            )
            .build()
    }

    async fn allow(&self, id: &str, name: &str, port: i32, source: &str) -> Result<()> {
        self.ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .ip_permissions(Self::rule(port, source))
            .send()
            .await
            .aws(
                "ec2:AuthorizeSecurityGroupIngress",
                format!("security-group {name}"),
            )?;
        Ok(())
    }

    /// Makes `port` from `source` the group's only ingress rule.
    async fn only_from(
        &mut self,
        id: &str,
        name: &str,
        rules: &[IpPermission],
        port: i32,
        source: &str,
    ) -> Result<()> {
        let is_ours = |p: &IpPermission| {
            p.ip_protocol() == Some("tcp")
                && p.from_port() == Some(port)
                && p.to_port() == Some(port)
                && p.ip_ranges().is_empty()
                && p.ipv6_ranges().is_empty()
                && p.prefix_list_ids().is_empty()
                && p.user_id_group_pairs().len() == 1
                && p.user_id_group_pairs()[0].group_id() == Some(source)
        };
        let present = rules.iter().any(is_ours);
        let extra: Vec<IpPermission> = rules.iter().filter(|p| !is_ours(p)).cloned().collect();
        if !present
            && self.pass.will(
                Change::update("security-group", name)
                    .because(format!("allow {port}/tcp from the cluster group")),
            )
        {
            self.allow(id, name, port, source).await?;
        }
        if !extra.is_empty()
            && self
                .pass
                .will(Change::update("security-group", name).because(format!(
                    "revoke {} rule(s) besides the cluster's",
                    extra.len()
                )))
        {
            self.ec2
                .revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(extra))
                .send()
                .await
                .aws(
                    "ec2:RevokeSecurityGroupIngress",
                    format!("security-group {name}"),
                )?;
        }
        Ok(())
    }
}

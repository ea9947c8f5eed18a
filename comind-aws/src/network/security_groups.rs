//! The cluster, database and cache security groups: the database and cache groups admit
//! only the cluster group, on their one port.

use aws_sdk_ec2::types::{Filter, IpPermission, ResourceType, SecurityGroup, UserIdGroupPair};
use comind_core::{Change, Error, Outputs, Result};

use super::{
    CACHE_SECURITY_GROUP_ID, CLUSTER_SECURITY_GROUP_ID, COMPONENT, DATABASE_SECURITY_GROUP_ID, Run,
};
use crate::create::{self, Made, single_attempt};
use crate::error::{AwsResultExt, Failure};
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
        let ours: Vec<String> = ["cluster", "database", "cache"]
            .iter()
            .map(|n| self.name(n))
            .collect();
        // The filters are checked on the answer: a backend that ignored them would
        // return every group, the VPC's default group among them.
        for group in out.security_groups() {
            let name = group.group_name().unwrap_or_default();
            if group.vpc_id() != Some(vpc_id) || !ours.iter().any(|n| n == name) {
                continue;
            }
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
            let group = live
                .iter()
                .find(|g| g.group_name() == Some(name.as_str()) && g.vpc_id() == Some(vpc_id));
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
                        match self.create_group(vpc_id, role, &name).await? {
                            Made::Created(id) => {
                                if let (Some(port), Some(source)) = (port, &cluster_id) {
                                    self.allow(&id, &name, port, source).await?;
                                }
                                Some(id)
                            }
                            // Made by a lost create or a dying earlier run: its rules
                            // are whatever it got to.
                            Made::Found(group) => {
                                let id = group.group_id().unwrap_or_default().to_string();
                                if let (Some(port), Some(source)) = (port, &cluster_id) {
                                    self.only_from(
                                        &id,
                                        &name,
                                        group.ip_permissions(),
                                        port,
                                        source,
                                    )
                                    .await?;
                                }
                                Some(id)
                            }
                        }
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

    /// Our group `name` in `vpc_id`, if it exists; the conflict when it has our name
    /// but not our tags.
    async fn our_group(&self, vpc_id: &str, name: &str) -> Result<Option<SecurityGroup>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(tags::ec2_filter("vpc-id", vpc_id))
            .filters(tags::ec2_filter("group-name", name))
            .send()
            .await
            .aws(
                "ec2:DescribeSecurityGroups",
                format!("security-group {name}"),
            )?;
        let Some(group) = out
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(name) && g.vpc_id() == Some(vpc_id))
        else {
            return Ok(None);
        };
        let live = tags::from_ec2(group.tags());
        tags::require_owned(self.env, COMPONENT, "security-group", name, &live)?;
        Ok(Some(group.clone()))
    }

    /// Creates the group, or finds it when an earlier attempt or run made it.
    async fn create_group(
        &self,
        vpc_id: &str,
        role: &str,
        name: &str,
    ) -> Result<Made<String, SecurityGroup>> {
        let description = match role {
            "cluster" => "Comind: the EKS control plane and nodes",
            "database" => "Comind: PostgreSQL, reachable from the cluster only",
            _ => "Comind: Redis, reachable from the cluster only",
        };
        let tags = self.tags(role, name, None);
        let resource = format!("security-group {name}");
        let ec2 = self.ec2;
        create::once(
            &resource,
            || async {
                let created = ec2
                    .create_security_group()
                    .group_name(name)
                    .description(description)
                    .vpc_id(vpc_id)
                    .tag_specifications(tags::ec2_spec(ResourceType::SecurityGroup, &tags))
                    .customize()
                    .config_override(single_attempt::ec2())
                    .send()
                    .await
                    .aws("ec2:CreateSecurityGroup", &resource)?;
                created
                    .group_id()
                    .map(str::to_string)
                    .ok_or_else(|| Error::internal("CreateSecurityGroup returned no id"))
            },
            || self.our_group(vpc_id, name),
        )
        .await
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
        let allowed = self
            .ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .ip_permissions(Self::rule(port, source))
            .send()
            .await
            .aws(
                "ec2:AuthorizeSecurityGroupIngress",
                format!("security-group {name}"),
            );
        match allowed {
            Ok(_) => Ok(()),
            // The SDK's retry of a rule whose answer was lost: the very rule asked for
            // is there.
            Err(err)
                if Failure::of(&err).and_then(Failure::code)
                    == Some("InvalidPermission.Duplicate") =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
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

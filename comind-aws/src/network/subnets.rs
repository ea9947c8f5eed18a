//! The private and public subnets of the environment's own VPC, one of each per zone.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::ResourceType;
use comind_core::{Change, Error, Result};

use super::cidr::cidr_of;
use super::{Cidr, MAX_ZONES, Run, role_of};
use crate::create::{self, Made, single_attempt};
use crate::error::AwsResultExt;
use crate::tags;

/// A subnet as found.
#[derive(Debug, Clone)]
struct Subnet {
    id: String,
    zone: String,
    role: String,
}

fn subnet_of(s: &aws_sdk_ec2::types::Subnet) -> Subnet {
    Subnet {
        id: s.subnet_id().unwrap_or_default().to_string(),
        zone: s.availability_zone().unwrap_or_default().to_string(),
        role: role_of(&tags::from_ec2(s.tags())),
    }
}

impl Run<'_> {
    /// Our subnets in `vpc_id`.
    async fn our_subnets(&self, vpc_id: &str) -> Result<Vec<Subnet>> {
        let selector = self.selector();
        let mut filters = selector.ec2_filters();
        filters.push(tags::ec2_filter("vpc-id", vpc_id));
        let out = self
            .ec2
            .describe_subnets()
            .set_filters(Some(filters))
            .send()
            .await
            .aws("ec2:DescribeSubnets", format!("subnets of vpc {vpc_id}"))?;
        Ok(selector
            .verified(
                "subnet",
                out.subnets().iter(),
                |s| tags::from_ec2(s.tags()),
                |s| s.subnet_id().unwrap_or_default().to_string(),
            )
            .into_iter()
            .filter(|s| s.vpc_id() == Some(vpc_id))
            .map(subnet_of)
            .collect())
    }

    /// The zones and the subnets by (tier, zone); `None` ids while planning new ones.
    ///
    /// Zones that already hold our private subnets stay (a region may gain zones);
    /// the first zones of the region fill up to three. A new subnet takes the first
    /// sixteenth of its tier's half of the VPC (private: the first half, public: the
    /// second) that no subnet of the VPC overlaps, so neither a run that stopped
    /// half-way nor someone else's subnet can make it collide.
    pub(super) async fn subnets(
        &mut self,
        vpc_id: &str,
        cidr: Cidr,
        region_zones: &[String],
    ) -> Result<(Vec<String>, BTreeMap<(String, String), Option<String>>)> {
        let out = self
            .ec2
            .describe_subnets()
            .filters(tags::ec2_filter("vpc-id", vpc_id))
            .send()
            .await
            .aws("ec2:DescribeSubnets", format!("subnets of vpc {vpc_id}"))?;
        let mut taken: Vec<Cidr> = out
            .subnets()
            .iter()
            .filter_map(|s| cidr_of(s.cidr_block()))
            .collect();
        let selector = self.selector();
        let live: Vec<Subnet> = out
            .subnets()
            .iter()
            .filter(|s| s.vpc_id() == Some(vpc_id))
            .filter(|s| {
                selector.check(
                    "subnet",
                    s.subnet_id().unwrap_or_default(),
                    &tags::from_ec2(s.tags()),
                )
            })
            .map(subnet_of)
            .collect();
        let mut zones: Vec<String> = live
            .iter()
            .filter(|s| s.role == "private")
            .map(|s| s.zone.clone())
            .collect();
        zones.sort();
        zones.dedup();
        for zone in region_zones {
            if zones.len() >= MAX_ZONES {
                break;
            }
            if !zones.contains(zone) {
                zones.push(zone.clone());
            }
        }
        let cluster = self.env.resource_name("cluster");
        let mut found = BTreeMap::new();
        for (tier, blocks) in [("private", 0u32..8), ("public", 8u32..16)] {
            for zone in &zones {
                let key = (tier.to_string(), zone.clone());
                if let Some(subnet) = live.iter().find(|s| s.role == tier && &s.zone == zone) {
                    found.insert(key, Some(subnet.id.clone()));
                    continue;
                }
                let name = self.name(&format!("{tier}-{zone}"));
                let block = blocks
                    .clone()
                    .map(|i| cidr.sixteenth(i))
                    .find(|b| !taken.iter().any(|t| t.overlaps(*b)))
                    .ok_or_else(|| {
                        Error::conflict(format!(
                            "VPC {vpc_id} has no free {tier} block left for subnet {name}"
                        ))
                        .with_resource(format!("vpc {vpc_id}"))
                        .with_hint("remove subnets of the VPC that Comind did not create")
                    })?;
                taken.push(block);
                if !self
                    .pass
                    .will(Change::create("subnet", &name).because(format!("{block} in {zone}")))
                {
                    found.insert(key, None);
                    continue;
                }
                let mut tags = self.tags(tier, &name, None);
                // What the AWS load balancer controller looks for.
                let lb_role = if tier == "public" {
                    "kubernetes.io/role/elb"
                } else {
                    "kubernetes.io/role/internal-elb"
                };
                tags.insert(lb_role.to_string(), "1".to_string());
                tags.insert(
                    format!("kubernetes.io/cluster/{cluster}"),
                    "shared".to_string(),
                );
                let resource = format!("subnet {name}");
                let ec2 = self.ec2;
                let made = create::once(
                    &resource,
                    || async {
                        let created = ec2
                            .create_subnet()
                            .vpc_id(vpc_id)
                            .cidr_block(block.to_string())
                            .availability_zone(zone)
                            .tag_specifications(tags::ec2_spec(ResourceType::Subnet, &tags))
                            .customize()
                            .config_override(single_attempt::ec2())
                            .send()
                            .await
                            .aws("ec2:CreateSubnet", &resource)?;
                        created
                            .subnet()
                            .and_then(|s| s.subnet_id())
                            .map(str::to_string)
                            .ok_or_else(|| Error::internal("CreateSubnet returned no id"))
                    },
                    || async {
                        Ok(self
                            .our_subnets(vpc_id)
                            .await?
                            .into_iter()
                            .find(|s| s.role == tier && &s.zone == zone)
                            .map(|s| s.id))
                    },
                )
                .await?;
                let (Made::Created(id) | Made::Found(id)) = made;
                found.insert(key, Some(id));
            }
        }
        Ok((zones, found))
    }
}

//! The private and public subnets of the environment's own VPC, one of each per zone.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::ResourceType;
use comind_core::{Change, Error, Result};

use super::cidr::cidr_of;
use super::{COMPONENT, Cidr, MAX_ZONES, Run, role_of};
use crate::error::AwsResultExt;
use crate::tags;

/// A subnet as found.
#[derive(Debug, Clone)]
struct Subnet {
    id: String,
    zone: String,
    role: String,
}

impl Run<'_> {
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
        let live: Vec<Subnet> = out
            .subnets()
            .iter()
            .filter(|s| self.env.owns(&tags::from_ec2(s.tags()), Some(COMPONENT)))
            .map(|s| Subnet {
                id: s.subnet_id().unwrap_or_default().to_string(),
                zone: s.availability_zone().unwrap_or_default().to_string(),
                role: role_of(&tags::from_ec2(s.tags())),
            })
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
                let created = self
                    .ec2
                    .create_subnet()
                    .vpc_id(vpc_id)
                    .cidr_block(block.to_string())
                    .availability_zone(zone)
                    .tag_specifications(tags::ec2_spec(ResourceType::Subnet, &tags))
                    .send()
                    .await
                    .aws("ec2:CreateSubnet", format!("subnet {name}"))?;
                let id = created
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .ok_or_else(|| Error::internal("CreateSubnet returned no id"))?;
                found.insert(key, Some(id.to_string()));
            }
        }
        Ok((zones, found))
    }
}

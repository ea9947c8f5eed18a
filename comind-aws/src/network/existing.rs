//! An existing VPC (`aws.vpc.id`): it and its subnets are only read, never changed.

use comind_core::{Error, Outputs, Result};

use super::{AVAILABILITY_ZONES, Run, SUBNET_IDS, VPC_CIDR, VPC_ID};
use crate::error::AwsResultExt;

impl Run<'_> {
    /// Checks the VPC and subnets exist; returns the VPC's CIDR and the subnets'
    /// zones, in the order given.
    pub(super) async fn existing_subnets(
        &mut self,
        vpc_id: &str,
        subnet_ids: &[String],
    ) -> Result<(String, Vec<String>)> {
        let resource = format!("vpc {vpc_id}");
        let vpcs = self
            .ec2
            .describe_vpcs()
            .vpc_ids(vpc_id)
            .send()
            .await
            .found("ec2:DescribeVpcs", &resource)?;
        let Some(vpc) = vpcs.as_ref().and_then(|o| o.vpcs().first()) else {
            return Err(Error::invalid_input(format!(
                "VPC {vpc_id} named by `aws.vpc.id` does not exist in this account and region"
            ))
            .with_resource(resource)
            .with_hint("check `aws.vpc.id` and `aws.region` in comind.yaml"));
        };
        let cidr = vpc.cidr_block().unwrap_or_default().to_string();
        let subnets = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnet_ids.to_vec()))
            .send()
            .await
            .found("ec2:DescribeSubnets", "comind.yaml aws.vpc.subnet_ids")?;
        let live = subnets.as_ref().map(|o| o.subnets()).unwrap_or_default();
        let mut zones = Vec::new();
        for id in subnet_ids {
            let Some(subnet) = live.iter().find(|s| s.subnet_id() == Some(id.as_str())) else {
                return Err(Error::invalid_input(format!(
                    "subnet {id} named in `aws.vpc.subnet_ids` does not exist"
                ))
                .with_resource(format!("subnet {id}"))
                .with_hint("check `aws.vpc.subnet_ids` in comind.yaml"));
            };
            if subnet.vpc_id() != Some(vpc_id) {
                return Err(Error::invalid_input(format!(
                    "subnet {id} belongs to {}, not to {vpc_id}",
                    subnet.vpc_id().unwrap_or("another VPC")
                ))
                .with_resource(format!("subnet {id}"))
                .with_hint("list subnets of the VPC named by `aws.vpc.id`"));
            }
            zones.push(subnet.availability_zone().unwrap_or_default().to_string());
        }
        let mut distinct = zones.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() < 2 {
            return Err(Error::invalid_input(format!(
                "the subnets of `aws.vpc.subnet_ids` are all in {}; EKS, RDS and ElastiCache \
                 need two availability zones",
                distinct.join(", ")
            ))
            .with_resource("comind.yaml aws.vpc.subnet_ids")
            .with_hint("add a subnet of another availability zone"));
        }
        Ok((cidr, zones))
    }

    pub(super) async fn existing(
        &mut self,
        vpc_id: &str,
        subnet_ids: &[String],
    ) -> Result<Option<Outputs>> {
        let (cidr, zones) = self.existing_subnets(vpc_id, subnet_ids).await?;
        let groups = self.security_groups(vpc_id).await?;
        let Some(groups) = groups else {
            return Ok(None);
        };
        let mut outputs = Outputs::new()
            .text(VPC_ID, vpc_id)
            .text(VPC_CIDR, cidr)
            .text(SUBNET_IDS, subnet_ids.join(","))
            .text(AVAILABILITY_ZONES, zones.join(","));
        outputs.extend(groups);
        Ok(Some(outputs))
    }
}

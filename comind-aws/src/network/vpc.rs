//! The VPC of the environment's own: found by its tags, else created with DNS on, and
//! its internet gateway.

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName};
use comind_core::{Change, Error, Result};

use super::cidr::cidr_of;
use super::{COMPONENT, Cidr, Run};
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};

impl Run<'_> {
    /// The id of our VPC, if there is one; a conflict if a VPC has our name but not
    /// our tags, or if several carry our tags.
    pub(super) async fn owned_vpc(&self) -> Result<Option<String>> {
        Ok(self
            .find_vpc()
            .await?
            .and_then(|v| v.vpc_id().map(str::to_string)))
    }

    async fn find_vpc(&self) -> Result<Option<aws_sdk_ec2::types::Vpc>> {
        let name = self.name("network");
        // A VPC named like ours but without our tags is someone else's.
        let named = self
            .ec2
            .describe_vpcs()
            .filters(tags::ec2_filter("tag:Name", &name))
            .send()
            .await
            .aws("ec2:DescribeVpcs", format!("vpc {name}"))?;
        for vpc in named.vpcs() {
            let live = tags::from_ec2(vpc.tags());
            tags::require_owned(self.env, COMPONENT, "vpc", &name, &live)?;
        }
        let out = self
            .ec2
            .describe_vpcs()
            .set_filters(Some(self.owned_with_role("vpc")))
            .send()
            .await
            .aws("ec2:DescribeVpcs", format!("vpc {name}"))?;
        let vpcs = out.vpcs();
        if vpcs.len() > 1 {
            let ids: Vec<&str> = vpcs.iter().filter_map(|v| v.vpc_id()).collect();
            return Err(Error::conflict(format!(
                "{} VPCs carry the tags of environment `{}`: {}; Comind expects one",
                vpcs.len(),
                self.env.name(),
                ids.join(", ")
            ))
            .with_resource(format!("vpc {name}"))
            .with_hint("delete the VPCs that are not in use, then run again"));
        }
        Ok(vpcs.first().cloned())
    }

    /// The VPC: found by its tags, else created. `None` while planning a new one.
    pub(super) async fn vpc(&mut self, cidr: Cidr, spec: &str) -> Result<Option<String>> {
        let name = self.name("network");
        let desired = self.tags("vpc", &name, Some(spec));
        if let Some(vpc) = self.find_vpc().await? {
            let id = vpc.vpc_id().unwrap_or_default().to_string();
            let live = cidr_of(vpc.cidr_block());
            if live != Some(cidr) {
                return Err(Error::invalid_input(format!(
                    "VPC {id} has CIDR {} but `aws.vpc.cidr` asks for {cidr}; a VPC's CIDR \
                     cannot change",
                    vpc.cidr_block().unwrap_or("?")
                ))
                .with_resource(format!("vpc {name}"))
                .with_hint("set `aws.vpc.cidr` back, or take the environment down first"));
            }
            self.dns_attributes(&id, &name).await?;
            let missing = tags::missing(&desired, &tags::from_ec2(vpc.tags()));
            if !missing.is_empty()
                && self
                    .pass
                    .will(Change::update("vpc", &name).because("spec changed: tags"))
            {
                self.tag(&id, &missing, &format!("vpc {name}")).await?;
            }
            return Ok(Some(id));
        }
        if !self
            .pass
            .will(Change::create("vpc", &name).because(format!("CIDR {cidr}")))
        {
            return Ok(None);
        }
        let created = self
            .ec2
            .create_vpc()
            .cidr_block(cidr.to_string())
            .tag_specifications(tags::ec2_spec(ResourceType::Vpc, &desired))
            .send()
            .await
            .aws("ec2:CreateVpc", format!("vpc {name}"))?;
        let id = created
            .vpc()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| Error::internal("CreateVpc returned no VPC id"))?
            .to_string();
        // EKS nodes and RDS endpoints need DNS names inside the VPC; AWS makes VPCs
        // without DNS host names. One attribute per call, as AWS requires.
        for attribute in [
            VpcAttributeName::EnableDnsSupport,
            VpcAttributeName::EnableDnsHostnames,
        ] {
            self.set_dns(&id, &name, attribute).await?;
        }
        Ok(Some(id))
    }

    async fn dns_attributes(&mut self, id: &str, name: &str) -> Result<()> {
        for attribute in [
            VpcAttributeName::EnableDnsSupport,
            VpcAttributeName::EnableDnsHostnames,
        ] {
            let out = self
                .ec2
                .describe_vpc_attribute()
                .vpc_id(id)
                .attribute(attribute.clone())
                .send()
                .await
                .aws("ec2:DescribeVpcAttribute", format!("vpc {name}"))?;
            let on = match attribute {
                VpcAttributeName::EnableDnsSupport => out.enable_dns_support(),
                _ => out.enable_dns_hostnames(),
            }
            .and_then(AttributeBooleanValue::value)
            .unwrap_or(false);
            if !on
                && self.pass.will(
                    Change::update("vpc", name).because(format!("{} is off", attribute.as_str())),
                )
            {
                self.set_dns(id, name, attribute).await?;
            }
        }
        Ok(())
    }

    async fn set_dns(&self, id: &str, name: &str, attribute: VpcAttributeName) -> Result<()> {
        let on = AttributeBooleanValue::builder().value(true).build();
        let request = self.ec2.modify_vpc_attribute().vpc_id(id);
        let request = match attribute {
            VpcAttributeName::EnableDnsSupport => request.enable_dns_support(on),
            _ => request.enable_dns_hostnames(on),
        };
        request
            .send()
            .await
            .aws("ec2:ModifyVpcAttribute", format!("vpc {name}"))?;
        Ok(())
    }

    async fn tag(&self, id: &str, tags: &Tags, resource: &str) -> Result<()> {
        self.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(tags::to_ec2(tags)))
            .send()
            .await
            .aws("ec2:CreateTags", resource)?;
        Ok(())
    }

    /// The internet gateway, attached to the VPC. `None` while planning a new one.
    pub(super) async fn internet_gateway(&mut self, vpc_id: &str) -> Result<Option<String>> {
        let name = self.name("network");
        let out = self
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(self.owned_with_role("internet-gateway")))
            .send()
            .await
            .aws(
                "ec2:DescribeInternetGateways",
                format!("internet-gateway {name}"),
            )?;
        if let Some(igw) = out.internet_gateways().first() {
            let id = igw.internet_gateway_id().unwrap_or_default().to_string();
            let attached = igw.attachments().iter().any(|a| a.vpc_id() == Some(vpc_id));
            if !attached
                && self.pass.will(
                    Change::update("internet-gateway", &name).because("not attached to the VPC"),
                )
            {
                self.attach_gateway(&id, vpc_id, &name).await?;
            }
            return Ok(Some(id));
        }
        if !self.pass.will(Change::create("internet-gateway", &name)) {
            return Ok(None);
        }
        let tags = self.tags("internet-gateway", &name, None);
        let created = self
            .ec2
            .create_internet_gateway()
            .tag_specifications(tags::ec2_spec(ResourceType::InternetGateway, &tags))
            .send()
            .await
            .aws(
                "ec2:CreateInternetGateway",
                format!("internet-gateway {name}"),
            )?;
        let id = created
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .ok_or_else(|| Error::internal("CreateInternetGateway returned no id"))?
            .to_string();
        self.attach_gateway(&id, vpc_id, &name).await?;
        Ok(Some(id))
    }

    async fn attach_gateway(&self, id: &str, vpc_id: &str, name: &str) -> Result<()> {
        self.ec2
            .attach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc_id)
            .send()
            .await
            .aws(
                "ec2:AttachInternetGateway",
                format!("internet-gateway {name}"),
            )?;
        Ok(())
    }
}

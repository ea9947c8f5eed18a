//! The VPC of the environment's own: found by its tags, else created with DNS on, and
//! its internet gateway. Empty duplicates of either that an interrupted run left are
//! deleted (and the plan says so).

use aws_sdk_ec2::types::{
    AttributeBooleanValue, InternetGateway, ResourceType, Vpc, VpcAttributeName,
};
use comind_core::{Change, Error, Result};

use super::cidr::cidr_of;
use super::{COMPONENT, Cidr, Run};
use crate::create::{self, Made, single_attempt};
use crate::error::{AwsResultExt, Failure};
use crate::tags::{self, Tags};

impl Run<'_> {
    /// The id of our VPC, if there is one (the one in use when an interrupted run left
    /// duplicates); a conflict if a VPC has our name but not our tags, or if several
    /// VPCs of ours are in use.
    pub(super) async fn owned_vpc(&self) -> Result<Option<String>> {
        Ok(self
            .choose_vpc()
            .await?
            .and_then(|(v, _)| v.vpc_id().map(str::to_string)))
    }

    /// Our VPCs, lowest id first.
    async fn our_vpcs(&self) -> Result<Vec<Vpc>> {
        let name = self.name("network");
        let selector = self.selector_with_role("vpc");
        let out = self
            .ec2
            .describe_vpcs()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeVpcs", format!("vpc {name}"))?;
        let mut vpcs = selector.verified(
            "vpc",
            out.vpcs().iter().cloned(),
            |v| tags::from_ec2(v.tags()),
            |v| v.vpc_id().unwrap_or_default().to_string(),
        );
        vpcs.sort_by(|a, b| a.vpc_id().cmp(&b.vpc_id()));
        Ok(vpcs)
    }

    /// Our VPC and the empty duplicates of it that an interrupted run left (a create
    /// whose answer was lost, repeated by a run that could not know): the one holding
    /// subnets or a gateway is kept; when none does, the lowest id (EC2 reports no
    /// creation time for a VPC, and every run must keep the same one). `None` when
    /// there is no VPC of ours.
    async fn choose_vpc(&self) -> Result<Option<(Vpc, Vec<String>)>> {
        let name = self.name("network");
        // A VPC named like ours but without our tags is someone else's. The Name filter
        // is checked on the answer too: a backend that ignored it would return every VPC.
        let named = self
            .ec2
            .describe_vpcs()
            .filters(tags::ec2_filter("tag:Name", &name))
            .send()
            .await
            .aws("ec2:DescribeVpcs", format!("vpc {name}"))?;
        for vpc in named.vpcs() {
            let live = tags::from_ec2(vpc.tags());
            if live.get(tags::NAME) == Some(&name) {
                tags::require_owned(self.env, COMPONENT, "vpc", &name, &live)?;
            }
        }
        let mut vpcs = self.our_vpcs().await?;
        if vpcs.len() < 2 {
            return Ok(vpcs.pop().map(|v| (v, Vec::new())));
        }
        let mut in_use = Vec::new();
        let mut empty = Vec::new();
        for vpc in vpcs {
            let id = vpc.vpc_id().unwrap_or_default();
            if self.vpc_in_use(id).await? {
                in_use.push(vpc);
            } else {
                empty.push(vpc);
            }
        }
        let kept = match in_use.len() {
            0 => empty.remove(0),
            1 => in_use.remove(0),
            n => {
                let ids: Vec<&str> = in_use.iter().filter_map(|v| v.vpc_id()).collect();
                return Err(Error::conflict(format!(
                    "{n} VPCs carry the tags of environment `{}` and hold subnets or an \
                     internet gateway: {}; Comind removes only empty duplicates, so it \
                     cannot tell which one to keep",
                    self.env.name(),
                    ids.join(", ")
                ))
                .with_resource(format!("vpc {name}"))
                .with_hint("delete the VPCs that are not in use, then run again"));
            }
        };
        let duplicates = empty
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect();
        Ok(Some((kept, duplicates)))
    }

    /// Whether VPC `id` holds a subnet or has an internet gateway attached.
    async fn vpc_in_use(&self, id: &str) -> Result<bool> {
        let resource = format!("vpc {id}");
        let subnets = self
            .ec2
            .describe_subnets()
            .filters(tags::ec2_filter("vpc-id", id))
            .send()
            .await
            .aws("ec2:DescribeSubnets", &resource)?;
        if subnets.subnets().iter().any(|s| s.vpc_id() == Some(id)) {
            return Ok(true);
        }
        let gateways = self
            .ec2
            .describe_internet_gateways()
            .filters(tags::ec2_filter("attachment.vpc-id", id))
            .send()
            .await
            .aws("ec2:DescribeInternetGateways", &resource)?;
        Ok(gateways
            .internet_gateways()
            .iter()
            .any(|g| g.attachments().iter().any(|a| a.vpc_id() == Some(id))))
    }

    /// The VPC: found by its tags (its empty duplicates deleted), else created. `None`
    /// while planning a new one.
    pub(super) async fn vpc(&mut self, cidr: Cidr, spec: &str) -> Result<Option<String>> {
        let name = self.name("network");
        let desired = self.tags("vpc", &name, Some(spec));
        if let Some((vpc, duplicates)) = self.choose_vpc().await? {
            let id = vpc.vpc_id().unwrap_or_default().to_string();
            for duplicate in duplicates {
                if self.pass.will(
                    Change::delete("vpc", &duplicate)
                        .because(format!("duplicate of {id} left by an interrupted run")),
                ) {
                    self.ec2
                        .delete_vpc()
                        .vpc_id(&duplicate)
                        .send()
                        .await
                        .found("ec2:DeleteVpc", format!("vpc {duplicate}"))?;
                }
            }
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
        let resource = format!("vpc {name}");
        let ec2 = self.ec2;
        let made = create::once(
            &resource,
            || async {
                let created = ec2
                    .create_vpc()
                    .cidr_block(cidr.to_string())
                    .tag_specifications(tags::ec2_spec(ResourceType::Vpc, &desired))
                    .customize()
                    .config_override(single_attempt::ec2())
                    .send()
                    .await
                    .aws("ec2:CreateVpc", &resource)?;
                created
                    .vpc()
                    .and_then(|v| v.vpc_id())
                    .map(str::to_string)
                    .ok_or_else(|| Error::internal("CreateVpc returned no VPC id"))
            },
            || async { Ok(self.our_vpcs().await?.into_iter().next()) },
        )
        .await?;
        let id = match made {
            Made::Created(id) => {
                // EKS nodes and RDS endpoints need DNS names inside the VPC; AWS makes
                // VPCs without DNS host names. One attribute per call, as AWS requires.
                for attribute in [
                    VpcAttributeName::EnableDnsSupport,
                    VpcAttributeName::EnableDnsHostnames,
                ] {
                    self.set_dns(&id, &name, attribute).await?;
                }
                id
            }
            Made::Found(vpc) => {
                let id = vpc.vpc_id().unwrap_or_default().to_string();
                self.dns_attributes(&id, &name).await?;
                id
            }
        };
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

    /// Our internet gateways, lowest id first.
    async fn our_gateways(&self) -> Result<Vec<InternetGateway>> {
        let name = self.name("network");
        let selector = self.selector_with_role("internet-gateway");
        let out = self
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws(
                "ec2:DescribeInternetGateways",
                format!("internet-gateway {name}"),
            )?;
        let mut gateways = selector.verified(
            "internet-gateway",
            out.internet_gateways().iter().cloned(),
            |g| tags::from_ec2(g.tags()),
            |g| g.internet_gateway_id().unwrap_or_default().to_string(),
        );
        gateways.sort_by(|a, b| a.internet_gateway_id().cmp(&b.internet_gateway_id()));
        Ok(gateways)
    }

    /// The internet gateway, attached to the VPC: the one attached already, else a
    /// detached one of ours, else a new one; detached duplicates an interrupted run left
    /// are deleted. `None` while planning a new one.
    pub(super) async fn internet_gateway(&mut self, vpc_id: &str) -> Result<Option<String>> {
        let name = self.name("network");
        let attached_here =
            |g: &InternetGateway| g.attachments().iter().any(|a| a.vpc_id() == Some(vpc_id));
        let detached = |g: &InternetGateway| g.attachments().is_empty();
        let gateways = self.our_gateways().await?;
        let kept = gateways
            .iter()
            .find(|g| attached_here(g))
            .or_else(|| gateways.iter().find(|g| detached(g)))
            .cloned();
        if let Some(kept) = kept {
            let id = kept.internet_gateway_id().unwrap_or_default().to_string();
            for duplicate in gateways.iter().filter(|g| detached(g)) {
                let other = duplicate.internet_gateway_id().unwrap_or_default();
                if other == id {
                    continue;
                }
                if self.pass.will(
                    Change::delete("internet-gateway", other)
                        .because(format!("duplicate of {id} left by an interrupted run")),
                ) {
                    self.ec2
                        .delete_internet_gateway()
                        .internet_gateway_id(other)
                        .send()
                        .await
                        .found(
                            "ec2:DeleteInternetGateway",
                            format!("internet-gateway {other}"),
                        )?;
                }
            }
            if !attached_here(&kept)
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
        let resource = format!("internet-gateway {name}");
        let ec2 = self.ec2;
        let made = create::once(
            &resource,
            || async {
                let created = ec2
                    .create_internet_gateway()
                    .tag_specifications(tags::ec2_spec(ResourceType::InternetGateway, &tags))
                    .customize()
                    .config_override(single_attempt::ec2())
                    .send()
                    .await
                    .aws("ec2:CreateInternetGateway", &resource)?;
                created
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .map(str::to_string)
                    .ok_or_else(|| Error::internal("CreateInternetGateway returned no id"))
            },
            || async {
                Ok(self
                    .our_gateways()
                    .await?
                    .into_iter()
                    .find(|g| attached_here(g) || detached(g)))
            },
        )
        .await?;
        let id = match made {
            Made::Created(id) => {
                self.attach_gateway(&id, vpc_id, &name).await?;
                id
            }
            Made::Found(gateway) => {
                let id = gateway
                    .internet_gateway_id()
                    .unwrap_or_default()
                    .to_string();
                if !attached_here(&gateway) {
                    self.attach_gateway(&id, vpc_id, &name).await?;
                }
                id
            }
        };
        Ok(Some(id))
    }

    async fn attach_gateway(&self, id: &str, vpc_id: &str, name: &str) -> Result<()> {
        let attached = self
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc_id)
            .send()
            .await
            .aws(
                "ec2:AttachInternetGateway",
                format!("internet-gateway {name}"),
            );
        match attached {
            Ok(_) => Ok(()),
            // The SDK's retry of an attachment whose answer was lost: attached already
            // is what was asked, if it is to this VPC.
            Err(err)
                if Failure::of(&err).and_then(Failure::code)
                    == Some("Resource.AlreadyAssociated")
                    && self.our_gateways().await?.iter().any(|g| {
                        g.internet_gateway_id() == Some(id)
                            && g.attachments().iter().any(|a| a.vpc_id() == Some(vpc_id))
                    }) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

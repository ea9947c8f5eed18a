//! NAT gateways and their elastic IPs: one in production's every zone, one otherwise.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{DomainType, NatGatewayState, ResourceType};
use comind_core::{Change, Error, Result};

use super::{NAT_TIMEOUT, Run, role_of, zone_role};
use crate::error::AwsResultExt;
use crate::tags;
use crate::waiter::{Observed, Status, Wait};

/// A NAT gateway as found.
#[derive(Debug, Clone)]
pub(super) struct Nat {
    pub(super) id: String,
    pub(super) zone: String,
    state: String,
}

impl Run<'_> {
    pub(super) async fn live_nat_gateways(&self) -> Result<Vec<Nat>> {
        let out = self
            .ec2
            .describe_nat_gateways()
            .set_filter(Some(self.owned()))
            .send()
            .await
            .aws("ec2:DescribeNatGateways", "nat gateways")?;
        Ok(out
            .nat_gateways()
            .iter()
            .filter(|n| {
                !matches!(
                    n.state(),
                    Some(NatGatewayState::Deleted | NatGatewayState::Deleting)
                )
            })
            .map(|n| {
                let role = role_of(&tags::from_ec2(n.tags()));
                Nat {
                    id: n.nat_gateway_id().unwrap_or_default().to_string(),
                    zone: role.strip_prefix("nat:").unwrap_or_default().to_string(),
                    state: n
                        .state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// A NAT gateway (and its elastic IP) in the public subnet of each of `zones`;
    /// ids by zone, `None` while planning new ones.
    pub(super) async fn nat_gateways(
        &mut self,
        zones: &[String],
        subnets: &BTreeMap<(String, String), Option<String>>,
    ) -> Result<BTreeMap<String, Option<String>>> {
        let live = self.live_nat_gateways().await?;
        let mut found = BTreeMap::new();
        for zone in zones {
            let name = self.name(&format!("nat-{zone}"));
            let existing = live.iter().find(|n| &n.zone == zone);
            match existing {
                Some(nat) if nat.state != "failed" => {
                    found.insert(zone.clone(), Some(nat.id.clone()));
                    if nat.state == "pending" && self.pass.is_apply() {
                        self.wait_nat(&nat.id, &name).await?;
                    }
                    continue;
                }
                Some(nat) => {
                    if self.pass.will(
                        Change::replace("nat-gateway", &name).because("it is in state `failed`"),
                    ) {
                        self.delete_nat(&nat.id, &name).await?;
                    }
                }
                None => {
                    self.pass.will(Change::create("nat-gateway", &name));
                }
            }
            let Some(allocation) = self.elastic_ip(zone, &name).await? else {
                // Planning.
                found.insert(zone.clone(), None);
                continue;
            };
            let subnet = subnets
                .get(&("public".to_string(), zone.clone()))
                .cloned()
                .flatten()
                .ok_or_else(|| Error::internal(format!("no public subnet in {zone}")))?;
            let tags = self.tags(&zone_role("nat", zone), &name, None);
            let created = self
                .ec2
                .create_nat_gateway()
                .subnet_id(subnet)
                .allocation_id(allocation)
                .tag_specifications(tags::ec2_spec(ResourceType::Natgateway, &tags))
                .send()
                .await
                .aws("ec2:CreateNatGateway", format!("nat-gateway {name}"))?;
            let id = created
                .nat_gateway()
                .and_then(|n| n.nat_gateway_id())
                .ok_or_else(|| Error::internal("CreateNatGateway returned no id"))?
                .to_string();
            self.wait_nat(&id, &name).await?;
            found.insert(zone.clone(), Some(id));
        }
        Ok(found)
    }

    /// The elastic IP of the NAT gateway of `zone`, allocated if missing; `None` while
    /// planning.
    async fn elastic_ip(&mut self, zone: &str, name: &str) -> Result<Option<String>> {
        let role = zone_role("nat-ip", zone);
        let out = self
            .ec2
            .describe_addresses()
            .set_filters(Some(self.owned_with_role(&role)))
            .send()
            .await
            .aws("ec2:DescribeAddresses", format!("elastic-ip {name}"))?;
        if let Some(id) = out
            .addresses()
            .iter()
            .find(|a| a.association_id().is_none())
            .and_then(|a| a.allocation_id())
        {
            return Ok(self.pass.is_apply().then(|| id.to_string()));
        }
        if !self.pass.will(Change::create("elastic-ip", name)) {
            return Ok(None);
        }
        let tags = self.tags(&role, name, None);
        let created = self
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tags::ec2_spec(ResourceType::ElasticIp, &tags))
            .send()
            .await
            .aws("ec2:AllocateAddress", format!("elastic-ip {name}"))?;
        created
            .allocation_id()
            .map(|id| Some(id.to_string()))
            .ok_or_else(|| Error::internal("AllocateAddress returned no allocation id"))
    }

    async fn wait_nat(&self, id: &str, name: &str) -> Result<()> {
        let wait = Wait::new("nat-gateway", name, "available", NAT_TIMEOUT, None);
        wait.until(self.ctx, || self.nat_state(id, "available"))
            .await
    }

    /// Polls NAT gateway `id` until it is in `target` (`available`, or `deleted`).
    async fn nat_state(&self, id: &str, target: &str) -> Result<Observed<()>> {
        let out = self
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .found("ec2:DescribeNatGateways", format!("nat-gateway {id}"))?;
        let Some(nat) = out.as_ref().and_then(|o| o.nat_gateways().first()) else {
            return Ok(if target == "deleted" {
                Observed::Ready(())
            } else {
                Observed::Failed(Status::new("gone"))
            });
        };
        let state = nat.state().map(|s| s.as_str()).unwrap_or("unknown");
        let status = Status::new(state).with_message(nat.failure_message().map(str::to_string));
        Ok(if state == target {
            Observed::Ready(())
        } else if state == "failed" || (target == "available" && state.starts_with("delet")) {
            Observed::Failed(status)
        } else {
            Observed::Pending(status)
        })
    }

    pub(super) async fn delete_nat(&self, id: &str, name: &str) -> Result<()> {
        self.ec2
            .delete_nat_gateway()
            .nat_gateway_id(id)
            .send()
            .await
            .found("ec2:DeleteNatGateway", format!("nat-gateway {name}"))?;
        let wait = Wait::new("nat-gateway", name, "deleted", NAT_TIMEOUT, None);
        wait.until(self.ctx, || self.nat_state(id, "deleted")).await
    }

    /// Deletes NAT gateways of zones that no longer need one (production turned off),
    /// after the routes moved away from them.
    pub(super) async fn retire_nat_gateways(&mut self, zones: &[String]) -> Result<()> {
        for nat in self.live_nat_gateways().await? {
            if zones.contains(&nat.zone) {
                continue;
            }
            let name = self.name(&format!("nat-{}", nat.zone));
            if self.pass.will(
                Change::delete("nat-gateway", &name)
                    .because("one NAT gateway is enough outside production"),
            ) {
                self.delete_nat(&nat.id, &name).await?;
                self.release_addresses(Some(&zone_role("nat-ip", &nat.zone)))
                    .await?;
            }
        }
        Ok(())
    }

    /// Releases our elastic IPs that nothing uses any more (`role`: only those).
    pub(super) async fn release_addresses(&mut self, role: Option<&str>) -> Result<()> {
        let filters = match role {
            Some(role) => self.owned_with_role(role),
            None => self.owned(),
        };
        let out = self
            .ec2
            .describe_addresses()
            .set_filters(Some(filters))
            .send()
            .await
            .aws("ec2:DescribeAddresses", "elastic ips")?;
        for address in out.addresses() {
            let Some(id) = address.allocation_id() else {
                continue;
            };
            let name = tags::from_ec2(address.tags())
                .get(tags::NAME)
                .cloned()
                .unwrap_or_else(|| id.to_string());
            self.pass.record([Change::delete("elastic-ip", &name)]);
            self.ec2
                .release_address()
                .allocation_id(id)
                .send()
                .await
                .found("ec2:ReleaseAddress", format!("elastic-ip {name}"))?;
        }
        Ok(())
    }
}

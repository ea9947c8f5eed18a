//! NAT gateways and their elastic IPs: one in production's every zone, one otherwise.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{DomainType, NatGatewayState, ResourceType};
use comind_core::{Change, Error, Result};

use super::{NAT_TIMEOUT, Run, role_of, zone_role};
use crate::create::{self, Made, single_attempt};
use crate::error::AwsResultExt;
use crate::tags;
use crate::waiter::{Observed, Status, Wait};

/// A NAT gateway as found.
#[derive(Debug, Clone)]
pub(super) struct Nat {
    pub(super) id: String,
    pub(super) zone: String,
    state: String,
    /// The elastic IPs it uses.
    allocations: Vec<String>,
}

/// An elastic IP of ours as found.
#[derive(Debug, Clone)]
struct Address {
    allocation: String,
    associated: bool,
}

impl Run<'_> {
    /// Our NAT gateways that are not being deleted. The tag filter is checked on the
    /// answer: moto, for one, ignores it, and another environment's gateways would
    /// come back.
    pub(super) async fn live_nat_gateways(&self) -> Result<Vec<Nat>> {
        let selector = self.selector();
        let out = self
            .ec2
            .describe_nat_gateways()
            .set_filter(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeNatGateways", "nat gateways")?;
        let ours = selector.verified(
            "nat-gateway",
            out.nat_gateways().iter(),
            |n| tags::from_ec2(n.tags()),
            |n| n.nat_gateway_id().unwrap_or_default().to_string(),
        );
        Ok(ours
            .into_iter()
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
                    allocations: n
                        .nat_gateway_addresses()
                        .iter()
                        .filter_map(|a| a.allocation_id().map(str::to_string))
                        .collect(),
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
                    let kept = nat.allocations.first().cloned();
                    self.release_duplicate_addresses(zone, kept.as_deref(), &live)
                        .await?;
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
            let Some(allocation) = self.elastic_ip(zone, &name, &live).await? else {
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
            let resource = format!("nat-gateway {name}");
            let ec2 = self.ec2;
            let made = create::once(
                &resource,
                || async {
                    // The SDK sends a client token; the single attempt is for what
                    // ignores it (see `create`).
                    let created = ec2
                        .create_nat_gateway()
                        .subnet_id(&subnet)
                        .allocation_id(&allocation)
                        .tag_specifications(tags::ec2_spec(ResourceType::Natgateway, &tags))
                        .customize()
                        .config_override(single_attempt::ec2())
                        .send()
                        .await
                        .aws("ec2:CreateNatGateway", &resource)?;
                    created
                        .nat_gateway()
                        .and_then(|n| n.nat_gateway_id())
                        .map(str::to_string)
                        .ok_or_else(|| Error::internal("CreateNatGateway returned no id"))
                },
                || async {
                    Ok(self
                        .live_nat_gateways()
                        .await?
                        .into_iter()
                        .find(|n| &n.zone == zone && n.state != "failed")
                        .map(|n| n.id))
                },
            )
            .await?;
            let id = match made {
                Made::Created(id) | Made::Found(id) => id,
            };
            self.wait_nat(&id, &name).await?;
            found.insert(zone.clone(), Some(id));
        }
        Ok(found)
    }

    /// Our elastic IPs of the NAT gateway of `zone`, lowest allocation id first.
    async fn nat_addresses(&self, zone: &str) -> Result<Vec<Address>> {
        let selector = self.selector_with_role(&zone_role("nat-ip", zone));
        let out = self
            .ec2
            .describe_addresses()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws(
                "ec2:DescribeAddresses",
                format!("elastic-ips of the nat gateway in {zone}"),
            )?;
        let mut addresses: Vec<Address> = selector
            .verified(
                "elastic-ip",
                out.addresses().iter(),
                |a| tags::from_ec2(a.tags()),
                |a| a.allocation_id().unwrap_or_default().to_string(),
            )
            .into_iter()
            .filter_map(|a| {
                Some(Address {
                    allocation: a.allocation_id()?.to_string(),
                    associated: a.association_id().is_some(),
                })
            })
            .collect();
        addresses.sort_by(|a, b| a.allocation.cmp(&b.allocation));
        Ok(addresses)
    }

    /// Releases the elastic IPs of `zone`'s NAT gateway that nothing uses besides
    /// `keep`: duplicates an interrupted run left (an allocation whose answer was lost,
    /// repeated). An address that a NAT gateway of ours names is never one of them,
    /// whatever its association says while that gateway is pending.
    async fn release_duplicate_addresses(
        &mut self,
        zone: &str,
        keep: Option<&str>,
        nats: &[Nat],
    ) -> Result<()> {
        // A failed gateway's address is not in use: it goes to the gateway replacing it.
        let used: Vec<&str> = nats
            .iter()
            .filter(|n| n.state != "failed")
            .flat_map(|n| n.allocations.iter().map(String::as_str))
            .chain(keep)
            .collect();
        let Some(kept) = keep.or_else(|| used.first().copied()).map(str::to_string) else {
            return Ok(());
        };
        for address in self.nat_addresses(zone).await? {
            if address.associated || used.contains(&address.allocation.as_str()) {
                continue;
            }
            if self.pass.will(
                Change::delete("elastic-ip", &address.allocation)
                    .because(format!("duplicate of {kept} left by an interrupted run")),
            ) {
                self.ec2
                    .release_address()
                    .allocation_id(&address.allocation)
                    .send()
                    .await
                    .found(
                        "ec2:ReleaseAddress",
                        format!("elastic-ip {}", address.allocation),
                    )?;
            }
        }
        Ok(())
    }

    /// The elastic IP of the NAT gateway of `zone`, allocated if missing; `None` while
    /// planning.
    async fn elastic_ip(&mut self, zone: &str, name: &str, nats: &[Nat]) -> Result<Option<String>> {
        let role = zone_role("nat-ip", zone);
        let free = |addresses: Vec<Address>| {
            addresses
                .into_iter()
                .find(|a| {
                    !a.associated
                        && !nats.iter().any(|n| {
                            n.state != "failed"
                                && n.allocations.iter().any(|id| id == &a.allocation)
                        })
                })
                .map(|a| a.allocation)
        };
        if let Some(id) = free(self.nat_addresses(zone).await?) {
            self.release_duplicate_addresses(zone, Some(&id), nats)
                .await?;
            return Ok(self.pass.is_apply().then_some(id));
        }
        if !self.pass.will(Change::create("elastic-ip", name)) {
            return Ok(None);
        }
        let tags = self.tags(&role, name, None);
        let resource = format!("elastic-ip {name}");
        let ec2 = self.ec2;
        let made = create::once(
            &resource,
            || async {
                let created = ec2
                    .allocate_address()
                    .domain(DomainType::Vpc)
                    .tag_specifications(tags::ec2_spec(ResourceType::ElasticIp, &tags))
                    .customize()
                    .config_override(single_attempt::ec2())
                    .send()
                    .await
                    .aws("ec2:AllocateAddress", &resource)?;
                created
                    .allocation_id()
                    .map(str::to_string)
                    .ok_or_else(|| Error::internal("AllocateAddress returned no allocation id"))
            },
            || async { Ok(free(self.nat_addresses(zone).await?)) },
        )
        .await?;
        match made {
            Made::Created(id) | Made::Found(id) => Ok(Some(id)),
        }
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
        let selector = match role {
            Some(role) => self.selector_with_role(role),
            None => self.selector(),
        };
        let out = self
            .ec2
            .describe_addresses()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeAddresses", "elastic ips")?;
        let ours = selector.verified(
            "elastic-ip",
            out.addresses().iter(),
            |a| tags::from_ec2(a.tags()),
            |a| a.allocation_id().unwrap_or_default().to_string(),
        );
        for address in ours {
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

//! Route tables: the public one (default route to the internet gateway) and one private
//! table per zone (default route to a NAT gateway), with their subnet associations.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType};
use comind_core::{Change, Error, Result};

use super::{ANYWHERE, Run, role_of, zone_role};
use crate::error::AwsResultExt;
use crate::tags;

/// A route table as found.
#[derive(Debug, Clone)]
pub(super) struct RouteTable {
    pub(super) id: String,
    role: String,
    /// Target of the default route, if any (an internet or NAT gateway id).
    default_target: Option<String>,
    /// (association id, subnet id) of its explicit subnet associations.
    pub(super) associations: Vec<(String, String)>,
}

impl Run<'_> {
    pub(super) async fn route_tables(&self, filters: Vec<Filter>) -> Result<Vec<RouteTable>> {
        let out = self
            .ec2
            .describe_route_tables()
            .set_filters(Some(filters))
            .send()
            .await
            .aws("ec2:DescribeRouteTables", "route tables")?;
        Ok(out
            .route_tables()
            .iter()
            .map(|t| RouteTable {
                id: t.route_table_id().unwrap_or_default().to_string(),
                role: role_of(&tags::from_ec2(t.tags())),
                default_target: t
                    .routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some(ANYWHERE))
                    .and_then(|r| r.nat_gateway_id().or(r.gateway_id()))
                    .map(str::to_string),
                associations: t
                    .associations()
                    .iter()
                    .filter(|a| a.main() != Some(true))
                    .filter_map(|a| {
                        Some((
                            a.route_table_association_id()?.to_string(),
                            a.subnet_id()?.to_string(),
                        ))
                    })
                    .collect(),
            })
            .collect())
    }

    /// The public route table (default route to the internet gateway) and one private
    /// route table per zone (default route to the zone's NAT gateway, or the only one).
    pub(super) async fn routes(
        &mut self,
        vpc_id: &str,
        zones: &[String],
        igw: Option<&str>,
        subnets: &BTreeMap<(String, String), Option<String>>,
        nats: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let mut filters = self.owned();
        filters.push(tags::ec2_filter("vpc-id", vpc_id));
        let live = self.route_tables(filters).await?;
        let first_nat = zones.iter().find_map(|z| nats.get(z)).cloned().flatten();
        let mut wanted = vec![(
            "public-routes".to_string(),
            self.name("public"),
            igw.map(str::to_string),
            zones
                .iter()
                .map(|z| {
                    subnets
                        .get(&("public".to_string(), z.clone()))
                        .cloned()
                        .flatten()
                })
                .collect::<Vec<_>>(),
        )];
        for zone in zones {
            let nat = nats
                .get(zone)
                .cloned()
                .flatten()
                .or_else(|| first_nat.clone());
            wanted.push((
                zone_role("private-routes", zone),
                self.name(&format!("private-{zone}")),
                nat,
                vec![
                    subnets
                        .get(&("private".to_string(), zone.clone()))
                        .cloned()
                        .flatten(),
                ],
            ));
        }
        for (role, name, target, members) in wanted {
            let table = live.iter().find(|t| t.role == role).cloned();
            let id = match table {
                Some(t) => {
                    self.default_route(&t, target.as_deref(), &name).await?;
                    Some(t)
                }
                None => {
                    if !self.pass.will(Change::create("route-table", &name)) {
                        continue;
                    }
                    let tags = self.tags(&role, &name, None);
                    let created = self
                        .ec2
                        .create_route_table()
                        .vpc_id(vpc_id)
                        .tag_specifications(tags::ec2_spec(ResourceType::RouteTable, &tags))
                        .send()
                        .await
                        .aws("ec2:CreateRouteTable", format!("route-table {name}"))?;
                    let id = created
                        .route_table()
                        .and_then(|t| t.route_table_id())
                        .ok_or_else(|| Error::internal("CreateRouteTable returned no id"))?
                        .to_string();
                    let table = RouteTable {
                        id,
                        role: role.clone(),
                        default_target: None,
                        associations: Vec::new(),
                    };
                    if let Some(target) = &target {
                        self.put_route(&table.id, target, false, &name).await?;
                    }
                    Some(table)
                }
            };
            let Some(table) = id else { continue };
            for subnet in members.into_iter().flatten() {
                if table.associations.iter().any(|(_, s)| s == &subnet) {
                    continue;
                }
                if self.pass.will(
                    Change::update("route-table", &name).because(format!("associate {subnet}")),
                ) {
                    self.associate(&table.id, &subnet, vpc_id, &name).await?;
                }
            }
        }
        Ok(())
    }

    async fn default_route(
        &mut self,
        table: &RouteTable,
        target: Option<&str>,
        name: &str,
    ) -> Result<()> {
        let Some(target) = target else { return Ok(()) };
        if table.default_target.as_deref() == Some(target) {
            return Ok(());
        }
        let replace = table.default_target.is_some();
        if self
            .pass
            .will(Change::update("route-table", name).because(format!("default route to {target}")))
        {
            self.put_route(&table.id, target, replace, name).await?;
        }
        Ok(())
    }

    async fn put_route(&self, table: &str, target: &str, replace: bool, name: &str) -> Result<()> {
        let nat = target.starts_with("nat-");
        if replace {
            let request = self
                .ec2
                .replace_route()
                .route_table_id(table)
                .destination_cidr_block(ANYWHERE);
            let request = if nat {
                request.nat_gateway_id(target)
            } else {
                request.gateway_id(target)
            };
            request
                .send()
                .await
                .aws("ec2:ReplaceRoute", format!("route-table {name}"))?;
        } else {
            let request = self
                .ec2
                .create_route()
                .route_table_id(table)
                .destination_cidr_block(ANYWHERE);
            let request = if nat {
                request.nat_gateway_id(target)
            } else {
                request.gateway_id(target)
            };
            request
                .send()
                .await
                .aws("ec2:CreateRoute", format!("route-table {name}"))?;
        }
        Ok(())
    }

    /// Associates `subnet` with `table`, moving it off another table of ours if needed.
    async fn associate(&self, table: &str, subnet: &str, vpc_id: &str, name: &str) -> Result<()> {
        let mut filters = vec![tags::ec2_filter("vpc-id", vpc_id)];
        filters.push(tags::ec2_filter("association.subnet-id", subnet));
        let current = self.route_tables(filters).await?;
        let existing = current
            .iter()
            .flat_map(|t| t.associations.iter())
            .find(|(_, s)| s == subnet)
            .map(|(a, _)| a.clone());
        match existing {
            Some(association) => {
                self.ec2
                    .replace_route_table_association()
                    .association_id(association)
                    .route_table_id(table)
                    .send()
                    .await
                    .aws(
                        "ec2:ReplaceRouteTableAssociation",
                        format!("route-table {name}"),
                    )?;
            }
            None => {
                self.ec2
                    .associate_route_table()
                    .route_table_id(table)
                    .subnet_id(subnet)
                    .send()
                    .await
                    .aws("ec2:AssociateRouteTable", format!("route-table {name}"))?;
            }
        }
        Ok(())
    }
}

//! Route tables: the public one (default route to the internet gateway) and one private
//! table per zone (default route to a NAT gateway), with their subnet associations.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType};
use comind_core::{Change, Error, Result};

use super::{ANYWHERE, Run, role_of, zone_role};
use crate::create::{self, Made, single_attempt};
use crate::error::{AwsResultExt, Failure};
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

fn table_of(t: &aws_sdk_ec2::types::RouteTable) -> RouteTable {
    RouteTable {
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
    }
}

impl Run<'_> {
    /// The route tables `filters` select, whoever owns them.
    async fn route_tables(&self, filters: Vec<Filter>) -> Result<Vec<RouteTable>> {
        let out = self
            .ec2
            .describe_route_tables()
            .set_filters(Some(filters))
            .send()
            .await
            .aws("ec2:DescribeRouteTables", "route tables")?;
        Ok(out.route_tables().iter().map(table_of).collect())
    }

    /// Our route tables (in `vpc_id`, if given), lowest id first.
    pub(super) async fn our_route_tables(&self, vpc_id: Option<&str>) -> Result<Vec<RouteTable>> {
        let selector = self.selector();
        let mut filters = selector.ec2_filters();
        if let Some(vpc) = vpc_id {
            filters.push(tags::ec2_filter("vpc-id", vpc));
        }
        let out = self
            .ec2
            .describe_route_tables()
            .set_filters(Some(filters))
            .send()
            .await
            .aws("ec2:DescribeRouteTables", "route tables")?;
        let mut tables: Vec<RouteTable> = selector
            .verified(
                "route-table",
                out.route_tables().iter(),
                |t| tags::from_ec2(t.tags()),
                |t| t.route_table_id().unwrap_or_default().to_string(),
            )
            .into_iter()
            .filter(|t| vpc_id.is_none_or(|vpc| t.vpc_id() == Some(vpc)))
            .map(table_of)
            .collect();
        tables.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tables)
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
        let live = self.our_route_tables(Some(vpc_id)).await?;
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
            let same_role: Vec<&RouteTable> = live.iter().filter(|t| t.role == role).collect();
            // An interrupted run may have left a second table of a role: the one with
            // subnets is kept, else the lowest id; empty duplicates are deleted.
            let table = same_role
                .iter()
                .find(|t| !t.associations.is_empty())
                .or_else(|| same_role.first())
                .map(|t| (*t).clone());
            let id = match table {
                Some(t) => {
                    for duplicate in same_role
                        .iter()
                        .filter(|d| d.id != t.id && d.associations.is_empty())
                    {
                        if self.pass.will(
                            Change::delete("route-table", &duplicate.id).because(format!(
                                "duplicate of {} left by an interrupted run",
                                t.id
                            )),
                        ) {
                            self.ec2
                                .delete_route_table()
                                .route_table_id(&duplicate.id)
                                .send()
                                .await
                                .found(
                                    "ec2:DeleteRouteTable",
                                    format!("route-table {}", duplicate.id),
                                )?;
                        }
                    }
                    self.default_route(&t, target.as_deref(), &name).await?;
                    Some(t)
                }
                None => {
                    if !self.pass.will(Change::create("route-table", &name)) {
                        continue;
                    }
                    match self.create_route_table(vpc_id, &role, &name).await? {
                        Made::Created(table) => {
                            if let Some(target) = &target {
                                self.put_route(&table.id, target, false, &name).await?;
                            }
                            Some(table)
                        }
                        // Made by a create whose answer was lost: its route may be
                        // there already.
                        Made::Found(table) => {
                            self.default_route(&table, target.as_deref(), &name).await?;
                            Some(table)
                        }
                    }
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

    /// Creates the route table of `role`, or finds it when its create's answer was
    /// lost.
    async fn create_route_table(
        &self,
        vpc_id: &str,
        role: &str,
        name: &str,
    ) -> Result<Made<RouteTable, RouteTable>> {
        let tags = self.tags(role, name, None);
        let resource = format!("route-table {name}");
        let ec2 = self.ec2;
        let made = create::once(
            &resource,
            || async {
                // The SDK sends a client token; the single attempt is for what ignores
                // it (see `create`).
                let created = ec2
                    .create_route_table()
                    .vpc_id(vpc_id)
                    .tag_specifications(tags::ec2_spec(ResourceType::RouteTable, &tags))
                    .customize()
                    .config_override(single_attempt::ec2())
                    .send()
                    .await
                    .aws("ec2:CreateRouteTable", &resource)?;
                created
                    .route_table()
                    .map(table_of)
                    .filter(|t| !t.id.is_empty())
                    .ok_or_else(|| Error::internal("CreateRouteTable returned no id"))
            },
            || async {
                Ok(self
                    .our_route_tables(Some(vpc_id))
                    .await?
                    .into_iter()
                    .find(|t| t.role == role))
            },
        )
        .await?;
        Ok(match made {
            Made::Created(mut table) => {
                // What the create answered may not echo the tags it was given.
                table.role = role.to_string();
                Made::Created(table)
            }
            found => found,
        })
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
            let created = request
                .send()
                .await
                .aws("ec2:CreateRoute", format!("route-table {name}"));
            match created {
                Ok(_) => {}
                // The SDK's retry of a route whose answer was lost, or a route made
                // meanwhile: point it where it must go.
                Err(err)
                    if Failure::of(&err).and_then(Failure::code) == Some("RouteAlreadyExists") =>
                {
                    Box::pin(self.put_route(table, target, true, name)).await?;
                }
                Err(err) => return Err(err),
            }
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
                let associated = self
                    .ec2
                    .associate_route_table()
                    .route_table_id(table)
                    .subnet_id(subnet)
                    .send()
                    .await
                    .aws("ec2:AssociateRouteTable", format!("route-table {name}"));
                if let Err(err) = associated {
                    // The SDK's retry of an association whose answer was lost: done, if
                    // the subnet is with this table now.
                    let again = Failure::of(&err).and_then(Failure::code)
                        == Some("Resource.AlreadyAssociated");
                    let done = again
                        && self
                            .route_tables(vec![tags::ec2_filter("route-table-id", table)])
                            .await?
                            .iter()
                            .any(|t| {
                                t.id == table && t.associations.iter().any(|(_, s)| s == subnet)
                            });
                    if !done {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }
}

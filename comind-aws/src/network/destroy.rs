//! `down`: everything of ours in the network goes, in the order AWS allows.

use comind_core::{Change, Result};

use super::{Run, role_of};
use crate::error::AwsResultExt;
use crate::tags;
use crate::waiter::{Observed, Wait};

impl Run<'_> {
    pub(super) async fn destroy(&mut self) -> Result<()> {
        // Security groups first: the database and cache groups reference the cluster
        // group, so they go before it.
        // Every listing below goes by our tags, and what comes back is checked against
        // them again before anything is deleted: a backend that ignored a filter must
        // not make `down` delete another environment's network.
        let selector = self.selector();
        let groups = self
            .ec2
            .describe_security_groups()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeSecurityGroups", "security groups")?;
        let groups = selector.verified(
            "security-group",
            groups.security_groups().iter(),
            |g| tags::from_ec2(g.tags()),
            |g| g.group_id().unwrap_or_default().to_string(),
        );
        let mut groups: Vec<(String, String, String)> = groups
            .into_iter()
            .map(|g| {
                (
                    role_of(&tags::from_ec2(g.tags())),
                    g.group_id().unwrap_or_default().to_string(),
                    g.group_name().unwrap_or_default().to_string(),
                )
            })
            .collect();
        groups.sort_by_key(|(role, _, _)| role == "cluster");
        for (_, id, name) in groups {
            self.pass.record([Change::delete("security-group", &name)]);
            self.delete_when_free("security-group", &name, || async {
                self.ec2
                    .delete_security_group()
                    .group_id(&id)
                    .send()
                    .await
                    .found("ec2:DeleteSecurityGroup", format!("security-group {name}"))
                    .map(drop)
            })
            .await?;
        }
        self.ctx.checkpoint()?;

        for nat in self.live_nat_gateways().await? {
            let name = self.name(&format!("nat-{}", nat.zone));
            self.pass.record([Change::delete("nat-gateway", &name)]);
            self.delete_nat(&nat.id, &name).await?;
        }
        self.release_addresses(None).await?;

        for table in self.our_route_tables(None).await? {
            let name = format!("route-table {}", table.id);
            for (association, _) in &table.associations {
                self.ec2
                    .disassociate_route_table()
                    .association_id(association)
                    .send()
                    .await
                    .found("ec2:DisassociateRouteTable", &name)?;
            }
            self.pass.record([Change::delete("route-table", &table.id)]);
            self.ec2
                .delete_route_table()
                .route_table_id(&table.id)
                .send()
                .await
                .found("ec2:DeleteRouteTable", &name)?;
        }

        let gateways = self
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeInternetGateways", "internet gateways")?;
        let gateways = selector.verified(
            "internet-gateway",
            gateways.internet_gateways().iter(),
            |g| tags::from_ec2(g.tags()),
            |g| g.internet_gateway_id().unwrap_or_default().to_string(),
        );
        for igw in gateways {
            let id = igw.internet_gateway_id().unwrap_or_default();
            let name = format!("internet-gateway {id}");
            for attachment in igw.attachments() {
                if let Some(vpc) = attachment.vpc_id() {
                    // Public addresses still mapped in the VPC keep the gateway attached.
                    self.delete_when_free("internet-gateway", id, || async {
                        self.ec2
                            .detach_internet_gateway()
                            .internet_gateway_id(id)
                            .vpc_id(vpc)
                            .send()
                            .await
                            // Not attached (any more): what a detach whose answer was
                            // lost, retried, hears.
                            .found_or("ec2:DetachInternetGateway", &name, &["Gateway.NotAttached"])
                            .map(drop)
                    })
                    .await?;
                }
            }
            self.pass.record([Change::delete("internet-gateway", id)]);
            self.ec2
                .delete_internet_gateway()
                .internet_gateway_id(id)
                .send()
                .await
                .found("ec2:DeleteInternetGateway", &name)?;
        }

        let subnets = self
            .ec2
            .describe_subnets()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeSubnets", "subnets")?;
        let subnets = selector.verified(
            "subnet",
            subnets.subnets().iter(),
            |s| tags::from_ec2(s.tags()),
            |s| s.subnet_id().unwrap_or_default().to_string(),
        );
        for subnet in subnets {
            let id = subnet.subnet_id().unwrap_or_default();
            let name = tags::from_ec2(subnet.tags())
                .get(tags::NAME)
                .cloned()
                .unwrap_or_else(|| id.to_string());
            self.pass.record([Change::delete("subnet", &name)]);
            self.delete_when_free("subnet", &name, || async {
                self.ec2
                    .delete_subnet()
                    .subnet_id(id)
                    .send()
                    .await
                    .found("ec2:DeleteSubnet", format!("subnet {name}"))
                    .map(drop)
            })
            .await?;
        }

        let vpcs = self
            .ec2
            .describe_vpcs()
            .set_filters(Some(selector.ec2_filters()))
            .send()
            .await
            .aws("ec2:DescribeVpcs", "vpcs")?;
        let vpcs = selector.verified(
            "vpc",
            vpcs.vpcs().iter(),
            |v| tags::from_ec2(v.tags()),
            |v| v.vpc_id().unwrap_or_default().to_string(),
        );
        let several = vpcs.len() > 1;
        for vpc in vpcs {
            let id = vpc.vpc_id().unwrap_or_default();
            // Several: duplicates an interrupted run left; each is named by its id.
            let name = if several {
                id.to_string()
            } else {
                self.name("network")
            };
            self.pass.record([Change::delete("vpc", name)]);
            self.delete_when_free("vpc", id, || async {
                self.ec2
                    .delete_vpc()
                    .vpc_id(id)
                    .send()
                    .await
                    .found("ec2:DeleteVpc", format!("vpc {id}"))
                    .map(drop)
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes `kind` `name` with `delete`, waiting while AWS says it is still in use:
    /// the network interfaces of a deleted cluster, database, cache or load balancer
    /// keep subnets and security groups busy for minutes after their owner is gone
    /// (`DependencyViolation`, a transient error, is what keeps the wait going).
    async fn delete_when_free<F, Fut>(&self, kind: &str, name: &str, mut delete: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let timeout = self.env.config().aws.timeouts.cluster.get();
        let wait = Wait::new(kind, name, "deleted", timeout, "aws.timeouts.cluster");
        wait.until(self.ctx, || {
            let deleted = delete();
            async move { deleted.await.map(Observed::Ready) }
        })
        .await
    }
}

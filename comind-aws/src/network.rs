//! The `network` phase: the environment's VPC, subnets, routes and security groups.
//!
//! By default the environment gets a VPC of its own (`aws.vpc.cidr`, default
//! `10.40.0.0/16`) spread over up to three availability zones: in each zone a private
//! subnet (nodes, RDS, ElastiCache) and a public one (NAT gateways and internet-facing
//! load balancers, tagged for the AWS load balancer controller), an internet gateway,
//! NAT gateways (one per zone in production, one otherwise) and route tables. EKS
//! nodes need that egress to pull images and join the cluster.
//!
//! With `aws.vpc.id` and `aws.vpc.subnet_ids` an existing VPC is used instead; it and
//! its subnets are only read, never changed or deleted.
//!
//! Either way the phase creates three security groups: the cluster group (worn by
//! the EKS control plane and the nodes), and the database and cache groups, which
//! admit only the cluster group, on 5432 and 6379.
//!
//! Every resource is found by its ownership tags (and a `comind.dev/role` tag saying
//! what it is), so `down` finds everything even after a crash.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, IpPermission, NatGatewayState, ResourceType,
    UserIdGroupPair, VpcAttributeName,
};
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Environment, Error, Outputs, Phase, PhaseContext,
    PhaseId, Plan, Result,
};
use serde::Serialize;

use crate::clients::Connector;
use crate::error::AwsResultExt;
use crate::tags::{self, Tags};
use crate::waiter::{Observed, Status, Wait};

/// The phase id.
pub const ID: &str = "network";

/// Output: the VPC id.
pub const VPC_ID: &str = "VPC_ID";
/// Output: the VPC's CIDR block.
pub const VPC_CIDR: &str = "VPC_CIDR";
/// Output: the private subnets (nodes, databases, caches), comma-separated.
pub const SUBNET_IDS: &str = "SUBNET_IDS";
/// Output: the public subnets (NAT, internet-facing load balancers), comma-separated;
/// only for a VPC of the environment's own.
pub const PUBLIC_SUBNET_IDS: &str = "PUBLIC_SUBNET_IDS";
/// Output: the availability zones of the private subnets, comma-separated.
pub const AVAILABILITY_ZONES: &str = "AVAILABILITY_ZONES";
/// Output: the security group of the EKS control plane and nodes.
pub const CLUSTER_SECURITY_GROUP_ID: &str = "CLUSTER_SECURITY_GROUP_ID";
/// Output: the security group of the database, open to the cluster group on 5432.
pub const DATABASE_SECURITY_GROUP_ID: &str = "DATABASE_SECURITY_GROUP_ID";
/// Output: the security group of the cache, open to the cluster group on 6379.
pub const CACHE_SECURITY_GROUP_ID: &str = "CACHE_SECURITY_GROUP_ID";

const COMPONENT: &str = ID;
/// What a network resource is: `vpc`, `public`, `private`, `nat:<zone>`...
const ROLE: &str = "comind.dev/role";
/// At most this many zones: three is what HA needs; more only costs NAT gateways.
const MAX_ZONES: usize = 3;
/// NAT gateways take one to five minutes; there is no setting for them.
const NAT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const ANYWHERE: &str = "0.0.0.0/0";

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a CIDR block such as 10.40.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{text}` does not start with an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("`{text}` has no prefix length after `/`"))?;
        if !(16..=24).contains(&prefix) {
            return Err(format!(
                "`{text}`: use a prefix from /16 to /24, so that each of the six subnets \
                 (a sixteenth of the VPC) can hold nodes and pods"
            ));
        }
        let base = u32::from(addr);
        let mask = u32::MAX << (32 - u32::from(prefix));
        if base & !mask != 0 {
            return Err(format!(
                "`{text}` has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(Cidr { base, prefix })
    }

    fn range(self) -> (u64, u64) {
        let start = u64::from(self.base);
        (start, start + (1u64 << (32 - u32::from(self.prefix))))
    }

    /// Whether the two blocks share an address.
    fn overlaps(self, other: Cidr) -> bool {
        let (a, b) = (self.range(), other.range());
        a.0 < b.1 && b.0 < a.1
    }

    /// The `index`th block of a sixteenth of this one.
    fn sixteenth(self, index: u32) -> Cidr {
        let prefix = self.prefix + 4;
        Cidr {
            base: self.base + (index << (32 - u32::from(prefix))),
            prefix,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Which VPC the environment uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// A VPC of its own.
    Own { cidr: Cidr, nat_per_zone: bool },
    /// An existing VPC, only read.
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
}

/// The part of the network that defines it, hashed into the VPC's spec tag.
#[derive(Serialize)]
struct Spec {
    cidr: String,
    nat_per_zone: bool,
}

fn mode(env: &Environment) -> Result<Mode> {
    let vpc = &env.config().aws.vpc;
    match &vpc.id {
        Some(id) => {
            if vpc.subnet_ids.len() < 2 {
                return Err(Error::invalid_input(format!(
                    "`aws.vpc.id` is set to {id} but `aws.vpc.subnet_ids` lists {} subnet(s); \
                     EKS, RDS and ElastiCache need private subnets in at least two \
                     availability zones",
                    vpc.subnet_ids.len()
                ))
                .with_resource("comind.yaml aws.vpc.subnet_ids")
                .with_hint("list two or more private subnets of that VPC, in different zones"));
            }
            Ok(Mode::Existing {
                vpc_id: id.clone(),
                subnet_ids: vpc.subnet_ids.clone(),
            })
        }
        None => {
            let cidr = Cidr::parse(&vpc.cidr).map_err(|e| {
                Error::invalid_input(format!("`aws.vpc.cidr` is not usable: {e}"))
                    .with_resource("comind.yaml aws.vpc.cidr")
            })?;
            Ok(Mode::Own {
                cidr,
                nat_per_zone: env.is_production(),
            })
        }
    }
}

/// Checks the network settings of `env` without touching anything.
///
/// # Errors
/// `InvalidInput` naming the setting.
pub(crate) fn check_settings(env: &Environment) -> Result<()> {
    mode(env).map(|_| ())
}

/// The `network` phase.
pub struct NetworkPhase {
    aws: Arc<Connector>,
}

impl std::fmt::Debug for NetworkPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkPhase").finish_non_exhaustive()
    }
}

impl NetworkPhase {
    pub(crate) fn new(aws: Arc<Connector>) -> Self {
        NetworkPhase { aws }
    }

    async fn reconcile(
        &self,
        ctx: &PhaseContext,
        apply: bool,
    ) -> Result<(Vec<Change>, Option<Outputs>)> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut run = Run {
            ctx,
            env: ctx.env(),
            ec2: &clients.ec2,
            apply,
            changes: Vec::new(),
        };
        let outputs = match mode(ctx.env())? {
            Mode::Own { cidr, nat_per_zone } => run.own(cidr, nat_per_zone).await?,
            Mode::Existing { vpc_id, subnet_ids } => run.existing(&vpc_id, &subnet_ids).await?,
        };
        Ok((run.changes, outputs))
    }
}

#[async_trait]
impl Phase for NetworkPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(ID)
    }

    fn description(&self) -> String {
        "VPC, subnets, routes and security groups".to_string()
    }

    fn default_timeout(&self) -> Option<Duration> {
        // NAT gateways are waited for one zone after the other.
        Some(NAT_TIMEOUT * 4)
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut run = Run {
            ctx,
            env: ctx.env(),
            ec2: &clients.ec2,
            apply: false,
            changes: Vec::new(),
        };
        let vpc = match mode(ctx.env())? {
            Mode::Existing { vpc_id, subnet_ids } => {
                run.existing_subnets(&vpc_id, &subnet_ids).await?;
                Some(vpc_id)
            }
            Mode::Own { .. } => run.owned_vpc().await?,
        };
        if let Some(vpc) = vpc {
            run.check_group_names(&vpc).await?;
        }
        Ok(())
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let (changes, outputs) = self.reconcile(ctx, false).await?;
        Ok(Plan {
            outputs: if changes.is_empty() { outputs } else { None },
            changes,
            deferred: None,
        })
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let (changes, outputs) = self.reconcile(ctx, true).await?;
        let outputs = outputs.ok_or_else(|| {
            Error::internal("the network was applied but some of its ids are unknown")
        })?;
        Ok(Applied { changes, outputs })
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        // The network holds no data: purge or not, everything of ours goes.
        let clients = self.aws.clients(ctx.env()).await?;
        let mut run = Run {
            ctx,
            env: ctx.env(),
            ec2: &clients.ec2,
            apply: true,
            changes: Vec::new(),
        };
        run.destroy().await?;
        Ok(Destroyed {
            changes: run.changes,
            kept: Vec::new(),
        })
    }
}

/// A subnet as found.
#[derive(Debug, Clone)]
struct Subnet {
    id: String,
    zone: String,
    role: String,
}

/// A NAT gateway as found.
#[derive(Debug, Clone)]
struct Nat {
    id: String,
    zone: String,
    state: String,
}

/// A route table as found.
#[derive(Debug, Clone)]
struct RouteTable {
    id: String,
    role: String,
    /// Target of the default route, if any (an internet or NAT gateway id).
    default_target: Option<String>,
    /// (association id, subnet id) of its explicit subnet associations.
    associations: Vec<(String, String)>,
}

/// One pass over the network: planning (`apply` false: reads only, records what it
/// would change) or applying (makes each change it records).
struct Run<'a> {
    ctx: &'a PhaseContext,
    env: &'a Environment,
    ec2: &'a aws_sdk_ec2::Client,
    apply: bool,
    changes: Vec<Change>,
}

fn role_of(tags: &Tags) -> String {
    tags.get(ROLE).cloned().unwrap_or_default()
}

fn zone_role(kind: &str, zone: &str) -> String {
    format!("{kind}:{zone}")
}

impl Run<'_> {
    /// Records `change`; whether to make it now.
    fn will(&mut self, change: Change) -> bool {
        self.changes.push(change);
        self.apply
    }

    fn name(&self, suffix: &str) -> String {
        self.env.resource_name(suffix)
    }

    fn tags(&self, role: &str, name: &str, spec: Option<&str>) -> Tags {
        let mut tags = tags::named(self.env, COMPONENT, spec, name);
        tags.insert(ROLE.to_string(), role.to_string());
        tags
    }

    fn owned(&self) -> Vec<Filter> {
        tags::ec2_filters(self.env, COMPONENT)
    }

    fn owned_with_role(&self, role: &str) -> Vec<Filter> {
        let mut filters = self.owned();
        filters.push(tags::ec2_filter(&format!("tag:{ROLE}"), role));
        filters
    }

    async fn zones(&self) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_availability_zones()
            .filters(tags::ec2_filter("state", "available"))
            .send()
            .await
            .aws("ec2:DescribeAvailabilityZones", "availability zones")?;
        let mut zones: Vec<String> = out
            .availability_zones()
            .iter()
            // Local and Wavelength zones cannot host EKS or RDS subnets.
            .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        zones.sort();
        zones.truncate(MAX_ZONES);
        if zones.len() < 2 {
            return Err(Error::invalid_input(format!(
                "the region offers {} usable availability zone(s); EKS needs at least two",
                zones.len()
            ))
            .with_resource("availability zones")
            .with_hint("choose another region (`aws.region` in comind.yaml)"));
        }
        Ok(zones)
    }

    // ---- a VPC of the environment's own -------------------------------------------

    async fn own(&mut self, cidr: Cidr, nat_per_zone: bool) -> Result<Option<Outputs>> {
        let region_zones = self.zones().await?;
        let spec = comind_core::environment::spec_hash(&Spec {
            cidr: cidr.to_string(),
            nat_per_zone,
        });
        let Some(vpc_id) = self.vpc(cidr, &spec).await? else {
            self.plan_all_new(&region_zones, nat_per_zone);
            return Ok(None);
        };
        self.ctx.checkpoint()?;
        let igw = self.internet_gateway(&vpc_id).await?;
        let (zones, subnets) = self.subnets(&vpc_id, cidr, &region_zones).await?;
        self.ctx.checkpoint()?;
        let nat_zones: Vec<String> = if nat_per_zone {
            zones.clone()
        } else {
            zones[..1].to_vec()
        };
        let nats = self.nat_gateways(&nat_zones, &subnets).await?;
        self.ctx.checkpoint()?;
        self.routes(&vpc_id, &zones, igw.as_deref(), &subnets, &nats)
            .await?;
        self.retire_nat_gateways(&nat_zones).await?;
        let groups = self.security_groups(&vpc_id).await?;

        let ids = |role: &str| -> Option<Vec<String>> {
            zones
                .iter()
                .map(|z| {
                    subnets
                        .get(&(role.to_string(), z.clone()))
                        .cloned()
                        .flatten()
                })
                .collect()
        };
        let (Some(private), Some(public), Some(groups)) = (ids("private"), ids("public"), groups)
        else {
            return Ok(None);
        };
        let mut outputs = Outputs::new()
            .text(VPC_ID, &vpc_id)
            .text(VPC_CIDR, cidr.to_string())
            .text(SUBNET_IDS, private.join(","))
            .text(PUBLIC_SUBNET_IDS, public.join(","))
            .text(AVAILABILITY_ZONES, zones.join(","));
        outputs.extend(groups);
        Ok(Some(outputs))
    }

    fn plan_all_new(&mut self, zones: &[String], nat_per_zone: bool) {
        self.changes
            .push(Change::create("internet-gateway", self.name("network")));
        for zone in zones {
            for tier in ["public", "private"] {
                self.changes.push(Change::create(
                    "subnet",
                    self.name(&format!("{tier}-{zone}")),
                ));
            }
        }
        let nat_zones = if nat_per_zone { zones } else { &zones[..1] };
        for zone in nat_zones {
            self.changes.push(Change::create(
                "elastic-ip",
                self.name(&format!("nat-{zone}")),
            ));
            self.changes.push(Change::create(
                "nat-gateway",
                self.name(&format!("nat-{zone}")),
            ));
        }
        self.changes
            .push(Change::create("route-table", self.name("public")));
        for zone in zones {
            self.changes.push(Change::create(
                "route-table",
                self.name(&format!("private-{zone}")),
            ));
        }
        for group in ["cluster", "database", "cache"] {
            self.changes
                .push(Change::create("security-group", self.name(group)));
        }
    }

    /// The id of our VPC, if there is one; a conflict if a VPC has our name but not
    /// our tags, or if several carry our tags.
    async fn owned_vpc(&self) -> Result<Option<String>> {
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

    /// Stops the run when a security group in `vpc_id` has one of our names but not
    /// our tags.
    async fn check_group_names(&self, vpc_id: &str) -> Result<()> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(tags::ec2_filter("vpc-id", vpc_id))
            .filters(
                Filter::builder()
                    .name("group-name")
                    .set_values(Some(
                        ["cluster", "database", "cache"]
                            .iter()
                            .map(|n| self.name(n))
                            .collect(),
                    ))
                    .build(),
            )
            .send()
            .await
            .aws(
                "ec2:DescribeSecurityGroups",
                format!("security groups of {vpc_id}"),
            )?;
        for group in out.security_groups() {
            let name = group.group_name().unwrap_or_default();
            let live = tags::from_ec2(group.tags());
            tags::require_owned(self.env, COMPONENT, "security-group", name, &live)?;
        }
        Ok(())
    }

    /// The VPC: found by its tags, else created. `None` while planning a new one.
    async fn vpc(&mut self, cidr: Cidr, spec: &str) -> Result<Option<String>> {
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
                && self.will(Change::update("vpc", &name).because("spec changed: tags"))
            {
                self.tag(&id, &missing, &format!("vpc {name}")).await?;
            }
            return Ok(Some(id));
        }
        if !self.will(Change::create("vpc", &name).because(format!("CIDR {cidr}"))) {
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
                && self.will(
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
    async fn internet_gateway(&mut self, vpc_id: &str) -> Result<Option<String>> {
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
                && self.will(
                    Change::update("internet-gateway", &name).because("not attached to the VPC"),
                )
            {
                self.attach_gateway(&id, vpc_id, &name).await?;
            }
            return Ok(Some(id));
        }
        if !self.will(Change::create("internet-gateway", &name)) {
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

    /// The zones and the subnets by (tier, zone); `None` ids while planning new ones.
    ///
    /// Zones that already hold our private subnets stay (a region may gain zones);
    /// the first zones of the region fill up to three. A new subnet takes the first
    /// sixteenth of its tier's half of the VPC (private: the first half, public: the
    /// second) that no subnet of the VPC overlaps, so neither a run that stopped
    /// half-way nor someone else's subnet can make it collide.
    async fn subnets(
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
                if !self.will(Change::create("subnet", &name).because(format!("{block} in {zone}")))
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

    async fn live_nat_gateways(&self) -> Result<Vec<Nat>> {
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
    async fn nat_gateways(
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
                    if nat.state == "pending" && self.apply {
                        self.wait_nat(&nat.id, &name).await?;
                    }
                    continue;
                }
                Some(nat) => {
                    if self.will(
                        Change::replace("nat-gateway", &name).because("it is in state `failed`"),
                    ) {
                        self.delete_nat(&nat.id, &name).await?;
                    }
                }
                None => {
                    self.will(Change::create("nat-gateway", &name));
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
            return Ok(self.apply.then(|| id.to_string()));
        }
        if !self.will(Change::create("elastic-ip", name)) {
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

    async fn delete_nat(&self, id: &str, name: &str) -> Result<()> {
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
    async fn retire_nat_gateways(&mut self, zones: &[String]) -> Result<()> {
        for nat in self.live_nat_gateways().await? {
            if zones.contains(&nat.zone) {
                continue;
            }
            let name = self.name(&format!("nat-{}", nat.zone));
            if self.will(
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

    async fn route_tables(&self, filters: Vec<Filter>) -> Result<Vec<RouteTable>> {
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
    async fn routes(
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
                    if !self.will(Change::create("route-table", &name)) {
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
                if self.will(
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

    /// The cluster, database and cache groups; their outputs, or `None` while
    /// planning new ones.
    async fn security_groups(&mut self, vpc_id: &str) -> Result<Option<Outputs>> {
        let names = [
            ("cluster", CLUSTER_SECURITY_GROUP_ID, None),
            ("database", DATABASE_SECURITY_GROUP_ID, Some(5432)),
            ("cache", CACHE_SECURITY_GROUP_ID, Some(6379)),
        ];
        let out = self
            .ec2
            .describe_security_groups()
            .filters(tags::ec2_filter("vpc-id", vpc_id))
            .filters(
                Filter::builder()
                    .name("group-name")
                    .set_values(Some(names.iter().map(|(n, _, _)| self.name(n)).collect()))
                    .build(),
            )
            .send()
            .await
            .aws(
                "ec2:DescribeSecurityGroups",
                format!("security groups of {vpc_id}"),
            )?;
        let live = out.security_groups();
        let mut outputs = Outputs::new();
        let mut cluster_id: Option<String> = None;
        let mut complete = true;
        for (role, key, port) in names {
            let name = self.name(role);
            let group = live.iter().find(|g| g.group_name() == Some(name.as_str()));
            let id = match group {
                Some(group) => {
                    let tags = tags::from_ec2(group.tags());
                    tags::require_owned(self.env, COMPONENT, "security-group", &name, &tags)?;
                    let id = group.group_id().unwrap_or_default().to_string();
                    if let (Some(port), Some(source)) = (port, &cluster_id) {
                        self.only_from(&id, &name, group.ip_permissions(), port, source)
                            .await?;
                    }
                    Some(id)
                }
                None => {
                    if self.will(Change::create("security-group", &name)) {
                        let id = self.create_group(vpc_id, role, &name).await?;
                        if let (Some(port), Some(source)) = (port, &cluster_id) {
                            self.allow(&id, &name, port, source).await?;
                        }
                        Some(id)
                    } else {
                        None
                    }
                }
            };
            match &id {
                Some(id) => outputs.insert_text(key, id),
                None => complete = false,
            }
            if role == "cluster" {
                cluster_id = id;
            }
        }
        Ok(complete.then_some(outputs))
    }

    async fn create_group(&self, vpc_id: &str, role: &str, name: &str) -> Result<String> {
        let description = match role {
            "cluster" => "Comind: the EKS control plane and nodes",
            "database" => "Comind: PostgreSQL, reachable from the cluster only",
            _ => "Comind: Redis, reachable from the cluster only",
        };
        let tags = self.tags(role, name, None);
        let created = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description(description)
            .vpc_id(vpc_id)
            .tag_specifications(tags::ec2_spec(ResourceType::SecurityGroup, &tags))
            .send()
            .await
            .aws("ec2:CreateSecurityGroup", format!("security-group {name}"))?;
        created
            .group_id()
            .map(str::to_string)
            .ok_or_else(|| Error::internal("CreateSecurityGroup returned no id"))
    }

    fn rule(port: i32, source: &str) -> IpPermission {
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .user_id_group_pairs(
                UserIdGroupPair::builder()
                    .group_id(source)
                    .description("from the Comind cluster")
                    .build(),
            )
            .build()
    }

    async fn allow(&self, id: &str, name: &str, port: i32, source: &str) -> Result<()> {
        self.ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .ip_permissions(Self::rule(port, source))
            .send()
            .await
            .aws(
                "ec2:AuthorizeSecurityGroupIngress",
                format!("security-group {name}"),
            )?;
        Ok(())
    }

    /// Makes `port` from `source` the group's only ingress rule.
    async fn only_from(
        &mut self,
        id: &str,
        name: &str,
        rules: &[IpPermission],
        port: i32,
        source: &str,
    ) -> Result<()> {
        let is_ours = |p: &IpPermission| {
            p.ip_protocol() == Some("tcp")
                && p.from_port() == Some(port)
                && p.to_port() == Some(port)
                && p.ip_ranges().is_empty()
                && p.ipv6_ranges().is_empty()
                && p.prefix_list_ids().is_empty()
                && p.user_id_group_pairs().len() == 1
                && p.user_id_group_pairs()[0].group_id() == Some(source)
        };
        let present = rules.iter().any(is_ours);
        let extra: Vec<IpPermission> = rules.iter().filter(|p| !is_ours(p)).cloned().collect();
        if !present
            && self.will(
                Change::update("security-group", name)
                    .because(format!("allow {port}/tcp from the cluster group")),
            )
        {
            self.allow(id, name, port, source).await?;
        }
        if !extra.is_empty()
            && self.will(Change::update("security-group", name).because(format!(
                "revoke {} rule(s) besides the cluster's",
                extra.len()
            )))
        {
            self.ec2
                .revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(extra))
                .send()
                .await
                .aws(
                    "ec2:RevokeSecurityGroupIngress",
                    format!("security-group {name}"),
                )?;
        }
        Ok(())
    }

    // ---- an existing VPC -------------------------------------------------------------

    /// Checks the VPC and subnets exist; returns the VPC's CIDR and the subnets'
    /// zones, in the order given.
    async fn existing_subnets(
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

    async fn existing(&mut self, vpc_id: &str, subnet_ids: &[String]) -> Result<Option<Outputs>> {
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

    // ---- down ------------------------------------------------------------------------

    async fn destroy(&mut self) -> Result<()> {
        // Security groups first: the database and cache groups reference the cluster
        // group, so they go before it.
        let groups = self
            .ec2
            .describe_security_groups()
            .set_filters(Some(self.owned()))
            .send()
            .await
            .aws("ec2:DescribeSecurityGroups", "security groups")?;
        let mut groups: Vec<(String, String, String)> = groups
            .security_groups()
            .iter()
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
            self.changes.push(Change::delete("security-group", &name));
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
            self.changes.push(Change::delete("nat-gateway", &name));
            self.delete_nat(&nat.id, &name).await?;
        }
        self.release_addresses(None).await?;

        for table in self.route_tables(self.owned()).await? {
            let name = format!("route-table {}", table.id);
            for (association, _) in &table.associations {
                self.ec2
                    .disassociate_route_table()
                    .association_id(association)
                    .send()
                    .await
                    .found("ec2:DisassociateRouteTable", &name)?;
            }
            self.changes.push(Change::delete("route-table", &table.id));
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
            .set_filters(Some(self.owned()))
            .send()
            .await
            .aws("ec2:DescribeInternetGateways", "internet gateways")?;
        for igw in gateways.internet_gateways() {
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
                            .found("ec2:DetachInternetGateway", &name)
                            .map(drop)
                    })
                    .await?;
                }
            }
            self.changes.push(Change::delete("internet-gateway", id));
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
            .set_filters(Some(self.owned()))
            .send()
            .await
            .aws("ec2:DescribeSubnets", "subnets")?;
        for subnet in subnets.subnets() {
            let id = subnet.subnet_id().unwrap_or_default();
            let name = tags::from_ec2(subnet.tags())
                .get(tags::NAME)
                .cloned()
                .unwrap_or_else(|| id.to_string());
            self.changes.push(Change::delete("subnet", &name));
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
            .set_filters(Some(self.owned()))
            .send()
            .await
            .aws("ec2:DescribeVpcs", "vpcs")?;
        for vpc in vpcs.vpcs() {
            let id = vpc.vpc_id().unwrap_or_default();
            self.changes
                .push(Change::delete("vpc", self.name("network")));
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

    /// Releases our elastic IPs that nothing uses any more (`role`: only those).
    async fn release_addresses(&mut self, role: Option<&str>) -> Result<()> {
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
            self.changes.push(Change::delete("elastic-ip", &name));
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

fn cidr_of(text: Option<&str>) -> Option<Cidr> {
    let (addr, prefix) = text?.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then(|| Cidr {
        base: u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
        prefix,
    })
}

/// Ids in a comma-separated output such as [`SUBNET_IDS`].
pub(crate) fn split_ids(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Where a private resource (an RDS instance, a cache) goes: the environment's private
/// subnets, behind the security group that admits only the cluster.
pub(crate) struct Placement {
    pub(crate) subnets: Vec<String>,
    pub(crate) security_group: String,
}

/// The placement of a resource behind the security group published as
/// `security_group_key`; `None` while `network` is known only after apply.
///
/// # Errors
/// When `network` is applied but does not publish the outputs.
pub(crate) fn placement(ctx: &PhaseContext, security_group_key: &str) -> Result<Option<Placement>> {
    let net = PhaseId::new(ID);
    if matches!(
        ctx.input(&net, SUBNET_IDS),
        comind_core::Input::KnownAfterApply
    ) {
        return Ok(None);
    }
    Ok(Some(Placement {
        subnets: split_ids(ctx.require_input(&net, SUBNET_IDS)?.expose()),
        security_group: ctx
            .require_input(&net, security_group_key)?
            .expose()
            .to_string(),
    }))
}

/// Why the plan of a resource placed in the environment's subnets (`what`, such as
/// "the subnet group and security group") is incomplete: while `network` is not
/// applied yet, the ids it will use are known only after apply.
pub(crate) fn placement_deferred(ctx: &PhaseContext, what: &str) -> Option<String> {
    matches!(
        ctx.input(&PhaseId::new(ID), SUBNET_IDS),
        comind_core::Input::KnownAfterApply
    )
    .then(|| format!("{what} use ids from `network`, known after apply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_are_carved_in_sixteenths() {
        let vpc = Cidr::parse("10.40.0.0/16").unwrap();
        assert_eq!(vpc.sixteenth(0).to_string(), "10.40.0.0/20");
        assert_eq!(vpc.sixteenth(2).to_string(), "10.40.32.0/20");
        assert_eq!(vpc.sixteenth(8).to_string(), "10.40.128.0/20");
        assert_eq!(vpc.sixteenth(10).to_string(), "10.40.160.0/20");
        let small = Cidr::parse("192.168.4.0/24").unwrap();
        assert_eq!(small.sixteenth(9).to_string(), "192.168.4.144/28");
    }

    #[test]
    fn blocks_overlap_by_range() {
        let vpc = Cidr::parse("10.40.0.0/16").unwrap();
        let foreign = cidr_of(Some("10.40.4.0/24")).unwrap();
        assert!(vpc.sixteenth(0).overlaps(foreign));
        assert!(!vpc.sixteenth(1).overlaps(foreign));
        assert!(vpc.overlaps(vpc.sixteenth(15)));
        assert_eq!(cidr_of(Some("10.40.4.7/24")), Some(foreign));
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(Cidr::parse("10.40.0.0").unwrap_err().contains("CIDR"));
        assert!(
            Cidr::parse("10.40.0.0/8")
                .unwrap_err()
                .contains("/16 to /24")
        );
        assert!(
            Cidr::parse("10.40.1.0/16")
                .unwrap_err()
                .contains("10.40.0.0/16")
        );
        assert!(Cidr::parse("10.400.0.0/16").is_err());
    }

    #[test]
    fn an_existing_vpc_needs_two_subnets() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = comind_core::Config::default();
        config.aws.vpc.id = Some("vpc-1".into());
        config.aws.vpc.subnet_ids = vec!["subnet-1".into()];
        let env = Environment::with_state_root(config, dir.path());
        let err = check_settings(&env).unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
        assert!(err.message().contains("two"), "{err}");
    }
}

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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, Outputs, Pass, PhaseContext, PhaseId,
    Reconcile, Result,
};
use serde::Serialize;

use crate::clients::Connector;
use crate::error::AwsResultExt;
use crate::tags::{self, Selector, Tags};

mod cidr;
mod destroy;
mod existing;
mod nat;
mod routes;
mod security_groups;
mod subnets;
mod vpc;

use cidr::Cidr;

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

/// The `network` phase, written as one reconcile function: the provider runs it as a
/// [`ReconcilePhase`](comind_core::ReconcilePhase).
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
}

#[async_trait]
impl Reconcile for NetworkPhase {
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
        let mut pass = Pass::plan();
        let mut run = Run::new(ctx, &clients.ec2, &mut pass);
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

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<Option<Outputs>> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut run = Run::new(ctx, &clients.ec2, pass);
        match mode(ctx.env())? {
            Mode::Own { cidr, nat_per_zone } => run.own(cidr, nat_per_zone).await,
            Mode::Existing { vpc_id, subnet_ids } => run.existing(&vpc_id, &subnet_ids).await,
        }
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        // The network holds no data: purge or not, everything of ours goes.
        let clients = self.aws.clients(ctx.env()).await?;
        let mut pass = Pass::apply();
        Run::new(ctx, &clients.ec2, &mut pass).destroy().await?;
        Ok(Destroyed {
            changes: pass.into_changes(),
            kept: Vec::new(),
        })
    }
}

/// One pass over the network: it records each change on `pass`, and makes it only
/// when `pass` applies.
struct Run<'a> {
    ctx: &'a PhaseContext,
    env: &'a Environment,
    ec2: &'a aws_sdk_ec2::Client,
    pass: &'a mut Pass,
}

fn role_of(tags: &Tags) -> String {
    tags.get(ROLE).cloned().unwrap_or_default()
}

fn zone_role(kind: &str, zone: &str) -> String {
    format!("{kind}:{zone}")
}

impl<'a> Run<'a> {
    fn new(ctx: &'a PhaseContext, ec2: &'a aws_sdk_ec2::Client, pass: &'a mut Pass) -> Self {
        Run {
            ctx,
            env: ctx.env(),
            ec2,
            pass,
        }
    }

    fn name(&self, suffix: &str) -> String {
        self.env.resource_name(suffix)
    }

    fn tags(&self, role: &str, name: &str, spec: Option<&str>) -> Tags {
        let mut tags = tags::named(self.env, COMPONENT, spec, name);
        tags.insert(ROLE.to_string(), role.to_string());
        tags
    }

    /// Our network resources, to ask AWS for and to check its answers against.
    fn selector(&self) -> Selector<'a> {
        Selector::new(self.env, COMPONENT)
    }

    /// Our network resources with the role `role`.
    fn selector_with_role(&self, role: &str) -> Selector<'a> {
        self.selector().with(ROLE, role)
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

    /// Records what a new VPC brings besides itself, for a plan (a new VPC is never
    /// planned further: nothing in it can be read yet).
    fn plan_all_new(&mut self, zones: &[String], nat_per_zone: bool) {
        let mut changes = vec![Change::create("internet-gateway", self.name("network"))];
        for zone in zones {
            for tier in ["public", "private"] {
                changes.push(Change::create(
                    "subnet",
                    self.name(&format!("{tier}-{zone}")),
                ));
            }
        }
        let nat_zones = if nat_per_zone { zones } else { &zones[..1] };
        for zone in nat_zones {
            changes.push(Change::create(
                "elastic-ip",
                self.name(&format!("nat-{zone}")),
            ));
            changes.push(Change::create(
                "nat-gateway",
                self.name(&format!("nat-{zone}")),
            ));
        }
        changes.push(Change::create("route-table", self.name("public")));
        for zone in zones {
            changes.push(Change::create(
                "route-table",
                self.name(&format!("private-{zone}")),
            ));
        }
        for group in ["cluster", "database", "cache"] {
            changes.push(Change::create("security-group", self.name(group)));
        }
        self.pass.record(changes);
    }
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

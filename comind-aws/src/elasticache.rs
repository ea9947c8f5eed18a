//! The `cache` service on ElastiCache.
//!
//! One Redis replication group, `comind-<env>-cache`, in a cache subnet group over the
//! private subnets, behind the cache security group (which admits the cluster only):
//! a primary and `replicas` read replicas with automatic failover and Multi-AZ when
//! there is a replica, encrypted in transit (clients use `rediss://`) and at rest,
//! and protected by an auth token that is generated once and kept in the state
//! directory (0600).
//!
//! `down` snapshots the group first (tagged, with the user's own tags of the group)
//! and the next `up` restores the newest snapshot; `down --purge` deletes the group
//! without one and removes every final snapshot. The probe goes through the
//! ElastiCache API (status `available` and a primary endpoint): the group is private,
//! so the operator's machine cannot open a Redis connection to it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_elasticache::types::{AuthTokenUpdateStrategyType, ReplicationGroup, Snapshot};
use comind_core::reconcile::Pass;
use comind_core::service::CacheEndpoint;
use comind_core::state::Credentials;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, Kept, PhaseContext, PhaseId, Result,
    ServiceBackend, ServiceEndpoint, ServiceKind,
};
use serde::Serialize;

use crate::clients::{Clients, Connector};
use crate::error::AwsResultExt;
use crate::network::{self, Placement};
use crate::snapshot;
use crate::tags::{self, Tags};
use crate::waiter::{Observed, Status, Wait};

const COMPONENT: &str = "cache";
const PORT: i32 = 6379;
/// ElastiCache's only user of a group with an auth token.
const USER: &str = "default";

/// What defines the group, hashed into its spec tag. Never the token.
#[derive(Debug, Serialize)]
struct Spec<'a> {
    node_type: &'a str,
    replicas: u32,
    engine_version: &'a str,
}

/// Redis on Amazon ElastiCache.
pub struct ElastiCacheRedis {
    aws: Arc<Connector>,
    timeout: Duration,
}

impl std::fmt::Debug for ElastiCacheRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElastiCacheRedis")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ElastiCacheRedis {
    pub(crate) fn new(aws: Arc<Connector>, env: &Environment) -> Self {
        ElastiCacheRedis {
            aws,
            timeout: env.config().aws.timeouts.cache.get(),
        }
    }

    /// How long a whole run of the phase may take: a snapshot, deletion or creation,
    /// and a modification.
    pub(crate) fn phase_timeout(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(10 * 60)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a PhaseContext,
        clients: &'a Clients,
        pass: &'a mut Pass,
    ) -> Run<'a> {
        Run {
            ctx,
            env: ctx.env(),
            clients,
            pass,
            name: ctx.env().resource_name(COMPONENT),
            timeout: self.timeout,
        }
    }
}

/// Checks the cache settings of `env` without touching anything.
///
/// # Errors
/// `InvalidInput` naming the setting.
pub(crate) fn check_settings(env: &Environment) -> Result<()> {
    let settings = &env.config().services.cache.aws;
    if settings.replicas > 5 {
        return Err(Error::invalid_input(format!(
            "a Redis replication group has at most 5 replicas, got {}",
            settings.replicas
        ))
        .with_resource("comind.yaml services.cache.aws.replicas"));
    }
    if env.resource_name(COMPONENT).len() > 40 {
        return Err(Error::invalid_input(
            "the environment name is too long for an ElastiCache replication group id",
        )
        .with_resource("comind.yaml environment"));
    }
    Ok(())
}

async fn describe(clients: &Clients, name: &str) -> Result<Option<ReplicationGroup>> {
    Ok(clients
        .elasticache
        .describe_replication_groups()
        .replication_group_id(name)
        .send()
        .await
        .found(
            "elasticache:DescribeReplicationGroups",
            format!("replication-group {name}"),
        )?
        .and_then(|o| o.replication_groups.and_then(|mut v| v.pop())))
}

fn status_of(group: &ReplicationGroup) -> &str {
    group.status().unwrap_or("unknown")
}

fn primary(group: &ReplicationGroup) -> Option<(String, u16)> {
    let endpoint = group.node_groups().first()?.primary_endpoint()?;
    Some((
        endpoint.address()?.to_string(),
        u16::try_from(endpoint.port().unwrap_or(PORT)).unwrap_or(6379),
    ))
}

async fn tags_of(clients: &Clients, arn: &str, resource: &str) -> Result<Tags> {
    let out = clients
        .elasticache
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .aws("elasticache:ListTagsForResource", resource)?;
    Ok(tags::from_elasticache(out.tag_list()))
}

/// Our final snapshots of `name` with their tags, oldest first (the names end in a
/// sortable UTC time).
async fn final_snapshots(
    env: &Environment,
    clients: &Clients,
    name: &str,
) -> Result<Vec<(Snapshot, Tags)>> {
    let out = clients
        .elasticache
        .describe_snapshots()
        .snapshot_source("manual")
        .send()
        .await
        .aws(
            "elasticache:DescribeSnapshots",
            format!("snapshots of {name}"),
        )?;
    let prefix = snapshot::prefix(name);
    let mut found = Vec::new();
    for snap in out.snapshots() {
        let Some(id) = snap.snapshot_name() else {
            continue;
        };
        if !id.starts_with(&prefix) {
            continue;
        }
        let live = tags_of(
            clients,
            snap.arn().unwrap_or_default(),
            &format!("snapshot {id}"),
        )
        .await?;
        if env.owns(&live, Some(COMPONENT)) {
            found.push((snap.clone(), live));
        }
    }
    found.sort_by(|a, b| a.0.snapshot_name().cmp(&b.0.snapshot_name()));
    Ok(found)
}

/// One pass over the cache: it records each change on `pass`, and makes it only when
/// `pass` applies.
struct Run<'a> {
    ctx: &'a PhaseContext,
    env: &'a Environment,
    clients: &'a Clients,
    pass: &'a mut Pass,
    name: String,
    timeout: Duration,
}

impl Run<'_> {
    fn resource(&self) -> String {
        format!("replication-group {}", self.name)
    }

    fn placement(&self) -> Result<Option<Placement>> {
        network::placement(self.ctx, network::CACHE_SECURITY_GROUP_ID)
    }

    fn spec_tags(&self) -> Tags {
        let settings = &self.env.config().services.cache.aws;
        let hash = comind_core::environment::spec_hash(&Spec {
            node_type: &settings.node_type,
            replicas: settings.replicas,
            engine_version: &settings.engine_version,
        });
        tags::ownership(self.env, COMPONENT, Some(&hash))
    }

    /// Stops the run before anything changes when our names are taken by resources
    /// that are not ours.
    async fn check_names(&self) -> Result<()> {
        let resource = format!("cache-subnet-group {}", self.name);
        let found = self
            .clients
            .elasticache
            .describe_cache_subnet_groups()
            .cache_subnet_group_name(&self.name)
            .send()
            .await
            .found("elasticache:DescribeCacheSubnetGroups", &resource)?;
        if let Some(group) = found.as_ref().and_then(|o| o.cache_subnet_groups().first()) {
            let live = tags_of(self.clients, group.arn().unwrap_or_default(), &resource).await?;
            tags::require_owned(self.env, COMPONENT, "cache-subnet-group", &self.name, &live)?;
        }
        if let Some(group) = describe(self.clients, &self.name).await? {
            let live = tags_of(
                self.clients,
                group.arn().unwrap_or_default(),
                &self.resource(),
            )
            .await?;
            tags::require_owned(self.env, COMPONENT, "replication-group", &self.name, &live)?;
        }
        Ok(())
    }

    fn credentials(&self) -> Result<Credentials> {
        self.env
            .state()
            .credentials(COMPONENT, || Credentials::generate(USER))
    }

    async fn converge(&mut self) -> Result<()> {
        let placement = self.placement()?;
        self.subnet_group(placement.as_ref()).await?;
        self.ctx.checkpoint()?;
        self.group(placement.as_ref()).await
    }

    async fn subnet_group(&mut self, placement: Option<&Placement>) -> Result<()> {
        let resource = format!("cache-subnet-group {}", self.name);
        let found = self
            .clients
            .elasticache
            .describe_cache_subnet_groups()
            .cache_subnet_group_name(&self.name)
            .send()
            .await
            .found("elasticache:DescribeCacheSubnetGroups", &resource)?;
        let Some(live) = found.as_ref().and_then(|o| o.cache_subnet_groups().first()) else {
            if self
                .pass
                .will(Change::create("cache-subnet-group", &self.name))
            {
                let placement = placement.ok_or_else(|| {
                    Error::internal("the cache subnet group needs the network's subnets")
                })?;
                self.clients
                    .elasticache
                    .create_cache_subnet_group()
                    .cache_subnet_group_name(&self.name)
                    .cache_subnet_group_description("Comind: private subnets of the cache")
                    .set_subnet_ids(Some(placement.subnets.clone()))
                    .set_tags(Some(tags::to_elasticache(&tags::ownership(
                        self.env, COMPONENT, None,
                    ))))
                    .send()
                    .await
                    .aws("elasticache:CreateCacheSubnetGroup", &resource)?;
            }
            return Ok(());
        };
        let live_tags = tags_of(self.clients, live.arn().unwrap_or_default(), &resource).await?;
        tags::require_owned(
            self.env,
            COMPONENT,
            "cache-subnet-group",
            &self.name,
            &live_tags,
        )?;
        if let Some(placement) = placement {
            let have: BTreeSet<&str> = live
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_identifier())
                .collect();
            let want: BTreeSet<&str> = placement.subnets.iter().map(String::as_str).collect();
            if have != want
                && self.pass.will(
                    Change::update("cache-subnet-group", &self.name)
                        .because("subnets differ from the network's"),
                )
            {
                self.clients
                    .elasticache
                    .modify_cache_subnet_group()
                    .cache_subnet_group_name(&self.name)
                    .set_subnet_ids(Some(placement.subnets.clone()))
                    .send()
                    .await
                    .aws("elasticache:ModifyCacheSubnetGroup", &resource)?;
            }
        }
        Ok(())
    }

    async fn group(&mut self, placement: Option<&Placement>) -> Result<()> {
        let live = match describe(self.clients, &self.name).await? {
            None => match self.create(placement).await? {
                Some(group) => group,
                None => return Ok(()),
            },
            Some(group) => {
                let live_tags = tags_of(
                    self.clients,
                    group.arn().unwrap_or_default(),
                    &self.resource(),
                )
                .await?;
                tags::require_owned(
                    self.env,
                    COMPONENT,
                    "replication-group",
                    &self.name,
                    &live_tags,
                )?;
                match status_of(&group) {
                    "create-failed" => {
                        return Err(Error::unavailable(format!(
                            "ElastiCache replication group {} is in status `create-failed`",
                            self.name
                        ))
                        .transient(false)
                        .with_resource(self.resource())
                        .with_hint("`comind down --only cache --purge`, then `comind up`"));
                    }
                    "deleting" => {
                        if !self.pass.will(
                            Change::create("replication-group", &self.name)
                                .because("the previous one is still being deleted"),
                        ) {
                            return Ok(());
                        }
                        self.wait_gone().await?;
                        match self.create(placement).await? {
                            Some(group) => group,
                            None => return Ok(()),
                        }
                    }
                    "available" => group,
                    _ if self.pass.is_apply() => self.wait_available().await?,
                    _ => group,
                }
            }
        };
        self.drift(&live).await
    }

    /// Creates the group, from the newest final snapshot if there is one. `None`
    /// while planning.
    async fn create(&mut self, placement: Option<&Placement>) -> Result<Option<ReplicationGroup>> {
        let snapshots = final_snapshots(self.env, self.clients, &self.name).await?;
        let restore = snapshots
            .iter()
            .rev()
            .find(|(s, _)| s.snapshot_status() == Some("available"))
            .cloned();
        let settings = &self.env.config().services.cache.aws;
        let change = match &restore {
            Some((s, _)) => Change::create("replication-group", &self.name).because(format!(
                "restored from final snapshot {}",
                s.snapshot_name().unwrap_or_default()
            )),
            None => Change::create("replication-group", &self.name).because(format!(
                "Redis {}, {} with {} replica(s)",
                settings.engine_version, settings.node_type, settings.replicas
            )),
        };
        if !self.pass.will(change) {
            return Ok(None);
        }
        let placement =
            placement.ok_or_else(|| Error::internal("the cache needs the network's subnets"))?;
        let token = self.credentials()?;
        let replicas = i32::try_from(settings.replicas).unwrap_or(0);
        let ha = replicas > 0;
        let mut all_tags = self.spec_tags();
        let mut request = self
            .clients
            .elasticache
            .create_replication_group()
            .replication_group_id(&self.name)
            .replication_group_description(format!("Comind: Redis of {}", self.env.name()))
            .engine("redis")
            .engine_version(&settings.engine_version)
            .cache_node_type(&settings.node_type)
            .num_cache_clusters(1 + replicas)
            .automatic_failover_enabled(ha)
            .multi_az_enabled(ha)
            .transit_encryption_enabled(true)
            .at_rest_encryption_enabled(true)
            .auth_token(token.password.expose())
            .cache_subnet_group_name(&self.name)
            .security_group_ids(&placement.security_group)
            .port(PORT)
            .auto_minor_version_upgrade(true);
        if let Some((snap, snap_tags)) = &restore {
            // The user's own tags travel through the snapshot; ours are set anew.
            let mut restored = tags::user_tags(snap_tags);
            restored.extend(all_tags);
            all_tags = restored;
            request = request.snapshot_name(snap.snapshot_name().unwrap_or_default());
        }
        request
            .set_tags(Some(tags::to_elasticache(&all_tags)))
            .send()
            .await
            .aws("elasticache:CreateReplicationGroup", self.resource())?;
        Ok(Some(self.wait_available().await?))
    }

    async fn drift(&mut self, live: &ReplicationGroup) -> Result<()> {
        if live.at_rest_encryption_enabled() == Some(false)
            || live.transit_encryption_enabled() == Some(false)
        {
            return Err(Error::conflict(format!(
                "ElastiCache replication group {} is not encrypted in transit and at rest, \
                 which cannot be turned on in place",
                self.name
            ))
            .with_resource(self.resource())
            .with_hint("`comind down --only cache` (which snapshots it), then `comind up`"));
        }
        let settings = &self.env.config().services.cache.aws;
        if live
            .cache_node_type()
            .is_some_and(|t| t != settings.node_type)
            && self.pass.will(
                Change::update("replication-group", &self.name).because(format!(
                    "node type {} to {}",
                    live.cache_node_type().unwrap_or("?"),
                    settings.node_type
                )),
            )
        {
            self.clients
                .elasticache
                .modify_replication_group()
                .replication_group_id(&self.name)
                .cache_node_type(&settings.node_type)
                .apply_immediately(true)
                .send()
                .await
                .aws("elasticache:ModifyReplicationGroup", self.resource())?;
            self.wait_available().await?;
        }
        let want = i32::try_from(settings.replicas).unwrap_or(0);
        let have = i32::try_from(live.member_clusters().len()).unwrap_or(1) - 1;
        if have != want
            && self.pass.will(
                Change::update("replication-group", &self.name)
                    .because(format!("replicas {have} to {want}")),
            )
        {
            if want > have {
                self.clients
                    .elasticache
                    .increase_replica_count()
                    .replication_group_id(&self.name)
                    .new_replica_count(want)
                    .apply_immediately(true)
                    .send()
                    .await
                    .aws("elasticache:IncreaseReplicaCount", self.resource())?;
            } else {
                self.clients
                    .elasticache
                    .decrease_replica_count()
                    .replication_group_id(&self.name)
                    .new_replica_count(want)
                    .apply_immediately(true)
                    .send()
                    .await
                    .aws("elasticache:DecreaseReplicaCount", self.resource())?;
            }
            self.wait_available().await?;
        }
        if (live.auth_token_enabled() == Some(false)
            || !self.env.state().has_credentials(COMPONENT))
            && self.pass.will(
                Change::update("replication-group", &self.name)
                    .because("auth token set: the state directory held none"),
            )
        {
            let token = self.credentials()?;
            self.clients
                .elasticache
                .modify_replication_group()
                .replication_group_id(&self.name)
                .auth_token(token.password.expose())
                .auth_token_update_strategy(AuthTokenUpdateStrategyType::Rotate)
                .apply_immediately(true)
                .send()
                .await
                .aws("elasticache:ModifyReplicationGroup", self.resource())?;
            self.wait_available().await?;
        }
        let live_tags = tags_of(
            self.clients,
            live.arn().unwrap_or_default(),
            &self.resource(),
        )
        .await?;
        let missing = tags::missing(&self.spec_tags(), &live_tags);
        if !missing.is_empty()
            && self
                .pass
                .will(Change::update("replication-group", &self.name).because("spec changed: tags"))
        {
            self.clients
                .elasticache
                .add_tags_to_resource()
                .resource_name(live.arn().unwrap_or_default())
                .set_tags(Some(tags::to_elasticache(&missing)))
                .send()
                .await
                .aws("elasticache:AddTagsToResource", self.resource())?;
        }
        Ok(())
    }

    async fn wait_available(&self) -> Result<ReplicationGroup> {
        let wait = Wait::new(
            "replication-group",
            &self.name,
            "available",
            self.timeout,
            "aws.timeouts.cache",
        );
        let result = wait
            .until(self.ctx, || async {
                let Some(group) = describe(self.clients, &self.name).await? else {
                    return Ok(Observed::Failed(Status::new("gone")));
                };
                let status = status_of(&group).to_string();
                Ok(if status == "available" && primary(&group).is_some() {
                    Observed::Ready(group)
                } else if status == "create-failed" || status == "deleting" {
                    Observed::Failed(Status::new(status))
                } else {
                    Observed::Pending(Status::new(status))
                })
            })
            .await;
        match result {
            Ok(group) => Ok(group),
            Err(err) if err.kind() == comind_core::ErrorKind::Cancelled => Err(err),
            // ElastiCache explains failures in its events, not in the group.
            Err(err) => {
                let events = self.recent_events().await;
                if events.is_empty() {
                    return Err(err);
                }
                let mut out = Error::new(err.kind(), format!("{}{events}", err.message()))
                    .transient(err.is_transient())
                    .with_resource(self.resource());
                if let Some(hint) = err.hint() {
                    out = out.with_hint(hint);
                }
                Err(out)
            }
        }
    }

    /// The last few ElastiCache events of the group, as `; recent events: …`, or
    /// nothing.
    async fn recent_events(&self) -> String {
        let out = self
            .clients
            .elasticache
            .describe_events()
            .source_type(aws_sdk_elasticache::types::SourceType::ReplicationGroup)
            .source_identifier(&self.name)
            .duration(120)
            .send()
            .await;
        match out {
            Ok(out) => {
                let mut events: Vec<_> = out.events().iter().collect();
                events.sort_by_key(|e| {
                    std::cmp::Reverse(e.date().map(|d| (d.secs(), d.subsec_nanos())))
                });
                let messages: Vec<&str> =
                    events.iter().take(3).filter_map(|e| e.message()).collect();
                if messages.is_empty() {
                    String::new()
                } else {
                    format!("; recent events: {}", messages.join(" | "))
                }
            }
            // Events only explain a failure; not having them must not hide it.
            Err(_) => String::new(),
        }
    }

    async fn wait_gone(&self) -> Result<()> {
        let wait = Wait::new(
            "replication-group",
            &self.name,
            "deleted",
            self.timeout,
            "aws.timeouts.cache",
        );
        wait.until(self.ctx, || async {
            Ok(match describe(self.clients, &self.name).await? {
                None => Observed::Ready(()),
                Some(group) => Observed::Pending(Status::new(status_of(&group))),
            })
        })
        .await
    }

    async fn wait_snapshot(&self, id: &str) -> Result<()> {
        let wait = Wait::new(
            "cache-snapshot",
            id,
            "available",
            self.timeout,
            "aws.timeouts.cache",
        );
        wait.until(self.ctx, || async {
            let out = self
                .clients
                .elasticache
                .describe_snapshots()
                .snapshot_name(id)
                .send()
                .await
                .found("elasticache:DescribeSnapshots", format!("snapshot {id}"))?;
            let Some(snap) = out.as_ref().and_then(|o| o.snapshots().first()) else {
                return Ok(Observed::Failed(Status::new("gone")));
            };
            let status = snap.snapshot_status().unwrap_or("unknown").to_string();
            Ok(match status.as_str() {
                "available" => Observed::Ready(()),
                "failed" | "deleting" => Observed::Failed(Status::new(status)),
                _ => Observed::Pending(Status::new(status)),
            })
        })
        .await
    }

    async fn destroy(&mut self, purge: bool) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        if let Some(group) = describe(self.clients, &self.name).await? {
            let live_tags = tags_of(
                self.clients,
                group.arn().unwrap_or_default(),
                &self.resource(),
            )
            .await?;
            if !self.env.owns(&live_tags, Some(COMPONENT)) {
                kept.push(Kept {
                    kind: "replication-group".into(),
                    name: self.name.clone(),
                    reason: "not created by Comind (no ownership tags); left untouched".into(),
                });
                return Ok(kept);
            }
            if status_of(&group) != "deleting" {
                if !purge && status_of(&group) == "available" {
                    // An explicit, tagged snapshot (rather than DeleteReplicationGroup's
                    // final snapshot) so that `up` can find it by its tags.
                    let id = snapshot::final_name(&self.name, SystemTime::now());
                    let mut snap_tags = tags::user_tags(&live_tags);
                    snap_tags.extend(tags::ownership(self.env, COMPONENT, None));
                    self.pass.record([Change::create("cache-snapshot", &id)
                        .because(format!("final snapshot of {}", self.name))]);
                    self.clients
                        .elasticache
                        .create_snapshot()
                        .replication_group_id(&self.name)
                        .snapshot_name(&id)
                        .set_tags(Some(tags::to_elasticache(&snap_tags)))
                        .send()
                        .await
                        .aws("elasticache:CreateSnapshot", self.resource())?;
                    self.wait_snapshot(&id).await?;
                }
                self.clients
                    .elasticache
                    .delete_replication_group()
                    .replication_group_id(&self.name)
                    .send()
                    .await
                    .found("elasticache:DeleteReplicationGroup", self.resource())?;
            }
            self.pass
                .record([Change::delete("replication-group", &self.name)]);
            self.wait_gone().await?;
        }
        self.ctx.checkpoint()?;

        let resource = format!("cache-subnet-group {}", self.name);
        let found = self
            .clients
            .elasticache
            .describe_cache_subnet_groups()
            .cache_subnet_group_name(&self.name)
            .send()
            .await
            .found("elasticache:DescribeCacheSubnetGroups", &resource)?;
        if let Some(group) = found.as_ref().and_then(|o| o.cache_subnet_groups().first()) {
            let live = tags_of(self.clients, group.arn().unwrap_or_default(), &resource).await?;
            if self.env.owns(&live, Some(COMPONENT)) {
                self.pass
                    .record([Change::delete("cache-subnet-group", &self.name)]);
                self.clients
                    .elasticache
                    .delete_cache_subnet_group()
                    .cache_subnet_group_name(&self.name)
                    .send()
                    .await
                    .found("elasticache:DeleteCacheSubnetGroup", &resource)?;
            }
        }

        for (snap, _) in final_snapshots(self.env, self.clients, &self.name).await? {
            let id = snap.snapshot_name().unwrap_or_default().to_string();
            if purge {
                self.pass.record([Change::delete("cache-snapshot", &id)]);
                self.clients
                    .elasticache
                    .delete_snapshot()
                    .snapshot_name(&id)
                    .send()
                    .await
                    .found("elasticache:DeleteSnapshot", format!("snapshot {id}"))?;
            } else {
                kept.push(snapshot::kept("cache-snapshot", &id, &self.name));
            }
        }
        if purge {
            self.env.state().remove_credentials(COMPONENT)?;
        }
        Ok(kept)
    }
}

#[async_trait]
impl ServiceBackend for ElastiCacheRedis {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Cache
    }

    fn deferred(&self, ctx: &PhaseContext) -> Option<String> {
        network::placement_deferred(ctx, "the cache subnet group and security group")
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new(network::ID)]
    }

    fn ready_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        check_settings(ctx.env())?;
        let clients = self.aws.clients(ctx.env()).await?;
        self.run(ctx, &clients, &mut Pass::plan())
            .check_names()
            .await
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        self.run(ctx, &clients, pass).converge().await
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        let name = ctx.env().resource_name(COMPONENT);
        let resource = format!("replication-group {name}");
        let Some(group) = describe(&clients, &name).await? else {
            return Err(Error::not_found(format!(
                "ElastiCache replication group {name} does not exist"
            ))
            .with_resource(resource)
            .with_hint("run `comind up`"));
        };
        let status = status_of(&group);
        if status == "available" && primary(&group).is_some() {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "ElastiCache replication group {name} is `{status}`"
            ))
            .transient(status != "create-failed")
            .with_resource(resource))
        }
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let clients = self.aws.clients(ctx.env()).await?;
        let env = ctx.env();
        let name = env.resource_name(COMPONENT);
        let resource = format!("replication-group {name}");
        let group = describe(&clients, &name).await?.ok_or_else(|| {
            Error::not_found(format!(
                "ElastiCache replication group {name} does not exist"
            ))
            .with_resource(resource.clone())
        })?;
        let (host, port) = primary(&group).ok_or_else(|| {
            Error::unavailable(format!(
                "replication group {name} has no primary endpoint yet"
            ))
            .with_resource(resource.clone())
        })?;
        let token: Credentials = env.state().credentials(COMPONENT, || {
            Err(Error::not_found(format!(
                "the auth token of replication group {name} is not in the state directory"
            ))
            .with_resource(resource.clone())
            .with_hint("run `comind up`, which sets a new one"))
        })?;
        Ok(ServiceEndpoint::Cache(CacheEndpoint {
            host,
            port,
            password: token.password,
            tls: true,
        }))
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut pass = Pass::apply();
        let kept = self
            .run(ctx, &clients, &mut pass)
            .destroy(options.purge)
            .await?;
        Ok(Destroyed {
            changes: pass.into_changes(),
            kept,
        })
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        let clients = self.aws.clients(ctx.env()).await.ok()?;
        let name = ctx.env().resource_name(COMPONENT);
        let group = describe(&clients, &name).await.ok()??;
        Some(format!(
            "ElastiCache replication group {name} is `{}` with {} node(s)",
            status_of(&group),
            group.member_clusters().len()
        ))
    }
}

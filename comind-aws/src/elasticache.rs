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
//! and the next `up` restores the newest snapshot (`down` keeps the newest
//! `services.cache.aws.final_snapshots`, default 1, removing older ones of ours);
//! `down --purge` deletes the group without one and removes every final snapshot.
//! The probe goes through the ElastiCache API (status `available` and a primary endpoint): the group is private,
//! so the operator's machine cannot open a Redis connection to it.
//!
//! What it shares with RDS (owned names, the subnet group, final snapshots, waits,
//! and the keep/purge teardown) is the lifecycle of [`crate::datastore`]; this module
//! holds only what differs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticache::types::{AuthTokenUpdateStrategyType, ReplicationGroup};
use comind_core::reconcile::Pass;
use comind_core::service::CacheEndpoint;
use comind_core::state::Credentials;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, PhaseContext, PhaseId, Result,
    ServiceBackend, ServiceEndpoint, ServiceKind,
};
use serde::Serialize;

use crate::clients::{Clients, Connector};
use crate::create::{self, single_attempt};
use crate::datastore::{self, Datastore, Event, FinalSnapshot, Listed, Run, SubnetGroup};
use crate::error::AwsResultExt;
use crate::network::{self, Placement};
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
}

fn primary(group: &ReplicationGroup) -> Option<(String, u16)> {
    let endpoint = group.node_groups().first()?.primary_endpoint()?;
    Some((
        endpoint.address()?.to_string(),
        u16::try_from(endpoint.port().unwrap_or(PORT)).unwrap_or(6379),
    ))
}

#[async_trait]
impl Datastore for ElastiCacheRedis {
    type Live = ReplicationGroup;

    const COMPONENT: &'static str = COMPONENT;
    const KIND: &'static str = "replication-group";
    const SUBNET_GROUP_KIND: &'static str = "cache-subnet-group";
    const SNAPSHOT_KIND: &'static str = "cache-snapshot";
    const LABEL: &'static str = "ElastiCache replication group";
    const SECURITY_GROUP_KEY: &'static str = network::CACHE_SECURITY_GROUP_ID;
    const TIMEOUT_SETTING: &'static str = "aws.timeouts.cache";
    const FINAL_SNAPSHOTS_SETTING: &'static str = "services.cache.aws.final_snapshots";

    fn aws(&self) -> &Connector {
        &self.aws
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn spec_hash(env: &Environment) -> String {
        let settings = &env.config().services.cache.aws;
        comind_core::environment::spec_hash(&Spec {
            node_type: &settings.node_type,
            replicas: settings.replicas,
            engine_version: &settings.engine_version,
        })
    }

    fn final_snapshots_kept(env: &Environment) -> u32 {
        env.config().services.cache.aws.final_snapshots
    }

    fn user(_env: &Environment) -> String {
        USER.to_string()
    }

    fn describe_new(env: &Environment) -> String {
        let settings = &env.config().services.cache.aws;
        format!(
            "Redis {}, {} with {} replica(s)",
            settings.engine_version, settings.node_type, settings.replicas
        )
    }

    fn status(live: &ReplicationGroup) -> &str {
        live.status().unwrap_or("unknown")
    }

    fn is_failed(status: &str) -> bool {
        status == "create-failed"
    }

    fn has_endpoint(live: &ReplicationGroup) -> bool {
        primary(live).is_some()
    }

    /// Only an available group can be snapshotted.
    fn can_snapshot(live: &ReplicationGroup) -> bool {
        Self::status(live) == "available"
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

    async fn tags(clients: &Clients, live: &ReplicationGroup) -> Result<Tags> {
        let resource = format!(
            "replication-group {}",
            live.replication_group_id().unwrap_or_default()
        );
        Self::tags_of(clients, live.arn().unwrap_or_default(), &resource).await
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

    async fn failed(run: &Run<'_, Self>, status: &str) -> Error {
        Error::unavailable(format!(
            "ElastiCache replication group {} is in status `{status}`",
            run.name
        ))
        .transient(false)
        .with_resource(run.resource())
        .with_hint("`comind down --only cache --purge`, then `comind up`")
    }

    async fn events(clients: &Clients, name: &str) -> Result<Vec<Event>> {
        let out = clients
            .elasticache
            .describe_events()
            .source_type(aws_sdk_elasticache::types::SourceType::ReplicationGroup)
            .source_identifier(name)
            .duration(120)
            .send()
            .await
            .aws(
                "elasticache:DescribeEvents",
                format!("replication-group {name}"),
            )?;
        Ok(out
            .events()
            .iter()
            .map(|e| datastore::event(e.date(), e.message()))
            .collect())
    }

    async fn describe_subnet_group(clients: &Clients, name: &str) -> Result<Option<SubnetGroup>> {
        let found = clients
            .elasticache
            .describe_cache_subnet_groups()
            .cache_subnet_group_name(name)
            .send()
            .await
            .found(
                "elasticache:DescribeCacheSubnetGroups",
                format!("cache-subnet-group {name}"),
            )?;
        Ok(found
            .as_ref()
            .and_then(|o| o.cache_subnet_groups().first())
            .map(|group| SubnetGroup {
                arn: group.arn().unwrap_or_default().to_string(),
                subnets: group
                    .subnets()
                    .iter()
                    .filter_map(|s| s.subnet_identifier().map(str::to_string))
                    .collect(),
            }))
    }

    async fn create_subnet_group(
        clients: &Clients,
        name: &str,
        subnets: &[String],
        tags: &Tags,
    ) -> Result<()> {
        clients
            .elasticache
            .create_cache_subnet_group()
            .cache_subnet_group_name(name)
            .cache_subnet_group_description("Comind: private subnets of the cache")
            .set_subnet_ids(Some(subnets.to_vec()))
            .set_tags(Some(tags::to_elasticache(tags)))
            .customize()
            .config_override(single_attempt::elasticache())
            .send()
            .await
            .aws(
                "elasticache:CreateCacheSubnetGroup",
                format!("cache-subnet-group {name}"),
            )?;
        Ok(())
    }

    async fn modify_subnet_group(clients: &Clients, name: &str, subnets: &[String]) -> Result<()> {
        clients
            .elasticache
            .modify_cache_subnet_group()
            .cache_subnet_group_name(name)
            .set_subnet_ids(Some(subnets.to_vec()))
            .send()
            .await
            .aws(
                "elasticache:ModifyCacheSubnetGroup",
                format!("cache-subnet-group {name}"),
            )?;
        Ok(())
    }

    async fn delete_subnet_group(clients: &Clients, name: &str) -> Result<()> {
        clients
            .elasticache
            .delete_cache_subnet_group()
            .cache_subnet_group_name(name)
            .send()
            .await
            .found(
                "elasticache:DeleteCacheSubnetGroup",
                format!("cache-subnet-group {name}"),
            )?;
        Ok(())
    }

    /// Every manual snapshot: those of a deleted group are listed by name only.
    async fn snapshots(clients: &Clients, name: &str) -> Result<Vec<Listed>> {
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
        Ok(out
            .snapshots()
            .iter()
            .filter_map(|s| {
                Some(Listed {
                    id: s.snapshot_name()?.to_string(),
                    arn: s.arn().unwrap_or_default().to_string(),
                    available: s.snapshot_status() == Some("available"),
                    taken: None,
                    tags: None,
                })
            })
            .collect())
    }

    async fn delete_snapshot(clients: &Clients, id: &str) -> Result<()> {
        clients
            .elasticache
            .delete_snapshot()
            .snapshot_name(id)
            .send()
            .await
            .found("elasticache:DeleteSnapshot", format!("snapshot {id}"))?;
        Ok(())
    }

    /// Creates the group, from `restore` if given, and waits until it is available.
    async fn create(
        run: &mut Run<'_, Self>,
        placement: &Placement,
        restore: Option<&FinalSnapshot>,
    ) -> Result<ReplicationGroup> {
        let settings = &run.env.config().services.cache.aws;
        let token = run.credentials()?;
        let replicas = i32::try_from(settings.replicas).unwrap_or(0);
        let ha = replicas > 0;
        let mut all_tags = run.spec_tags();
        let mut request = run
            .clients
            .elasticache
            .create_replication_group()
            .replication_group_id(&run.name)
            .replication_group_description(format!("Comind: Redis of {}", run.env.name()))
            .engine("redis")
            .engine_version(&settings.engine_version)
            .cache_node_type(&settings.node_type)
            .num_cache_clusters(1 + replicas)
            .automatic_failover_enabled(ha)
            .multi_az_enabled(ha)
            .transit_encryption_enabled(true)
            .at_rest_encryption_enabled(true)
            .auth_token(token.password.expose())
            .cache_subnet_group_name(&run.name)
            .security_group_ids(&placement.security_group)
            .port(PORT)
            .auto_minor_version_upgrade(true);
        if let Some(snap) = restore {
            // The user's own tags travel through the snapshot; ours are set anew.
            let mut restored = tags::user_tags(&snap.tags);
            restored.extend(all_tags);
            all_tags = restored;
            request = request.snapshot_name(&snap.id);
        }
        let request = request.set_tags(Some(tags::to_elasticache(&all_tags)));
        let resource = run.resource();
        // No idempotency token in ElastiCache: one attempt from the SDK, and a group
        // whose create's answer was lost (or that a dying run made) is found by name
        // and tags (see `create`).
        let run_ref = &*run;
        create::once(
            &resource,
            || async {
                request
                    .clone()
                    .customize()
                    .config_override(single_attempt::elasticache())
                    .send()
                    .await
                    .aws("elasticache:CreateReplicationGroup", &resource)
                    .map(drop)
            },
            || run_ref.find_ours(),
        )
        .await?;
        run.wait_available().await
    }

    /// Brings an available group to the settings.
    async fn drift(
        run: &mut Run<'_, Self>,
        live: &ReplicationGroup,
        _placement: Option<&Placement>,
    ) -> Result<()> {
        if live.at_rest_encryption_enabled() == Some(false)
            || live.transit_encryption_enabled() == Some(false)
        {
            return Err(Error::conflict(format!(
                "ElastiCache replication group {} is not encrypted in transit and at rest, \
                 which cannot be turned on in place",
                run.name
            ))
            .with_resource(run.resource())
            .with_hint("`comind down --only cache` (which snapshots it), then `comind up`"));
        }
        let settings = &run.env.config().services.cache.aws;
        if live
            .cache_node_type()
            .is_some_and(|t| t != settings.node_type)
            && run.pass.will(
                Change::update("replication-group", &run.name).because(format!(
                    "node type {} to {}",
                    live.cache_node_type().unwrap_or("?"),
                    settings.node_type
                )),
            )
        {
            run.clients
                .elasticache
                .modify_replication_group()
                .replication_group_id(&run.name)
                .cache_node_type(&settings.node_type)
                .apply_immediately(true)
                .send()
                .await
                .aws("elasticache:ModifyReplicationGroup", run.resource())?;
            run.wait_available().await?;
        }
        let want = i32::try_from(settings.replicas).unwrap_or(0);
        let have = i32::try_from(live.member_clusters().len()).unwrap_or(1) - 1;
        if have != want
            && run.pass.will(
                Change::update("replication-group", &run.name)
                    .because(format!("replicas {have} to {want}")),
            )
        {
            if want > have {
                run.clients
                    .elasticache
                    .increase_replica_count()
                    .replication_group_id(&run.name)
                    .new_replica_count(want)
                    .apply_immediately(true)
                    .send()
                    .await
                    .aws("elasticache:IncreaseReplicaCount", run.resource())?;
            } else {
                run.clients
                    .elasticache
                    .decrease_replica_count()
                    .replication_group_id(&run.name)
                    .new_replica_count(want)
                    .apply_immediately(true)
                    .send()
                    .await
                    .aws("elasticache:DecreaseReplicaCount", run.resource())?;
            }
            run.wait_available().await?;
        }
        if (live.auth_token_enabled() == Some(false) || !run.env.state().has_credentials(COMPONENT))
            && run.pass.will(
                Change::update("replication-group", &run.name)
                    .because("auth token set: the state directory held none"),
            )
        {
            let token = run.credentials()?;
            run.clients
                .elasticache
                .modify_replication_group()
                .replication_group_id(&run.name)
                .auth_token(token.password.expose())
                .auth_token_update_strategy(AuthTokenUpdateStrategyType::Rotate)
                .apply_immediately(true)
                .send()
                .await
                .aws("elasticache:ModifyReplicationGroup", run.resource())?;
            run.wait_available().await?;
        }
        let live_tags = Self::tags(run.clients, live).await?;
        let missing = tags::missing(&run.spec_tags(), &live_tags);
        if !missing.is_empty()
            && run
                .pass
                .will(Change::update("replication-group", &run.name).because("spec changed: tags"))
        {
            run.clients
                .elasticache
                .add_tags_to_resource()
                .resource_name(live.arn().unwrap_or_default())
                .set_tags(Some(tags::to_elasticache(&missing)))
                .send()
                .await
                .aws("elasticache:AddTagsToResource", run.resource())?;
        }
        Ok(())
    }

    async fn delete(
        run: &mut Run<'_, Self>,
        _live: &ReplicationGroup,
        live_tags: &Tags,
        final_snapshot: Option<&str>,
    ) -> Result<()> {
        if let Some(id) = final_snapshot {
            // An explicit, tagged snapshot (rather than DeleteReplicationGroup's final
            // snapshot) so that `up` can find it by its tags.
            let mut snap_tags = tags::user_tags(live_tags);
            snap_tags.extend(tags::ownership(run.env, COMPONENT, None));
            let snap_tags = tags::to_elasticache(&snap_tags);
            let resource = format!("{} {id}", Self::SNAPSHOT_KIND);
            let run_ref = &*run;
            // Like every create (see `create`): a snapshot whose create's answer was
            // lost is found by its name and tags, not taken twice.
            create::once(
                &resource,
                || async {
                    run_ref
                        .clients
                        .elasticache
                        .create_snapshot()
                        .replication_group_id(&run_ref.name)
                        .snapshot_name(id)
                        .set_tags(Some(snap_tags.clone()))
                        .customize()
                        .config_override(single_attempt::elasticache())
                        .send()
                        .await
                        .aws("elasticache:CreateSnapshot", &resource)
                        .map(drop)
                },
                || run_ref.our_snapshot(id),
            )
            .await?;
            run.wait_snapshot(id).await?;
        }
        run.clients
            .elasticache
            .delete_replication_group()
            .replication_group_id(&run.name)
            .send()
            .await
            .found("elasticache:DeleteReplicationGroup", run.resource())?;
        Ok(())
    }
}

impl Run<'_, ElastiCacheRedis> {
    /// The snapshot `id`, if it exists; the conflict when it is not ours.
    async fn our_snapshot(&self, id: &str) -> Result<Option<()>> {
        let resource = format!("{} {id}", ElastiCacheRedis::SNAPSHOT_KIND);
        let out = self
            .clients
            .elasticache
            .describe_snapshots()
            .snapshot_name(id)
            .send()
            .await
            .found("elasticache:DescribeSnapshots", &resource)?;
        let Some(snap) = out
            .as_ref()
            .and_then(|o| o.snapshots().first())
            .filter(|s| s.snapshot_name() == Some(id))
        else {
            return Ok(None);
        };
        let live =
            ElastiCacheRedis::tags_of(self.clients, snap.arn().unwrap_or_default(), &resource)
                .await?;
        tags::require_owned(
            self.env,
            COMPONENT,
            ElastiCacheRedis::SNAPSHOT_KIND,
            id,
            &live,
        )?;
        Ok(Some(()))
    }

    /// Waits until the snapshot `id` is available.
    async fn wait_snapshot(&self, id: &str) -> Result<()> {
        let wait = Wait::new(
            ElastiCacheRedis::SNAPSHOT_KIND,
            id,
            "available",
            self.service.timeout(),
            ElastiCacheRedis::TIMEOUT_SETTING,
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
        datastore::check_names(self, ctx).await
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        datastore::reconcile(self, ctx, pass).await
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        datastore::probe(self, ctx).await
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let clients = self.aws.clients(ctx.env()).await?;
        let env = ctx.env();
        let name = env.resource_name(COMPONENT);
        let resource = format!("replication-group {name}");
        let group = datastore::existing::<Self>(&clients, &name).await?;
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
        datastore::destroy(self, ctx, options).await
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        let clients = self.aws.clients(ctx.env()).await.ok()?;
        let name = ctx.env().resource_name(COMPONENT);
        let group = Self::describe(&clients, &name).await.ok()??;
        Some(format!(
            "ElastiCache replication group {name} is `{}` with {} node(s)",
            Self::status(&group),
            group.member_clusters().len()
        ))
    }
}

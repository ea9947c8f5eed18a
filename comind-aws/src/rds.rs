//! The `postgres` service on RDS.
//!
//! One PostgreSQL instance, `comind-<env>-postgres`, in a DB subnet group over the
//! private subnets, behind the database security group (which admits the cluster
//! only). Storage is encrypted, the instance is not publicly accessible, tags are
//! copied to snapshots, and deletion protection is on in production. The master
//! password is generated once and kept in the state directory (0600); it never
//! reaches a log, an event, an error or a tag.
//!
//! `down` takes a final snapshot (turning deletion protection off first, since `down`
//! of a production environment is already confirmed by name) and the next `up`
//! restores the newest one (`services.postgres.aws.final_snapshots` says how many
//! `down` keeps); `down --purge` deletes the instance without a snapshot and removes
//! every final snapshot.
//!
//! The probe goes through the RDS API (status `available` and an endpoint): the
//! instance is private, so the operator's machine cannot open a PostgreSQL connection
//! to it. Workloads in the cluster can.
//!
//! RDS creates one database at creation (the first of `services.postgres.databases`);
//! further databases need SQL from inside the VPC and are created by the platform's
//! in-cluster jobs.
//!
//! What it shares with ElastiCache (owned names, the subnet group, final snapshots, waits,
//! and the keep/purge teardown) is the lifecycle of [`crate::datastore`]; this module
//! holds only what differs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_rds::types::{DbInstance, SourceType};
use comind_core::reconcile::Pass;
use comind_core::service::PostgresEndpoint;
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

const COMPONENT: &str = "postgres";
const PORT: i32 = 5432;

/// Statuses an instance does not leave by itself.
const FAILED: &[&str] = &[
    "failed",
    "incompatible-network",
    "incompatible-option-group",
    "incompatible-parameters",
    "incompatible-restore",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "restore-error",
    "storage-full",
];

/// What defines the instance, hashed into its spec tag. Never a secret.
#[derive(Debug, Serialize)]
struct Spec<'a> {
    engine_version: &'a str,
    instance_class: &'a str,
    storage_gb: u32,
    backup_retention_days: u32,
    multi_az: bool,
    deletion_protection: bool,
}

/// PostgreSQL on Amazon RDS.
pub struct RdsPostgres {
    aws: Arc<Connector>,
    timeout: Duration,
}

impl std::fmt::Debug for RdsPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdsPostgres")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RdsPostgres {
    pub(crate) fn new(aws: Arc<Connector>, env: &Environment) -> Self {
        RdsPostgres {
            aws,
            timeout: env.config().aws.timeouts.database.get(),
        }
    }

    /// The master user's credentials of `env`'s RDS instance, from the state
    /// directory: for what only the administrator may do, such as a restore, which
    /// recreates the databases and their owner.
    ///
    /// # Errors
    /// `NotFound` before the first `up` made them; when the file cannot be read.
    pub fn master_credentials(env: &Environment) -> Result<Credentials> {
        env.state()
            .stored_credentials::<Credentials>(COMPONENT)?
            .ok_or_else(|| {
                let name = env.resource_name(COMPONENT);
                Error::not_found(format!(
                    "the master password of RDS instance {name} is not in the state directory {}",
                    env.state().path().display()
                ))
                .with_resource(format!("db-instance {name}"))
                .with_hint("run `comind up`, which sets it")
            })
    }
}

fn engine_version(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|p| p.parse().ok()).collect()
}

fn int(value: u32, field: &str) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        Error::invalid_input(format!("`{field}` = {value} is too large"))
            .with_resource(format!("comind.yaml {field}"))
    })
}

#[async_trait]
impl Datastore for RdsPostgres {
    type Live = DbInstance;

    const COMPONENT: &'static str = COMPONENT;
    const KIND: &'static str = "db-instance";
    const SUBNET_GROUP_KIND: &'static str = "db-subnet-group";
    const SNAPSHOT_KIND: &'static str = "db-snapshot";
    const LABEL: &'static str = "RDS instance";
    const SECURITY_GROUP_KEY: &'static str = network::DATABASE_SECURITY_GROUP_ID;
    const TIMEOUT_SETTING: &'static str = "aws.timeouts.database";
    const FINAL_SNAPSHOTS_SETTING: &'static str = "services.postgres.aws.final_snapshots";

    fn aws(&self) -> &Connector {
        &self.aws
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn spec_hash(env: &Environment) -> String {
        let settings = &env.config().services.postgres.aws;
        comind_core::environment::spec_hash(&Spec {
            engine_version: &settings.engine_version,
            instance_class: &settings.instance_class,
            storage_gb: settings.storage_gb,
            backup_retention_days: settings.backup_retention_days,
            multi_az: settings.multi_az,
            deletion_protection: env.is_production(),
        })
    }

    fn final_snapshots_kept(env: &Environment) -> u32 {
        env.config().services.postgres.aws.final_snapshots
    }

    fn user(env: &Environment) -> String {
        env.config().services.postgres.user.as_str().to_string()
    }

    fn describe_new(env: &Environment) -> String {
        let settings = &env.config().services.postgres.aws;
        format!(
            "PostgreSQL {}, {}, {} GiB",
            settings.engine_version, settings.instance_class, settings.storage_gb
        )
    }

    fn status(live: &DbInstance) -> &str {
        live.db_instance_status().unwrap_or("unknown")
    }

    fn is_failed(status: &str) -> bool {
        FAILED.contains(&status)
    }

    fn has_endpoint(live: &DbInstance) -> bool {
        live.endpoint().and_then(|e| e.address()).is_some()
    }

    async fn describe(clients: &Clients, name: &str) -> Result<Option<DbInstance>> {
        Ok(clients
            .rds
            .describe_db_instances()
            .db_instance_identifier(name)
            .send()
            .await
            .found("rds:DescribeDBInstances", format!("db-instance {name}"))?
            .and_then(|out| out.db_instances.and_then(|mut v| v.pop())))
    }

    async fn tags(_clients: &Clients, live: &DbInstance) -> Result<Tags> {
        Ok(tags::from_rds(live.tag_list()))
    }

    async fn tags_of(clients: &Clients, arn: &str, resource: &str) -> Result<Tags> {
        let out = clients
            .rds
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .aws("rds:ListTagsForResource", resource)?;
        Ok(tags::from_rds(out.tag_list()))
    }

    async fn failed(run: &Run<'_, Self>, status: &str) -> Error {
        Error::unavailable(format!(
            "RDS instance {} is in status `{status}`{}",
            run.name,
            run.recent_events().await
        ))
        .transient(false)
        .with_resource(run.resource())
        .with_hint("fix the cause shown by the RDS events, or restore it from a snapshot")
    }

    async fn events(clients: &Clients, name: &str) -> Result<Vec<Event>> {
        let out = clients
            .rds
            .describe_events()
            .source_type(SourceType::DbInstance)
            .source_identifier(name)
            .duration(120)
            .send()
            .await
            .aws("rds:DescribeEvents", format!("db-instance {name}"))?;
        Ok(out
            .events()
            .iter()
            .map(|e| datastore::event(e.date(), e.message()))
            .collect())
    }

    async fn describe_subnet_group(clients: &Clients, name: &str) -> Result<Option<SubnetGroup>> {
        let found = clients
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(name)
            .send()
            .await
            .found(
                "rds:DescribeDBSubnetGroups",
                format!("db-subnet-group {name}"),
            )?;
        Ok(found
            .as_ref()
            .and_then(|o| o.db_subnet_groups().first())
            .map(|group| SubnetGroup {
                arn: group.db_subnet_group_arn().unwrap_or_default().to_string(),
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
            .rds
            .create_db_subnet_group()
            .db_subnet_group_name(name)
            .db_subnet_group_description("Comind: private subnets of the database")
            .set_subnet_ids(Some(subnets.to_vec()))
            .set_tags(Some(tags::to_rds(tags)))
            .customize()
            .config_override(single_attempt::rds())
            .send()
            .await
            .aws("rds:CreateDBSubnetGroup", format!("db-subnet-group {name}"))?;
        Ok(())
    }

    async fn modify_subnet_group(clients: &Clients, name: &str, subnets: &[String]) -> Result<()> {
        clients
            .rds
            .modify_db_subnet_group()
            .db_subnet_group_name(name)
            .set_subnet_ids(Some(subnets.to_vec()))
            .send()
            .await
            .aws("rds:ModifyDBSubnetGroup", format!("db-subnet-group {name}"))?;
        Ok(())
    }

    async fn delete_subnet_group(clients: &Clients, name: &str) -> Result<()> {
        clients
            .rds
            .delete_db_subnet_group()
            .db_subnet_group_name(name)
            .send()
            .await
            .found("rds:DeleteDBSubnetGroup", format!("db-subnet-group {name}"))?;
        Ok(())
    }

    async fn snapshots(clients: &Clients, name: &str) -> Result<Vec<Listed>> {
        let out = clients
            .rds
            .describe_db_snapshots()
            .db_instance_identifier(name)
            .snapshot_type("manual")
            .send()
            .await
            .aws("rds:DescribeDBSnapshots", format!("db-snapshots of {name}"))?;
        Ok(out
            .db_snapshots()
            .iter()
            .filter_map(|s| {
                Some(Listed {
                    id: s.db_snapshot_identifier()?.to_string(),
                    arn: s.db_snapshot_arn().unwrap_or_default().to_string(),
                    available: s.status() == Some("available"),
                    taken: s
                        .snapshot_create_time()
                        .map(|t| (t.secs(), t.subsec_nanos())),
                    tags: Some(tags::from_rds(s.tag_list())),
                })
            })
            .collect())
    }

    async fn delete_snapshot(clients: &Clients, id: &str) -> Result<()> {
        clients
            .rds
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
            .found("rds:DeleteDBSnapshot", format!("db-snapshot {id}"))?;
        Ok(())
    }

    /// Creates the instance, or restores it from `restore`, and waits until it is
    /// available.
    async fn create(
        run: &mut Run<'_, Self>,
        placement: &Placement,
        restore: Option<&FinalSnapshot>,
    ) -> Result<DbInstance> {
        let had_credentials = run.env.state().has_credentials(COMPONENT);
        let credentials = run.credentials()?;
        let settings = &run.env.config().services.postgres.aws;
        let production = run.env.is_production();
        let resource = run.resource();
        // No idempotency token in RDS: one attempt from the SDK, and a create whose
        // answer was lost (or an instance a dying run made) is found by name and tags
        // (see `create`).
        match restore {
            Some(snapshot) => {
                // The user's own tags travel through the snapshot; ours are set anew.
                let mut restored = tags::user_tags(&snapshot.tags);
                restored.extend(run.spec_tags());
                let restored = tags::to_rds(&restored);
                let run = &*run;
                create::once(
                    &resource,
                    || async {
                        run.clients
                            .rds
                            .restore_db_instance_from_db_snapshot()
                            .db_instance_identifier(&run.name)
                            .db_snapshot_identifier(&snapshot.id)
                            .db_instance_class(&settings.instance_class)
                            .db_subnet_group_name(&run.name)
                            .vpc_security_group_ids(&placement.security_group)
                            .publicly_accessible(false)
                            .multi_az(settings.multi_az)
                            .storage_type("gp3")
                            .deletion_protection(production)
                            .copy_tags_to_snapshot(true)
                            .auto_minor_version_upgrade(true)
                            .set_tags(Some(restored.clone()))
                            .customize()
                            .config_override(single_attempt::rds())
                            .send()
                            .await
                            .aws("rds:RestoreDBInstanceFromDBSnapshot", &resource)
                            .map(drop)
                    },
                    || run.find_ours(),
                )
                .await?;
            }
            None => {
                let database = run
                    .env
                    .config()
                    .services
                    .postgres
                    .databases
                    .first()
                    .map(|d| d.as_str().to_string());
                let storage = int(settings.storage_gb, "services.postgres.aws.storage_gb")?;
                let retention = int(
                    settings.backup_retention_days,
                    "services.postgres.aws.backup_retention_days",
                )?;
                let instance_tags = tags::to_rds(&run.spec_tags());
                let run = &*run;
                create::once(
                    &resource,
                    || async {
                        run.clients
                            .rds
                            .create_db_instance()
                            .db_instance_identifier(&run.name)
                            .engine("postgres")
                            .engine_version(&settings.engine_version)
                            .db_instance_class(&settings.instance_class)
                            .allocated_storage(storage)
                            .storage_type("gp3")
                            .storage_encrypted(true)
                            .publicly_accessible(false)
                            .vpc_security_group_ids(&placement.security_group)
                            .db_subnet_group_name(&run.name)
                            .master_username(&credentials.username)
                            .master_user_password(credentials.password.expose())
                            .set_db_name(database.clone())
                            .port(PORT)
                            .backup_retention_period(retention)
                            .multi_az(settings.multi_az)
                            .deletion_protection(production)
                            .copy_tags_to_snapshot(true)
                            .auto_minor_version_upgrade(true)
                            .set_tags(Some(instance_tags.clone()))
                            .customize()
                            .config_override(single_attempt::rds())
                            .send()
                            .await
                            .aws("rds:CreateDBInstance", &resource)
                            .map(drop)
                    },
                    || run.find_ours(),
                )
                .await?;
            }
        }
        let db = run.wait_available().await?;
        if restore.is_some() && !had_credentials {
            // The snapshot carries the password of its time, which is lost with the
            // state directory; set the one just generated.
            run.pass.record([Change::update("db-instance", &run.name)
                .because("master password reset: the state directory held none")]);
            run.modify(|m| m.master_user_password(credentials.password.expose()))
                .await?;
            return run.wait_available().await;
        }
        Ok(db)
    }

    /// Brings a running instance to the settings, in one modification.
    async fn drift(
        run: &mut Run<'_, Self>,
        live: &DbInstance,
        placement: Option<&Placement>,
    ) -> Result<()> {
        if live.storage_encrypted() == Some(false) {
            return Err(Error::conflict(format!(
                "RDS instance {} is not encrypted, and encryption cannot be turned on in place",
                run.name
            ))
            .with_resource(run.resource())
            .with_hint(
                "take a snapshot, copy it with encryption, and restore it under this name",
            ));
        }
        let settings = &run.env.config().services.postgres.aws;
        let production = run.env.is_production();
        let mut reasons: Vec<String> = Vec::new();
        let mut request = run
            .clients
            .rds
            .modify_db_instance()
            .db_instance_identifier(&run.name)
            .apply_immediately(true);
        if live.db_instance_class() != Some(settings.instance_class.as_str()) {
            reasons.push(format!(
                "class {} to {}",
                live.db_instance_class().unwrap_or("?"),
                settings.instance_class
            ));
            request = request.db_instance_class(&settings.instance_class);
        }
        let storage = int(settings.storage_gb, "services.postgres.aws.storage_gb")?;
        // Storage only grows: RDS cannot shrink it, so a smaller setting is no drift.
        if live.allocated_storage().is_some_and(|s| s < storage) {
            reasons.push(format!(
                "storage {} GiB to {storage} GiB",
                live.allocated_storage().unwrap_or(0)
            ));
            request = request.allocated_storage(storage);
        }
        let want = engine_version(&settings.engine_version);
        let have = live.engine_version().and_then(engine_version);
        // A newer running version (automatic minor upgrades) is no drift.
        if let (Some(want), Some(have)) = (&want, &have)
            && want > have
        {
            reasons.push(format!(
                "PostgreSQL {} to {}",
                live.engine_version().unwrap_or("?"),
                settings.engine_version
            ));
            request = request
                .engine_version(&settings.engine_version)
                .allow_major_version_upgrade(want.first() != have.first());
        }
        let retention = int(
            settings.backup_retention_days,
            "services.postgres.aws.backup_retention_days",
        )?;
        if live.backup_retention_period() != Some(retention) {
            reasons.push(format!("backups kept {retention} days"));
            request = request.backup_retention_period(retention);
        }
        if live.multi_az() != Some(settings.multi_az) {
            reasons.push(format!("multi-AZ {}", settings.multi_az));
            request = request.multi_az(settings.multi_az);
        }
        if live.deletion_protection() != Some(production) {
            reasons.push(format!("deletion protection {production}"));
            request = request.deletion_protection(production);
        }
        if live.publicly_accessible() == Some(true) {
            reasons.push("no public access".to_string());
            request = request.publicly_accessible(false);
        }
        if let Some(placement) = placement {
            let groups: BTreeSet<&str> = live
                .vpc_security_groups()
                .iter()
                .filter_map(|g| g.vpc_security_group_id())
                .collect();
            if groups != BTreeSet::from([placement.security_group.as_str()]) {
                reasons.push("security group of the network".to_string());
                request = request.vpc_security_group_ids(&placement.security_group);
            }
        }
        if !run.env.state().has_credentials(COMPONENT) {
            reasons.push("master password reset: the state directory held none".to_string());
            if run.pass.is_apply() {
                let credentials = run.credentials()?;
                request = request.master_user_password(credentials.password.expose());
            }
        }
        if !reasons.is_empty()
            && run
                .pass
                .will(Change::update("db-instance", &run.name).because(reasons.join(", ")))
        {
            request
                .send()
                .await
                .aws("rds:ModifyDBInstance", run.resource())?;
            run.wait_available().await?;
        }
        let missing = tags::missing(&run.spec_tags(), &tags::from_rds(live.tag_list()));
        if !missing.is_empty()
            && run
                .pass
                .will(Change::update("db-instance", &run.name).because("spec changed: tags"))
        {
            run.clients
                .rds
                .add_tags_to_resource()
                .resource_name(live.db_instance_arn().unwrap_or_default())
                .set_tags(Some(tags::to_rds(&missing)))
                .send()
                .await
                .aws("rds:AddTagsToResource", run.resource())?;
        }
        Ok(())
    }

    async fn prepare_delete(run: &mut Run<'_, Self>, live: &DbInstance) -> Result<()> {
        if live.deletion_protection() == Some(true) {
            // `down` of a production environment was confirmed by name before any
            // phase ran; deletion protection guards against everyone else.
            run.pass.record([Change::update("db-instance", &run.name)
                .because("deletion protection turned off to delete it")]);
            run.modify(|m| m.deletion_protection(false)).await?;
        }
        Ok(())
    }

    async fn delete(
        run: &mut Run<'_, Self>,
        _live: &DbInstance,
        _live_tags: &Tags,
        final_snapshot: Option<&str>,
    ) -> Result<()> {
        let request = run
            .clients
            .rds
            .delete_db_instance()
            .db_instance_identifier(&run.name);
        // RDS takes the final snapshot itself, with the instance's tags.
        let request = match final_snapshot {
            Some(id) => request
                .skip_final_snapshot(false)
                .final_db_snapshot_identifier(id),
            None => request
                .skip_final_snapshot(true)
                .delete_automated_backups(true),
        };
        request
            .send()
            .await
            .found("rds:DeleteDBInstance", run.resource())?;
        Ok(())
    }
}

impl Run<'_, RdsPostgres> {
    async fn modify(
        &self,
        build: impl FnOnce(
            aws_sdk_rds::operation::modify_db_instance::builders::ModifyDBInstanceFluentBuilder,
        )
            -> aws_sdk_rds::operation::modify_db_instance::builders::ModifyDBInstanceFluentBuilder,
    ) -> Result<()> {
        let request = self
            .clients
            .rds
            .modify_db_instance()
            .db_instance_identifier(&self.name)
            .apply_immediately(true);
        build(request)
            .send()
            .await
            .aws("rds:ModifyDBInstance", self.resource())?;
        Ok(())
    }
}

#[async_trait]
impl ServiceBackend for RdsPostgres {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Postgres
    }

    fn deferred(&self, ctx: &PhaseContext) -> Option<String> {
        network::placement_deferred(ctx, "the subnet group and security group")
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new(network::ID)]
    }

    fn ready_timeout(&self) -> Duration {
        // `ensure` already waited for `available`; the probe only confirms it.
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
        let db = datastore::existing::<Self>(&clients, &name).await?;
        let endpoint = db.endpoint().ok_or_else(|| {
            Error::unavailable(format!("RDS instance {name} has no endpoint yet"))
                .with_resource(format!("db-instance {name}"))
        })?;
        // Read, never generate: the password must be the one the instance has.
        let credentials: Credentials = env.state().credentials(COMPONENT, || {
            Err(Error::not_found(format!(
                "the master password of RDS instance {name} is not in the state directory"
            ))
            .with_resource(format!("db-instance {name}"))
            .with_hint("run `comind up`, which resets it"))
        })?;
        Ok(ServiceEndpoint::Postgres(PostgresEndpoint {
            host: endpoint.address().unwrap_or_default().to_string(),
            port: endpoint
                .port()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(5432),
            username: db
                .master_username()
                .map_or(credentials.username, str::to_string),
            password: credentials.password,
            databases: env
                .config()
                .services
                .postgres
                .databases
                .iter()
                .map(|d| d.as_str().to_string())
                .collect(),
            require_tls: true,
        }))
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        datastore::destroy(self, ctx, options).await
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        let clients = self.aws.clients(ctx.env()).await.ok()?;
        let mut pass = Pass::plan();
        let run = Run::new(self, ctx, &clients, &mut pass);
        let db = Self::describe(&clients, &run.name).await.ok()??;
        Some(format!(
            "RDS instance {} is `{}`{}",
            run.name,
            Self::status(&db),
            run.recent_events().await
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_versions_compare_numerically() {
        assert!(engine_version("16.10") > engine_version("16.9"));
        assert!(engine_version("17.0") > engine_version("16.4"));
        assert_eq!(engine_version("16.x"), None);
    }
}

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
//! restores the newest one; `down --purge` deletes the instance without a snapshot
//! and removes every final snapshot.
//!
//! The probe goes through the RDS API (status `available` and an endpoint): the
//! instance is private, so the operator's machine cannot open a PostgreSQL connection
//! to it. Workloads in the cluster can.
//!
//! RDS creates one database at creation (the first of `services.postgres.databases`);
//! further databases need SQL from inside the VPC and are created by the platform's
//! in-cluster jobs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_rds::types::{DbInstance, DbSnapshot, SourceType};
use comind_core::reconcile::Pass;
use comind_core::service::PostgresEndpoint;
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

    /// How long a whole run of the phase may take: creating or restoring, and a
    /// modification after it.
    pub(crate) fn phase_timeout(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(10 * 60)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a PhaseContext,
        clients: &'a Clients,
        pass: &'a mut Pass,
    ) -> Run<'a> {
        let env = ctx.env();
        Run {
            ctx,
            env,
            clients,
            pass,
            name: env.resource_name(COMPONENT),
            timeout: self.timeout,
        }
    }
}

/// Checks the RDS settings of `env` without touching anything.
///
/// # Errors
/// `InvalidInput` naming the setting.
pub(crate) fn check_settings(env: &Environment) -> Result<()> {
    let rds = &env.config().services.postgres.aws;
    if rds.storage_gb < 20 {
        return Err(Error::invalid_input(format!(
            "RDS PostgreSQL needs at least 20 GiB of gp3 storage, got {}",
            rds.storage_gb
        ))
        .with_resource("comind.yaml services.postgres.aws.storage_gb"));
    }
    if rds.backup_retention_days > 35 {
        return Err(Error::invalid_input(format!(
            "RDS keeps automated backups for at most 35 days, got {}",
            rds.backup_retention_days
        ))
        .with_resource("comind.yaml services.postgres.aws.backup_retention_days"));
    }
    if engine_version(&rds.engine_version).is_none() {
        return Err(Error::invalid_input(format!(
            "`{}` is not a PostgreSQL version such as 16.4",
            rds.engine_version
        ))
        .with_resource("comind.yaml services.postgres.aws.engine_version"));
    }
    Ok(())
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

/// Our final snapshots of `name`, oldest first.
async fn final_snapshots(
    env: &Environment,
    clients: &Clients,
    name: &str,
) -> Result<Vec<DbSnapshot>> {
    let out = clients
        .rds
        .describe_db_snapshots()
        .db_instance_identifier(name)
        .snapshot_type("manual")
        .send()
        .await
        .aws("rds:DescribeDBSnapshots", format!("db-snapshots of {name}"))?;
    let prefix = snapshot::prefix(name);
    let mut snapshots: Vec<DbSnapshot> = out
        .db_snapshots()
        .iter()
        .filter(|s| {
            s.db_snapshot_identifier()
                .is_some_and(|id| id.starts_with(&prefix))
                && env.owns(&tags::from_rds(s.tag_list()), Some(COMPONENT))
        })
        .cloned()
        .collect();
    snapshots.sort_by(|a, b| {
        let time = |s: &DbSnapshot| {
            s.snapshot_create_time()
                .map(|t| (t.secs(), t.subsec_nanos()))
        };
        time(a).cmp(&time(b))
    });
    Ok(snapshots)
}

fn status_of(db: &DbInstance) -> &str {
    db.db_instance_status().unwrap_or("unknown")
}

/// One pass over the database: it records each change on `pass`, and makes it only
/// when `pass` applies.
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
        format!("db-instance {}", self.name)
    }

    fn placement(&self) -> Result<Option<Placement>> {
        network::placement(self.ctx, network::DATABASE_SECURITY_GROUP_ID)
    }

    fn spec_tags(&self) -> Tags {
        let settings = &self.env.config().services.postgres.aws;
        let hash = comind_core::environment::spec_hash(&Spec {
            engine_version: &settings.engine_version,
            instance_class: &settings.instance_class,
            storage_gb: settings.storage_gb,
            backup_retention_days: settings.backup_retention_days,
            multi_az: settings.multi_az,
            deletion_protection: self.env.is_production(),
        });
        tags::ownership(self.env, COMPONENT, Some(&hash))
    }

    async fn converge(&mut self) -> Result<()> {
        let placement = self.placement()?;
        self.subnet_group(placement.as_ref()).await?;
        self.ctx.checkpoint()?;
        self.instance(placement.as_ref()).await
    }

    async fn subnet_group(&mut self, placement: Option<&Placement>) -> Result<()> {
        let resource = format!("db-subnet-group {}", self.name);
        let found = self
            .clients
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(&self.name)
            .send()
            .await
            .found("rds:DescribeDBSubnetGroups", &resource)?;
        let live = found.as_ref().and_then(|o| o.db_subnet_groups().first());
        let Some(live) = live else {
            if self
                .pass
                .will(Change::create("db-subnet-group", &self.name))
            {
                let placement = placement.ok_or_else(|| {
                    Error::internal("the DB subnet group needs the network's subnets")
                })?;
                self.clients
                    .rds
                    .create_db_subnet_group()
                    .db_subnet_group_name(&self.name)
                    .db_subnet_group_description("Comind: private subnets of the database")
                    .set_subnet_ids(Some(placement.subnets.clone()))
                    .set_tags(Some(tags::to_rds(&tags::ownership(
                        self.env, COMPONENT, None,
                    ))))
                    .send()
                    .await
                    .aws("rds:CreateDBSubnetGroup", &resource)?;
            }
            return Ok(());
        };
        let arn = live.db_subnet_group_arn().unwrap_or_default();
        let live_tags = self.tags_of(arn, &resource).await?;
        tags::require_owned(
            self.env,
            COMPONENT,
            "db-subnet-group",
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
                    Change::update("db-subnet-group", &self.name)
                        .because("subnets differ from the network's"),
                )
            {
                self.clients
                    .rds
                    .modify_db_subnet_group()
                    .db_subnet_group_name(&self.name)
                    .set_subnet_ids(Some(placement.subnets.clone()))
                    .send()
                    .await
                    .aws("rds:ModifyDBSubnetGroup", &resource)?;
            }
        }
        Ok(())
    }

    async fn tags_of(&self, arn: &str, resource: &str) -> Result<Tags> {
        let out = self
            .clients
            .rds
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .aws("rds:ListTagsForResource", resource)?;
        Ok(tags::from_rds(out.tag_list()))
    }

    /// Stops the run before anything changes when our names are taken by resources
    /// that are not ours.
    async fn check_names(&self) -> Result<()> {
        let resource = format!("db-subnet-group {}", self.name);
        let found = self
            .clients
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(&self.name)
            .send()
            .await
            .found("rds:DescribeDBSubnetGroups", &resource)?;
        if let Some(group) = found.as_ref().and_then(|o| o.db_subnet_groups().first()) {
            let live = self
                .tags_of(group.db_subnet_group_arn().unwrap_or_default(), &resource)
                .await?;
            tags::require_owned(self.env, COMPONENT, "db-subnet-group", &self.name, &live)?;
        }
        if let Some(db) = describe(self.clients, &self.name).await? {
            let live = tags::from_rds(db.tag_list());
            tags::require_owned(self.env, COMPONENT, "db-instance", &self.name, &live)?;
        }
        Ok(())
    }

    fn credentials(&self) -> Result<Credentials> {
        let user = self
            .env
            .config()
            .services
            .postgres
            .user
            .as_str()
            .to_string();
        self.env
            .state()
            .credentials(COMPONENT, || Credentials::generate(user))
    }

    async fn instance(&mut self, placement: Option<&Placement>) -> Result<()> {
        let live = describe(self.clients, &self.name).await?;
        let live = match live {
            None => {
                let Some(db) = self.create(placement).await? else {
                    return Ok(());
                };
                db
            }
            Some(db) => {
                tags::require_owned(
                    self.env,
                    COMPONENT,
                    "db-instance",
                    &self.name,
                    &tags::from_rds(db.tag_list()),
                )?;
                let status = status_of(&db).to_string();
                if FAILED.contains(&status.as_str()) {
                    return Err(Error::unavailable(format!(
                        "RDS instance {} is in status `{status}`{}",
                        self.name,
                        self.recent_events().await
                    ))
                    .transient(false)
                    .with_resource(self.resource())
                    .with_hint(
                        "fix the cause shown by the RDS events, or restore it from a snapshot",
                    ));
                }
                if status == "deleting" {
                    if !self.pass.will(
                        Change::create("db-instance", &self.name)
                            .because("the previous one is still being deleted"),
                    ) {
                        return Ok(());
                    }
                    self.wait_gone().await?;
                    match self.create(placement).await? {
                        Some(db) => db,
                        None => return Ok(()),
                    }
                } else if status != "available" && self.pass.is_apply() {
                    self.wait_available().await?
                } else {
                    db
                }
            }
        };
        self.drift(&live, placement).await
    }

    /// Creates the instance, restoring the newest final snapshot if there is one.
    /// `None` while planning.
    async fn create(&mut self, placement: Option<&Placement>) -> Result<Option<DbInstance>> {
        let snapshots = final_snapshots(self.env, self.clients, &self.name).await?;
        let restore = snapshots
            .iter()
            .rev()
            .find(|s| s.status() == Some("available"))
            .cloned();
        let change = match &restore {
            Some(s) => Change::create("db-instance", &self.name).because(format!(
                "restored from final snapshot {}",
                s.db_snapshot_identifier().unwrap_or_default()
            )),
            None => {
                let settings = &self.env.config().services.postgres.aws;
                Change::create("db-instance", &self.name).because(format!(
                    "PostgreSQL {}, {}, {} GiB",
                    settings.engine_version, settings.instance_class, settings.storage_gb
                ))
            }
        };
        if !self.pass.will(change) {
            return Ok(None);
        }
        let placement =
            placement.ok_or_else(|| Error::internal("the database needs the network's subnets"))?;
        let had_credentials = self.env.state().has_credentials(COMPONENT);
        let credentials = self.credentials()?;
        let settings = &self.env.config().services.postgres.aws;
        let production = self.env.is_production();
        match &restore {
            Some(snapshot) => {
                // The user's own tags travel through the snapshot; ours are set anew.
                let mut restored = tags::user_tags(&tags::from_rds(snapshot.tag_list()));
                restored.extend(self.spec_tags());
                self.clients
                    .rds
                    .restore_db_instance_from_db_snapshot()
                    .db_instance_identifier(&self.name)
                    .db_snapshot_identifier(snapshot.db_snapshot_identifier().unwrap_or_default())
                    .db_instance_class(&settings.instance_class)
                    .db_subnet_group_name(&self.name)
                    .vpc_security_group_ids(&placement.security_group)
                    .publicly_accessible(false)
                    .multi_az(settings.multi_az)
                    .storage_type("gp3")
                    .deletion_protection(production)
                    .copy_tags_to_snapshot(true)
                    .auto_minor_version_upgrade(true)
                    .set_tags(Some(tags::to_rds(&restored)))
                    .send()
                    .await
                    .aws("rds:RestoreDBInstanceFromDBSnapshot", self.resource())?;
            }
            None => {
                let database = self
                    .env
                    .config()
                    .services
                    .postgres
                    .databases
                    .first()
                    .map(|d| d.as_str().to_string());
                self.clients
                    .rds
                    .create_db_instance()
                    .db_instance_identifier(&self.name)
                    .engine("postgres")
                    .engine_version(&settings.engine_version)
                    .db_instance_class(&settings.instance_class)
                    .allocated_storage(int(
                        settings.storage_gb,
                        "services.postgres.aws.storage_gb",
                    )?)
                    .storage_type("gp3")
                    .storage_encrypted(true)
                    .publicly_accessible(false)
                    .vpc_security_group_ids(&placement.security_group)
                    .db_subnet_group_name(&self.name)
                    .master_username(&credentials.username)
                    .master_user_password(credentials.password.expose())
                    .set_db_name(database)
                    .port(PORT)
                    .backup_retention_period(int(
                        settings.backup_retention_days,
                        "services.postgres.aws.backup_retention_days",
                    )?)
                    .multi_az(settings.multi_az)
                    .deletion_protection(production)
                    .copy_tags_to_snapshot(true)
                    .auto_minor_version_upgrade(true)
                    .set_tags(Some(tags::to_rds(&self.spec_tags())))
                    .send()
                    .await
                    .aws("rds:CreateDBInstance", self.resource())?;
            }
        }
        let db = self.wait_available().await?;
        if restore.is_some() && !had_credentials {
            // The snapshot carries the password of its time, which is lost with the
            // state directory; set the one just generated.
            self.pass.record([Change::update("db-instance", &self.name)
                .because("master password reset: the state directory held none")]);
            self.modify(|m| m.master_user_password(credentials.password.expose()))
                .await?;
            return Ok(Some(self.wait_available().await?));
        }
        Ok(Some(db))
    }

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

    /// Brings a running instance to the settings, in one modification.
    async fn drift(&mut self, live: &DbInstance, placement: Option<&Placement>) -> Result<()> {
        if live.storage_encrypted() == Some(false) {
            return Err(Error::conflict(format!(
                "RDS instance {} is not encrypted, and encryption cannot be turned on in place",
                self.name
            ))
            .with_resource(self.resource())
            .with_hint(
                "take a snapshot, copy it with encryption, and restore it under this name",
            ));
        }
        let settings = &self.env.config().services.postgres.aws;
        let production = self.env.is_production();
        let mut reasons: Vec<String> = Vec::new();
        let mut request = self
            .clients
            .rds
            .modify_db_instance()
            .db_instance_identifier(&self.name)
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
        if !self.env.state().has_credentials(COMPONENT) {
            reasons.push("master password reset: the state directory held none".to_string());
            if self.pass.is_apply() {
                let credentials = self.credentials()?;
                request = request.master_user_password(credentials.password.expose());
            }
        }
        if !reasons.is_empty()
            && self
                .pass
                .will(Change::update("db-instance", &self.name).because(reasons.join(", ")))
        {
            request
                .send()
                .await
                .aws("rds:ModifyDBInstance", self.resource())?;
            self.wait_available().await?;
        }
        let missing = tags::missing(&self.spec_tags(), &tags::from_rds(live.tag_list()));
        if !missing.is_empty()
            && self
                .pass
                .will(Change::update("db-instance", &self.name).because("spec changed: tags"))
        {
            self.clients
                .rds
                .add_tags_to_resource()
                .resource_name(live.db_instance_arn().unwrap_or_default())
                .set_tags(Some(tags::to_rds(&missing)))
                .send()
                .await
                .aws("rds:AddTagsToResource", self.resource())?;
        }
        Ok(())
    }

    /// The last few RDS events of the instance, as `; events: …`, or nothing.
    async fn recent_events(&self) -> String {
        let out = self
            .clients
            .rds
            .describe_events()
            .source_type(SourceType::DbInstance)
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

    async fn wait_available(&self) -> Result<DbInstance> {
        let wait = Wait::new(
            "db-instance",
            &self.name,
            "available",
            self.timeout,
            "aws.timeouts.database",
        );
        let result = wait
            .until(self.ctx, || async {
                let Some(db) = describe(self.clients, &self.name).await? else {
                    return Ok(Observed::Failed(Status::new("gone")));
                };
                let status = status_of(&db).to_string();
                Ok(if status == "available" && db.endpoint().is_some() {
                    Observed::Ready(db)
                } else if FAILED.contains(&status.as_str()) || status == "deleting" {
                    Observed::Failed(Status::new(status))
                } else {
                    Observed::Pending(Status::new(status))
                })
            })
            .await;
        match result {
            Ok(db) => Ok(db),
            Err(err) if err.kind() == comind_core::ErrorKind::Cancelled => Err(err),
            // RDS explains failures in its events, not in the instance.
            Err(err) => {
                let events = self.recent_events().await;
                if events.is_empty() {
                    Err(err)
                } else {
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
    }

    async fn wait_gone(&self) -> Result<()> {
        let wait = Wait::new(
            "db-instance",
            &self.name,
            "deleted",
            self.timeout,
            "aws.timeouts.database",
        );
        wait.until(self.ctx, || async {
            Ok(match describe(self.clients, &self.name).await? {
                None => Observed::Ready(()),
                Some(db) => Observed::Pending(Status::new(status_of(&db))),
            })
        })
        .await
    }

    async fn destroy(&mut self, purge: bool) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        if let Some(db) = describe(self.clients, &self.name).await? {
            if !self
                .env
                .owns(&tags::from_rds(db.tag_list()), Some(COMPONENT))
            {
                kept.push(Kept {
                    kind: "db-instance".into(),
                    name: self.name.clone(),
                    reason: "not created by Comind (no ownership tags); left untouched".into(),
                });
                return Ok(kept);
            }
            if status_of(&db) != "deleting" {
                if db.deletion_protection() == Some(true) {
                    // `down` of a production environment was confirmed by name before
                    // any phase ran; deletion protection guards against everyone else.
                    self.pass.record([Change::update("db-instance", &self.name)
                        .because("deletion protection turned off to delete it")]);
                    self.modify(|m| m.deletion_protection(false)).await?;
                }
                let request = self
                    .clients
                    .rds
                    .delete_db_instance()
                    .db_instance_identifier(&self.name);
                let request = if purge {
                    request
                        .skip_final_snapshot(true)
                        .delete_automated_backups(true)
                } else {
                    let id = snapshot::final_name(&self.name, SystemTime::now());
                    self.pass.record([Change::create("db-snapshot", &id)
                        .because(format!("final snapshot of {}", self.name))]);
                    request
                        .skip_final_snapshot(false)
                        .final_db_snapshot_identifier(id)
                };
                request
                    .send()
                    .await
                    .found("rds:DeleteDBInstance", self.resource())?;
            }
            self.pass
                .record([Change::delete("db-instance", &self.name)]);
            self.wait_gone().await?;
        }
        self.ctx.checkpoint()?;

        let resource = format!("db-subnet-group {}", self.name);
        let groups = self
            .clients
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(&self.name)
            .send()
            .await
            .found("rds:DescribeDBSubnetGroups", &resource)?;
        if let Some(group) = groups.as_ref().and_then(|o| o.db_subnet_groups().first()) {
            let live = self
                .tags_of(group.db_subnet_group_arn().unwrap_or_default(), &resource)
                .await?;
            if self.env.owns(&live, Some(COMPONENT)) {
                self.pass
                    .record([Change::delete("db-subnet-group", &self.name)]);
                self.clients
                    .rds
                    .delete_db_subnet_group()
                    .db_subnet_group_name(&self.name)
                    .send()
                    .await
                    .found("rds:DeleteDBSubnetGroup", &resource)?;
            }
        }

        for snap in final_snapshots(self.env, self.clients, &self.name).await? {
            let id = snap
                .db_snapshot_identifier()
                .unwrap_or_default()
                .to_string();
            if purge {
                self.pass.record([Change::delete("db-snapshot", &id)]);
                self.clients
                    .rds
                    .delete_db_snapshot()
                    .db_snapshot_identifier(&id)
                    .send()
                    .await
                    .found("rds:DeleteDBSnapshot", format!("db-snapshot {id}"))?;
            } else {
                kept.push(snapshot::kept("db-snapshot", &id, &self.name));
            }
        }
        if purge {
            // The password protected data that is gone now.
            self.env.state().remove_credentials(COMPONENT)?;
        }
        Ok(kept)
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
        let resource = format!("db-instance {name}");
        let Some(db) = describe(&clients, &name).await? else {
            return Err(
                Error::not_found(format!("RDS instance {name} does not exist"))
                    .with_resource(resource)
                    .with_hint("run `comind up`"),
            );
        };
        let status = status_of(&db);
        if status == "available" && db.endpoint().and_then(|e| e.address()).is_some() {
            Ok(())
        } else if FAILED.contains(&status) {
            Err(
                Error::unavailable(format!("RDS instance {name} is `{status}`"))
                    .transient(false)
                    .with_resource(resource),
            )
        } else {
            Err(
                Error::unavailable(format!("RDS instance {name} is `{status}`"))
                    .with_resource(resource),
            )
        }
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let clients = self.aws.clients(ctx.env()).await?;
        let env = ctx.env();
        let name = env.resource_name(COMPONENT);
        let db = describe(&clients, &name).await?.ok_or_else(|| {
            Error::not_found(format!("RDS instance {name} does not exist"))
                .with_resource(format!("db-instance {name}"))
        })?;
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
        let mut pass = Pass::plan();
        let run = self.run(ctx, &clients, &mut pass);
        let db = describe(&clients, &run.name).await.ok()??;
        Some(format!(
            "RDS instance {} is `{}`{}",
            run.name,
            status_of(&db),
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

    #[test]
    fn settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = comind_core::Config::default();
        config.services.postgres.aws.storage_gb = 5;
        let env = Environment::with_state_root(config, dir.path());
        assert!(
            check_settings(&env)
                .unwrap_err()
                .message()
                .contains("20 GiB")
        );
    }
}

//! The lifecycle RDS PostgreSQL and ElastiCache Redis share: a data service in the
//! environment's private subnets that `down` keeps through a final snapshot.
//!
//! Both services are one named resource (a DB instance, a replication group) in a
//! subnet group of the same name, behind a security group of the `network` phase, and
//! both follow the same rules, written here once:
//!
//! - every resource of ours carries our tags; a resource with our name but without
//!   them is someone else's and stops the run untouched (preflight, reconcile) or is
//!   left alone (`down`);
//! - the resource is created from the newest final snapshot of ours when there is one,
//!   so data survives `down` and `up`;
//! - a failed resource stops the run, one being deleted is waited out and created
//!   again, one that is busy is waited for before it is converged;
//! - `down` takes a final snapshot (named and tagged by [`snapshot`]) and keeps the
//!   newest final snapshots, as many as the service's `final_snapshots` setting says,
//!   removing older ones of ours; `down --purge` deletes without one, removes the
//!   final snapshots and forgets the generated secret.
//!
//! [`Datastore`] is what differs: the API calls, the settings and the drift each
//! service converges. [`RdsPostgres`](crate::RdsPostgres) and
//! [`ElastiCacheRedis`](crate::ElastiCacheRedis) implement it.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_smithy_types::DateTime;
use comind_core::state::Credentials;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, Pass, PhaseContext, Result,
};

use crate::clients::{Clients, Connector};
use crate::network::{self, Placement};
use crate::tags::{self, Tags};

mod down;
mod snapshot;
mod status;
mod subnet_group;

pub(crate) use snapshot::{FinalSnapshot, Listed};
pub(crate) use status::{existing, probe};

/// A subnet group as found.
pub(crate) struct SubnetGroup {
    pub(crate) arn: String,
    pub(crate) subnets: BTreeSet<String>,
}

/// An event of a resource, for the message of a failure: when, and what.
pub(crate) type Event = (Option<(i64, u32)>, Option<String>);

/// An event from its time and message, as both APIs give them.
pub(crate) fn event(at: Option<&DateTime>, message: Option<&str>) -> Event {
    (
        at.map(|d| (d.secs(), d.subsec_nanos())),
        message.map(str::to_string),
    )
}

/// What RDS and ElastiCache do differently; the lifecycle around it is [`Run`]'s.
///
/// Associated functions take the AWS clients rather than `self`: the API is the
/// service's, the state is in the account.
#[async_trait]
pub(crate) trait Datastore: Send + Sync + Sized + 'static {
    /// The resource as described by AWS (a DB instance, a replication group).
    type Live: Send + Sync;

    /// The ownership component of its resources.
    const COMPONENT: &'static str;
    /// The kind of the resource in changes and errors (`db-instance`).
    const KIND: &'static str;
    /// The kind of its subnet group (`db-subnet-group`).
    const SUBNET_GROUP_KIND: &'static str;
    /// The kind of its final snapshots (`db-snapshot`).
    const SNAPSHOT_KIND: &'static str;
    /// How messages name the resource (`RDS instance`).
    const LABEL: &'static str;
    /// The `network` output of its security group.
    const SECURITY_GROUP_KEY: &'static str;
    /// The setting of its timeout (`aws.timeouts.database`).
    const TIMEOUT_SETTING: &'static str;
    /// The setting of how many final snapshots `down` keeps.
    const FINAL_SNAPSHOTS_SETTING: &'static str;

    /// The AWS clients' source.
    fn aws(&self) -> &Connector;

    /// How long it may take to become available, or to go.
    fn timeout(&self) -> Duration;

    /// How long a whole run of its phase may take: a creation (a restore), or a
    /// snapshot and a deletion, and a modification after it.
    fn phase_timeout(&self) -> Duration {
        self.timeout() * 2 + Duration::from_secs(10 * 60)
    }

    /// The hash of the settings that define it, for its spec tag. Never a secret.
    fn spec_hash(env: &Environment) -> String;

    /// The user name of the generated credentials.
    fn user(env: &Environment) -> String;

    /// How many final snapshots `down` keeps, newest first (at least 1).
    fn final_snapshots_kept(env: &Environment) -> u32;

    /// Why a new one is created, when no final snapshot is restored: what it will be.
    fn describe_new(env: &Environment) -> String;

    /// Its status, as AWS spells it (`available`, `creating`, `deleting`...).
    fn status(live: &Self::Live) -> &str;

    /// Whether `status` is one the resource does not leave by itself.
    fn is_failed(status: &str) -> bool;

    /// Whether clients can reach it: an endpoint with an address.
    fn has_endpoint(live: &Self::Live) -> bool;

    /// Whether `down` can snapshot it in its current state.
    fn can_snapshot(_live: &Self::Live) -> bool {
        true
    }

    /// The resource named `name`, if there is one.
    async fn describe(clients: &Clients, name: &str) -> Result<Option<Self::Live>>;

    /// The tags of `live`.
    async fn tags(clients: &Clients, live: &Self::Live) -> Result<Tags>;

    /// The tags of the resource `arn` (`resource` names it in errors).
    async fn tags_of(clients: &Clients, arn: &str, resource: &str) -> Result<Tags>;

    /// The error that stops a run on a resource in the failed `status`.
    async fn failed(run: &Run<'_, Self>, status: &str) -> Error;

    /// The recent events of the resource `name`, in any order.
    async fn events(clients: &Clients, name: &str) -> Result<Vec<Event>>;

    /// The subnet group `name`, if there is one.
    async fn describe_subnet_group(clients: &Clients, name: &str) -> Result<Option<SubnetGroup>>;

    /// Creates the subnet group `name` over `subnets`.
    async fn create_subnet_group(
        clients: &Clients,
        name: &str,
        subnets: &[String],
        tags: &Tags,
    ) -> Result<()>;

    /// Moves the subnet group `name` onto `subnets`.
    async fn modify_subnet_group(clients: &Clients, name: &str, subnets: &[String]) -> Result<()>;

    /// Deletes the subnet group `name`.
    async fn delete_subnet_group(clients: &Clients, name: &str) -> Result<()>;

    /// The manual snapshots that may be final snapshots of `name`; [`Run`] keeps those
    /// named and tagged as ours.
    async fn snapshots(clients: &Clients, name: &str) -> Result<Vec<Listed>>;

    /// Deletes the snapshot `id`.
    async fn delete_snapshot(clients: &Clients, id: &str) -> Result<()>;

    /// Creates the resource (from `restore` if given) and waits until it is available.
    async fn create(
        run: &mut Run<'_, Self>,
        placement: &Placement,
        restore: Option<&FinalSnapshot>,
    ) -> Result<Self::Live>;

    /// Brings the available resource `live` to the settings, recording each change.
    async fn drift(
        run: &mut Run<'_, Self>,
        live: &Self::Live,
        placement: Option<&Placement>,
    ) -> Result<()>;

    /// Makes `live` deletable (RDS: deletion protection off), recording what changes.
    async fn prepare_delete(_run: &mut Run<'_, Self>, _live: &Self::Live) -> Result<()> {
        Ok(())
    }

    /// Deletes `live` (tagged `live_tags`), leaving the final snapshot `final_snapshot`
    /// if given (a purge, or a resource that cannot be snapshotted now, leaves none). It
    /// need not wait until the resource is gone.
    async fn delete(
        run: &mut Run<'_, Self>,
        live: &Self::Live,
        live_tags: &Tags,
        final_snapshot: Option<&str>,
    ) -> Result<()>;
}

/// The names of `service` are free or ours: what its preflight checks.
///
/// # Errors
/// A conflict naming a resource with our name but not our tags.
pub(crate) async fn check_names<S: Datastore>(service: &S, ctx: &PhaseContext) -> Result<()> {
    let clients = service.aws().clients(ctx.env()).await?;
    Run::new(service, ctx, &clients, &mut Pass::plan())
        .check_names()
        .await
}

/// Reconciles `service` as `pass`.
///
/// # Errors
/// When live state cannot be read, or (applying) a change cannot be made.
pub(crate) async fn reconcile<S: Datastore>(
    service: &S,
    ctx: &PhaseContext,
    pass: &mut Pass,
) -> Result<()> {
    let clients = service.aws().clients(ctx.env()).await?;
    Run::new(service, ctx, &clients, pass).converge().await
}

/// Removes what is ours of `service`, keeping its data unless `options.purge`.
///
/// # Errors
/// When something could not be removed.
pub(crate) async fn destroy<S: Datastore>(
    service: &S,
    ctx: &PhaseContext,
    options: DestroyOptions,
) -> Result<Destroyed> {
    let clients = service.aws().clients(ctx.env()).await?;
    let mut pass = Pass::apply();
    let kept = Run::new(service, ctx, &clients, &mut pass)
        .destroy(options.purge)
        .await?;
    Ok(Destroyed {
        changes: pass.into_changes(),
        kept,
    })
}

/// One pass over a data service: it records each change on `pass`, and makes it only
/// when `pass` applies.
pub(crate) struct Run<'a, S> {
    pub(crate) service: &'a S,
    pub(crate) ctx: &'a PhaseContext,
    pub(crate) env: &'a Environment,
    pub(crate) clients: &'a Clients,
    pub(crate) pass: &'a mut Pass,
    /// The name of the resource, its subnet group, and the prefix of its snapshots.
    pub(crate) name: String,
}

impl<'a, S: Datastore> Run<'a, S> {
    pub(crate) fn new(
        service: &'a S,
        ctx: &'a PhaseContext,
        clients: &'a Clients,
        pass: &'a mut Pass,
    ) -> Self {
        Run {
            service,
            ctx,
            env: ctx.env(),
            clients,
            pass,
            name: ctx.env().resource_name(S::COMPONENT),
        }
    }

    /// The resource, as errors name it.
    pub(crate) fn resource(&self) -> String {
        format!("{} {}", S::KIND, self.name)
    }

    /// Our tags with the hash of the settings.
    pub(crate) fn spec_tags(&self) -> Tags {
        tags::ownership(self.env, S::COMPONENT, Some(&S::spec_hash(self.env)))
    }

    /// The generated credentials, generated now if the state directory has none.
    pub(crate) fn credentials(&self) -> Result<Credentials> {
        let user = S::user(self.env);
        self.env
            .state()
            .credentials(S::COMPONENT, || Credentials::generate(user))
    }

    fn placement(&self) -> Result<Option<Placement>> {
        network::placement(self.ctx, S::SECURITY_GROUP_KEY)
    }

    /// Converges the subnet group and the resource.
    pub(crate) async fn converge(&mut self) -> Result<()> {
        let placement = self.placement()?;
        self.subnet_group(placement.as_ref()).await?;
        self.ctx.checkpoint()?;
        self.converge_resource(placement.as_ref()).await
    }

    /// Stops the run before anything changes when our names are taken by resources
    /// that are not ours.
    pub(crate) async fn check_names(&self) -> Result<()> {
        if let Some(group) = S::describe_subnet_group(self.clients, &self.name).await? {
            let resource = format!("{} {}", S::SUBNET_GROUP_KIND, self.name);
            let live = S::tags_of(self.clients, &group.arn, &resource).await?;
            tags::require_owned(
                self.env,
                S::COMPONENT,
                S::SUBNET_GROUP_KIND,
                &self.name,
                &live,
            )?;
        }
        if let Some(live) = S::describe(self.clients, &self.name).await? {
            let live = S::tags(self.clients, &live).await?;
            tags::require_owned(self.env, S::COMPONENT, S::KIND, &self.name, &live)?;
        }
        Ok(())
    }

    /// The resource, if it exists, checked to be ours: what a create that may have
    /// happened (its answer was lost, or AWS says the name is taken) looks for.
    ///
    /// # Errors
    /// The conflict of a resource with our name but not our tags.
    pub(crate) async fn find_ours(&self) -> Result<Option<S::Live>> {
        let Some(live) = S::describe(self.clients, &self.name).await? else {
            return Ok(None);
        };
        let live_tags = S::tags(self.clients, &live).await?;
        tags::require_owned(self.env, S::COMPONENT, S::KIND, &self.name, &live_tags)?;
        Ok(Some(live))
    }

    /// The resource: created (or restored) when missing, waited out when being
    /// deleted, waited for when busy, then brought to the settings.
    async fn converge_resource(&mut self, placement: Option<&Placement>) -> Result<()> {
        let live = match S::describe(self.clients, &self.name).await? {
            None => match self.create(placement).await? {
                Some(live) => live,
                None => return Ok(()),
            },
            Some(live) => {
                let live_tags = S::tags(self.clients, &live).await?;
                tags::require_owned(self.env, S::COMPONENT, S::KIND, &self.name, &live_tags)?;
                let status = S::status(&live).to_string();
                if S::is_failed(&status) {
                    return Err(S::failed(self, &status).await);
                }
                if status == "deleting" {
                    if !self.pass.will(
                        Change::create(S::KIND, &self.name)
                            .because("the previous one is still being deleted"),
                    ) {
                        return Ok(());
                    }
                    self.wait_gone().await?;
                    match self.create(placement).await? {
                        Some(live) => live,
                        None => return Ok(()),
                    }
                } else if status != "available" && self.pass.is_apply() {
                    self.wait_available().await?
                } else {
                    live
                }
            }
        };
        S::drift(self, &live, placement).await
    }

    /// Creates the resource, restoring the newest final snapshot if there is one.
    /// `None` while planning.
    async fn create(&mut self, placement: Option<&Placement>) -> Result<Option<S::Live>> {
        let restore = self
            .final_snapshots()
            .await?
            .into_iter()
            .rev()
            .find(|s| s.available);
        let why = match &restore {
            Some(s) => format!("restored from final snapshot {}", s.id),
            None => S::describe_new(self.env),
        };
        if !self
            .pass
            .will(Change::create(S::KIND, &self.name).because(why))
        {
            return Ok(None);
        }
        let placement = placement.ok_or_else(|| {
            Error::internal(format!(
                "{} {} needs the network's subnets",
                S::KIND,
                self.name
            ))
        })?;
        S::create(self, placement, restore.as_ref()).await.map(Some)
    }
}

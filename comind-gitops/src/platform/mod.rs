//! The platform's in-cluster phases. Each renders its objects with a pure function of
//! the environment and its dependencies' outputs, and converges them with the
//! [`apply`](crate::apply) engine: [`baseline`] (`platform/baseline`), [`services`]
//! (`platform/services`), [`registry`] (`platform/registry`), [`argocd`]
//! (`platform/argocd`), [`gitops`] (`platform/gitops`), [`addons`]
//! (`platform/addons`), [`load_balancer`] (`platform/load-balancer`),
//! [`load_balancer_controller`] (`platform/load-balancer-controller`),
//! [`sealing_key`] (`platform/sealing-key`) and [`backups`] (`platform/backups`).

pub mod addons;
pub mod argocd;
pub mod backups;
pub mod baseline;
pub mod gitops;
pub mod ingress;
pub mod load_balancer;
pub mod load_balancer_controller;
pub mod registry;
pub mod sealing_key;
pub mod services;

use std::sync::Arc;

use async_trait::async_trait;
use comind_core::reconcile::{Pass, Reconcile};
use comind_core::{Change, DestroyOptions, Destroyed, Outputs, PhaseContext, PhaseId, Result};

use crate::access::{ClusterAccess, Reach, Source};
use crate::apply::{Applier, Kind, ObjectSet};

/// How a phase renders its objects: a pure function of the environment and the
/// outputs of its dependencies.
pub(crate) type Render = Arc<dyn Fn(&PhaseContext) -> Result<ObjectSet> + Send + Sync>;

/// What a phase reads before it can render, once per run (a release's manifest,
/// generated credentials, a key already in the cluster): the render function stays
/// pure and synchronous. The client is the cluster's when it exists already (`None`
/// while a plan's cluster is made by the same run).
pub(crate) type Prepare = Arc<
    dyn for<'a> Fn(
            &'a PhaseContext,
            Option<&'a kube::Client>,
        ) -> futures_util::future::BoxFuture<'a, Result<()>>
        + Send
        + Sync,
>;

/// What `down` does outside the cluster once the phase's objects are gone (the
/// sealing key in its secret store: kept, or forgotten with `--purge`).
pub(crate) type Forget = Arc<
    dyn for<'a> Fn(
            &'a PhaseContext,
            DestroyOptions,
        ) -> futures_util::future::BoxFuture<'a, Result<Destroyed>>
        + Send
        + Sync,
>;

/// What an applying pass waits for once the objects are applied and ready by their
/// kinds' rules (Argo CD's Applications to be synced and healthy).
pub(crate) type Converge = Arc<
    dyn for<'a> Fn(
            &'a PhaseContext,
            &'a kube::Client,
        ) -> futures_util::future::BoxFuture<'a, Result<()>>
        + Send
        + Sync,
>;

/// A phase's health as more than its plan tells (Argo CD's view of its Applications).
pub(crate) type Report = Arc<
    dyn for<'a> Fn(
            &'a PhaseContext,
            &'a kube::Client,
        ) -> futures_util::future::BoxFuture<'a, Result<comind_core::PhaseStatus>>
        + Send
        + Sync,
>;

/// The outputs of a phase once its objects are converged (`None`: known after apply,
/// for a plan).
pub(crate) type Publish = Arc<dyn Fn(&PhaseContext) -> Result<Option<Outputs>> + Send + Sync>;

/// What an in-cluster phase is: everything but its cluster.
pub(crate) struct PhaseSpec {
    /// Its id.
    pub id: &'static str,
    /// A line for plans and progress.
    pub description: &'static str,
    /// The component on its objects' labels.
    pub component: &'static str,
    /// The kinds it owns: `down` removes what of them carries its labels.
    pub kinds: fn() -> Vec<Kind>,
    /// The phases it runs after, besides the cluster's.
    pub after: Vec<PhaseId>,
    /// Its objects.
    pub render: Render,
    /// What it reads before rendering, if anything.
    pub prepare: Option<Prepare>,
    /// Its outputs, if any.
    pub publish: Option<Publish>,
    /// What it waits for after applying, if anything.
    pub converge: Option<Converge>,
    /// Its health for `status`, if the plan does not tell enough.
    pub report: Option<Report>,
    /// What `down` does outside the cluster, if anything.
    pub forget: Option<Forget>,
}

impl PhaseSpec {
    /// A phase that only renders: nothing to prepare, no outputs.
    pub(crate) fn rendered(
        id: &'static str,
        description: &'static str,
        component: &'static str,
        kinds: fn() -> Vec<Kind>,
        after: Vec<PhaseId>,
        render: Render,
    ) -> Self {
        PhaseSpec {
            id,
            description,
            component,
            kinds,
            after,
            render,
            prepare: None,
            publish: None,
            converge: None,
            report: None,
            forget: None,
        }
    }
}

/// An in-cluster phase that is a render function plus the apply engine.
pub(crate) struct RenderedPhase {
    spec: PhaseSpec,
    access: ClusterAccess,
}

impl RenderedPhase {
    pub(crate) fn new(spec: PhaseSpec, access: ClusterAccess) -> Arc<Self> {
        Arc::new(RenderedPhase { spec, access })
    }
}

#[async_trait]
impl Reconcile for RenderedPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(self.spec.id)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        let mut deps = self.spec.after.clone();
        deps.extend(self.access.dependency());
        deps
    }

    fn description(&self) -> String {
        self.spec.description.to_string()
    }

    fn deferred(&self, ctx: &PhaseContext) -> Option<String> {
        match self.access.source() {
            Source::ClusterPhase
                if matches!(
                    ctx.input(
                        &PhaseId::new(comind_core::cluster::CLUSTER_PHASE_ID),
                        comind_core::cluster::KUBECONFIG
                    ),
                    comind_core::Input::KnownAfterApply
                ) =>
            {
                Some("the cluster is made by this run; its objects are listed as created".into())
            }
            // Objects standing on outputs this run changes.
            _ => (self.spec.render)(ctx).ok().and_then(|set| {
                let reasons: Vec<String> = set.pending.into_iter().map(|p| p.reason).collect();
                (!reasons.is_empty()).then(|| reasons.join("; "))
            }),
        }
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<Option<Outputs>> {
        let reach = self.access.reach(ctx).await?;
        if let Some(prepare) = &self.spec.prepare {
            let client = match &reach {
                Reach::Ready(cluster) => Some(&cluster.client),
                Reach::AfterApply => None,
            };
            prepare(ctx, client).await?;
        }
        let set = (self.spec.render)(ctx)?;
        match reach {
            Reach::AfterApply => {
                let pending = set.pending.iter().flat_map(|p| &p.objects);
                for object in set.objects.iter().chain(pending) {
                    let reference = object.reference();
                    pass.will(Change::create(reference.kind.clone(), reference.path()));
                }
                Ok(None)
            }
            Reach::Ready(cluster) => {
                ctx.progress(format!(
                    "applying {} objects to {}",
                    set.objects.len(),
                    cluster.description
                ));
                Applier::new(cluster.client.clone())
                    .reconcile(ctx, pass, &set)
                    .await?;
                if let (true, Some(converge)) = (pass.is_apply(), &self.spec.converge) {
                    converge(ctx, &cluster.client).await?;
                }
                match &self.spec.publish {
                    Some(publish) => publish(ctx),
                    None => Ok(Some(Outputs::new())),
                }
            }
        }
    }

    async fn status(&self, ctx: &PhaseContext) -> Result<Option<comind_core::PhaseStatus>> {
        let Some(report) = &self.spec.report else {
            return Ok(None);
        };
        match self.access.reach(ctx).await? {
            Reach::Ready(cluster) => report(ctx, &cluster.client).await.map(Some),
            Reach::AfterApply => Ok(None),
        }
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        let cluster = match self.access.source() {
            // The cluster phase removes the cluster, and everything in it with it.
            Source::ClusterPhase => None,
            Source::Configured { path, context } => {
                Some(crate::access::connect(path, context.as_deref()).await?)
            }
            Source::Provided => match self.access.reach(ctx).await? {
                Reach::Ready(cluster) => Some(cluster),
                Reach::AfterApply => None,
            },
        };
        let mut destroyed = match cluster {
            Some(cluster) => {
                Applier::new(cluster.client)
                    .destroy(ctx, self.spec.component, &(self.spec.kinds)())
                    .await?
            }
            None => Destroyed::default(),
        };
        if let Some(forget) = &self.spec.forget {
            let outside = forget(ctx, options).await?;
            destroyed.changes.extend(outside.changes);
            destroyed.kept.extend(outside.kept);
        }
        Ok(destroyed)
    }
}

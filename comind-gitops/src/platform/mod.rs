//! The platform's in-cluster phases. Each renders its objects with a pure function of
//! the environment and converges them with the [`apply`](crate::apply) engine.

pub mod baseline;

use std::sync::Arc;

use async_trait::async_trait;
use comind_core::reconcile::{Pass, Reconcile};
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Outputs, PhaseContext, PhaseId, Result,
};

use crate::access::{ClusterAccess, Reach, Source};
use crate::apply::{Applier, ObjectSet};

/// How a phase renders its objects.
pub(crate) type Render = fn(&Environment) -> Result<ObjectSet>;

/// An in-cluster phase that is a render function plus the apply engine.
pub(crate) struct RenderedPhase {
    id: &'static str,
    description: &'static str,
    after: Vec<PhaseId>,
    access: ClusterAccess,
    render: Render,
}

impl RenderedPhase {
    pub(crate) fn new(
        id: &'static str,
        description: &'static str,
        after: Vec<PhaseId>,
        access: ClusterAccess,
        render: Render,
    ) -> Arc<Self> {
        Arc::new(RenderedPhase {
            id,
            description,
            after,
            access,
            render,
        })
    }
}

#[async_trait]
impl Reconcile for RenderedPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(self.id)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        let mut deps = self.after.clone();
        deps.extend(self.access.dependency());
        deps
    }

    fn description(&self) -> String {
        self.description.to_string()
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
            _ => None,
        }
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<Option<Outputs>> {
        let set = (self.render)(ctx.env())?;
        match self.access.reach(ctx).await? {
            Reach::AfterApply => {
                for object in &set.objects {
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
                Applier::new(cluster.client)
                    .reconcile(ctx, pass, &set)
                    .await?;
                Ok(Some(Outputs::new()))
            }
        }
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        let set = (self.render)(ctx.env())?;
        let cluster = match self.access.source() {
            // The cluster phase removes the cluster, and everything in it with it.
            Source::ClusterPhase => return Ok(Destroyed::default()),
            Source::Configured { path, context } => {
                crate::access::connect(path, context.as_deref()).await?
            }
            Source::Provided => match self.access.reach(ctx).await? {
                Reach::Ready(cluster) => cluster,
                Reach::AfterApply => return Ok(Destroyed::default()),
            },
        };
        Applier::new(cluster.client)
            .destroy(ctx, &set.component, &set.kinds)
            .await
    }
}

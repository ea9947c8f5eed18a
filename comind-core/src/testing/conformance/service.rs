//! The conformance suite of [`ServiceBackend`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::assert_secrets_redacted;
use crate::Result;
use crate::environment::Environment;
use crate::output::Outputs;
use crate::phase::{Action, DestroyOptions, Operation, Phase, PhaseContext, PhaseId};
use crate::service::{ServiceBackend, ServiceEndpoint, ServicePhase};

/// What the service suite needs from an implementation's test.
#[async_trait]
pub trait ServiceFixture: Send + Sync {
    /// The backend under test.
    fn backend(&self) -> Arc<dyn ServiceBackend>;

    /// The environment it runs in. Use a name of its own so the suite cannot touch
    /// anything else.
    fn env(&self) -> Arc<Environment>;

    /// Outputs of the phases the backend depends on (a network), already applied.
    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        HashMap::new()
    }

    /// Names of every resource that carries this backend's ownership labels or tags,
    /// found through the real peer.
    async fn owned_resources(&self) -> Result<Vec<String>>;

    /// Writes `marker` into the service with a real client (a row, an object, a key,
    /// a message).
    async fn write_marker(&self, endpoint: &ServiceEndpoint, marker: &str) -> Result<()>;

    /// Whether `marker` is still there.
    async fn has_marker(&self, endpoint: &ServiceEndpoint, marker: &str) -> Result<bool>;
}

fn ctx(
    fixture: &dyn ServiceFixture,
    backend: &Arc<dyn ServiceBackend>,
    op: Operation,
) -> PhaseContext {
    PhaseContext::standalone(backend.id(), op, fixture.env(), fixture.inputs())
}

async fn owned(fixture: &dyn ServiceFixture, step: &str) -> Vec<String> {
    match fixture.owned_resources().await {
        Ok(mut names) => {
            names.sort();
            names
        }
        Err(err) => panic!("{step}: listing owned resources failed: {err}"),
    }
}

async fn endpoint(
    backend: &Arc<dyn ServiceBackend>,
    ctx: &PhaseContext,
    step: &str,
) -> ServiceEndpoint {
    match backend.endpoint(ctx).await {
        Ok(endpoint) => endpoint,
        Err(err) => panic!("{step}: endpoint failed: {err}"),
    }
}

/// Runs the suite: from nothing, the plan lists only creations and the first apply does
/// exactly those, and the probe passes; outputs are
/// complete and secrets redacted; ensure twice is a no-op; destroy removes what was
/// created and keeps the data; destroy twice is harmless; data survives a destroy and
/// a new ensure; purge removes everything, data included. Leaves nothing behind.
///
/// # Panics
/// On the first step that fails, naming it.
pub async fn service_suite(fixture: &dyn ServiceFixture) {
    let backend = fixture.backend();
    let kind = backend.kind();
    let phase = ServicePhase::new(backend.clone());
    let apply_ctx = ctx(fixture, &backend, Operation::Apply);
    let plan_ctx = ctx(fixture, &backend, Operation::Plan);
    let destroy_ctx = ctx(fixture, &backend, Operation::Destroy);
    let keep = DestroyOptions { purge: false };
    let purge = DestroyOptions { purge: true };

    // Start from nothing.
    if let Err(err) = phase.destroy(&destroy_ctx, purge).await {
        panic!("setup: purging leftovers failed: {err}");
    }
    let leftovers = owned(fixture, "setup").await;
    assert!(
        leftovers.is_empty(),
        "setup: resources left after purge: {leftovers:?}"
    );

    let plan = match phase.plan(&plan_ctx).await {
        Ok(plan) => plan,
        Err(err) => panic!("plan on nothing: {err}"),
    };
    assert!(
        !plan.changes.is_empty(),
        "plan on nothing: expected changes, got none"
    );
    assert!(
        plan.changes.iter().all(|c| c.action == Action::Create),
        "plan on nothing: expected only creations, got {:?}",
        plan.changes
    );
    assert!(
        plan.outputs.is_none(),
        "plan on nothing: outputs must be known after apply"
    );

    let first = match phase.apply(&apply_ctx).await {
        Ok(applied) => applied,
        Err(err) => panic!("first ensure: {err}"),
    };
    assert!(
        !first.changes.is_empty(),
        "first ensure: reported no changes"
    );
    // One reconcile function plans and applies: the plan named what apply did.
    let said: std::collections::BTreeSet<_> = plan
        .changes
        .iter()
        .map(|c| (c.action, c.kind.clone(), c.name.clone()))
        .collect();
    let done: std::collections::BTreeSet<_> = first
        .changes
        .iter()
        .map(|c| (c.action, c.kind.clone(), c.name.clone()))
        .collect();
    assert_eq!(
        said, done,
        "the plan on nothing must list what the first apply does"
    );
    if let Err(err) = backend.probe(&apply_ctx).await {
        panic!("probe after ensure: {err}");
    }
    for key in kind.required_outputs() {
        assert!(
            first.outputs.get(key).is_some(),
            "outputs: `{key}` is missing for {kind}"
        );
    }
    for key in kind.secret_outputs() {
        if let Some(value) = first.outputs.get(key) {
            assert!(value.is_secret(), "outputs: `{key}` must be a secret");
        }
    }
    assert_secrets_redacted(&first.outputs, "outputs");
    // The in-cluster layer reads the outputs back: they must describe the endpoint
    // and say where the cluster reaches it.
    match crate::ServiceEndpoint::from_outputs(kind, &first.outputs) {
        Ok(endpoint) => {
            for (key, value) in endpoint.to_outputs().iter() {
                assert_eq!(
                    first.outputs.get(key),
                    Some(value),
                    "outputs: `{key}` does not read back as the endpoint's"
                );
            }
        }
        Err(err) => panic!("outputs: do not read back as a {kind} endpoint: {err}"),
    }
    if let Err(err) = crate::service::ClusterTarget::from_outputs(kind, &first.outputs) {
        panic!("outputs: no cluster target: {err}");
    }
    let created = owned(fixture, "after ensure").await;
    assert!(
        !created.is_empty(),
        "after ensure: no resource carries the ownership labels"
    );

    let second = match phase.apply(&apply_ctx).await {
        Ok(applied) => applied,
        Err(err) => panic!("second ensure: {err}"),
    };
    assert!(
        second.changes.is_empty(),
        "second ensure: expected no changes, got {:?}",
        second.changes
    );
    assert_eq!(
        second.outputs, first.outputs,
        "second ensure: outputs changed"
    );
    let plan = match phase.plan(&plan_ctx).await {
        Ok(plan) => plan,
        Err(err) => panic!("plan after ensure: {err}"),
    };
    assert!(
        plan.changes.is_empty(),
        "plan after ensure: expected none, got {:?}",
        plan.changes
    );
    assert_eq!(
        plan.outputs.as_ref(),
        Some(&first.outputs),
        "plan after ensure: outputs must be known and equal"
    );

    let marker = format!("comind-conformance-{:08x}", fastrand::u32(..));
    let ep = endpoint(&backend, &apply_ctx, "write marker").await;
    if let Err(err) = fixture.write_marker(&ep, &marker).await {
        panic!("write marker: {err}");
    }

    let destroyed = match phase.destroy(&destroy_ctx, keep).await {
        Ok(destroyed) => destroyed,
        Err(err) => panic!("destroy: {err}"),
    };
    assert!(
        !destroyed.changes.is_empty(),
        "destroy: reported no changes"
    );
    assert!(
        !destroyed.kept.is_empty(),
        "destroy: kept no data (it must unless purging)"
    );
    let remaining = owned(fixture, "after destroy").await;
    for name in &remaining {
        assert!(
            destroyed.kept.iter().any(|k| &k.name == name),
            "after destroy: `{name}` is still there but not reported as kept"
        );
    }
    match phase.destroy(&destroy_ctx, keep).await {
        Ok(again) => assert!(
            again.changes.is_empty(),
            "destroy twice: expected no changes, got {:?}",
            again.changes
        ),
        Err(err) => panic!("destroy twice: {err}"),
    }
    match phase.plan(&plan_ctx).await {
        Ok(plan) => assert!(
            !plan.changes.is_empty(),
            "plan after destroy: expected changes"
        ),
        Err(err) => panic!("plan after destroy: {err}"),
    }

    if let Err(err) = phase.apply(&apply_ctx).await {
        panic!("ensure after destroy: {err}");
    }
    let ep = endpoint(&backend, &apply_ctx, "ensure after destroy").await;
    match fixture.has_marker(&ep, &marker).await {
        Ok(found) => assert!(found, "data after destroy and ensure: the marker is gone"),
        Err(err) => panic!("read marker after destroy and ensure: {err}"),
    }

    match phase.destroy(&destroy_ctx, purge).await {
        Ok(purged) => assert!(purged.kept.is_empty(), "purge: kept {:?}", purged.kept),
        Err(err) => panic!("purge: {err}"),
    }
    let remaining = owned(fixture, "after purge").await;
    assert!(
        remaining.is_empty(),
        "after purge: still there: {remaining:?}"
    );
    match phase.destroy(&destroy_ctx, purge).await {
        Ok(again) => assert!(again.changes.is_empty(), "purge twice: {:?}", again.changes),
        Err(err) => panic!("purge twice: {err}"),
    }

    if let Err(err) = phase.apply(&apply_ctx).await {
        panic!("ensure after purge: {err}");
    }
    let ep = endpoint(&backend, &apply_ctx, "ensure after purge").await;
    match fixture.has_marker(&ep, &marker).await {
        Ok(found) => assert!(!found, "data after purge: the marker survived a purge"),
        Err(err) => panic!("read marker after purge: {err}"),
    }
    if let Err(err) = phase.destroy(&destroy_ctx, purge).await {
        panic!("cleanup: {err}");
    }
}

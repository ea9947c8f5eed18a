//! The conformance suite of [`Phase`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::assert_secrets_redacted;
use crate::Result;
use crate::environment::Environment;
use crate::output::Outputs;
use crate::phase::{DestroyOptions, Operation, Phase, PhaseContext, PhaseId};

/// What the phase suite needs from an implementation's test.
#[async_trait]
pub trait PhaseFixture: Send + Sync {
    /// The phase under test.
    fn phase(&self) -> Arc<dyn Phase>;

    /// The environment it runs in; a name of its own.
    fn env(&self) -> Arc<Environment>;

    /// Outputs of its dependencies, already applied.
    fn inputs(&self) -> HashMap<PhaseId, Outputs> {
        HashMap::new()
    }

    /// Names of every resource carrying the phase's ownership labels or tags, found
    /// through the real peer.
    async fn owned_resources(&self) -> Result<Vec<String>>;
}

/// Runs the suite: plan changes nothing and shows creations; apply creates; apply
/// twice is a no-op; plan after apply is empty with known outputs; secrets are
/// redacted; destroy removes what was created (or reports it kept); destroy twice is
/// harmless. Leaves nothing behind.
///
/// # Panics
/// On the first step that fails, naming it.
pub async fn phase_suite(fixture: &dyn PhaseFixture) {
    let phase = fixture.phase();
    let id = phase.id();
    let ctx = |op| PhaseContext::standalone(id.clone(), op, fixture.env(), fixture.inputs());
    let purge = DestroyOptions { purge: true };
    let owned = || async {
        match fixture.owned_resources().await {
            Ok(names) => names,
            Err(err) => panic!("listing owned resources of `{id}` failed: {err}"),
        }
    };

    if let Err(err) = phase.destroy(&ctx(Operation::Destroy), purge).await {
        panic!("setup: purging leftovers of `{id}` failed: {err}");
    }
    assert!(
        owned().await.is_empty(),
        "setup: `{id}` left resources after purge"
    );

    let plan = match phase.plan(&ctx(Operation::Plan)).await {
        Ok(plan) => plan,
        Err(err) => panic!("plan of `{id}` on nothing: {err}"),
    };
    assert!(
        !plan.changes.is_empty(),
        "plan of `{id}` on nothing: expected changes"
    );
    assert!(owned().await.is_empty(), "plan of `{id}` created something");

    let first = match phase.apply(&ctx(Operation::Apply)).await {
        Ok(applied) => applied,
        Err(err) => panic!("first apply of `{id}`: {err}"),
    };
    assert!(
        !first.changes.is_empty(),
        "first apply of `{id}`: no changes reported"
    );
    assert_secrets_redacted(&first.outputs, &format!("outputs of `{id}`"));
    assert!(
        !owned().await.is_empty(),
        "apply of `{id}`: nothing carries its labels"
    );

    let second = match phase.apply(&ctx(Operation::Apply)).await {
        Ok(applied) => applied,
        Err(err) => panic!("second apply of `{id}`: {err}"),
    };
    assert!(
        second.changes.is_empty(),
        "second apply of `{id}`: expected no changes, got {:?}",
        second.changes
    );
    assert_eq!(
        second.outputs, first.outputs,
        "second apply of `{id}`: outputs changed"
    );

    let plan = match phase.plan(&ctx(Operation::Plan)).await {
        Ok(plan) => plan,
        Err(err) => panic!("plan of `{id}` after apply: {err}"),
    };
    assert!(
        plan.is_empty(),
        "plan of `{id}` after apply: {:?}",
        plan.changes
    );
    assert_eq!(
        plan.outputs.as_ref(),
        Some(&first.outputs),
        "plan of `{id}`: outputs"
    );

    let destroyed = match phase
        .destroy(&ctx(Operation::Destroy), DestroyOptions::default())
        .await
    {
        Ok(destroyed) => destroyed,
        Err(err) => panic!("destroy of `{id}`: {err}"),
    };
    assert!(
        !destroyed.changes.is_empty(),
        "destroy of `{id}`: no changes reported"
    );
    for name in owned().await {
        assert!(
            destroyed.kept.iter().any(|k| k.name == name),
            "destroy of `{id}`: `{name}` remains but is not reported as kept"
        );
    }
    match phase
        .destroy(&ctx(Operation::Destroy), DestroyOptions::default())
        .await
    {
        Ok(again) => assert!(
            again.changes.is_empty(),
            "destroy twice of `{id}`: {:?}",
            again.changes
        ),
        Err(err) => panic!("destroy twice of `{id}`: {err}"),
    }
    if let Err(err) = phase.destroy(&ctx(Operation::Destroy), purge).await {
        panic!("cleanup of `{id}`: {err}");
    }
    assert!(
        owned().await.is_empty(),
        "cleanup of `{id}`: resources left"
    );
}

//! Waiting for resources, through the product's real code and the SDK.
//!
//! moto makes everything available at once, so these tests script the statuses moto
//! reports (hook 7 of `moto_launcher.py`): an RDS instance that goes `creating`,
//! `backing-up`, `available`; one that fails; one that never becomes available.

use std::collections::HashMap;
use std::time::Duration;

use comind_core::config::DurationSetting;
use comind_core::event::Event;
use comind_core::{ErrorKind, Operation, Phase, PhaseContext, PhaseId, ServiceKind, ServicePhase};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;
use serde_json::json;

use crate::support::{self, CallLog};

async fn database_phase(
    moto: &Moto,
    name: &str,
    state: &std::path::Path,
    timeout: Duration,
) -> (ServicePhase<dyn comind_core::ServiceBackend>, PhaseContext) {
    let env = support::env(name, state, |c| {
        c.aws.timeouts.database = DurationSetting::new(timeout);
    });
    let provider = support::provider(moto, &CallLog::default());
    let network = support::apply(&provider, &env, "network", HashMap::new()).await;
    let phase = ServicePhase::new(provider.backend(ServiceKind::Postgres, &env));
    let ctx = PhaseContext::standalone(
        PhaseId::new("postgres"),
        Operation::Apply,
        env,
        HashMap::from([(PhaseId::new("network"), network)]),
    );
    (phase, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_is_followed_through_its_statuses_with_progress() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let (phase, ctx) =
        database_phase(&moto, "wait-ok", state.path(), Duration::from_secs(60)).await;
    moto.script(json!({
        "db-instance:comind-wait-ok-postgres": ["creating", "backing-up", "available"]
    }));
    let mut events = ctx.events().subscribe();
    let applied = phase.apply(&ctx).await.unwrap();
    assert!(applied.outputs.get("DATABASE_URL").is_some());
    let mut progress = Vec::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseProgress { message, .. } = &record.event {
            progress.push(message.clone());
        }
    }
    assert!(
        progress
            .iter()
            .any(|m| m.contains("comind-wait-ok-postgres") && m.contains("`creating`")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|m| m.contains("`backing-up`")),
        "{progress:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_database_ends_the_wait_with_its_status_and_the_rds_events() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let (phase, ctx) =
        database_phase(&moto, "wait-bad", state.path(), Duration::from_secs(60)).await;
    moto.script(json!({
        "db-instance:comind-wait-bad-postgres": ["creating", "incompatible-network"]
    }));
    let err = phase.apply(&ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        !err.is_transient(),
        "a failed instance is not retried: {err}"
    );
    assert!(err.message().contains("`incompatible-network`"), "{err}");
    assert!(
        err.message().contains("recent events: "),
        "the AWS message: {err}"
    );
    assert_eq!(err.resource(), Some("db-instance comind-wait-bad-postgres"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_becomes_available_times_out_with_its_last_status() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let (phase, ctx) =
        database_phase(&moto, "wait-slow", state.path(), Duration::from_secs(3)).await;
    moto.script(json!({ "db-instance:comind-wait-slow-postgres": ["creating"] }));
    let started = std::time::Instant::now();
    let err = phase.apply(&ctx).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        err.message().contains("did not become available within 3s"),
        "{err}"
    );
    assert!(
        err.message().contains("last status was `creating`"),
        "{err}"
    );
    assert!(
        err.hint().unwrap().contains("aws.timeouts.database"),
        "{err}"
    );
}

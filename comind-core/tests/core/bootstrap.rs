//! The bootstrap facade: lock, event log, production guards, configuration checks.

use std::sync::Arc;

use comind_core::config::{Config, LoadOptions};
use comind_core::engine::RunOptions;
use comind_core::event::{EventRecord, Outcome, RunOutcome};
use comind_core::lock::{EnvironmentLock, LockWait};
use comind_core::service::ServiceKind;
use comind_core::testing::{FakePhase, FakeProvider, FakeService, World};
use comind_core::{Bootstrap, DownOptions, Environment, ErrorKind, UpOptions};

use crate::fast_options;

fn config(yaml: &str) -> Config {
    Config::from_yaml_str(yaml, "comind.yaml").unwrap()
}

fn provider(world: &World) -> FakeProvider {
    FakeProvider::new("fake")
        .with_phase(FakePhase::new("network", world))
        .with_service(FakeService::new(ServiceKind::Postgres, world).with_deps(&["network"]))
        .with_service(FakeService::new(ServiceKind::Cache, world).with_deps(&["network"]))
}

fn bootstrap(yaml: &str, world: &World, state: &std::path::Path) -> Bootstrap {
    let env = Environment::with_state_root(config(yaml), state);
    Bootstrap::new(env)
        .with_engine_options(fast_options())
        .with_provider(provider(world))
}

#[tokio::test]
async fn up_writes_the_event_log_of_the_run_and_down_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let b = bootstrap("environment: demo\n", &world, dir.path());
    let report = b
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert!(report.succeeded(), "{:?}", report.summary);
    assert!(world.exists("comind-demo-postgres"));
    let outputs = report.merged_outputs();
    assert!(outputs.get("DATABASE_URL").unwrap().is_secret());
    assert!(outputs.get("REDIS_URL").is_some());

    let log = std::fs::read_to_string(b.env().state().event_log_path()).unwrap();
    let records: Vec<EventRecord> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = serde_json::to_value(records.last().unwrap()).unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["summary"]["operation"], "apply");
    assert!(!log.contains(outputs.get("DATABASE_URL").unwrap().expose()));

    let (outputs_now, _) = b.outputs(&RunOptions::default()).await.unwrap();
    assert_eq!(outputs_now, outputs, "outputs are rediscovered, not stored");

    let down = b
        .down(&RunOptions::default(), &DownOptions::default())
        .await
        .unwrap();
    assert!(down.succeeded());
    assert!(!world.exists("comind-demo-postgres"));
    assert!(
        world.exists("comind-demo-postgres-data"),
        "a plain down keeps data"
    );
    let kept: Vec<&str> = down
        .destroyed
        .values()
        .flat_map(|d| &d.kept)
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");

    let purge = RunOptions {
        destroy: comind_core::DestroyOptions { purge: true },
        ..RunOptions::default()
    };
    assert!(
        b.down(&purge, &DownOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
    assert!(world.names().is_empty(), "purge removes everything");
}

#[tokio::test]
async fn a_second_run_fails_while_the_lock_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let b = bootstrap("environment: demo\n", &world, dir.path());
    b.env().state().ensure().unwrap();
    let held = EnvironmentLock::acquire(&b.env().state().lock_path(), "comind up", LockWait::Fail)
        .await
        .unwrap();
    let err = b
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("comind up"), "{err}");
    assert!(world.calls().is_empty(), "nothing was touched");
    drop(held);
    assert!(
        b.up(&RunOptions::default(), &UpOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
}

#[tokio::test]
async fn production_refuses_down_without_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let b = bootstrap("environment: prod\nproduction: true\n", &world, dir.path());
    assert!(
        b.up(&RunOptions::default(), &UpOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
    world.clear_calls();
    let err = b
        .down(&RunOptions::default(), &DownOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("--confirm prod"), "{err}");
    let wrong = DownOptions {
        confirm: Some("staging".into()),
    };
    assert!(b.down(&RunOptions::default(), &wrong).await.is_err());
    assert!(world.mutating_calls().is_empty());
    let right = DownOptions {
        confirm: Some("prod".into()),
    };
    assert!(
        b.down(&RunOptions::default(), &right)
            .await
            .unwrap()
            .succeeded()
    );
}

#[tokio::test]
async fn production_refuses_a_replacement_without_allow_destructive() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let yaml = "environment: prod\nproduction: true\n";
    assert!(
        bootstrap(yaml, &world, dir.path())
            .up(&RunOptions::default(), &UpOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
    let env = Environment::with_state_root(config(yaml), dir.path());
    let changed = Bootstrap::new(env)
        .with_engine_options(fast_options())
        .with_provider(
            FakeProvider::new("fake")
                .with_phase(FakePhase::new("network", &world))
                .with_service(
                    FakeService::new(ServiceKind::Postgres, &world)
                        .with_deps(&["network"])
                        .with_image("fake:2"),
                )
                .with_service(FakeService::new(ServiceKind::Cache, &world).with_deps(&["network"])),
        );
    world.clear_calls();
    let err = changed
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("replace container comind-prod-postgres"),
        "{err}"
    );
    assert!(world.mutating_calls().is_empty());
    let report = changed
        .up(
            &RunOptions::default(),
            &UpOptions {
                allow_destructive: true,
            },
        )
        .await
        .unwrap();
    assert!(report.succeeded());
}

#[tokio::test]
async fn phase_settings_for_unknown_phases_are_rejected_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let b = bootstrap(
        "phases:\n  postgress:\n    timeout: 5m\n",
        &world,
        dir.path(),
    );
    let err = b.plan(&RunOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(text.contains("comind.yaml:2:3"), "{text}");
    assert!(text.contains("unknown phase `postgress`"), "{text}");
    assert!(text.contains("postgres"), "{text}");
}

#[tokio::test]
async fn per_phase_settings_from_the_config_reach_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let env = Environment::with_state_root(
        config("phases:\n  slow:\n    timeout: 100ms\n    retries: 0\n"),
        dir.path(),
    );
    let b = Bootstrap::new(env).with_provider(FakeProvider::new("fake").with_phase(
        FakePhase::new("slow", &world).with_failure(comind_core::testing::Failure::Hang),
    ));
    let report = b
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(report.summary.outcome, RunOutcome::Failed);
    let phase = &report.summary.phases[0];
    assert_eq!(phase.outcome, Outcome::Failed);
    assert_eq!(phase.error.as_ref().unwrap().kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn readiness_waits_for_the_probe_and_times_out_with_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let env = Environment::with_state_root(config(""), dir.path());
    let b = Bootstrap::new(env)
        .with_engine_options(fast_options())
        .with_provider(
            FakeProvider::new("fake")
                .with_service(FakeService::new(ServiceKind::Postgres, &world).not_ready_for(5))
                .with_service(
                    FakeService::new(ServiceKind::Cache, &world)
                        .never_ready()
                        .with_ready_timeout(std::time::Duration::from_millis(300)),
                ),
        );
    let report = b
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    let by_id = |id: &str| {
        report
            .summary
            .phases
            .iter()
            .find(|p| p.id.as_str() == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("postgres").outcome, Outcome::Succeeded);
    let cache = by_id("cache");
    assert_eq!(cache.outcome, Outcome::Failed);
    let error = cache.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(
        error.message.contains("cache did not answer within 300ms"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("last log lines"),
        "{}",
        error.message
    );
}

#[test]
fn config_loading_reports_every_problem_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comind.yaml");
    std::fs::write(
        &path,
        "environment: dev\nservices:\n  postgres:\n    enabled: false\n  queue:\n    queues: []\n",
    )
    .unwrap();
    let err = Config::load(&LoadOptions {
        file: Some(path),
        ..LoadOptions::default()
    })
    .unwrap_err();
    assert_eq!(err.problems().len(), 2, "{err}");
    let _unused: Arc<()> = Arc::new(());
}

#[tokio::test]
async fn disabling_a_service_removes_it_keeping_data_and_purge_still_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    assert!(
        bootstrap("environment: demo\n", &world, dir.path())
            .up(&RunOptions::default(), &UpOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
    assert!(world.exists("comind-demo-cache"));

    let env = Environment::with_state_root(config("environment: demo\n"), dir.path());
    let without_cache = Bootstrap::new(env)
        .with_engine_options(fast_options())
        .with_provider(
            FakeProvider::new("fake")
                .with_phase(FakePhase::new("network", &world))
                .with_service(
                    FakeService::new(ServiceKind::Postgres, &world).with_deps(&["network"]),
                )
                .with_phase(comind_core::ServicePhase::disabled(Arc::new(
                    FakeService::new(ServiceKind::Cache, &world).with_deps(&["network"]),
                ))),
        );
    let plan = without_cache.plan(&RunOptions::default()).await.unwrap();
    let cache_plan = &plan.plans[&comind_core::PhaseId::new("cache")];
    assert_eq!(cache_plan.changes.len(), 1, "{cache_plan:?}");
    assert!(cache_plan.changes[0].to_string().contains("disabled"));

    let report = without_cache
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert!(report.succeeded());
    assert!(
        !world.exists("comind-demo-cache"),
        "the disabled service is removed"
    );
    assert!(world.exists("comind-demo-cache-data"), "its data is kept");
    assert!(report.merged_outputs().get("REDIS_URL").is_none());
    let again = without_cache
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(again.summary.changes, 0);
    let status = without_cache.status(&RunOptions::default()).await.unwrap();
    assert_eq!(
        status.statuses[&comind_core::PhaseId::new("cache")].health,
        comind_core::Health::Ready
    );

    let purge = RunOptions {
        destroy: comind_core::DestroyOptions { purge: true },
        ..RunOptions::default()
    };
    assert!(
        without_cache
            .down(&purge, &DownOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
    assert!(
        world.names().is_empty(),
        "purge finds the disabled service's data too: {:?}",
        world.names()
    );
}

#[tokio::test]
async fn an_interrupt_ends_the_wait_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let b = bootstrap("environment: demo\n", &world, dir.path())
        .with_lock_wait(LockWait::Timeout(std::time::Duration::from_secs(30)));
    b.env().state().ensure().unwrap();
    let _held = EnvironmentLock::acquire(&b.env().state().lock_path(), "comind up", LockWait::Fail)
        .await
        .unwrap();
    let cancel = b.cancellation().clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        cancel.request();
    });
    let started = std::time::Instant::now();
    let err = b
        .up(&RunOptions::default(), &UpOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(world.calls().is_empty());
}

#[tokio::test]
async fn a_production_up_reports_one_run_to_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let b = bootstrap("environment: prod\nproduction: true\n", &world, dir.path());
    let mut events = b.events().subscribe();
    assert!(
        b.up(&RunOptions::default(), &UpOptions::default())
            .await
            .unwrap()
            .succeeded()
    );
    let mut started = Vec::new();
    while let Some(record) = events.try_recv() {
        if let comind_core::event::Event::RunStarted { operation, .. } = &record.event {
            started.push(*operation);
        }
    }
    assert_eq!(
        started,
        [comind_core::Operation::Apply],
        "the guard's plan stays private"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_can_be_spawned_on_the_runtime() {
    // An embedder runs `up` as a task of its own (a server handling a request, say):
    // the run's future must be Send.
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = Arc::new(bootstrap("environment: spawned\n", &world, dir.path()));
    let task = tokio::spawn({
        let bootstrap = bootstrap.clone();
        async move {
            bootstrap
                .up(&RunOptions::default(), &UpOptions::default())
                .await
        }
    });
    let report = task.await.unwrap().unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
}

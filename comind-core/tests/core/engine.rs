//! Scenario tests of the engine on fake phases.

use std::time::{Duration, Instant};

use comind_core::engine::{GraphError, RunOptions};
use comind_core::event::{Event, Outcome, RunOutcome};
use comind_core::testing::{Failure, FakePhase, World};
use comind_core::{ErrorKind, Operation, Outputs, PhaseId};

use crate::{engine, fast_options, phases};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ids(list: &[&str]) -> Vec<PhaseId> {
    list.iter().map(PhaseId::new).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_run_first_and_independent_branches_overlap() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("network", &world).with_work(ms(50)),
            FakePhase::new("postgres", &world)
                .with_deps(&["network"])
                .with_work(ms(300)),
            FakePhase::new("cache", &world)
                .with_deps(&["network"])
                .with_work(ms(300)),
            FakePhase::new("app", &world)
                .with_deps(&["postgres", "cache"])
                .with_work(ms(10)),
        ],
        fast_options(),
    );
    let started = Instant::now();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    let wall = started.elapsed();
    assert!(report.succeeded(), "{:?}", report.summary);
    assert!(world.ran_before("network", "postgres"));
    assert!(world.ran_before("network", "cache"));
    assert!(world.ran_before("postgres", "app"));
    assert!(world.ran_before("cache", "app"));
    assert_eq!(
        world.max_parallel(),
        2,
        "postgres and cache run side by side"
    );
    // Sequential would be 660 ms; parallel is about 360 ms.
    assert!(
        wall < ms(600),
        "wall {wall:?} does not approach the critical path"
    );
    let critical: Vec<&str> = report
        .summary
        .critical_path
        .iter()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(critical.first(), Some(&"network"));
    assert_eq!(critical.last(), Some(&"app"));
    assert_eq!(critical.len(), 3);
    assert!(report.summary.critical_path_ms >= 360);
    assert_eq!(report.summary.changes, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_bound_holds() {
    let world = World::new();
    let mut options = fast_options();
    options.concurrency = 2;
    let list = (0..6)
        .map(|i| {
            std::sync::Arc::new(FakePhase::new(&format!("p{i}"), &world).with_work(ms(40)))
                as std::sync::Arc<dyn comind_core::Phase>
        })
        .collect();
    let (engine, _dir) = engine(list, options);
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(report.succeeded());
    assert_eq!(world.max_parallel(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_skips_its_dependents_only() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("network", &world),
            FakePhase::new("postgres", &world)
                .with_deps(&["network"])
                .with_failure(Failure::Permanent),
            FakePhase::new("migrate", &world).with_deps(&["postgres"]),
            FakePhase::new("seed", &world).with_deps(&["migrate"]),
            FakePhase::new("cache", &world)
                .with_deps(&["network"])
                .with_work(ms(100)),
        ],
        fast_options(),
    );
    let mut events = engine.events().subscribe();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert_eq!(report.summary.outcome, RunOutcome::Failed);
    assert_eq!(report.phases_with(Outcome::Failed), ids(&["postgres"]));
    assert_eq!(
        report.phases_with(Outcome::Skipped),
        ids(&["migrate", "seed"])
    );
    assert_eq!(
        report.phases_with(Outcome::Succeeded),
        ids(&["network", "cache"])
    );
    assert!(
        world.exists("fake/cache"),
        "the independent branch finished"
    );
    assert!(!world.exists("fake/migrate"));
    let failed = &report.summary.phases[1];
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert_eq!(error.phase.as_deref(), Some("postgres"));
    assert_eq!(failed.attempts, 1, "permanent errors are not retried");

    let mut skipped = Vec::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseSkipped { phase, because, .. } = &record.event {
            skipped.push((phase.clone(), because.clone()));
        }
    }
    assert_eq!(
        skipped,
        vec![
            (PhaseId::new("migrate"), ids(&["postgres"])),
            (PhaseId::new("seed"), ids(&["postgres"])),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_a_bounded_number_of_times() {
    let world = World::new();
    let flaky = FakePhase::new("flaky", &world).with_failure(Failure::Transient(2));
    let flaky_attempts = flaky.attempt_counter();
    let broken = FakePhase::new("broken", &world).with_failure(Failure::Transient(10));
    let broken_attempts = broken.attempt_counter();
    let (engine, _dir) = engine(phases![flaky, broken], fast_options());
    let mut events = engine.events().subscribe();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert_eq!(report.phases_with(Outcome::Succeeded), ids(&["flaky"]));
    assert_eq!(report.phases_with(Outcome::Failed), ids(&["broken"]));
    assert_eq!(flaky_attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(
        broken_attempts.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "1 attempt + 3 retries"
    );
    let mut retries = Vec::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseRetrying {
            phase,
            attempt,
            delay_ms,
            ..
        } = &record.event
        {
            retries.push((phase.to_string(), *attempt, *delay_ms));
        }
    }
    let flaky_retries: Vec<_> = retries.iter().filter(|r| r.0 == "flaky").collect();
    assert_eq!(flaky_retries.len(), 2);
    for (_, attempt, delay) in &retries {
        let step = 5u64 << (attempt - 1);
        let cap = step.min(20);
        assert!(
            *delay >= cap / 2 && *delay <= cap,
            "attempt {attempt} delay {delay}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_that_hangs_times_out_and_skips_its_dependents() {
    let world = World::new();
    let mut options = fast_options();
    options.overrides.insert(
        PhaseId::new("stuck"),
        comind_core::engine::PhaseOverride {
            timeout: Some(ms(150)),
            retries: None,
        },
    );
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("stuck", &world).with_failure(Failure::Hang),
            FakePhase::new("after", &world).with_deps(&["stuck"]),
            FakePhase::new("own-timeout", &world)
                .with_failure(Failure::Hang)
                .with_default_timeout(ms(100)),
        ],
        options,
    );
    let started = Instant::now();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(started.elapsed() < ms(2000));
    assert_eq!(
        report.phases_with(Outcome::Failed),
        ids(&["stuck", "own-timeout"])
    );
    assert_eq!(report.phases_with(Outcome::Skipped), ids(&["after"]));
    let error = report.summary.phases[0].error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.message.contains("within 150ms"), "{}", error.message);
    assert!(
        error
            .hint
            .as_deref()
            .unwrap()
            .contains("phases.stuck.timeout")
    );
    assert!(
        world.spans("stuck").len() == 1,
        "the hung attempt ended when it timed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_interrupt_starts_nothing_new_and_stops_phases_at_a_safe_point() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("slow", &world).with_work(ms(5000)),
            FakePhase::new("stubborn", &world)
                .with_work(ms(300))
                .uninterruptible(),
            FakePhase::new("next", &world).with_deps(&["stubborn"]),
        ],
        fast_options(),
    );
    let cancel = engine.cancellation().clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(100)).await;
        cancel.request();
    });
    let started = Instant::now();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    let wall = started.elapsed();
    assert_eq!(report.summary.outcome, RunOutcome::Cancelled);
    assert!(
        wall < ms(1500),
        "the slow phase stopped at its safe point ({wall:?})"
    );
    assert!(
        wall >= ms(300),
        "the uninterruptible phase was allowed to finish"
    );
    assert_eq!(report.phases_with(Outcome::Succeeded), ids(&["stubborn"]));
    assert_eq!(
        report.phases_with(Outcome::Cancelled),
        ids(&["slow", "next"])
    );
    assert!(
        !world.exists("fake/next"),
        "nothing new started after the interrupt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_interrupt_aborts_running_phases() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("stubborn", &world)
                .with_work(ms(10_000))
                .uninterruptible()
        ],
        fast_options(),
    );
    let cancel = engine.cancellation().clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(100)).await;
        cancel.request();
        tokio::time::sleep(ms(100)).await;
        cancel.request();
    });
    let started = Instant::now();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(started.elapsed() < ms(2000));
    assert_eq!(report.summary.outcome, RunOutcome::Cancelled);
    assert_eq!(report.phases_with(Outcome::Cancelled), ids(&["stubborn"]));
    assert!(!world.exists("fake/stubborn"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_runs_in_reverse_dependency_order() {
    let world = World::new();
    let make = |world: &World| {
        phases![
            FakePhase::new("network", world).with_work(ms(20)),
            FakePhase::new("postgres", world)
                .with_deps(&["network"])
                .with_work(ms(20)),
            FakePhase::new("app", world)
                .with_deps(&["postgres"])
                .with_work(ms(20)),
        ]
    };
    let (engine, _dir) = engine(make(&world), fast_options());
    assert!(
        engine
            .run(Operation::Apply, &RunOptions::default())
            .await
            .succeeded()
    );
    let world2 = world.clone();
    let (engine2, _dir2) = crate::engine(make(&world2), fast_options());
    world.clear_calls();
    let report = engine2
        .run(Operation::Destroy, &RunOptions::default())
        .await;
    assert!(report.succeeded());
    let deletes: Vec<String> = world
        .mutating_calls()
        .into_iter()
        .map(|c| c.resource)
        .collect();
    assert_eq!(deletes, ["fake/app", "fake/postgres", "fake/network"]);
    let critical: Vec<&str> = report
        .summary
        .critical_path
        .iter()
        .map(|id| id.as_str())
        .collect();
    assert_eq!(critical, ["app", "postgres", "network"]);
}

#[tokio::test]
async fn invalid_graphs_are_rejected_naming_the_ids_before_anything_runs() {
    let world = World::new();
    let (env, _dir) = crate::env();
    let build = |list| comind_core::engine::Engine::new(list, env.clone(), fast_options());

    let err = build(phases![
        FakePhase::new("a", &world).with_deps(&["c"]),
        FakePhase::new("b", &world).with_deps(&["a"]),
        FakePhase::new("c", &world).with_deps(&["b"]),
        FakePhase::new("d", &world),
    ])
    .unwrap_err();
    assert!(matches!(err, GraphError::Cycle(_)));
    let text = err.to_string();
    for id in ["a", "b", "c"] {
        assert!(text.contains(id), "{text}");
    }
    assert!(
        !text.contains(" d "),
        "only the phases on the cycle are named: {text}"
    );

    let err = build(phases![
        FakePhase::new("a", &world),
        FakePhase::new("a", &world),
    ])
    .unwrap_err();
    assert_eq!(err, GraphError::Duplicate(ids(&["a"])));
    assert!(err.to_string().contains("`a`"));

    let err = build(phases![FakePhase::new("a", &world).with_deps(&["ghost"])]).unwrap_err();
    assert_eq!(
        err,
        GraphError::UnknownDependency(vec![(PhaseId::new("a"), PhaseId::new("ghost"))])
    );
    assert!(err.to_string().contains("`a` depends on `ghost`"));

    let err = build(phases![FakePhase::new("self", &world).with_deps(&["self"])]).unwrap_err();
    assert!(matches!(err, GraphError::Cycle(_)), "{err}");

    let err = build(phases![FakePhase::new("Bad Id", &world)]).unwrap_err();
    assert!(matches!(err, GraphError::InvalidId(_)));

    assert!(world.calls().is_empty(), "nothing ran");
}

#[tokio::test]
async fn plans_say_known_after_apply_and_outputs_flow_to_dependents() {
    let world = World::new();
    let make = |world: &World| {
        phases![
            FakePhase::new("cluster", world)
                .with_outputs(Outputs::new().text("KUBECONFIG", "/state/kubeconfig")),
            FakePhase::new("platform", world)
                .with_deps(&["cluster"])
                .forwarding("cluster", "KUBECONFIG"),
        ]
    };
    let (engine, _dir) = engine(make(&world), fast_options());
    let plan = engine.run(Operation::Plan, &RunOptions::default()).await;
    assert!(plan.succeeded());
    let cluster = &plan.plans[&PhaseId::new("cluster")];
    assert!(cluster.outputs.is_none());
    let platform = &plan.plans[&PhaseId::new("platform")];
    assert!(
        platform
            .deferred
            .as_deref()
            .unwrap()
            .contains("known after apply"),
        "{platform:?}"
    );
    assert!(world.mutating_calls().is_empty(), "plan changed nothing");

    let applied = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(applied.succeeded());
    assert_eq!(
        applied.outputs[&PhaseId::new("platform")]
            .require("KUBECONFIG")
            .unwrap(),
        "/state/kubeconfig"
    );

    let plan = engine.run(Operation::Plan, &RunOptions::default()).await;
    let platform = &plan.plans[&PhaseId::new("platform")];
    assert!(platform.is_empty());
    assert_eq!(
        platform
            .outputs
            .as_ref()
            .unwrap()
            .require("KUBECONFIG")
            .unwrap(),
        "/state/kubeconfig"
    );
    assert_eq!(plan.summary.changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_phase_fails_alone() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("boom", &world).with_failure(Failure::Panic),
            FakePhase::new("fine", &world).with_work(ms(50)),
        ],
        fast_options(),
    );
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert_eq!(report.phases_with(Outcome::Failed), ids(&["boom"]));
    assert_eq!(report.phases_with(Outcome::Succeeded), ids(&["fine"]));
    let error = report.summary.phases[0].error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(error.message.contains("panicked"));
}

#[tokio::test]
async fn a_crashed_run_is_resumed_by_running_again() {
    let world = World::new();
    let crashing = FakePhase::new("stack", &world)
        .with_resources(&["part/a", "part/b", "part/c"])
        .with_failure(Failure::CrashAfter(2));
    let mut options = fast_options();
    options.retry.retries = 0;
    let (engine, _dir) = engine(phases![crashing], options);
    let first = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert_eq!(first.summary.outcome, RunOutcome::Failed);
    assert!(world.exists("part/a") && world.exists("part/b") && !world.exists("part/c"));

    // A new process: new engine, same world, nothing remembered but what exists.
    world.clear_calls();
    let resumed = FakePhase::new("stack", &world).with_resources(&["part/a", "part/b", "part/c"]);
    let (engine, _dir) = crate::engine(phases![resumed], fast_options());
    let second = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(second.succeeded());
    let created: Vec<String> = world
        .mutating_calls()
        .into_iter()
        .map(|c| format!("{} {}", c.op, c.resource))
        .collect();
    assert_eq!(created, ["create part/c"], "only the missing part is made");
    assert_eq!(second.summary.changes, 1);
}

#[tokio::test]
async fn a_second_apply_changes_nothing() {
    let world = World::new();
    let make = |w: &World| {
        phases![
            FakePhase::new("a", w),
            FakePhase::new("b", w).with_deps(&["a"]),
        ]
    };
    let (engine, _dir) = engine(make(&world), fast_options());
    assert_eq!(
        engine
            .run(Operation::Apply, &RunOptions::default())
            .await
            .summary
            .changes,
        2
    );
    world.clear_calls();
    let again = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(again.succeeded());
    assert_eq!(again.summary.changes, 0);
    assert!(world.mutating_calls().is_empty());
}

#[tokio::test]
async fn only_and_skip_select_phases_and_what_they_need() {
    let world = World::new();
    let make = |w: &World| {
        phases![
            FakePhase::new("network", w),
            FakePhase::new("postgres", w).with_deps(&["network"]),
            FakePhase::new("cache", w).with_deps(&["network"]),
            FakePhase::new("app", w).with_deps(&["postgres"]),
        ]
    };
    let (engine, _dir) = engine(make(&world), fast_options());
    let run = RunOptions {
        only: ids(&["postgres"]),
        ..RunOptions::default()
    };
    let report = engine.run(Operation::Apply, &run).await;
    let ran: Vec<&str> = report
        .summary
        .phases
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(ran, ["network", "postgres"]);
    assert!(!world.exists("fake/cache"));

    let run = RunOptions {
        skip: ids(&["postgres"]),
        ..RunOptions::default()
    };
    let report = engine.run(Operation::Apply, &run).await;
    assert_eq!(
        report.phases_with(Outcome::Skipped),
        ids(&["postgres", "app"])
    );
    assert!(world.exists("fake/cache"));
    assert!(report.succeeded(), "skipping by request is not a failure");

    // Destroying the network alone takes down what stands on it first.
    let run = RunOptions {
        only: ids(&["network"]),
        ..RunOptions::default()
    };
    let report = engine.run(Operation::Destroy, &run).await;
    assert!(report.succeeded());
    let ran: Vec<&str> = report
        .summary
        .phases
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(ran, ["network", "postgres", "cache", "app"]);
    assert!(world.names().is_empty());

    let bad = RunOptions {
        only: ids(&["nope"]),
        ..RunOptions::default()
    };
    let err = engine.check_selection(&bad).unwrap_err();
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_describe_the_run_in_order() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("a", &world).with_work(ms(20)),
            FakePhase::new("b", &world).with_deps(&["a"]),
        ],
        fast_options(),
    );
    let mut events = engine.events().subscribe();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    let mut records = Vec::new();
    while let Some(record) = events.try_recv() {
        records.push(record);
    }
    let types: Vec<String> = records
        .iter()
        .map(|r| {
            serde_json::to_value(&**r).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        types,
        [
            "run_started",
            "phase_started",
            "phase_finished",
            "phase_started",
            "phase_finished",
            "run_finished"
        ]
    );
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(records.iter().all(|r| r.v == 1));
    let Event::RunFinished { summary } = &records.last().unwrap().event else {
        panic!("last event is not run_finished");
    };
    assert_eq!(summary, &report.summary);
    assert!(summary.critical_path_ms >= 20);
    assert_eq!(summary.critical_path, ids(&["a", "b"]));
}

#[tokio::test]
async fn a_failed_preflight_rejects_the_run_before_anything_changes() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("network", &world),
            FakePhase::new("postgres", &world)
                .with_deps(&["network"])
                .failing_preflight("host port 5432 is taken by another program"),
        ],
        fast_options(),
    );
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert_eq!(report.summary.outcome, RunOutcome::Rejected);
    assert_eq!(report.phases_with(Outcome::Failed), ids(&["postgres"]));
    assert_eq!(report.phases_with(Outcome::Skipped), ids(&["network"]));
    assert!(world.mutating_calls().is_empty(), "nothing was created");
    let error = report.summary.phases[1].error.as_ref().unwrap();
    assert!(error.message.contains("5432"));
}

#[tokio::test]
async fn a_transient_fault_during_preflight_is_retried_not_read_as_bad_input() {
    // Three 503s, then the peer answers: the run goes on as if nothing happened.
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("network", &world),
            FakePhase::new("postgres", &world)
                .with_deps(&["network"])
                .flaky_preflight(3),
        ],
        fast_options(),
    );
    let mut events = engine.events().subscribe();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    let mut retried = 0;
    while let Some(record) = events.try_recv() {
        if let Event::PhaseRetrying { phase, .. } = &record.event {
            assert_eq!(phase, &PhaseId::new("postgres"));
            retried += 1;
        }
    }
    assert_eq!(
        retried, 3,
        "each transient preflight failure is announced as a retry"
    );
}

#[tokio::test]
async fn a_preflight_that_keeps_failing_transiently_fails_the_run_without_rejecting_it() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![
            FakePhase::new("network", &world),
            FakePhase::new("postgres", &world)
                .with_deps(&["network"])
                .flaky_preflight(100),
        ],
        fast_options(),
    );
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    // Failed (exit 1: try again), not rejected (exit 2: fix your input).
    assert_eq!(report.summary.outcome, RunOutcome::Failed);
    assert_eq!(report.phases_with(Outcome::Failed), ids(&["postgres"]));
    assert_eq!(report.phases_with(Outcome::Skipped), ids(&["network"]));
    assert!(world.mutating_calls().is_empty(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waits_at_least_as_long_as_the_peer_asks() {
    let world = World::new();
    let (engine, _dir) = engine(
        phases![FakePhase::new("queue", &world).with_failure(Failure::RetryAfter(1, ms(250)))],
        fast_options(),
    );
    let mut events = engine.events().subscribe();
    let started = Instant::now();
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(report.succeeded());
    assert!(started.elapsed() >= ms(250), "the backoff alone is 5 ms");
    let mut delays = Vec::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseRetrying { delay_ms, .. } = record.event {
            delays.push(delay_ms);
        }
    }
    assert_eq!(delays.len(), 1);
    assert!(delays[0] >= 250, "{delays:?}");
}

#[tokio::test]
async fn preflight_sees_dependencies_as_known_after_apply() {
    use async_trait::async_trait;
    use comind_core::{Applied, DestroyOptions, Destroyed, Input, PhaseContext, Plan};

    struct Checks;
    #[async_trait]
    impl comind_core::Phase for Checks {
        fn id(&self) -> PhaseId {
            PhaseId::new("checks")
        }
        fn dependencies(&self) -> Vec<PhaseId> {
            vec![PhaseId::new("network")]
        }
        async fn preflight(&self, ctx: &PhaseContext) -> comind_core::Result<()> {
            match ctx.input(&PhaseId::new("network"), "NETWORK_ID") {
                Input::KnownAfterApply => Ok(()),
                other => Err(comind_core::Error::internal(format!("saw {other:?}"))),
            }
        }
        async fn plan(&self, _: &PhaseContext) -> comind_core::Result<Plan> {
            Ok(Plan::default())
        }
        async fn apply(&self, _: &PhaseContext) -> comind_core::Result<Applied> {
            Ok(Applied::default())
        }
        async fn destroy(
            &self,
            _: &PhaseContext,
            _: DestroyOptions,
        ) -> comind_core::Result<Destroyed> {
            Ok(Destroyed::default())
        }
    }
    let world = World::new();
    let (engine, _dir) = engine(
        phases![FakePhase::new("network", &world), Checks],
        fast_options(),
    );
    let report = engine.run(Operation::Apply, &RunOptions::default()).await;
    assert!(report.succeeded(), "{:?}", report.summary);
}

#[tokio::test]
async fn a_service_plan_is_deferred_until_its_dependencies_are_applied() {
    use comind_core::ServiceKind;
    use comind_core::testing::FakeService;

    let world = World::new();
    let make = |w: &World| {
        phases![
            FakePhase::new("network", w),
            comind_core::ServicePhase::new(std::sync::Arc::new(
                FakeService::new(ServiceKind::Postgres, w)
                    .with_deps(&["network"])
                    .deferring_plan()
            ))
            .with_timeout(ms(2500)),
        ]
    };
    let (engine, _dir) = engine(make(&world), fast_options());
    assert_eq!(
        engine
            .graph()
            .get(&PhaseId::new("postgres"))
            .unwrap()
            .default_timeout(),
        Some(ms(2500))
    );
    let plan = engine.run(Operation::Plan, &RunOptions::default()).await;
    let postgres = &plan.plans[&PhaseId::new("postgres")];
    assert!(!postgres.changes.is_empty());
    assert_eq!(
        postgres.deferred.as_deref(),
        Some("needs the outputs of `network`, known after apply")
    );
    assert!(
        engine
            .run(Operation::Apply, &RunOptions::default())
            .await
            .succeeded()
    );
    let plan = engine.run(Operation::Plan, &RunOptions::default()).await;
    assert!(plan.plans[&PhaseId::new("postgres")].is_empty());
}

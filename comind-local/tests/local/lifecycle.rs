//! Whole runs through core's `Bootstrap`, as the CLI makes them: up, a second up,
//! down keeping data, up again, down --purge; two environments side by side.

use std::time::Instant;

use comind_core::event::{Outcome, RunOutcome};
use comind_core::{Action, DownOptions, Outputs, UpOptions};
use comind_test_support::docker::{self, POSTGRES_IMAGE, REDIS_IMAGE, SERVICE_IMAGES};
use comind_test_support::require_peer;

use crate::markers;
use crate::support::{self, TestEnv};

fn assert_succeeded(report: &comind_core::engine::RunReport, what: &str) {
    for phase in &report.summary.phases {
        assert_eq!(
            phase.outcome,
            Outcome::Succeeded,
            "{what}: phase {} did not succeed: {:?}",
            phase.id,
            phase.error.as_ref().map(ToString::to_string)
        );
    }
    assert_eq!(report.summary.outcome, RunOutcome::Succeeded, "{what}");
}

#[tokio::test]
async fn data_survives_down_and_up_and_purge_removes_everything() {
    let docker = require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let t = TestEnv::new(&docker, "life");
    let bootstrap = t.bootstrap();

    // From nothing: every phase creates something, and the outputs work from the host.
    let report = bootstrap
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&report, "first up");
    for phase in &report.summary.phases {
        assert!(phase.changes > 0, "first up: {} changed nothing", phase.id);
    }
    let outputs: Outputs = report.merged_outputs();
    for key in [
        "DATABASE_URL",
        "S3_ENDPOINT",
        "REDIS_URL",
        "SQS_ENDPOINT",
        "LOCAL_NETWORK",
    ] {
        assert!(outputs.get(key).is_some(), "missing output {key}");
    }
    assert!(
        outputs
            .require("DATABASE_URL")
            .unwrap()
            .contains("@127.0.0.1:")
    );
    markers::write_postgres(&outputs, "kept-row").await;
    markers::write_s3(&outputs, "kept-object").await;
    markers::write_redis(&outputs, "kept-key").await;
    markers::assert_queues(&outputs, 5).await;
    markers::send_message(&outputs, "hello").await;
    assert!(markers::has_message(&outputs, "hello").await);
    let running = t.owned(None).await;
    assert_eq!(running.containers.len(), 4, "{running:?}");
    assert_eq!(running.volumes.len(), 4, "{running:?}");
    assert_eq!(running.networks, vec![format!("comind-{}", t.name)]);

    // A second up on the healthy environment changes nothing, with the same outputs.
    let started = Instant::now();
    let second = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    let wall = started.elapsed();
    assert_succeeded(&second, "second up");
    assert_eq!(
        second.summary.changes, 0,
        "second up changed things: {:?}",
        second.summary
    );
    assert_eq!(second.merged_outputs(), outputs);
    eprintln!("second up (debug build): {wall:?}");

    // down keeps the volumes and says so.
    let down = t
        .bootstrap()
        .down(&Default::default(), &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&down, "down");
    let kept: Vec<&comind_core::Kept> = down.destroyed.values().flat_map(|d| &d.kept).collect();
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(
        kept.iter()
            .all(|k| k.kind == "volume" && k.reason.contains("--purge"))
    );
    let after_down = t.owned(None).await;
    assert!(after_down.containers.is_empty(), "{after_down:?}");
    assert!(after_down.networks.is_empty(), "{after_down:?}");
    assert_eq!(after_down.volumes, running.volumes);
    assert_eq!(t.credential_files().len(), 4);

    // up again: the containers come back on their volumes, with the data.
    let (again, changes) = support::up_with_changes(&t.bootstrap(), &Default::default()).await;
    assert_succeeded(&again, "up after down");
    let containers: Vec<&comind_core::Change> =
        changes.iter().filter(|c| c.kind == "container").collect();
    assert_eq!(containers.len(), 4, "{changes:?}");
    for change in containers {
        assert_eq!(change.action, Action::Create, "{change}");
        assert!(
            change
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("existing volume"),
            "{change}"
        );
    }
    assert!(
        changes.iter().all(|c| c.kind != "volume"),
        "volumes were recreated: {changes:?}"
    );
    let outputs = again.merged_outputs();
    assert!(
        markers::has_postgres(&outputs, "kept-row").await,
        "row lost"
    );
    assert!(
        markers::has_s3(&outputs, "kept-object").await,
        "object lost"
    );
    assert!(markers::has_redis(&outputs, "kept-key").await, "key lost");
    markers::assert_queues(&outputs, 5).await;

    // down --purge leaves nothing with our labels, and no credentials.
    let purged = t
        .bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert_succeeded(&purged, "down --purge");
    assert!(purged.destroyed.values().all(|d| d.kept.is_empty()));
    let left = t.owned(None).await;
    assert!(left.is_empty(), "left after purge: {:?}", left.all());
    assert!(
        t.credential_files().is_empty(),
        "{:?}",
        t.credential_files()
    );
}

#[tokio::test]
async fn a_plan_says_what_up_will_do_and_up_does_exactly_that() {
    let docker = require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let t = TestEnv::new(&docker, "plan");
    let plan = t.bootstrap().plan(&Default::default()).await.unwrap();
    assert_succeeded(&plan, "plan");
    let mut planned: Vec<String> = plan
        .plans
        .values()
        .flat_map(|p| &p.changes)
        .inspect(|c| assert_eq!(c.action, Action::Create, "{c}"))
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect();
    assert!(t.owned(None).await.is_empty(), "plan created something");
    assert!(t.credential_files().is_empty(), "plan wrote credentials");

    let (report, changes) = support::up_with_changes(&t.bootstrap(), &Default::default()).await;
    assert_succeeded(&report, "up");
    let mut made: Vec<String> = changes
        .iter()
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect();
    planned.sort();
    made.sort();
    assert_eq!(planned, made, "the plan and the run differ");
    let plan = t.bootstrap().plan(&Default::default()).await.unwrap();
    assert!(
        plan.plans.values().all(|p| p.changes.is_empty()),
        "{:?}",
        plan.plans
    );
    assert_eq!(plan.merged_outputs(), report.merged_outputs());
    let status = t.bootstrap().status(&Default::default()).await.unwrap();
    assert!(
        status
            .statuses
            .values()
            .all(|s| s.health == comind_core::Health::Ready),
        "{:?}",
        status.statuses
    );
    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(t.owned(None).await.is_empty());
}

#[tokio::test]
async fn two_environments_run_side_by_side_without_interfering() {
    let docker = require_peer!(docker::ready(&[POSTGRES_IMAGE, REDIS_IMAGE]).await);
    let a = TestEnv::new(&docker, "side-a");
    let b = TestEnv::new(&docker, "side-b");
    let only = support::only(&["postgres", "cache"]);
    let (boot_a, boot_b, options) = (a.bootstrap(), b.bootstrap(), UpOptions::default());
    let (ra, rb) = tokio::join!(boot_a.up(&only, &options), boot_b.up(&only, &options));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        ra.summary
    );
    assert_eq!(
        rb.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        rb.summary
    );
    let (oa, ob) = (ra.merged_outputs(), rb.merged_outputs());
    assert_ne!(
        oa.require("DATABASE_URL").unwrap(),
        ob.require("DATABASE_URL").unwrap()
    );
    markers::write_postgres(&oa, "only-in-a").await;
    markers::write_redis(&ob, "only-in-b").await;
    assert!(!markers::has_postgres(&ob, "only-in-a").await);
    assert!(!markers::has_redis(&oa, "only-in-b").await);

    // Purging one leaves the other whole and working.
    let before = b.owned(None).await;
    a.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(a.owned(None).await.is_empty());
    assert_eq!(b.owned(None).await, before);
    assert!(markers::has_redis(&ob, "only-in-b").await);
    let again = b
        .bootstrap()
        .up(&only, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(again.summary.changes, 0, "{:?}", again.summary);
    b.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(b.owned(None).await.is_empty());
}

/// Every secret the state directory holds, as strings.
fn stored_secrets(t: &TestEnv) -> Vec<String> {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        serde_json::Value::String(s) if key == "password" => out.push(s.clone()),
                        other => collect(other, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let dir = t
        .state
        .path()
        .join("local")
        .join(&t.name)
        .join("credentials");
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        collect(&serde_json::from_str(&text).unwrap(), &mut secrets);
    }
    secrets
}

#[tokio::test]
async fn secrets_stay_out_of_labels_environment_commands_events_and_logs() {
    let docker = require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let t = TestEnv::new(&docker, "secret");
    let bootstrap = t.bootstrap();
    let mut events = bootstrap.events().subscribe();
    let report = bootstrap
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_succeeded(&report, "up");
    let mut seen = String::new();
    while let Some(record) = events.try_recv() {
        seen.push_str(&serde_json::to_string(&*record).unwrap());
    }
    seen.push_str(&format!("{:?}", report.summary));
    let log = std::fs::read_to_string(
        t.state
            .path()
            .join("local")
            .join(&t.name)
            .join("last-run.jsonl"),
    )
    .unwrap();
    seen.push_str(&log);

    let network = format!("comind-{}", t.name);
    for service in ["postgres", "object-store", "cache", "queue"] {
        let name = format!("comind-{}-{service}", t.name);
        let inspect = docker.inspect_container(&name, None).await.unwrap();
        // Labels, environment, command and everything else Docker keeps about it.
        seen.push_str(&serde_json::to_string(&inspect).unwrap());
        let host = inspect.host_config.clone().unwrap();
        for bindings in host.port_bindings.unwrap().into_values().flatten() {
            for binding in bindings {
                assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"), "{name}");
            }
        }
        assert_eq!(
            host.restart_policy.and_then(|p| p.name),
            Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let endpoint = &inspect.network_settings.unwrap().networks.unwrap()[&network];
        assert!(
            endpoint
                .aliases
                .as_ref()
                .unwrap()
                .contains(&service.to_string()),
            "{name} is not reachable as `{service}` on {network}"
        );
        let mut logs = docker.logs(
            &name,
            Some(
                bollard::query_parameters::LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        while let Some(line) = futures_util::StreamExt::next(&mut logs).await {
            seen.push_str(&line.unwrap().to_string());
        }
    }
    let secrets = stored_secrets(&t);
    assert_eq!(secrets.len(), 5, "superuser, app, MinIO root, Redis, SQS");
    for secret in &secrets {
        assert!(secret.len() >= 32);
        assert!(!seen.contains(secret.as_str()), "a secret leaked");
    }
    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
}

//! Drift between runs is repaired: a stopped, killed or deleted container comes back
//! with its data; a changed spec replaces the container and keeps the volume.

use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use comind_core::config::{ImageRef, Port};
use comind_core::event::RunOutcome;
use comind_core::{Action, Change, DownOptions};
use comind_test_support::docker::{self, POSTGRES_IMAGE, REDIS_IMAGE};
use comind_test_support::{ports, require_peer};

use crate::markers;
use crate::support::{self, TestEnv, status_of};

fn container_changes(changes: &[Change]) -> Vec<&Change> {
    changes.iter().filter(|c| c.kind == "container").collect()
}

#[tokio::test]
async fn stopped_killed_and_deleted_containers_are_repaired_with_their_data() {
    let docker = require_peer!(docker::ready(&[POSTGRES_IMAGE, REDIS_IMAGE]).await);
    let t = TestEnv::new(&docker, "drift");
    let only = support::only(&["postgres", "cache"]);
    let (first, _) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        first.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        first.summary
    );
    let outputs = first.merged_outputs();
    markers::write_postgres(&outputs, "survivor").await;
    markers::write_redis(&outputs, "survivor").await;
    let pg = format!("comind-{}-postgres", t.name);
    let cache = format!("comind-{}-cache", t.name);

    // Stopped: started again.
    docker
        .stop_container(&pg, Some(StopContainerOptionsBuilder::new().t(10).build()))
        .await
        .unwrap();
    assert_eq!(status_of(&docker, &pg).await, "exited");
    let plan = t.bootstrap().plan(&only).await.unwrap();
    let planned: Vec<&Change> = plan.plans.values().flat_map(|p| &p.changes).collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].action, Action::Update);
    assert!(
        planned[0].reason.as_deref().unwrap().contains("start"),
        "{}",
        planned[0]
    );
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    let repaired = container_changes(&changes);
    assert_eq!(repaired.len(), 1, "{changes:?}");
    assert_eq!(repaired[0].action, Action::Update);
    assert_eq!(repaired[0].name, pg);
    assert_eq!(status_of(&docker, &pg).await, "running");
    assert!(markers::has_postgres(&outputs, "survivor").await);

    // Killed: the restart policy does not bring it back (a kill is a manual stop);
    // the next run does.
    docker
        .kill_container(
            &cache,
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
        .await
        .unwrap();
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    let repaired = container_changes(&changes);
    assert_eq!(repaired.len(), 1, "{changes:?}");
    assert_eq!(repaired[0].action, Action::Update);
    assert!(
        repaired[0].reason.as_deref().unwrap().contains("137"),
        "{}",
        repaired[0]
    );
    assert!(markers::has_redis(&outputs, "survivor").await);

    // Deleted: recreated on its old volume.
    docker
        .remove_container(
            &pg,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    let repaired = container_changes(&changes);
    assert_eq!(repaired.len(), 1, "{changes:?}");
    assert_eq!(repaired[0].action, Action::Create);
    assert!(
        repaired[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("existing volume"),
        "{}",
        repaired[0]
    );
    assert!(
        changes
            .iter()
            .all(|c| c.kind != "volume" && c.kind != "database"),
        "{changes:?}"
    );
    assert!(
        markers::has_postgres(&outputs, "survivor").await,
        "the row did not survive"
    );

    // And then all is quiet.
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(report.summary.outcome, RunOutcome::Succeeded);
    assert!(changes.is_empty(), "{changes:?}");
    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(t.owned(None).await.is_empty());
}

#[tokio::test]
async fn a_changed_spec_replaces_the_container_and_keeps_the_volume() {
    let docker = require_peer!(docker::ready(&[REDIS_IMAGE]).await);
    let mut t = TestEnv::new(&docker, "spec");
    let only = support::only(&["cache"]);
    let (first, _) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        first.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        first.summary
    );
    markers::write_redis(&first.merged_outputs(), "kept").await;
    let cache = format!("comind-{}-cache", t.name);
    let volume = format!("{cache}-data");

    // Another image (the same content under another tag, as a mirror would be).
    let tag = format!("{}-alt", t.name);
    docker
        .tag_image(
            REDIS_IMAGE,
            Some(
                TagImageOptionsBuilder::new()
                    .repo("comind-test/redis")
                    .tag(&tag)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let image = format!("comind-test/redis:{tag}");
    t.remove_image_later(&image);
    t.config.services.cache.local.image = ImageRef::new(&image).unwrap();
    let plan = t.bootstrap().plan(&only).await.unwrap();
    let planned: Vec<&Change> = plan.plans.values().flat_map(|p| &p.changes).collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].action, Action::Replace);
    let reason = planned[0].reason.as_deref().unwrap();
    assert!(
        reason.contains("image") && reason.contains(&volume),
        "{reason}"
    );
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].action, Action::Replace);
    let running = docker.inspect_container(&cache, None).await.unwrap();
    assert_eq!(
        running.config.unwrap().image.as_deref(),
        Some(image.as_str())
    );
    assert!(markers::has_redis(&report.merged_outputs(), "kept").await);

    // Another host port: replaced as well, and the outputs follow.
    let port = ports::free_port();
    t.config.services.cache.local.port = Port::new(port).unwrap();
    let (report, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].action, Action::Replace);
    let outputs = report.merged_outputs();
    assert_eq!(outputs.require("REDIS_PORT").unwrap(), port.to_string());
    assert!(markers::has_redis(&outputs, "kept").await);
    assert_eq!(t.owned(Some("cache")).await.volumes, vec![volume]);

    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(t.owned(None).await.is_empty());
}

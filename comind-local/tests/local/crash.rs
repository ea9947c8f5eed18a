//! Crash safety: what an earlier run left half done, or is still doing in a peer after
//! its process died, is finished by the next run, never read as a failure.
//!
//! Each race is forced, not left to chance: the test holds the PostgreSQL locks that
//! put the earlier run's statement exactly between the new run's check and its create,
//! and waits on `pg_stat_activity` (not on a clock) until the new run is blocked there.

use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use comind_core::event::RunOutcome;
use comind_core::{Action, Change};
use comind_test_support::docker::{self, POSTGRES_IMAGE, REDIS_IMAGE};
use comind_test_support::require_peer;

use crate::support::{self, TestEnv};

/// A connection as the superuser whose password `up` generated and stored.
async fn superuser(t: &TestEnv) -> tokio_postgres::Client {
    let path = t
        .state
        .path()
        .join("local")
        .join(&t.name)
        .join("credentials")
        .join("postgres.json");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let password = stored["superuser"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(t.config.services.postgres.local.port.get())
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .application_name("comind-test");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Waits until a statement of Comind's (application name `comind`) starting with
/// `prefix` is blocked on a lock: the moment the test has set up.
async fn until_comind_waits_in(observer: &tokio_postgres::Client, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let blocked: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'comind' \
                 AND wait_event_type = 'Lock' AND query LIKE $1",
                &[&format!("{prefix}%")],
            )
            .await
            .unwrap()
            .get(0);
        if blocked > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Comind never blocked in `{prefix}`"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_role_and_a_database_committed_by_an_earlier_run_meanwhile_are_adopted() {
    let docker = require_peer!(docker::ready(&[POSTGRES_IMAGE]).await);
    let t = TestEnv::new(&docker, "pgrace");
    let only = support::only(&["postgres"]);
    let (first, _) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        first.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        first.summary
    );
    let db = t.config.services.postgres.databases[0].to_string();
    let user = t.config.services.postgres.user.to_string();

    // Back to before the contents were made.
    let admin = superuser(&t).await;
    // One statement each: a multi-statement batch is one transaction, and DROP
    // DATABASE cannot run in one.
    for drop in [
        format!("DROP DATABASE \"{db}\""),
        format!("DROP ROLE \"{user}\""),
    ] {
        admin.batch_execute(&drop).await.unwrap();
    }

    // The earlier run's role: created in a transaction that is not committed yet, so
    // the new run's look-up does not see it and its CREATE ROLE waits on it.
    let earlier_role = superuser(&t).await;
    earlier_role
        .batch_execute(&format!("BEGIN; CREATE ROLE \"{user}\" LOGIN"))
        .await
        .unwrap();
    // CREATE DATABASE takes a share lock on its template before it checks the name:
    // holding a conflicting lock on template1 stops the new run right there.
    let template_holder = superuser(&t).await;
    template_holder
        .batch_execute("BEGIN; COMMENT ON DATABASE template1 IS 'held by a Comind test'")
        .await
        .unwrap();

    let bootstrap = t.bootstrap();
    let run = support::up_with_changes(&bootstrap, &only);
    let earlier_run = async {
        let observer = superuser(&t).await;
        until_comind_waits_in(&observer, "CREATE ROLE").await;
        earlier_role.batch_execute("COMMIT").await.unwrap();

        until_comind_waits_in(&observer, "CREATE DATABASE").await;
        // The earlier run's CREATE DATABASE (from template0, which is not held)
        // commits after the new run's look-up and before its own create.
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{db}\" OWNER \"{user}\" TEMPLATE template0"
            ))
            .await
            .unwrap();
        template_holder.batch_execute("COMMIT").await.unwrap();
    };
    let ((second, _), ()) = tokio::join!(run, earlier_run);
    assert_eq!(
        second.summary.outcome,
        RunOutcome::Succeeded,
        "a lost race is not a failure: {:?}",
        second.summary
    );
    // The role carries the stored password: the application connects with the outputs.
    let outputs = second.merged_outputs();
    let app = support::postgres(&outputs).await;
    let row = app.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), user);
    // And a further run has nothing to do.
    let plan = t.bootstrap().plan(&only).await.unwrap();
    let planned: Vec<&Change> = plan.plans.values().flat_map(|p| &p.changes).collect();
    assert!(planned.is_empty(), "{planned:?}");
}

#[tokio::test]
async fn a_container_created_but_never_configured_is_completed_by_the_next_run() {
    let docker = require_peer!(docker::ready(&[POSTGRES_IMAGE, REDIS_IMAGE]).await);
    let t = TestEnv::new(&docker, "unfinished");
    let only = support::only(&["postgres", "cache"]);
    let (first, _) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        first.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        first.summary
    );
    let outputs = first.merged_outputs();
    crate::markers::write_postgres(&outputs, "kept").await;

    // What a run killed between `create` and the upload leaves: the same container,
    // created from the same body (labels and spec hash included) but never given its
    // files and never started. Made by copying the real one's configuration.
    let mut recreated = Vec::new();
    for name in [
        format!("comind-{}-postgres", t.name),
        format!("comind-{}-cache", t.name),
    ] {
        let info = docker.inspect_container(&name, None).await.unwrap();
        docker
            .stop_container(
                &name,
                Some(StopContainerOptionsBuilder::new().t(10).build()),
            )
            .await
            .unwrap();
        docker
            .remove_container(&name, Some(RemoveContainerOptionsBuilder::new().build()))
            .await
            .unwrap();
        let config = info.config.unwrap();
        let body = ContainerCreateBody {
            image: config.image,
            cmd: config.cmd,
            env: config.env,
            labels: config.labels,
            exposed_ports: config.exposed_ports,
            host_config: info.host_config,
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .unwrap();
        assert_eq!(support::status_of(&docker, &name).await, "created");
        recreated.push(name);
    }

    let plan = t.bootstrap().plan(&only).await.unwrap();
    let planned: Vec<&Change> = plan.plans.values().flat_map(|p| &p.changes).collect();
    assert_eq!(planned.len(), 2, "{planned:?}");
    for change in &planned {
        assert_eq!(change.kind, "container");
        assert_eq!(change.action, Action::Update);
        let reason = change.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("never started") && reason.contains("upload its configuration"),
            "the plan says the container is completed, not merely started: {reason}"
        );
    }

    let (second, changes) = support::up_with_changes(&t.bootstrap(), &only).await;
    assert_eq!(
        second.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        second.summary
    );
    assert_eq!(
        changes.iter().filter(|c| c.kind == "container").count(),
        2,
        "{changes:?}"
    );
    let outputs = second.merged_outputs();
    assert!(
        crate::markers::has_postgres(&outputs, "kept").await,
        "the data on the volume survived"
    );
    let mut redis = support::redis(&outputs).await;
    let pong: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    assert_eq!(pong, "PONG");
}

//! Problems found before anything changes: a taken host port, a network name that
//! is someone else's. The run is rejected and nothing is created.

use std::collections::HashMap;

use bollard::models::NetworkCreateRequest;
use comind_core::environment::LABEL_ENVIRONMENT;
use comind_core::error::ErrorKind;
use comind_core::event::RunOutcome;
use comind_core::{CheckStatus, DownOptions, UpOptions};
use comind_test_support::docker::{self, SERVICE_IMAGES};
use comind_test_support::require_peer;

use crate::support::{self, TestEnv};

#[tokio::test]
async fn a_taken_port_rejects_the_run_and_nothing_is_created() {
    let docker = require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let t = TestEnv::new(&docker, "port");
    let port = t.config.services.postgres.local.port.get();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();

    let report = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Rejected,
        "{:?}",
        report.summary
    );
    let error = support::phase_error(&report, "postgres");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
    let text = error.to_string();
    assert!(text.contains(&port.to_string()), "{text}");
    assert!(text.contains("services.postgres.local.port"), "{text}");
    assert!(
        error
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("comind.yaml"),
        "{text}"
    );
    let left = t.owned(None).await;
    assert!(left.is_empty(), "a rejected run created {:?}", left.all());
    assert!(
        t.credential_files().is_empty(),
        "{:?}",
        t.credential_files()
    );

    // doctor says the same, naming the field.
    let checks = t.bootstrap().doctor().await;
    let check = checks
        .iter()
        .find(|c| c.check == format!("port {port}"))
        .unwrap_or_else(|| panic!("no check of port {port}: {checks:?}"));
    assert_eq!(check.status, CheckStatus::Failed, "{check:?}");
    assert!(
        check.detail.contains("services.postgres.local.port"),
        "{check:?}"
    );
}

#[tokio::test]
async fn a_network_that_is_not_ours_is_never_touched() {
    let docker = require_peer!(docker::ready(&SERVICE_IMAGES).await);
    let t = TestEnv::new(&docker, "foreign");
    let name = format!("comind-{}", t.name);
    // Labelled with the environment only so the test's cleanup finds it; without the
    // managed-by label it is not Comind's.
    let created = docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            labels: Some(HashMap::from([(
                LABEL_ENVIRONMENT.to_string(),
                t.name.clone(),
            )])),
            ..Default::default()
        })
        .await
        .unwrap();

    let report = t
        .bootstrap()
        .up(&Default::default(), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Rejected,
        "{:?}",
        report.summary
    );
    let error = support::phase_error(&report, "network");
    assert_eq!(error.kind, ErrorKind::Conflict, "{error}");
    assert!(
        error
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("local.network"),
        "{error}"
    );
    assert!(t.owned(None).await.is_empty());

    let down = t
        .bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        down.summary
    );
    let still = docker.inspect_network(&name, None).await.unwrap();
    assert_eq!(
        still.id.as_deref(),
        Some(created.id.as_str()),
        "the foreign network was touched"
    );
}

#[tokio::test]
async fn doctor_checks_the_daemon_the_api_the_ports_and_k3d() {
    let docker = require_peer!(docker::ready(&[]).await);
    let t = TestEnv::new(&docker, "doctor");
    let checks = t.bootstrap().doctor().await;
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no `{name}` check: {checks:?}"))
    };
    assert_eq!(find("docker daemon").status, CheckStatus::Ok, "{checks:?}");
    assert_eq!(
        find("docker API version").status,
        CheckStatus::Ok,
        "{checks:?}"
    );
    let port = t.config.services.cache.local.port.get();
    assert_eq!(find(&format!("port {port}")).status, CheckStatus::Ok);
    assert!(
        checks.iter().all(|c| c.check != "k3d"),
        "no cluster, no k3d check: {checks:?}"
    );
    // With the cluster: the configured binary is run and must be k3d v5.
    let double = require_peer!(comind_test_support::k3d::K3dDouble::new());
    let doctor_with = |k3d: &std::path::Path| {
        let mut config = t.config.clone();
        config.local.cluster.enabled = true;
        config.local.cluster.k3d = k3d.to_path_buf();
        let env = comind_core::Environment::with_state_root(config, t.state.path());
        async move {
            comind_core::Bootstrap::new(env)
                .with_provider(comind_local::LocalProvider::new())
                .doctor()
                .await
        }
    };
    let checks = doctor_with(double.binary()).await;
    let k3d = checks.iter().find(|c| c.check == "k3d").unwrap();
    assert_eq!(k3d.status, CheckStatus::Ok, "{k3d:?}");
    assert!(k3d.detail.starts_with("v5."), "{k3d:?}");
    let checks = doctor_with(std::path::Path::new("/nonexistent/k3d")).await;
    let k3d = checks.iter().find(|c| c.check == "k3d").unwrap();
    assert_eq!(k3d.status, CheckStatus::Failed, "{k3d:?}");
    assert!(
        k3d.fix.as_deref().unwrap().contains("local.cluster.k3d"),
        "{k3d:?}"
    );
    // An unreachable daemon is a failed check that says how to start Docker.
    let mut config = t.config.clone();
    config.local.docker_host = Some("unix:///nonexistent/docker.sock".to_string());
    let env = comind_core::Environment::with_state_root(config, t.state.path());
    let checks = comind_core::Bootstrap::new(env)
        .with_provider(comind_local::LocalProvider::new())
        .doctor()
        .await;
    let daemon = checks.iter().find(|c| c.check == "docker daemon").unwrap();
    assert_eq!(daemon.status, CheckStatus::Failed);
    assert!(
        daemon
            .fix
            .as_deref()
            .unwrap()
            .contains("systemctl start docker"),
        "{daemon:?}"
    );
}

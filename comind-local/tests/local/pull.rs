//! A real image pull: a registry runs in a container on a free port, an image with a
//! layer of its own is pushed there and removed locally, and a backend pulls it
//! through an image override, reporting progress as it goes.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptions, UploadToContainerOptionsBuilder,
};
use comind_core::config::ImageRef;
use comind_core::environment::LABEL_ENVIRONMENT;
use comind_core::event::{Event, RunOutcome};
use comind_core::{Action, DownOptions, UpOptions};
use comind_test_support::docker::{self, REDIS_IMAGE, REGISTRY_IMAGE};
use comind_test_support::{ports, require_peer};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::markers;
use crate::support::{self, TestEnv};

/// Whether the registry answers `GET /v2/` with 200.
async fn registry_answers(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request =
        format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// Starts the registry stand-in on a free 127.0.0.1 port; returns the port.
async fn start_registry(docker: &Docker, t: &TestEnv) -> u16 {
    let port = ports::free_port();
    let name = format!("{}-registry", t.name);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            ContainerCreateBody {
                image: Some(REGISTRY_IMAGE.to_string()),
                labels: Some(HashMap::from([(
                    LABEL_ENVIRONMENT.to_string(),
                    t.name.clone(),
                )])),
                exposed_ports: Some(vec!["5000/tcp".to_string()]),
                host_config: Some(HostConfig {
                    port_bindings: Some(HashMap::from([(
                        "5000/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".to_string()),
                            host_port: Some(port.to_string()),
                        }]),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&name, None).await.unwrap();
    // Poll with backoff until it answers.
    let mut wait = Duration::from_millis(20);
    for _ in 0..40 {
        if registry_answers(port).await {
            return port;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(Duration::from_millis(500));
    }
    panic!("the registry on port {port} never answered");
}

/// Commits the Redis stand-in plus a layer of random bytes as `repository:r1`, pushes
/// it to the registry and removes it locally, so that pulling it really downloads a
/// layer.
async fn push_unique_image(docker: &Docker, t: &TestEnv, repository: &str) {
    let builder = format!("{}-builder", t.name);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&builder).build()),
            ContainerCreateBody {
                image: Some(REDIS_IMAGE.to_string()),
                labels: Some(HashMap::from([(
                    LABEL_ENVIRONMENT.to_string(),
                    t.name.clone(),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let blob: Vec<u8> = (0..3_000_000).map(|_| fastrand::u8(..)).collect();
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(blob.len() as u64);
    header.set_mode(0o644);
    archive
        .append_data(&mut header, "comind-pull-test.bin", blob.as_slice())
        .unwrap();
    docker
        .upload_to_container(
            &builder,
            Some(UploadToContainerOptionsBuilder::new().path("/").build()),
            bollard::body_full(archive.into_inner().unwrap().into()),
        )
        .await
        .unwrap();
    docker
        .commit_container(
            CommitContainerOptionsBuilder::new()
                .container(&builder)
                .repo(repository)
                .tag("r1")
                .build(),
            ContainerConfig::default(),
        )
        .await
        .unwrap();
    docker
        .remove_container(
            &builder,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let mut push = docker.push_image(
        repository,
        Some(PushImageOptionsBuilder::new().tag("r1").build()),
        None,
    );
    while let Some(item) = push.next().await {
        item.unwrap();
    }
    docker
        .remove_image(
            &format!("{repository}:r1"),
            None::<RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_image_is_pulled_with_progress_events() {
    let docker = require_peer!(docker::ready(&[REDIS_IMAGE, REGISTRY_IMAGE]).await);
    let mut t = TestEnv::new(&docker, "pull");
    let port = start_registry(&docker, &t).await;
    let repository = format!("127.0.0.1:{port}/comind-pull/{}", t.name);
    let image = format!("{repository}:r1");
    t.remove_image_later(&image);
    push_unique_image(&docker, &t, &repository).await;
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "the image is still here"
    );

    t.config.services.cache.local.image = ImageRef::new(&image).unwrap();
    let only = support::only(&["cache"]);
    let plan = t.bootstrap().plan(&only).await.unwrap();
    assert!(
        plan.plans
            .values()
            .flat_map(|p| &p.changes)
            .any(|c| c.kind == "image" && c.action == Action::Create && c.name == image),
        "the plan does not say it pulls: {:?}",
        plan.plans
    );

    let bootstrap = t.bootstrap();
    let mut events = bootstrap.events().subscribe();
    let report = bootstrap.up(&only, &UpOptions::default()).await.unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    let mut fractions = Vec::new();
    let mut messages = Vec::new();
    while let Some(record) = events.try_recv() {
        if let Event::PhaseProgress {
            phase,
            message,
            fraction,
        } = &record.event
            && phase.as_str() == "cache"
            && message.contains("pull")
        {
            messages.push(message.clone());
            fractions.extend(*fraction);
        }
    }
    assert!(!messages.is_empty(), "no pull progress was reported");
    assert!(messages.iter().any(|m| m.contains(&image)), "{messages:?}");
    assert_eq!(fractions.last().copied(), Some(1.0), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.contains(" MB")),
        "no byte counts in {messages:?}"
    );
    docker
        .inspect_image(&image)
        .await
        .expect("the image was pulled");
    markers::write_redis(&report.merged_outputs(), "pulled").await;

    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(t.owned(None).await.is_empty());
}

#[tokio::test]
async fn a_failed_pull_names_the_image_and_the_override() {
    let docker = require_peer!(docker::ready(&[]).await);
    let mut t = TestEnv::new(&docker, "nopull");
    // Nothing listens there: the pull fails at once.
    let image = format!("127.0.0.1:{}/comind/none:r1", ports::free_port());
    t.config.services.cache.local.image = ImageRef::new(&image).unwrap();
    let report = t
        .bootstrap()
        .up(&support::only(&["cache"]), &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Failed,
        "{:?}",
        report.summary
    );
    let error = support::phase_error(&report, "cache");
    let text = error.to_string();
    assert!(text.contains(&image), "{text}");
    assert!(text.contains("services.cache.local.image"), "{text}");
    assert!(!error.transient, "{text}");
    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
}

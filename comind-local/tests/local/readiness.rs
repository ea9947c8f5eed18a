//! A service that never answers its probe fails with a timeout whose message holds
//! the last lines of the container's log, and no secret.

use std::time::{Duration, Instant};

use comind_core::config::{DurationSetting, ImageRef};
use comind_core::error::ErrorKind;
use comind_core::event::RunOutcome;
use comind_core::{DownOptions, UpOptions};
use comind_test_support::docker::{self, REDIS_IMAGE};
use comind_test_support::require_peer;

use crate::support::{self, TestEnv};

#[tokio::test]
async fn a_service_that_never_answers_times_out_with_its_log() {
    let docker = require_peer!(docker::ready(&[REDIS_IMAGE]).await);
    let mut t = TestEnv::new(&docker, "ready");
    // The Redis image where PostgreSQL is expected: the container runs (Redis, on
    // 6379) but nothing ever answers on the PostgreSQL port.
    t.config.services.postgres.local.image = ImageRef::new(REDIS_IMAGE).unwrap();
    t.config.local.ready_timeout = DurationSetting::new(Duration::from_secs(4));

    let started = Instant::now();
    let report = t
        .bootstrap()
        .up(&support::only(&["postgres"]), &UpOptions::default())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Failed,
        "{:?}",
        report.summary
    );
    let error = support::phase_error(&report, "postgres");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    let text = error.to_string();
    assert!(text.contains("did not answer within 4s"), "{text}");
    assert!(text.contains("last error"), "{text}");
    assert!(text.contains("lines of its log"), "{text}");
    // A line only Redis writes: the excerpt really is the container's log.
    assert!(text.contains("Ready to accept connections"), "{text}");
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");

    let secrets = std::fs::read_to_string(
        t.state
            .path()
            .join("local")
            .join(&t.name)
            .join("credentials/postgres.json"),
    )
    .unwrap();
    let secrets: serde_json::Value = serde_json::from_str(&secrets).unwrap();
    for who in ["superuser", "app"] {
        let password = secrets[who]["password"].as_str().unwrap();
        assert!(
            !text.contains(password),
            "the {who} password leaked into the error"
        );
    }

    t.bootstrap()
        .down(&support::purge(), &DownOptions::default())
        .await
        .unwrap();
    assert!(t.owned(None).await.is_empty());
}

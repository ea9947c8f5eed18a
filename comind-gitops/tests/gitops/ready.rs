//! Readiness against the real API server. No kubelet runs there, so a Deployment never
//! becomes available by itself; where a test needs a controller's verdict (a Job that
//! failed) it writes the status through the status subresource, as the Job controller
//! would, and says so.

use std::time::{Duration, Instant};

use comind_core::engine::Cancellation;
use comind_core::{ErrorKind, Operation};
use comind_gitops::apply::{Kind, ObjectRef};
use comind_gitops::ready::{rule_for, until_ready};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::require_peer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support;

async fn namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// Waits for `reference` by its kind's built-in rule.
async fn wait(
    client: &kube::Client,
    ctx: &comind_core::PhaseContext,
    kind: &Kind,
    reference: &ObjectRef,
    timeout: Duration,
) -> comind_core::Result<()> {
    until_ready(
        client,
        ctx,
        kind,
        reference,
        rule_for(kind).unwrap(),
        timeout,
    )
    .await
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deployment_that_never_becomes_available_times_out_naming_it_and_its_state() {
    let peer = require_peer!(KubePeer::shared());
    let client = support::client(peer, User::Admin).await;
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "ready", state.path(), |_| {});
    let ns = format!("r-{}", env.name());
    namespace(&client, &ns).await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("web"))
        .await
        .unwrap();
    let kind = Kind::of::<Deployment>();
    let reference = ObjectRef {
        kind: kind.name(),
        namespace: Some(ns.clone()),
        name: "web".into(),
    };
    let ctx = support::ctx(&env, Operation::Apply);
    let started = Instant::now();
    let err = wait(&client, &ctx, &kind, &reference, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let text = err.to_string();
    assert!(
        text.contains(&format!("Deployment.apps {ns}/web")),
        "{text}"
    );
    assert!(text.contains("replicas"), "the last state: {text}");
}

#[tokio::test]
async fn a_failed_job_fails_the_wait_at_once_and_a_cancelled_run_stops_waiting() {
    let peer = require_peer!(KubePeer::shared());
    let client = support::client(peer, User::Admin).await;
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "ready", state.path(), |_| {});
    let ns = format!("r-{}", env.name());
    namespace(&client, &ns).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backup"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "dump", "image": "registry.invalid/dump:1"}]
        }}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let kind = Kind::of::<Job>();
    let reference = ObjectRef {
        kind: kind.name(),
        namespace: Some(ns.clone()),
        name: "backup".into(),
    };

    // Cancelled while it waits: it stops at once.
    let cancel = Cancellation::new();
    let ctx = support::ctx(&env, Operation::Apply).with_cancellation(cancel.clone());
    let waiting = wait(&client, &ctx, &kind, &reference, Duration::from_secs(60));
    let started = Instant::now();
    let (result, ()) = tokio::join!(waiting, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.request();
    });
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));

    // The Job controller's verdict, written as it would write it (its Pod never runs
    // here). The API server checks a finished Job's status as it does the controller's.
    let now = "2026-01-01T00:00:00Z";
    jobs.patch_status(
        "backup",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {
            "active": 0,
            "failed": 1,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": now}
            ]
        }})),
    )
    .await
    .unwrap();
    let ctx = support::ctx(&env, Operation::Apply);
    let started = Instant::now();
    let err = wait(&client, &ctx, &kind, &reference, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once"
    );
    assert!(err.to_string().contains("backoff limit"), "{err}");
}

//! The kubelet's part, played: the test control plane has no scheduler and no kubelet,
//! so the Pods its controllers make never run, and no Deployment or StatefulSet ever
//! becomes available. [`Kubelet::start`] watches the Pods of a namespace and reports
//! each as a kubelet would once its containers run and pass their probes (phase
//! `Running`, `Ready`, every container ready); the real ReplicaSet, Deployment and
//! StatefulSet controllers then count them, and the workloads' status is theirs.
//! Nothing runs: this proves what Comind does with a workload that becomes
//! available, never that the workload's image works.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// The kubelets of one namespace, until dropped.
#[derive(Debug)]
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    /// Reports every Pod of `namespace` running and ready, now and as they come.
    pub fn start(client: kube::Client, namespace: &str) -> Kubelet {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            let mut events = watcher(pods.clone(), watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                let Ok(pod) = event else { continue };
                if pod.metadata.deletion_timestamp.is_some() || ready(&pod) {
                    continue;
                }
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                let containers: Vec<_> = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .map(|c| {
                        json!({
                            "name": c.name, "ready": true, "started": true, "restartCount": 0,
                            "image": c.image, "imageID": "",
                            "state": {"running": {"startedAt": now()}}
                        })
                    })
                    .collect();
                let conditions: Vec<_> =
                    ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
                        .iter()
                        .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": now()}))
                        .collect();
                let status = json!({"status": {
                    "phase": "Running", "conditions": conditions,
                    "containerStatuses": containers, "podIP": "10.42.0.10",
                    "startTime": now()
                }});
                // A Pod deleted meanwhile, or changed: the watch brings it again.
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        });
        Kubelet { task }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plays the kubelet's part for one Pod of the Job `job`: waits (up to 90 s) for the
/// Job controller to make a Pod of it that has not ended (pending, or running
/// because a [`Kubelet`] reported it so), then reports it ended as a
/// kubelet would, every container terminated with `exit_code` (phase `Succeeded` for
/// 0, else `Failed`). Returns the Pod's name. Nothing runs: the real Job controller
/// then judges the Job by these ends.
///
/// # Panics
/// When no such Pod appears, or the API refuses the status.
pub async fn end_job_pod(pods: &Api<Pod>, job: &str, exit_code: i32) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let pod = loop {
        let listed = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap_or_else(|e| panic!("cannot list the Pods of Job {job}: {e}"));
        let open = listed.items.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_none_or(|phase| !matches!(phase, "Succeeded" | "Failed"))
        });
        if let Some(pod) = open {
            break pod;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Job controller made no Pod for {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let terminated = |container: &str| {
        json!({
            "name": container, "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": {
                "exitCode": exit_code, "reason": reason,
                "startedAt": now(), "finishedAt": now()
            }}
        })
    };
    let spec = pod.spec.unwrap_or_default();
    let init: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| terminated(&c.name))
        .collect();
    let main: Vec<_> = spec
        .containers
        .iter()
        .map(|c| terminated(&c.name))
        .collect();
    let status = json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "startTime": now(), "initContainerStatuses": init, "containerStatuses": main,
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("cannot report Pod {name} ended: {e}"));
    name
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

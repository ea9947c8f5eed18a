//! Readiness as data: a rule per kind reads an object's status in core's wait
//! vocabulary ([`Observed`]: ready, pending in a [`Status`], or failed for good), and
//! [`until_ready`] watches the object (no polling, no fixed sleeps) with core's
//! [`Wait`], so a Kubernetes wait reports, fails and times out exactly as a Docker or
//! an AWS wait does.
//!
//! | kind | ready when | failed when |
//! | --- | --- | --- |
//! | Deployment | the controller saw this generation, and every replica is updated and available | `Progressing` is false with `ProgressDeadlineExceeded` |
//! | StatefulSet | this generation is observed, and every replica is updated and ready | |
//! | DaemonSet | this generation is observed, and every scheduled pod is updated and available | |
//! | Job | `Complete` is true | `Failed` is true |
//! | CustomResourceDefinition | `Established` is true | `NamesAccepted` is false |
//! | Service of type LoadBalancer | the load balancer has an address | |
//!
//! Kinds without a rule are ready once applied. Custom resources get rules of their
//! own ([`Rule`]), such as Argo CD's Applications.

use std::sync::Arc;
use std::time::Duration;

use comind_core::wait::{Observed, Status, Wait};
use comind_core::{Error, PhaseContext, Result};
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;

use crate::apply::{Kind, ObjectRef, Scope};

/// A readiness rule: an object's status, read in core's wait vocabulary (ready,
/// pending in a [`Status`], or failed in a status it will not leave by itself).
pub type Rule = fn(&DynamicObject) -> Observed<()>;

/// The built-in rule for `kind`, if it has one.
pub fn rule_for(kind: &Kind) -> Option<Rule> {
    match (kind.resource.group.as_str(), kind.resource.kind.as_str()) {
        ("apps", "Deployment") => Some(deployment),
        ("apps", "StatefulSet") => Some(stateful_set),
        ("apps", "DaemonSet") => Some(daemon_set),
        ("batch", "Job") => Some(job),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(crd),
        ("", "Service") => Some(load_balancer),
        _ => None,
    }
}

fn int(value: &Value, path: &[&str]) -> i64 {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The condition `type_` of `object`'s status: (status, reason, message).
fn condition<'a>(object: &'a DynamicObject, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default(),
            )
        })
}

fn pending(status: String, message: Option<String>) -> Observed<()> {
    Observed::Pending(Status::new(status).with_message(message))
}

fn failed(status: &str, message: &str) -> Observed<()> {
    Observed::Failed(Status::new(status).with_message(Some(message.to_string())))
}

fn generation_seen(object: &DynamicObject) -> Option<Observed<()>> {
    let generation = object.metadata.generation.unwrap_or(0);
    let observed = int(&object.data, &["status", "observedGeneration"]);
    (observed < generation).then(|| {
        pending(
            format!("generation {generation} not observed yet"),
            Some(format!("the controller last saw generation {observed}")),
        )
    })
}

fn deployment(object: &DynamicObject) -> Observed<()> {
    if let Some(("False", reason @ "ProgressDeadlineExceeded", message)) =
        condition(object, "Progressing")
    {
        return failed(reason, message);
    }
    if let Some(waiting) = generation_seen(object) {
        return waiting;
    }
    let wanted = object.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = int(&object.data, &["status", "updatedReplicas"]);
    let available = int(&object.data, &["status", "availableReplicas"]);
    if updated >= wanted && available >= wanted {
        return Observed::Ready(());
    }
    pending(
        format!("{updated} of {wanted} replicas updated, {available} available"),
        condition(object, "Available").map(|(_, reason, message)| format!("{reason}: {message}")),
    )
}

fn stateful_set(object: &DynamicObject) -> Observed<()> {
    if let Some(waiting) = generation_seen(object) {
        return waiting;
    }
    let wanted = object.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = int(&object.data, &["status", "updatedReplicas"]);
    let ready = int(&object.data, &["status", "readyReplicas"]);
    if updated >= wanted && ready >= wanted {
        return Observed::Ready(());
    }
    pending(
        format!("{updated} of {wanted} replicas updated, {ready} ready"),
        None,
    )
}

fn daemon_set(object: &DynamicObject) -> Observed<()> {
    if let Some(waiting) = generation_seen(object) {
        return waiting;
    }
    let wanted = int(&object.data, &["status", "desiredNumberScheduled"]);
    let updated = int(&object.data, &["status", "updatedNumberScheduled"]);
    let available = int(&object.data, &["status", "numberAvailable"]);
    if updated >= wanted && available >= wanted {
        return Observed::Ready(());
    }
    pending(
        format!("{updated} of {wanted} pods updated, {available} available"),
        None,
    )
}

fn job(object: &DynamicObject) -> Observed<()> {
    if let Some(("True", reason, message)) = condition(object, "Failed") {
        return failed(reason, message);
    }
    match condition(object, "Complete") {
        Some(("True", _, _)) => Observed::Ready(()),
        _ => pending(
            format!(
                "{} succeeded, {} active",
                int(&object.data, &["status", "succeeded"]),
                int(&object.data, &["status", "active"])
            ),
            None,
        ),
    }
}

fn crd(object: &DynamicObject) -> Observed<()> {
    if let Some(("False", reason, message)) = condition(object, "NamesAccepted") {
        return failed(reason, message);
    }
    match condition(object, "Established") {
        Some(("True", _, _)) => Observed::Ready(()),
        _ => pending("not established".to_string(), None),
    }
}

fn load_balancer(object: &DynamicObject) -> Observed<()> {
    if object.data["spec"]["type"] != "LoadBalancer" {
        return Observed::Ready(());
    }
    let addresses = object.data["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if addresses {
        Observed::Ready(())
    } else {
        pending("no load balancer address".to_string(), None)
    }
}

/// Watches the object `reference` of `kind` until `rule` says it is ready, with
/// core's [`Wait`]: a progress event per change of status, a failed status at once,
/// a timeout naming the object and its last status, and cancellation.
///
/// # Errors
/// As [`Wait::watch`].
pub async fn until_ready(
    client: &kube::Client,
    ctx: &PhaseContext,
    kind: &Kind,
    reference: &ObjectRef,
    rule: Rule,
    timeout: Duration,
) -> Result<()> {
    let api: Api<DynamicObject> = match (kind.scope, &reference.namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        _ => Api::all_with(client.clone(), &kind.resource),
    };
    let kind_name = kind.name();
    let path = reference.path();
    let wait = Wait::new(&kind_name, &path, "ready", timeout, None)
        .on("the cluster")
        .with_failed_hint("read its events and conditions; waiting longer will not help");
    // The watch lists the object, then follows its changes, reconnecting by itself.
    let feed = Arc::new(tokio::sync::Mutex::new(
        watcher::watch_object(api, &reference.name).boxed(),
    ));
    wait.watch(ctx, || {
        let feed = feed.clone();
        async move {
            let event = feed.lock().await.next().await?;
            Some(match event {
                Ok(Some(object)) => Ok(rule(&object)),
                Ok(None) => Ok(pending("absent".to_string(), None)),
                Err(e) => Err(Error::unavailable(format!(
                    "the watch was interrupted: {e}"
                ))),
            })
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_deployment_is_ready_when_its_generation_is_seen_and_replicas_available() {
        let d = |observed: i64, available: i64| {
            object(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "generation": 2},
                "spec": {"replicas": 2},
                "status": {"observedGeneration": observed, "updatedReplicas": 2,
                           "availableReplicas": available}
            }))
        };
        assert!(matches!(deployment(&d(1, 2)), Observed::Pending(_)));
        assert!(matches!(deployment(&d(2, 1)), Observed::Pending(_)));
        assert!(matches!(deployment(&d(2, 2)), Observed::Ready(())));
        let stuck = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 1},
            "status": {"conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-1 has timed out"}]}
        }));
        assert!(
            matches!(deployment(&stuck), Observed::Failed(s) if s.describe().contains("timed out"))
        );
    }

    #[test]
    fn a_job_completes_or_fails_at_once() {
        let j = |t: &str| {
            object(json!({
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                "status": {"conditions": [{"type": t, "status": "True", "reason": "R", "message": "m"}]}
            }))
        };
        assert!(matches!(job(&j("Complete")), Observed::Ready(())));
        assert!(matches!(job(&j("Failed")), Observed::Failed(_)));
    }

    #[test]
    fn only_load_balancers_wait_for_an_address() {
        let cluster_ip = object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "ClusterIP"}
        }));
        assert!(matches!(load_balancer(&cluster_ip), Observed::Ready(())));
        let lb = object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}
        }));
        assert!(matches!(load_balancer(&lb), Observed::Pending(_)));
    }
}

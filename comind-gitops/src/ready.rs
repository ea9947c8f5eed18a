//! Readiness as data: a rule per kind says, from an object's status, whether it is
//! ready, still on its way (and why), or failed for good; [`until_ready`] watches the
//! object (no polling, no fixed sleeps) until its rule says ready or failed, under a
//! timeout, with a progress event each time the reason changes.
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

use std::time::Duration;

use comind_core::{Error, PhaseContext, Result};
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;

use crate::apply::{Kind, ObjectRef, Scope};

/// What an object's rule says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// It serves its purpose.
    Ready,
    /// On its way; the reason, for progress lines and a timeout's message.
    Waiting(String),
    /// It will not get there by waiting; why.
    Failed(String),
}

/// A readiness rule: the status of an object, read as [`Readiness`].
pub type Rule = fn(&DynamicObject) -> Readiness;

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

fn generation_seen(object: &DynamicObject) -> Option<Readiness> {
    let generation = object.metadata.generation.unwrap_or(0);
    let observed = int(&object.data, &["status", "observedGeneration"]);
    (observed < generation).then(|| {
        Readiness::Waiting(format!(
            "the controller has not seen generation {generation} yet (it saw {observed})"
        ))
    })
}

fn deployment(object: &DynamicObject) -> Readiness {
    if let Some(("False", "ProgressDeadlineExceeded", message)) = condition(object, "Progressing") {
        return Readiness::Failed(format!(
            "its rollout exceeded its progress deadline: {message}"
        ));
    }
    if let Some(waiting) = generation_seen(object) {
        return waiting;
    }
    let wanted = object.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = int(&object.data, &["status", "updatedReplicas"]);
    let available = int(&object.data, &["status", "availableReplicas"]);
    if updated >= wanted && available >= wanted {
        Readiness::Ready
    } else {
        let why = condition(object, "Available")
            .map(|(_, reason, message)| format!(" ({reason}: {message})"))
            .unwrap_or_default();
        Readiness::Waiting(format!(
            "{updated} of {wanted} replicas updated, {available} available{why}"
        ))
    }
}

fn stateful_set(object: &DynamicObject) -> Readiness {
    if let Some(waiting) = generation_seen(object) {
        return waiting;
    }
    let wanted = object.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = int(&object.data, &["status", "updatedReplicas"]);
    let ready = int(&object.data, &["status", "readyReplicas"]);
    if updated >= wanted && ready >= wanted {
        Readiness::Ready
    } else {
        Readiness::Waiting(format!(
            "{updated} of {wanted} replicas updated, {ready} ready"
        ))
    }
}

fn daemon_set(object: &DynamicObject) -> Readiness {
    if let Some(waiting) = generation_seen(object) {
        return waiting;
    }
    let wanted = int(&object.data, &["status", "desiredNumberScheduled"]);
    let updated = int(&object.data, &["status", "updatedNumberScheduled"]);
    let available = int(&object.data, &["status", "numberAvailable"]);
    if updated >= wanted && available >= wanted {
        Readiness::Ready
    } else {
        Readiness::Waiting(format!(
            "{updated} of {wanted} pods updated, {available} available"
        ))
    }
}

fn job(object: &DynamicObject) -> Readiness {
    if let Some(("True", reason, message)) = condition(object, "Failed") {
        return Readiness::Failed(format!("it failed ({reason}): {message}"));
    }
    match condition(object, "Complete") {
        Some(("True", _, _)) => Readiness::Ready,
        _ => Readiness::Waiting(format!(
            "{} succeeded, {} active",
            int(&object.data, &["status", "succeeded"]),
            int(&object.data, &["status", "active"])
        )),
    }
}

fn crd(object: &DynamicObject) -> Readiness {
    if let Some(("False", reason, message)) = condition(object, "NamesAccepted") {
        return Readiness::Failed(format!("its names were not accepted ({reason}): {message}"));
    }
    match condition(object, "Established") {
        Some(("True", _, _)) => Readiness::Ready,
        _ => Readiness::Waiting("not established yet".to_string()),
    }
}

fn load_balancer(object: &DynamicObject) -> Readiness {
    if object.data["spec"]["type"] != "LoadBalancer" {
        return Readiness::Ready;
    }
    let addresses = object.data["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if addresses {
        Readiness::Ready
    } else {
        Readiness::Waiting("its load balancer has no address yet".to_string())
    }
}

/// Watches the object `reference` of `kind` until `rule` says it is ready, failing at
/// once when the rule says failed, and with a timeout naming the object and its last
/// reason after `timeout`.
///
/// # Errors
/// `Internal` when the object failed (its rule's reason), `Timeout` naming the object
/// and its last state, `Cancelled` when the run is cancelled, and the API's errors.
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
    let mut last = "not seen yet".to_string();
    let mut events = watcher::watch_object(api, &reference.name).boxed();
    let watching = async {
        while let Some(event) = events.next().await {
            let object = match event {
                Ok(Some(object)) => object,
                Ok(None) => {
                    last = "it does not exist".to_string();
                    continue;
                }
                // The watcher backs off and reconnects by itself; say why it waits.
                Err(e) => {
                    last = format!("watch interrupted: {e}");
                    continue;
                }
            };
            match rule(&object) {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(why) => {
                    return Err(Error::internal(why)
                        .with_resource(reference.to_string())
                        .with_hint(
                            "read its events and conditions; waiting longer will not help",
                        ));
                }
                Readiness::Waiting(why) => {
                    if why != last {
                        ctx.progress(format!("waiting for {reference}: {why}"));
                        last = why;
                    }
                }
            }
        }
        Err(Error::unavailable("the watch ended").with_resource(reference.to_string()))
    };
    tokio::select! {
        outcome = tokio::time::timeout(timeout, watching) => match outcome {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "it was not ready within {}: {last}",
                humantime::format_duration(timeout)
            ))
            .with_resource(reference.to_string())),
        },
        () = ctx.cancelled() => Err(Error::cancelled(format!(
            "cancelled while waiting for {reference}"
        ))),
    }
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
        assert!(matches!(deployment(&d(1, 2)), Readiness::Waiting(_)));
        assert!(matches!(deployment(&d(2, 1)), Readiness::Waiting(_)));
        assert_eq!(deployment(&d(2, 2)), Readiness::Ready);
        let stuck = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 1},
            "status": {"conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-1 has timed out"}]}
        }));
        assert!(matches!(deployment(&stuck), Readiness::Failed(m) if m.contains("timed out")));
    }

    #[test]
    fn a_job_completes_or_fails_at_once() {
        let j = |t: &str| {
            object(json!({
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                "status": {"conditions": [{"type": t, "status": "True", "reason": "R", "message": "m"}]}
            }))
        };
        assert_eq!(job(&j("Complete")), Readiness::Ready);
        assert!(matches!(job(&j("Failed")), Readiness::Failed(_)));
    }

    #[test]
    fn only_load_balancers_wait_for_an_address() {
        let cluster_ip = object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "ClusterIP"}
        }));
        assert_eq!(load_balancer(&cluster_ip), Readiness::Ready);
        let lb = object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}
        }));
        assert!(matches!(load_balancer(&lb), Readiness::Waiting(_)));
    }
}

//! Argo CD Applications: their health in core's wait vocabulary, and the wait for
//! Comind's Applications to converge.
//!
//! An Application is converged when Argo CD reports it `Synced` and `Healthy` and its
//! last operation (if any) `Succeeded`. A parent's health includes its children's
//! (the health check `platform/argocd` installs for `argoproj.io/Application`), so
//! waiting on the root waits on every application beneath it, and a failure names the
//! child application or resource that is not healthy, with its message.
//!
//! [`converge`] watches each Application (no polling), asks Argo CD to refresh one
//! that is not converged yet (instead of waiting for its 3-minute poll of the
//! repository), reports each change of sync and health as a progress event, fails at
//! once for a failed sync operation or a status `Degraded` for longer than the grace
//! period, and times out naming the application and what is not healthy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use comind_core::wait::{Observed, Status, Wait};
use comind_core::{Error, PhaseContext, Result};
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::Value;

use crate::apply::{Kind, Scope};

/// The kind `argoproj.io/v1alpha1` Application.
pub fn kind() -> Kind {
    Kind::custom(
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
        Scope::Namespaced,
    )
}

/// The annotation that asks Argo CD to refresh an Application now.
pub const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";

/// How often a wait looks again at an Application that did not change (the grace
/// period of a `Degraded` one runs out without an event).
const TICK: Duration = Duration::from_secs(1);

/// What Argo CD reports of an Application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `Synced`, `OutOfSync`, `Unknown`, or empty before Argo CD looked.
    pub sync: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing`, `Unknown`, or
    /// empty.
    pub health: String,
    /// The last operation's phase (`Running`, `Succeeded`, `Failed`, `Error`,
    /// `Terminating`), if any.
    pub operation: Option<String>,
    /// The last operation's message, the health's message, or the first condition.
    pub message: Option<String>,
    /// The resources of the Application that are not healthy, as
    /// `Kind namespace/name: health (message)`.
    pub unhealthy: Vec<String>,
}

impl Health {
    /// What `application`'s status says.
    pub fn of(application: &DynamicObject) -> Health {
        let status = &application.data["status"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let unhealthy = status["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["health"]["status"]
                    .as_str()
                    .is_some_and(|h| h != "Healthy")
            })
            .map(|r| {
                let namespace = r["namespace"].as_str().unwrap_or_default();
                let place = if namespace.is_empty() {
                    r["name"].as_str().unwrap_or_default().to_string()
                } else {
                    format!("{namespace}/{}", r["name"].as_str().unwrap_or_default())
                };
                let mut line = format!(
                    "{} {place}: {}",
                    r["kind"].as_str().unwrap_or_default(),
                    r["health"]["status"].as_str().unwrap_or_default()
                );
                if let Some(message) = text(&r["health"]["message"]) {
                    line.push_str(&format!(" ({message})"));
                }
                line
            })
            .collect();
        let condition = status["conditions"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(|c| {
                Some(format!(
                    "{}: {}",
                    c["type"].as_str()?,
                    c["message"].as_str().unwrap_or_default()
                ))
            });
        Health {
            sync: text(&status["sync"]["status"]).unwrap_or_default(),
            health: text(&status["health"]["status"]).unwrap_or_default(),
            operation: text(&status["operationState"]["phase"]),
            message: text(&status["operationState"]["message"])
                .or_else(|| text(&status["health"]["message"]))
                .or(condition),
            unhealthy,
        }
    }

    /// Whether it is converged.
    pub fn converged(&self) -> bool {
        self.sync == "Synced"
            && self.health == "Healthy"
            && self.operation.as_deref().is_none_or(|p| p == "Succeeded")
    }

    /// `Synced/Healthy`, with `?` for what Argo CD has not reported yet.
    pub fn summary(&self) -> String {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "?".to_string()
            } else {
                s.to_string()
            }
        };
        format!("{}/{}", or_unknown(&self.sync), or_unknown(&self.health))
    }

    fn detail(&self) -> Option<String> {
        let mut parts: Vec<String> = self.message.iter().cloned().collect();
        if !self.unhealthy.is_empty() {
            parts.push(format!("not healthy: {}", self.unhealthy.join("; ")));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The health of the Applications `names` in `namespace`, for `comind status`: ready
/// when every one is converged, each listed with its sync and health (and what is not
/// healthy).
///
/// # Errors
/// When the Applications cannot be read.
pub async fn report(
    client: &kube::Client,
    namespace: &str,
    names: &[String],
) -> Result<comind_core::PhaseStatus> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind().resource);
    let mut lines = Vec::new();
    let mut all = true;
    let mut any = false;
    for name in names {
        match api.get_opt(name).await {
            Ok(Some(object)) => {
                any = true;
                let health = Health::of(&object);
                all &= health.converged();
                let mut line = format!("{name} {}", health.summary());
                if !health.converged()
                    && let Some(detail) = health.detail()
                {
                    line.push_str(&format!(" ({detail})"));
                }
                lines.push(line);
            }
            Ok(None) => {
                all = false;
                lines.push(format!("{name} absent"));
            }
            Err(e) if crate::apply::is_not_found(&e) => {
                all = false;
                lines.push(format!("{name} absent (Argo CD's CRDs are not installed)"));
            }
            Err(e) => {
                return Err(crate::apply::api_error(
                    "read",
                    &format!("Application {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    let health = match (all, any) {
        (true, _) => comind_core::Health::Ready,
        (false, true) => comind_core::Health::Degraded,
        (false, false) => comind_core::Health::Absent,
    };
    Ok(comind_core::PhaseStatus {
        health,
        detail: lines.join("; "),
        outputs: None,
    })
}

/// Each of the Applications `names` in `namespace` as `sync/health` (its
/// [`Health::summary`]), `not in Argo CD yet`, or why it cannot be told.
pub async fn summaries(client: &kube::Client, namespace: &str, names: &[String]) -> Vec<String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind().resource);
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        found.push(match api.get_opt(name).await {
            Ok(Some(object)) => Health::of(&object).summary(),
            Ok(None) => "not in Argo CD yet".to_string(),
            Err(e) if crate::apply::is_not_found(&e) => "Argo CD is not installed".to_string(),
            Err(e) => format!("unknown ({e})"),
        });
    }
    found
}

/// How long to wait, and how long `Degraded` is tolerated.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For each Application.
    pub timeout: Duration,
    /// How long one may stay `Degraded`.
    pub degraded_grace: Duration,
}

/// Waits, concurrently, until every Application `names` in `namespace` is converged
/// (see the module documentation).
///
/// # Errors
/// `Timeout` naming the application, its sync and health and what is not healthy;
/// a failed-status error for a failed sync or a `Degraded` past the grace period;
/// `Cancelled`.
pub async fn converge(
    client: &kube::Client,
    ctx: &PhaseContext,
    namespace: &str,
    names: &[String],
    limits: Limits,
) -> Result<()> {
    let waits = names
        .iter()
        .map(|name| one(client, ctx, namespace, name, limits));
    futures_util::future::try_join_all(waits).await.map(|_| ())
}

async fn one(
    client: &kube::Client,
    ctx: &PhaseContext,
    namespace: &str,
    name: &str,
    limits: Limits,
) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind().resource);
    let path = format!("{namespace}/{name}");
    let wait = Wait::new(
        "Argo CD Application",
        &path,
        "synced and healthy",
        limits.timeout,
        "gitops.argocd.sync_timeout",
    )
    .on("Argo CD")
    .with_failed_hint(
        "open the application in Argo CD (`comind outputs` has its URL) to see why; \
             fix it in the GitOps repository or the cluster, then run `comind up` again",
    );
    struct Seen {
        last: Option<DynamicObject>,
        degraded_since: Option<Instant>,
        refreshed: bool,
    }
    let seen = Arc::new(tokio::sync::Mutex::new(Seen {
        last: None,
        degraded_since: None,
        refreshed: false,
    }));
    let feed = Arc::new(tokio::sync::Mutex::new(
        watcher::watch_object(api.clone(), name).boxed(),
    ));
    wait.watch(ctx, || {
        let (feed, seen, api) = (feed.clone(), seen.clone(), api.clone());
        async move {
            let mut seen = seen.lock().await;
            let event = {
                let mut feed = feed.lock().await;
                match tokio::time::timeout(TICK, feed.next()).await {
                    Ok(Some(event)) => Some(event),
                    Ok(None) => return None,
                    // Nothing new: look at the last state again.
                    Err(_) => None,
                }
            };
            match event {
                Some(Ok(Some(object))) => seen.last = Some(object),
                Some(Ok(None)) => seen.last = None,
                Some(Err(e)) => {
                    return Some(Err(Error::unavailable(format!("the watch was interrupted: {e}"))));
                }
                None => {}
            }
            let Some(object) = seen.last.clone() else {
                return Some(Ok(Observed::Pending(Status::new("absent"))));
            };
            let health = Health::of(&object);
            if health.converged() {
                return Some(Ok(Observed::Ready(())));
            }
            if !seen.refreshed {
                seen.refreshed = true;
                let patch = serde_json::json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}});
                // Only a hurry-up: Argo CD polls by itself anyway.
                let _ = api
                    .patch(&object.metadata.name.clone().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
            let status = Status::new(health.summary()).with_message(health.detail());
            if matches!(health.operation.as_deref(), Some("Failed" | "Error")) {
                return Some(Ok(Observed::Failed(status)));
            }
            if health.health == "Degraded" {
                let since = *seen.degraded_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= limits.degraded_grace {
                    return Some(Ok(Observed::Failed(Status::new(format!(
                        "{} for {}s",
                        health.summary(),
                        since.elapsed().as_secs()
                    ))
                    .with_message(health.detail()))));
                }
            } else {
                seen.degraded_since = None;
            }
            Some(Ok(Observed::Pending(status)))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "root", "namespace": "argocd"},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn converged_means_synced_healthy_and_the_last_operation_succeeded() {
        let ok = Health::of(&app(json!({
            "sync": {"status": "Synced"}, "health": {"status": "Healthy"},
            "operationState": {"phase": "Succeeded"}
        })));
        assert!(ok.converged());
        let running = Health::of(&app(json!({
            "sync": {"status": "Synced"}, "health": {"status": "Healthy"},
            "operationState": {"phase": "Running"}
        })));
        assert!(!running.converged());
        assert_eq!(Health::of(&app(json!({}))).summary(), "?/?");
    }

    #[test]
    fn what_is_not_healthy_is_named_with_its_message() {
        let degraded = Health::of(&app(json!({
            "sync": {"status": "Synced"},
            "health": {"status": "Degraded"},
            "resources": [
                {"kind": "Application", "namespace": "argocd", "name": "monitoring",
                 "health": {"status": "Degraded", "message": "Deployment grafana: 0/1 available"}},
                {"kind": "Service", "namespace": "argocd", "name": "ok", "health": {"status": "Healthy"}}
            ]
        })));
        let detail = degraded.detail().unwrap();
        assert!(
            detail.contains(
                "Application argocd/monitoring: Degraded (Deployment grafana: 0/1 available)"
            ),
            "{detail}"
        );
        assert!(!detail.contains("ok"), "{detail}");
    }
}

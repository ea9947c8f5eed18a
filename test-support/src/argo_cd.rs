//! Argo CD's part, played: no Argo CD controller runs in the tests, so a test that
//! installs Argo CD takes its released manifest from the test peers
//! ([`manifest`], with its checksum in `comind_gitops`) and writes each Application's
//! status as Argo CD's application controller would ([`report`], [`until_reported`]).
//! The Application CRD has no status subresource: Argo CD writes status with the
//! object, and so does this.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// The test peers' copy of Argo CD v3.5.1's released `install.yaml`.
pub fn manifest() -> PathBuf {
    crate::workspace::root().join("../shared/test-peers/reference/argocd-v3.5.1-install.yaml")
}

/// The status Argo CD reports for an Application that synced and is healthy, as its
/// CRD requires it (an operation state names its operation and start).
pub fn synced_and_healthy() -> Value {
    json!({
        "sync": {"status": "Synced", "revision": "0123456789abcdef0123456789abcdef01234567"},
        "health": {"status": "Healthy"},
        "operationState": {
            "phase": "Succeeded", "message": "successfully synced (all tasks run)",
            "startedAt": "2026-12-02T00:00:00Z", "finishedAt": "2026-12-02T00:00:01Z",
            "operation": {"sync": {"revision": "0123456789abcdef0123456789abcdef01234567"}}
        }
    })
}

/// The Applications of namespace `argocd`.
pub fn applications(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Application".into(),
        plural: "applications".into(),
    };
    Api::namespaced_with(client.clone(), "argocd", &resource)
}

/// Writes `status` as the status of the Application `name`.
///
/// # Panics
/// When the write fails.
pub async fn report(client: &kube::Client, name: &str, status: &Value) {
    applications(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot write the status of Application {name}: {e}"));
}

/// Waits for each Application of `names` to exist (the kind is served only once
/// Argo CD's CRDs are in), then writes it `status`.
///
/// # Panics
/// When one does not appear within two minutes.
pub async fn until_reported(client: &kube::Client, names: &[&str], status: &Value) {
    let apps = applications(client);
    let deadline = Instant::now() + Duration::from_secs(120);
    for name in names {
        while !matches!(apps.get_opt(name).await, Ok(Some(_))) {
            assert!(
                Instant::now() < deadline,
                "the Application {name} never came"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        chart_crds(client, name).await;
        report(client, name, status).await;
    }
}

/// The CRDs that Argo CD's sync of add-on `app`'s chart installs and that Comind's own
/// objects use: MetalLB's pool and advertisement, kube-prometheus-stack's
/// PrometheusRule. Their schemas are reduced to "any object": the real ones come with
/// the charts, which cannot be fetched here.
pub async fn chart_crds(client: &kube::Client, app: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (group, version, kinds): (&str, &str, &[(&str, &str)]) = match app {
        "metallb" => (
            "metallb.io",
            "v1beta1",
            &[
                ("IPAddressPool", "ipaddresspools"),
                ("L2Advertisement", "l2advertisements"),
            ],
        ),
        "monitoring" => (
            "monitoring.coreos.com",
            "v1",
            &[("PrometheusRule", "prometheusrules")],
        ),
        _ => return,
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (kind, plural) in kinds {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                          "listKind": format!("{kind}List")},
                "versions": [{"name": version, "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }))
        .unwrap_or_else(|e| panic!("the {kind} CRD: {e}"));
        // Already there (another test's): the same.
        let _ = crds.create(&Default::default(), &crd).await;
    }
}

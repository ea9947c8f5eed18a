//! The platform's add-ons as Argo CD Applications (`platform/addons`, after
//! `platform/gitops`): each a pinned Helm chart that Argo CD renders (no `helm`
//! binary anywhere), with `helm.valuesObject` rendered from `comind.yaml`, a sync wave,
//! automated sync with prune and self-heal, and `ServerSideApply=true` where the chart
//! ships CRDs too large for client-side apply. Comind owns the Applications (applied
//! and pruned like every other object): a disabled add-on's Application is deleted,
//! and Argo CD removes what it deployed.
//!
//! | add-on | chart | namespace | wave |
//! | --- | --- | --- | --- |
//! | `sealed-secrets` | `sealed-secrets` of bitnami-labs | `platform` | 0 |
//! | `monitoring` | `kube-prometheus-stack` of prometheus-community | `monitoring` | 1 |
//! | `metallb` (with `local.cluster.load_balancer: metallb`) | `metallb` | `kube-system` | 0 |
//!
//! On AWS the AWS Load Balancer Controller (`aws-load-balancer-controller` of
//! eks-charts, in `kube-system`) is an Application of its own phase,
//! [`load_balancer_controller`](super::load_balancer_controller), which this one runs
//! after: its webhook must serve before Grafana's Ingress is made.
//!
//! Grafana's admin password is generated like Argo CD's (kept in the state directory,
//! shown only by `comind outputs --reveal`) and handed to the chart as a Secret Comind
//! writes into `monitoring` (`admin.existingSecret`), never as a value in the
//! Application. `up` waits until every add-on is synced and healthy.
//!
//! Locally, ingress is the Traefik k3s ships, configured by k3s itself: nothing to
//! install.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use comind_core::config::{AddonSettings, Profile};
use comind_core::{Environment, Error, Operation, Outputs, PhaseContext, PhaseId, Result, Secret};
use futures_util::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{PhaseSpec, Prepare, Publish, argocd, gitops, ingress};
use crate::applications::{self, Limits};
use crate::apply::{Kind, Object, ObjectSet};

/// The phase's id.
pub const ID: &str = "platform/addons";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-addons";

/// Output: Grafana's URL.
pub const GRAFANA_URL: &str = "GRAFANA_URL";
/// Output (secret): Grafana's admin password.
pub const GRAFANA_ADMIN_PASSWORD: &str = "GRAFANA_ADMIN_PASSWORD";

/// The Secret that holds Grafana's admin account.
const GRAFANA_SECRET: &str = "grafana-admin";
/// The state directory's file of Grafana's admin password.
const GRAFANA_CREDENTIALS: &str = "grafana-admin";

/// An add-on: its chart, where it goes, and its place in the sync order.
#[derive(Debug, Clone, PartialEq)]
pub struct Addon {
    /// The Application's name.
    pub name: &'static str,
    /// The Helm repository.
    pub repo_url: &'static str,
    /// The chart.
    pub chart: &'static str,
    /// The pinned chart version.
    pub version: &'static str,
    /// The namespace it is installed into.
    pub namespace: &'static str,
    /// Its sync wave: lower waves are synced and healthy first.
    pub wave: i32,
    /// Whether the chart's CRDs need server-side apply.
    pub server_side: bool,
}

/// The Sealed Secrets controller. Chart 2.18.4 (controller 0.36.1): a maintained
/// release line of the project's own chart (the Bitnami one is not the upstream's).
pub const SEALED_SECRETS: Addon = Addon {
    name: "sealed-secrets",
    repo_url: "https://bitnami-labs.github.io/sealed-secrets",
    chart: "sealed-secrets",
    version: "2.18.4",
    namespace: "platform",
    wave: 0,
    server_side: false,
};

/// Prometheus, Grafana and Alertmanager. kube-prometheus-stack 84.0.1 (April 2026),
/// the community chart's current major at this release; its CRDs exceed client-side
/// apply's annotation limit.
pub const MONITORING: Addon = Addon {
    name: "monitoring",
    repo_url: "https://prometheus-community.github.io/helm-charts",
    chart: "kube-prometheus-stack",
    version: "84.0.1",
    namespace: "monitoring",
    wave: 1,
    server_side: true,
};

/// MetalLB, for `local.cluster.load_balancer: metallb` (k3s's ServiceLB is then off).
/// Chart 0.15.2 (June 2025), the project's current minor at this release. Wave 0:
/// LoadBalancer Services of later waves get addresses. Its address pool is
/// `platform/load-balancer`'s.
pub const METALLB: Addon = Addon {
    name: "metallb",
    repo_url: "https://metallb.github.io/metallb",
    chart: "metallb",
    version: "0.15.2",
    namespace: "kube-system",
    wave: 0,
    server_side: false,
};

/// Whether `env` runs MetalLB: on the local cluster Comind makes, when chosen.
pub fn uses_metallb(env: &Environment) -> bool {
    let config = env.config();
    config.makes_local_cluster()
        && config.local.cluster.load_balancer == comind_core::config::LoadBalancer::Metallb
        && config.gitops.addons.metallb.enabled
}

/// Every add-on `env` may run, with its settings in `comind.yaml`.
fn addons(env: &Environment) -> Vec<(Addon, &AddonSettings)> {
    let settings = &env.config().gitops.addons;
    let mut all = vec![
        (SEALED_SECRETS, &settings.sealed_secrets),
        (MONITORING, &settings.monitoring),
    ];
    if uses_metallb(env) {
        all.push((METALLB, &settings.metallb));
    }
    all
}

/// The add-ons `env` installs.
pub fn enabled(env: &Environment) -> Vec<Addon> {
    addons(env)
        .into_iter()
        .filter(|(_, s)| s.enabled)
        .map(|(a, _)| a)
        .collect()
}

/// The kinds the phase owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![applications::kind(), Kind::of::<SecretObject>()]
}

#[derive(Clone, Serialize, Deserialize)]
struct GrafanaAdmin {
    #[serde(with = "comind_core::secret::revealing")]
    password: Secret,
}

/// The Grafana password of one run: stored (apply), or made up for a plan that
/// writes nothing (`false`).
#[derive(Default)]
struct Credentials {
    grafana: Mutex<Option<(GrafanaAdmin, bool)>>,
}

impl Credentials {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(GrafanaAdmin, bool)>> {
        // A panic while holding this lock leaves a value that is still whole.
        self.grafana
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn prepare(&self, ctx: &PhaseContext) -> Result<()> {
        let state = ctx.env().state();
        let generate = || {
            Ok(GrafanaAdmin {
                password: Secret::generate(24)?,
            })
        };
        let grafana = match ctx.operation() {
            Operation::Apply => (state.credentials(GRAFANA_CREDENTIALS, generate)?, true),
            _ => match state.stored_credentials(GRAFANA_CREDENTIALS)? {
                Some(stored) => (stored, true),
                None => match self.lock().clone().filter(|(_, stored)| !stored) {
                    Some(made_up) => made_up,
                    None => (generate()?, false),
                },
            },
        };
        *self.lock() = Some(grafana);
        Ok(())
    }

    fn get(&self) -> Result<(GrafanaAdmin, bool)> {
        self.lock().clone().ok_or_else(|| {
            Error::internal("the add-ons were rendered before their credentials were read")
        })
    }
}

/// The phases the add-ons run after: the GitOps repository's, and the sealing key's
/// (the controller must find the environment's key when it first starts, or it makes
/// one of its own).
fn after(env: &Environment) -> Vec<PhaseId> {
    let mut after = vec![PhaseId::new(gitops::ID)];
    if env.config().gitops.addons.sealed_secrets.enabled {
        after.push(PhaseId::new(super::sealing_key::ID));
    }
    // Grafana's Ingress would be refused while the controller's webhook has no
    // endpoint.
    if super::load_balancer_controller::enabled(env) {
        after.push(PhaseId::new(super::load_balancer_controller::ID));
    }
    after
}

/// The phase, for `env`.
pub(crate) fn spec(env: &Environment) -> PhaseSpec {
    let credentials = Arc::new(Credentials::default());
    let prepare: Prepare = {
        let credentials = credentials.clone();
        Arc::new(move |ctx: &PhaseContext, _: Option<&kube::Client>| {
            let credentials = credentials.clone();
            async move { credentials.prepare(ctx) }.boxed()
        })
    };
    let publish: Publish = {
        let credentials = credentials.clone();
        Arc::new(move |ctx: &PhaseContext| {
            let env = ctx.env();
            if !env.config().gitops.addons.monitoring.enabled {
                return Ok(Some(Outputs::new()));
            }
            let (grafana, stored) = credentials.get()?;
            Ok(stored.then(|| {
                Outputs::new()
                    .text(GRAFANA_URL, ingress::url(env, "grafana"))
                    .secret(GRAFANA_ADMIN_PASSWORD, grafana.password)
            }))
        })
    };
    let mut spec = PhaseSpec::rendered(
        ID,
        "the platform's add-ons as Argo CD Applications",
        COMPONENT,
        kinds,
        after(env),
        Arc::new(move |ctx| {
            let (grafana, _) = credentials.get()?;
            render(ctx.env(), &grafana.password)
        }),
    );
    spec.prepare = Some(prepare);
    spec.publish = Some(publish);
    spec.converge = Some(Arc::new(|ctx: &PhaseContext, client: &kube::Client| {
        async move {
            let env = ctx.env();
            let settings = &env.config().gitops.argocd;
            let names: Vec<String> = enabled(env).iter().map(|a| a.name.to_string()).collect();
            ctx.progress(format!("waiting for Argo CD to sync {}", names.join(", ")));
            applications::converge(
                client,
                ctx,
                argocd::NAMESPACE,
                &names,
                Limits {
                    timeout: settings.sync_timeout.get(),
                    degraded_grace: settings.degraded_grace.get(),
                },
            )
            .await
        }
        .boxed()
    }));
    spec.report = Some(Arc::new(|ctx: &PhaseContext, client: &kube::Client| {
        async move {
            let names: Vec<String> = enabled(ctx.env())
                .iter()
                .map(|a| a.name.to_string())
                .collect();
            applications::report(client, argocd::NAMESPACE, &names).await
        }
        .boxed()
    }));
    spec
}

/// The values Comind gives `addon`, before the user's (`gitops.addons.<name>.values`).
fn values(env: &Environment, addon: &Addon) -> Value {
    let production = env.is_production();
    match addon.name {
        "sealed-secrets" => json!({
            // The name Comind's sealing and key provisioning expect.
            "fullnameOverride": "sealed-secrets-controller",
            // Never rotate: the environment's key (`platform/sealing-key`) is the one
            // every SealedSecret in Git is sealed with. `0` turns renewal off.
            "keyrenewperiod": "0",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        }),
        "monitoring" => {
            let small =
                |cpu: &str, memory: &str| json!({"requests": {"cpu": cpu, "memory": memory}});
            let grafana_ingress =
                if env.profile() == Profile::Local || env.config().gitops.domain.is_some() {
                    json!({
                        "enabled": true,
                        "ingressClassName": ingress::class(env),
                        "hosts": [ingress::host(env, "grafana")],
                        // The same load balancer settings as the consoles' own Ingresses.
                        "annotations": ingress::annotations(env).unwrap_or_default(),
                    })
                } else {
                    json!({"enabled": false})
                };
            json!({
                "grafana": {
                    "admin": {
                        "existingSecret": GRAFANA_SECRET,
                        "userKey": "admin-user",
                        "passwordKey": "admin-password",
                    },
                    "ingress": grafana_ingress,
                    "resources": if production { small("200m", "256Mi") } else { small("50m", "128Mi") },
                },
                "prometheus": {"prometheusSpec": {
                    "retention": if production { "15d" } else { "2d" },
                    "resources": if production { small("500m", "2Gi") } else { small("100m", "256Mi") },
                }},
                "alertmanager": {"alertmanagerSpec": {
                    "resources": small("25m", "64Mi"),
                }},
            })
        }
        _ => json!({}),
    }
}

/// `overlay` merged into `base`, objects key by key (the user's values win).
fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// The Application of `addon`, with Comind's `values` and the user's on top.
pub(crate) fn application(
    addon: &Addon,
    settings: &AddonSettings,
    mut values: Value,
) -> Result<Object> {
    if let Some(extra) = &settings.values {
        merge(&mut values, extra);
    }
    let mut sync_options = vec!["CreateNamespace=false".to_string()];
    if addon.server_side {
        sync_options.push("ServerSideApply=true".to_string());
    }
    let kind = applications::kind();
    Object::dynamic(
        kind.clone(),
        json!({
            "apiVersion": kind.resource.api_version,
            "kind": kind.resource.kind,
            "metadata": {
                "name": addon.name,
                "namespace": argocd::NAMESPACE,
                "annotations": {"argocd.argoproj.io/sync-wave": addon.wave.to_string()},
            },
            "spec": {
                "project": gitops::PLATFORM_PROJECT,
                "source": {
                    "repoURL": settings.repo_url.as_deref().unwrap_or(addon.repo_url),
                    "chart": addon.chart,
                    "targetRevision": settings.version.as_deref().unwrap_or(addon.version),
                    "helm": {"releaseName": addon.name, "valuesObject": values},
                },
                "destination": {"server": "https://kubernetes.default.svc", "namespace": addon.namespace},
                "syncPolicy": {
                    "automated": {"prune": true, "selfHeal": true},
                    "syncOptions": sync_options,
                    "retry": {"limit": 5, "backoff": {"duration": "5s", "factor": 2, "maxDuration": "3m"}},
                },
            },
        }),
    )
}

fn grafana_secret(password: &Secret) -> SecretObject {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    SecretObject {
        metadata: ObjectMeta {
            name: Some(GRAFANA_SECRET.to_string()),
            namespace: Some(MONITORING.namespace.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("admin-user".to_string(), bytes("admin")),
            ("admin-password".to_string(), bytes(password.expose())),
        ])),
        type_: Some("Opaque".to_string()),
        ..SecretObject::default()
    }
}

/// The desired objects: an Application per enabled add-on, and Grafana's Secret.
///
/// # Errors
/// `Internal` only for a render bug.
pub fn render(env: &Environment, grafana: &Secret) -> Result<ObjectSet> {
    let mut objects = Vec::new();
    for (addon, settings) in addons(env) {
        if !settings.enabled {
            continue;
        }
        objects.push(application(&addon, settings, values(env, &addon))?);
        if addon.name == MONITORING.name {
            objects.push(Object::typed(&grafana_secret(grafana))?);
        }
    }
    Ok(ObjectSet::new(COMPONENT, objects, kinds()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(edit: impl FnOnce(&mut comind_core::Config)) -> Environment {
        let mut config = comind_core::Config::default();
        edit(&mut config);
        Environment::with_state_root(config, "/tmp/unused")
    }

    #[test]
    fn grafana_s_ingress_on_aws_faces_the_internet_like_the_other_consoles() {
        let env = env(|c| {
            c.profile = Profile::Aws;
            c.gitops.domain = Some("example.com".to_string());
        });
        let values = values(&env, &MONITORING);
        let ingress = &values["grafana"]["ingress"];
        assert_eq!(ingress["ingressClassName"], "alb");
        assert_eq!(ingress["hosts"][0], "grafana.example.com");
        assert_eq!(
            ingress["annotations"],
            json!(super::ingress::annotations(&env).unwrap())
        );
        assert_eq!(
            ingress["annotations"]["alb.ingress.kubernetes.io/scheme"],
            "internet-facing"
        );
    }

    #[test]
    fn each_add_on_is_a_pinned_chart_with_its_wave_and_the_user_s_values_on_top() {
        let env = env(|c| {
            c.gitops.addons.monitoring.values = Some(json!({"grafana": {"replicas": 2}}));
        });
        let password = Secret::new("grafana-password-1");
        let set = render(&env, &password).unwrap();
        let app = |name: &str| {
            set.objects
                .iter()
                .find(|o| o.kind.resource.kind == "Application" && o.name() == name)
                .unwrap()
                .object
                .data
                .clone()
        };
        let monitoring = app("monitoring");
        let source = &monitoring["spec"]["source"];
        assert_eq!(source["chart"], "kube-prometheus-stack");
        assert_eq!(source["targetRevision"], MONITORING.version);
        let values = &source["helm"]["valuesObject"];
        assert_eq!(values["grafana"]["replicas"], 2, "the user's value");
        assert_eq!(values["grafana"]["admin"]["existingSecret"], GRAFANA_SECRET);
        assert_eq!(
            values["grafana"]["ingress"]["hosts"][0],
            "grafana.dev.127.0.0.1.nip.io"
        );
        assert!(
            monitoring["spec"]["syncPolicy"]["syncOptions"]
                .as_array()
                .unwrap()
                .contains(&json!("ServerSideApply=true"))
        );
        assert_eq!(
            app("sealed-secrets")["spec"]["destination"]["namespace"],
            "platform"
        );
        let text = serde_json::to_string(&monitoring).unwrap();
        assert!(
            !text.contains("grafana-password-1"),
            "the password is in no Application"
        );
    }

    #[test]
    fn a_disabled_add_on_is_not_rendered() {
        let env = env(|c| c.gitops.addons.monitoring.enabled = false);
        let set = render(&env, &Secret::new("x")).unwrap();
        let names: Vec<&str> = set.objects.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["sealed-secrets"]);
    }
}

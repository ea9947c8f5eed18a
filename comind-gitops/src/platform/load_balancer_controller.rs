//! The AWS Load Balancer Controller (`platform/load-balancer-controller`, after
//! `platform/gitops`, on the aws profile): the `alb` ingress class of the platform's
//! Ingresses on EKS, as an Argo CD Application of the controller's own chart.
//!
//! Its IAM role and the Pod Identity association of its service account
//! (`kube-system/aws-load-balancer-controller`) come from `comind-aws`; the chart is
//! pinned to the release whose IAM policy that role carries
//! ([`LOAD_BALANCER_CONTROLLER`]), so permissions and code move together. The chart is
//! told the cluster's name, region and VPC (the cluster phase's `CLUSTER_NAME`,
//! `CLUSTER_REGION`, `CLUSTER_VPC_ID`) rather than left to discover them from the
//! instance metadata; with a cluster named by `gitops.kubeconfig` there is no cluster
//! phase, and `gitops.addons.load_balancer_controller.values` must name it.
//!
//! The controller's admission webhooks (Ingress validation, Service and Pod mutation)
//! answer for every Ingress and LoadBalancer Service once they are registered: created
//! while the webhook Service has no ready endpoint, such an object is refused. So the
//! phase is ready only when the Application is synced and healthy *and*
//! `aws-load-balancer-webhook-service` has a ready endpoint, and the phases that make
//! Ingresses (`platform/addons`: Grafana's) run after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use comind_core::cluster::{CLUSTER_NAME, CLUSTER_PHASE_ID, CLUSTER_REGION, CLUSTER_VPC_ID};
use comind_core::config::Profile;
use comind_core::wait::{Observed, Status, Wait};
use comind_core::{Environment, Error, Input, PhaseContext, PhaseId, Result};
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::addons::{self, Addon};
use super::{PhaseSpec, argocd, gitops};
use crate::applications::{self, Limits};
use crate::apply::{ObjectSet, Pending};

/// The phase's id.
pub const ID: &str = "platform/load-balancer-controller";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-load-balancer-controller";

/// The AWS Load Balancer Controller. Chart 3.5.0 (app v3.5.0): the project's current
/// v3 release (kubernetes-sigs, maintained; the chart's versions follow the app's from
/// v3 on), the release whose IAM policy `comind-aws` gives its role
/// (`comind_aws::iam::LOAD_BALANCER_CONTROLLER_VERSION`). Wave 0: the Ingresses of
/// later waves need its webhook.
pub const LOAD_BALANCER_CONTROLLER: Addon = Addon {
    name: "aws-load-balancer-controller",
    repo_url: "https://aws.github.io/eks-charts",
    chart: "aws-load-balancer-controller",
    version: "3.5.0",
    namespace: comind_core::cluster::LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT.0,
    wave: 0,
    // Its CRDs (target group bindings, the Gateway API configurations of v3) are
    // applied server-side like every large CRD.
    server_side: true,
};

/// The Service in front of the controller's admission webhooks.
pub const WEBHOOK_SERVICE: &str = "aws-load-balancer-webhook-service";

/// The label that keeps the Application from being pruned while a plan cannot know
/// the cluster it goes to.
const LABEL_CLUSTER: &str = "comind.dev/eks-cluster";

/// Whether `env` has the phase: on the aws profile, with Argo CD. It stays when the
/// add-on is turned off, rendering nothing, so that its Application is pruned.
pub fn runs(env: &Environment) -> bool {
    let config = env.config();
    config.profile == Profile::Aws && config.gitops.argocd.enabled
}

/// Whether `env` runs the controller: on the aws profile, unless turned off.
pub fn enabled(env: &Environment) -> bool {
    runs(env) && env.config().gitops.addons.load_balancer_controller.enabled
}

/// The cluster the controller runs in, as the chart is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The EKS cluster's name.
    pub name: String,
    /// Its region, if known.
    pub region: Option<String>,
    /// Its VPC, if known.
    pub vpc_id: Option<String>,
}

/// The values Comind gives the chart for `cluster` (the user's go on top).
pub fn values(env: &Environment, cluster: &Cluster) -> Value {
    let (_, account) = comind_core::cluster::LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT;
    let production = env.is_production();
    let mut values = json!({
        "clusterName": cluster.name,
        // The account Pod Identity associates with the controller's role: no
        // annotation needed, the association is by name.
        "serviceAccount": {"create": true, "name": account},
        // Two replicas where an outage of the webhook would block every Ingress
        // change; one elsewhere.
        "replicaCount": if production { 2 } else { 1 },
        "resources": {"requests": {"cpu": if production { "100m" } else { "50m" }, "memory": "128Mi"}},
        "ingressClass": super::ingress::class(env),
        "createIngressClassResource": true,
    });
    if let Some(region) = &cluster.region {
        values["region"] = json!(region);
    }
    if let Some(vpc) = &cluster.vpc_id {
        values["vpcId"] = json!(vpc);
    }
    values
}

/// The desired object: the controller's Application, for the cluster the cluster
/// phase made (or the one `values.clusterName` names).
///
/// # Errors
/// `InvalidInput` when no cluster phase runs and the values name no cluster (config
/// validation refuses that first).
pub fn render(ctx: &PhaseContext) -> Result<ObjectSet> {
    let env = ctx.env();
    let settings = &env.config().gitops.addons.load_balancer_controller;
    let kinds = || vec![applications::kind()];
    if !enabled(env) {
        return Ok(ObjectSet::new(COMPONENT, Vec::new(), kinds()));
    }
    let cluster = PhaseId::new(CLUSTER_PHASE_ID);
    let text = |key: &str| match ctx.input(&cluster, key) {
        Input::Known(value) => Some(value.expose().to_string()).filter(|v| !v.is_empty()),
        _ => None,
    };
    let application = |cluster: &Cluster| {
        let mut object =
            addons::application(&LOAD_BALANCER_CONTROLLER, settings, values(env, cluster))?;
        object
            .object
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_CLUSTER.to_string(), "eks".to_string());
        Ok::<_, Error>(object)
    };
    match ctx.input(&cluster, CLUSTER_NAME) {
        Input::Known(name) => {
            let cluster = Cluster {
                name: name.expose().to_string(),
                region: text(CLUSTER_REGION),
                vpc_id: text(CLUSTER_VPC_ID),
            };
            Ok(ObjectSet::new(
                COMPONENT,
                vec![application(&cluster)?],
                kinds(),
            ))
        }
        Input::KnownAfterApply => {
            let placeholder = Cluster {
                name: String::new(),
                region: None,
                vpc_id: None,
            };
            Ok(
                ObjectSet::new(COMPONENT, Vec::new(), kinds()).with_pending(Pending {
                    objects: vec![application(&placeholder)?],
                    label: (LABEL_CLUSTER.to_string(), "eks".to_string()),
                    reason: "the EKS cluster is made in this run: its name, region and VPC are \
                         known after apply"
                        .to_string(),
                }),
            )
        }
        Input::Missing => {
            let named = settings
                .values
                .as_ref()
                .and_then(|v| v.get("clusterName"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            match named {
                // The user's values go over these, region and VPC included.
                Some(name) => Ok(ObjectSet::new(
                    COMPONENT,
                    vec![application(&Cluster {
                        name: name.to_string(),
                        region: None,
                        vpc_id: None,
                    })?],
                    kinds(),
                )),
                None => Err(Error::invalid_input(
                    "the AWS Load Balancer Controller needs the EKS cluster's name, and no \
                     cluster phase runs to give it (the cluster is named by \
                     `gitops.kubeconfig`)",
                )
                .with_hint(
                    "set `gitops.addons.load_balancer_controller.values.clusterName` (and \
                     `region`, `vpcId`), or turn the add-on off with \
                     `gitops.addons.load_balancer_controller.enabled: false`",
                )),
            }
        }
    }
}

/// The phase, for `env`.
pub(crate) fn spec() -> PhaseSpec {
    let mut spec = PhaseSpec::rendered(
        ID,
        "the AWS Load Balancer Controller as an Argo CD Application",
        COMPONENT,
        || vec![applications::kind()],
        vec![PhaseId::new(gitops::ID)],
        Arc::new(render),
    );
    spec.converge = Some(Arc::new(|ctx: &PhaseContext, client: &kube::Client| {
        async move {
            if !enabled(ctx.env()) {
                return Ok(());
            }
            let settings = &ctx.env().config().gitops.argocd;
            let limits = Limits {
                timeout: settings.sync_timeout.get(),
                degraded_grace: settings.degraded_grace.get(),
            };
            ctx.progress(format!(
                "waiting for Argo CD to sync {}",
                LOAD_BALANCER_CONTROLLER.name
            ));
            applications::converge(
                client,
                ctx,
                argocd::NAMESPACE,
                &[LOAD_BALANCER_CONTROLLER.name.to_string()],
                limits,
            )
            .await?;
            until_webhook_ready(client, ctx, limits.timeout).await
        }
        .boxed()
    }));
    spec.report = Some(Arc::new(|ctx: &PhaseContext, client: &kube::Client| {
        async move {
            // Turned off, it has nothing to report on.
            let names: Vec<String> = enabled(ctx.env())
                .then(|| LOAD_BALANCER_CONTROLLER.name.to_string())
                .into_iter()
                .collect();
            applications::report(client, argocd::NAMESPACE, &names).await
        }
        .boxed()
    }));
    spec
}

/// The ready endpoints of each of the webhook Service's EndpointSlices, by name.
type Slices = BTreeMap<String, usize>;

fn ready_endpoints(slice: &EndpointSlice) -> usize {
    slice
        .endpoints
        .iter()
        .filter(|e| {
            // The API's rule: an endpoint without the condition is ready.
            e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
        })
        .count()
}

fn observe(slices: &Slices) -> Observed<()> {
    if slices.values().any(|n| *n > 0) {
        Observed::Ready(())
    } else {
        Observed::Pending(
            Status::new("no ready endpoint").with_message(Some(
                "the controller's webhook is not serving yet; Ingresses made now would be refused"
                    .to_string(),
            )),
        )
    }
}

/// Watches the EndpointSlices of [`WEBHOOK_SERVICE`] until one has a ready endpoint.
///
/// # Errors
/// A timeout naming the Service; an interrupted watch.
pub async fn until_webhook_ready(
    client: &kube::Client,
    ctx: &PhaseContext,
    timeout: Duration,
) -> Result<()> {
    let namespace = LOAD_BALANCER_CONTROLLER.namespace;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={WEBHOOK_SERVICE}");
    let feed = Arc::new(tokio::sync::Mutex::new((
        watcher(api, watcher::Config::default().labels(&selector)).boxed(),
        Slices::new(),
    )));
    let name = format!("{namespace}/{WEBHOOK_SERVICE}");
    let wait = Wait::new(
        "service",
        &name,
        "a ready endpoint",
        timeout,
        "gitops.argocd.sync_timeout",
    )
    .on("the cluster");
    let name = &name;
    wait.watch(ctx, || {
        let feed = feed.clone();
        async move {
            let mut feed = feed.lock().await;
            let (stream, slices) = &mut *feed;
            let event = stream.next().await?;
            let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
            Some(match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    slices.insert(key(&s), ready_endpoints(&s));
                    Ok(observe(slices))
                }
                Ok(watcher::Event::Delete(s)) => {
                    slices.remove(&key(&s));
                    Ok(observe(slices))
                }
                Ok(watcher::Event::Init) => {
                    slices.clear();
                    Ok(observe(slices))
                }
                Ok(watcher::Event::InitDone) => Ok(observe(slices)),
                Err(e) => Err(Error::unavailable(format!(
                    "the watch of {name}'s endpoints was interrupted: {e}"
                ))),
            })
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(edit: impl FnOnce(&mut comind_core::Config)) -> Environment {
        let mut config = comind_core::Config::default();
        config.profile = Profile::Aws;
        edit(&mut config);
        Environment::with_state_root(config, "/tmp/unused")
    }

    #[test]
    fn the_chart_is_told_the_cluster_and_the_account_pod_identity_associates() {
        let dev = env(|_| {});
        let cluster = Cluster {
            name: "comind-dev-cluster".into(),
            region: Some("eu-west-1".into()),
            vpc_id: Some("vpc-0123".into()),
        };
        let told = values(&dev, &cluster);
        assert_eq!(told["clusterName"], "comind-dev-cluster");
        assert_eq!(told["region"], "eu-west-1");
        assert_eq!(told["vpcId"], "vpc-0123");
        assert_eq!(
            told["serviceAccount"]["name"],
            "aws-load-balancer-controller"
        );
        assert_eq!(told["ingressClass"], "alb");
        assert_eq!(told["replicaCount"], 1);
        let production = env(|c| c.production = true);
        assert_eq!(values(&production, &cluster)["replicaCount"], 2);
        let bare = Cluster {
            name: "c".into(),
            region: None,
            vpc_id: None,
        };
        let told = values(&dev, &bare);
        assert!(told.get("region").is_none() && told.get("vpcId").is_none());
    }

    #[test]
    fn it_runs_on_the_aws_profile_only_and_can_be_turned_off() {
        assert!(enabled(&env(|_| {})));
        assert!(!runs(&env(|c| c.profile = Profile::Local)));
        let off = env(|c| c.gitops.addons.load_balancer_controller.enabled = false);
        assert!(!enabled(&off));
        assert!(runs(&off), "the phase stays, to prune the Application");
    }

    #[test]
    fn the_webhook_is_ready_with_one_ready_endpoint() {
        let slice = |ready: &[Option<bool>]| -> EndpointSlice {
            serde_json::from_value(json!({
                "addressType": "IPv4",
                "metadata": {"name": "s"},
                "endpoints": ready.iter().map(|r| json!({
                    "addresses": ["10.0.0.1"],
                    "conditions": match r { Some(r) => json!({"ready": r}), None => json!({}) },
                })).collect::<Vec<_>>(),
            }))
            .unwrap()
        };
        assert_eq!(ready_endpoints(&slice(&[Some(false), Some(true), None])), 2);
        let mut slices = Slices::new();
        assert!(matches!(observe(&slices), Observed::Pending(_)));
        slices.insert("a".into(), 0);
        assert!(matches!(observe(&slices), Observed::Pending(_)));
        slices.insert("b".into(), 1);
        assert!(matches!(observe(&slices), Observed::Ready(())));
    }
}

//! `platform/argocd` and `platform/gitops` on the real API server: Argo CD v3.5.1's
//! released manifest (the test peers' copy, with its checksum), through `Bootstrap` as
//! the CLI runs it. No Argo CD Pod runs here: `Kubelet` reports the Pods the real
//! controllers make as running and ready, so the workloads become available the way
//! they would once their images run, and the test plays Argo CD's application
//! controller by writing the root Application's `status` (its CRD has no status
//! subresource: Argo CD writes status with the object) as that controller would.

use comind_core::engine::RunOptions;
use comind_core::event::RunOutcome;
use comind_core::{Bootstrap, DownOptions, Environment, UpOptions};
use comind_gitops::GitopsProvider;
use comind_gitops::platform::{addons, argocd};
use comind_test_support::argo_cd;
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::kubelet::Kubelet;
use comind_test_support::require_peer;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

use crate::support;

fn bootstrap(env: &Environment, state: &std::path::Path) -> Bootstrap {
    Bootstrap::new(Environment::with_state_root(env.config().clone(), state))
        .with_provider(GitopsProvider::new().binding(&[]))
}

fn error_of(report: &comind_core::engine::RunReport, id: &str) -> String {
    let phase = report
        .summary
        .phases
        .iter()
        .find(|p| p.id.as_str() == id)
        .unwrap_or_else(|| panic!("no {id}: {:?}", report.summary));
    format!("{:?}", phase.error)
}

#[tokio::test]
async fn argo_cd_lands_from_its_checked_release_with_comind_s_settings_and_reruns_without_writes() {
    let peer = require_peer!(KubePeer::shared());
    let _platform = support::cluster_wide(peer).await;
    let state = tempfile::tempdir().unwrap();
    let admin = support::client(peer, User::Admin).await;
    let token = state.path().join("gitops-token");
    std::fs::write(&token, "ghp_comind_test_token_0123\n").unwrap();
    let env = support::env(peer, "argo", state.path(), |c| {
        support::with_argocd(c);
        c.gitops.repo.url = "https://git.example.com/platform/gitops.git".into();
        c.gitops.repo.token_file = Some(token.clone());
    });
    support::settled(&admin, &env).await;
    let run = RunOptions::default();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());

    // A manifest with another checksum: refused, naming both sums, and nothing of the
    // release is applied.
    let mut tampered = env.config().clone();
    tampered.gitops.argocd.sha256 = Some("0".repeat(64));
    let refused = bootstrap(
        &Environment::with_state_root(tampered, state.path()),
        state.path(),
    )
    .up(&run, &UpOptions::default())
    .await
    .unwrap();
    assert_eq!(refused.summary.outcome, RunOutcome::Failed);
    let error = error_of(&refused, argocd::ID);
    assert!(
        error.contains(&"0".repeat(64)) && error.contains(argocd::release::PINNED_SHA256),
        "{error}"
    );
    assert!(
        crds.get_opt("applications.argoproj.io")
            .await
            .unwrap()
            .is_none()
    );

    let _kubelet = Kubelet::start(admin.clone(), argocd::NAMESPACE);
    let up = bootstrap(&env, state.path());
    let mut events = up.events().subscribe();
    // Argo CD syncs the root application and the add-ons once they exist.
    let argo = {
        let admin = admin.clone();
        tokio::spawn(async move {
            argo_cd::until_reported(
                &admin,
                &["root", "sealed-secrets", "monitoring"],
                &argo_cd::synced_and_healthy(),
            )
            .await;
        })
    };
    let report = up.up(&run, &UpOptions::default()).await.unwrap();
    argo.await.unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );
    // The backups' alerts, once monitoring's sync has installed the PrometheusRule
    // CRD: the rule names the environment's backup Jobs.
    let rules: Api<kube::api::DynamicObject> = Api::namespaced_with(
        admin.clone(),
        &comind_gitops::platform::baseline::services_namespace(&env),
        &comind_gitops::platform::backups::prometheus_rule_kind().resource,
    );
    let rule = rules
        .get(comind_gitops::platform::backups::ALERTS)
        .await
        .unwrap();
    let text = rule.data["spec"].to_string();
    assert!(
        text.contains("ComindBackupFailed") && text.contains("postgres-backup"),
        "{text}"
    );
    assert_eq!(
        rule.metadata.labels.as_ref().unwrap()["release"],
        "monitoring"
    );
    let outputs = &report.outputs[&comind_core::PhaseId::new(argocd::ID)];
    let url = outputs.require(argocd::ARGOCD_URL).unwrap().to_string();
    assert_eq!(
        url,
        format!("http://argocd.{}.127.0.0.1.nip.io:8080", env.name())
    );
    assert_eq!(outputs.require(argocd::ARGOCD_ADMIN_USER).unwrap(), "admin");
    let password = outputs
        .get(argocd::ARGOCD_ADMIN_PASSWORD)
        .unwrap()
        .expose()
        .to_string();
    assert!(password.len() >= 20);

    // The release: its CRDs served, its workloads available (by the real controllers'
    // count of the Pods the kubelet stand-in reports ready).
    for crd in [
        "applications.argoproj.io",
        "applicationsets.argoproj.io",
        "appprojects.argoproj.io",
    ] {
        let crd = crds.get(crd).await.unwrap();
        let established = crd.status.unwrap().conditions.unwrap();
        assert!(
            established
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), argocd::NAMESPACE);
    for name in ["argocd-server", "argocd-repo-server", "argocd-redis"] {
        let status = deployments.get(name).await.unwrap().status.unwrap();
        assert_eq!(status.available_replicas, Some(1), "{name}: {status:?}");
    }
    let controller = Api::<StatefulSet>::namespaced(admin.clone(), argocd::NAMESPACE)
        .get("argocd-application-controller")
        .await
        .unwrap();
    assert_eq!(controller.status.unwrap().ready_replicas, Some(1));

    // Comind's settings, as fields of the release's own objects.
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), argocd::NAMESPACE);
    let cm = config_maps.get("argocd-cm").await.unwrap().data.unwrap();
    assert_eq!(cm["url"], url);
    assert!(cm["resource.customizations.health.argoproj.io_Application"].contains("health"));
    let rbac = config_maps
        .get("argocd-rbac-cm")
        .await
        .unwrap()
        .data
        .unwrap();
    assert!(rbac["policy.csv"].contains("g, platform:developer, role:developer"));
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), argocd::NAMESPACE);
    let secret = secrets.get("argocd-secret").await.unwrap().data.unwrap();
    let hash = String::from_utf8(secret["admin.password"].0.clone()).unwrap();
    assert!(
        bcrypt::verify(&password, &hash).unwrap(),
        "the stored hash is the password's"
    );
    assert!(
        secrets
            .get_opt("argocd-initial-admin-secret")
            .await
            .unwrap()
            .is_none(),
        "the password was set before Argo CD started"
    );
    let ingress = Api::<Ingress>::namespaced(admin.clone(), argocd::NAMESPACE)
        .get("argocd-server")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(ingress.ingress_class_name.as_deref(), Some("traefik"));

    // The GitOps wiring, accepted by Argo CD's own CRDs.
    let repository = secrets.get("gitops-repository").await.unwrap();
    assert_eq!(
        repository.metadata.labels.unwrap()["argocd.argoproj.io/secret-type"],
        "repository"
    );
    let data = repository.data.unwrap();
    assert_eq!(data["password"].0, b"ghp_comind_test_token_0123");
    assert_eq!(data["username"].0, b"git");
    let apps = argo_cd::applications(&admin);
    let root = apps.get("root").await.unwrap();
    assert_eq!(
        root.data["spec"]["source"]["path"],
        format!("envs/{}", env.name())
    );
    let set = dynamic(&admin, "ApplicationSet", "applicationsets")
        .get("apps")
        .await
        .unwrap();
    assert_eq!(
        set.data["spec"]["generators"][0]["git"]["directories"][0]["path"],
        "apps/*/*"
    );
    let project = dynamic(&admin, "AppProject", "appprojects")
        .get("apps")
        .await
        .unwrap();
    let destinations = project.data["spec"]["destinations"].to_string();
    assert!(
        destinations.contains("user-apps") && !destinations.contains("\"argocd\""),
        "{destinations}"
    );

    // The add-ons: pinned charts, rendered by Argo CD, Grafana's password in a
    // Secret of its own and in the outputs.
    let monitoring = apps.get("monitoring").await.unwrap();
    assert_eq!(
        monitoring.data["spec"]["source"]["chart"],
        "kube-prometheus-stack"
    );
    let addons = &report.outputs[&comind_core::PhaseId::new(addons::ID)];
    let grafana = addons
        .get(addons::GRAFANA_ADMIN_PASSWORD)
        .unwrap()
        .expose()
        .to_string();
    assert_eq!(
        addons.require(addons::GRAFANA_URL).unwrap(),
        format!("http://grafana.{}.127.0.0.1.nip.io:8080", env.name())
    );
    let grafana_secret = Api::<Secret>::namespaced(admin.clone(), "monitoring")
        .get("grafana-admin")
        .await
        .unwrap();
    assert_eq!(
        grafana_secret.data.unwrap()["admin-password"].0,
        grafana.as_bytes()
    );
    assert!(
        !serde_json::to_string(&monitoring)
            .unwrap()
            .contains(&grafana)
    );

    // `comind status` lists every Application with its sync and health.
    let status = bootstrap(&env, state.path()).status(&run).await.unwrap();
    let addons_status = &status.statuses[&comind_core::PhaseId::new(addons::ID)];
    assert_eq!(
        addons_status.health,
        comind_core::Health::Ready,
        "{addons_status:?}"
    );
    assert!(
        addons_status.detail.contains("monitoring Synced/Healthy")
            && addons_status
                .detail
                .contains("sealed-secrets Synced/Healthy"),
        "{addons_status:?}"
    );

    // The password and the token are in no event, no ConfigMap and no Secret (only
    // the password's hash is; the token is in the repository Secret only).
    let mut seen = String::new();
    while let Some(event) = events.try_recv() {
        seen.push_str(&serde_json::to_string(&*event).unwrap());
    }
    assert!(seen.contains(argocd::ID), "the events were read");
    assert!(
        !seen.contains(&password),
        "an event carries the admin password"
    );
    for cm in config_maps.list(&Default::default()).await.unwrap() {
        assert!(!serde_json::to_string(&cm).unwrap().contains(&password));
    }
    for s in secrets.list(&Default::default()).await.unwrap() {
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains(&password), "{:?}", s.metadata.name);
    }
    let stored = Environment::with_state_root(env.config().clone(), state.path());
    let credentials = stored.state().path().join("credentials/argocd-admin.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", credentials.display());

    // Again: nothing to change, nothing written, the same password.
    let plan = bootstrap(&env, state.path()).plan(&run).await.unwrap();
    let pending: Vec<_> = plan
        .plans
        .values()
        .flat_map(|p| p.changes.clone())
        .collect();
    assert!(pending.is_empty(), "{pending:?}");
    let before = secrets
        .get("argocd-secret")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let again = bootstrap(&env, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(again.summary.changes, 0, "{:?}", again.summary);
    assert_eq!(
        secrets
            .get("argocd-secret")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );
    assert_eq!(
        again.outputs[&comind_core::PhaseId::new(argocd::ID)]
            .get(argocd::ARGOCD_ADMIN_PASSWORD)
            .unwrap()
            .expose(),
        password
    );

    // A disabled add-on: its Application (and Grafana's Secret) are pruned.
    let mut without = env.config().clone();
    without.gitops.addons.monitoring.enabled = false;
    let without = Environment::with_state_root(without, state.path());
    let pruned = bootstrap(&without, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pruned.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        pruned.summary
    );
    let gone = apps.get_opt("monitoring").await.unwrap();
    assert!(
        gone.as_ref()
            .is_none_or(|a| a.metadata.deletion_timestamp.is_some()),
        "{gone:?}"
    );

    // A root application that turns Degraded past the grace period fails the run,
    // naming the child that is not healthy.
    argo_cd::report(&admin, "root", &degraded()).await;
    let mut impatient = env.config().clone();
    impatient.gitops.argocd.degraded_grace = comind_core::config::DurationSetting::seconds(1);
    impatient.gitops.argocd.sync_timeout = comind_core::config::DurationSetting::seconds(3);
    let impatient = Environment::with_state_root(impatient, state.path());
    let failed = bootstrap(&impatient, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    let error = error_of(&failed, "platform/gitops");
    assert!(
        error.contains("Application argocd/monitoring: Degraded")
            && error.contains("grafana: 0 of 1 available"),
        "{error}"
    );
    // One that stays Progressing times out, naming it and its state; it was asked
    // to refresh.
    argo_cd::report(
        &admin,
        "root",
        &serde_json::json!({
            "sync": {"status": "OutOfSync"}, "health": {"status": "Progressing"}
        }),
    )
    .await;
    apps.patch(
        "root",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {
            comind_gitops::applications::REFRESH_ANNOTATION: null
        }}})),
    )
    .await
    .unwrap();
    let stuck = bootstrap(&impatient, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    let error = error_of(&stuck, "platform/gitops");
    assert!(
        error.contains("Timeout")
            && error.contains("argocd/root")
            && error.contains("OutOfSync/Progressing"),
        "{error}"
    );
    let annotations = apps
        .get("root")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(
        annotations[comind_gitops::applications::REFRESH_ANNOTATION],
        "normal",
        "Argo CD was asked to refresh instead of waiting for its poll"
    );

    // Down removes the release with the rest of the platform.
    let down = bootstrap(&env, state.path())
        .down(&run, &DownOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        down.summary
    );
    assert!(
        crds.get_opt("applications.argoproj.io")
            .await
            .unwrap()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
    );
    support::settled(&admin, &env).await;
}

fn dynamic(admin: &kube::Client, kind: &str, plural: &str) -> Api<kube::api::DynamicObject> {
    let kind = comind_gitops::apply::Kind::custom(
        "argoproj.io",
        "v1alpha1",
        kind,
        plural,
        comind_gitops::apply::Scope::Namespaced,
    );
    Api::namespaced_with(admin.clone(), argocd::NAMESPACE, &kind.resource)
}

fn degraded() -> serde_json::Value {
    serde_json::json!({
        "sync": {"status": "Synced"},
        "health": {"status": "Degraded"},
        "resources": [{
            "group": "argoproj.io", "version": "v1alpha1", "kind": "Application",
            "namespace": "argocd", "name": "monitoring", "status": "Synced",
            "health": {"status": "Degraded", "message": "Deployment grafana: 0 of 1 available"}
        }]
    })
}

/// On AWS the platform's Ingresses use the AWS Load Balancer Controller. Its Application
/// comes first, and nothing that makes an Ingress runs until its webhook Service has a
/// ready endpoint (the test plays the EndpointSlice controller, since no controller
/// Pod runs here). A cluster named by `gitops.kubeconfig` has no cluster phase: the
/// chart learns the cluster's name from the values.
#[tokio::test]
async fn on_aws_the_load_balancer_controller_serves_its_webhook_before_the_add_ons_make_ingresses()
{
    use comind_gitops::platform::load_balancer_controller as lbc;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    let peer = require_peer!(KubePeer::shared());
    let _platform = support::cluster_wide(peer).await;
    let state = tempfile::tempdir().unwrap();
    let admin = support::client(peer, User::Admin).await;
    let env = support::env(peer, "alb", state.path(), |c| {
        support::with_argocd(c);
        c.profile = comind_core::Profile::Aws;
        c.gitops.domain = Some("platform.example.com".into());
        c.gitops.repo.url = "https://git.example.com/platform/gitops.git".into();
        c.gitops.addons.load_balancer_controller.values = Some(serde_json::json!({
            "clusterName": "comind-alb-cluster", "region": "eu-west-1"
        }));
    });
    support::settled(&admin, &env).await;
    let _kubelet = Kubelet::start(admin.clone(), argocd::NAMESPACE);
    let run = RunOptions::default();
    let apps = argo_cd::applications(&admin);
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "kube-system");
    let slice_name = format!("{}-test", lbc::WEBHOOK_SERVICE);
    let argo = {
        let (admin, apps, slices, slice_name) = (
            admin.clone(),
            apps.clone(),
            slices.clone(),
            slice_name.clone(),
        );
        tokio::spawn(async move {
            argo_cd::until_reported(
                &admin,
                &["root", lbc::LOAD_BALANCER_CONTROLLER.name],
                &argo_cd::synced_and_healthy(),
            )
            .await;
            // Synced and healthy, but the webhook serves nothing yet: the add-ons,
            // Grafana's Ingress among them, wait.
            assert!(
                apps.get_opt("monitoring").await.unwrap().is_none(),
                "the add-ons ran before the controller's webhook served"
            );
            let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "labels": {
                    "kubernetes.io/service-name": lbc::WEBHOOK_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "comind-test"
                }},
                "addressType": "IPv4",
                "ports": [{"name": "webhook-server", "port": 9443, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.40.1.10"], "conditions": {"ready": true}}],
            }))
            .unwrap();
            slices.create(&Default::default(), &slice).await.unwrap();
            argo_cd::until_reported(
                &admin,
                &["sealed-secrets", "monitoring"],
                &argo_cd::synced_and_healthy(),
            )
            .await;
        })
    };
    let report = bootstrap(&env, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    argo.await.unwrap();
    assert_eq!(
        report.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        report.summary
    );

    let controller = apps.get(lbc::LOAD_BALANCER_CONTROLLER.name).await.unwrap();
    let spec = &controller.data["spec"];
    assert_eq!(
        spec["source"]["repoURL"],
        "https://aws.github.io/eks-charts"
    );
    assert_eq!(spec["source"]["chart"], "aws-load-balancer-controller");
    assert_eq!(spec["source"]["targetRevision"], "3.5.0");
    assert_eq!(spec["destination"]["namespace"], "kube-system");
    let values = &spec["source"]["helm"]["valuesObject"];
    assert_eq!(values["clusterName"], "comind-alb-cluster");
    assert_eq!(values["region"], "eu-west-1");
    assert_eq!(
        values["serviceAccount"]["name"], "aws-load-balancer-controller",
        "the account Pod Identity associates with the controller's role"
    );
    assert_eq!(values["ingressClass"], "alb");
    let monitoring = apps.get("monitoring").await.unwrap();
    let grafana = &monitoring.data["spec"]["source"]["helm"]["valuesObject"]["grafana"]["ingress"];
    assert_eq!(grafana["ingressClassName"], "alb");
    assert_eq!(grafana["hosts"][0], "grafana.platform.example.com");
    let ingress = Api::<Ingress>::namespaced(admin.clone(), argocd::NAMESPACE)
        .get("argocd-server")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(ingress.ingress_class_name.as_deref(), Some("alb"));

    // Turned off, its Application is pruned (Argo CD then removes the controller).
    let mut without = env.config().clone();
    without.gitops.addons.load_balancer_controller.enabled = false;
    let without = Environment::with_state_root(without, state.path());
    let pruned = bootstrap(&without, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pruned.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        pruned.summary
    );
    let gone = apps
        .get_opt(lbc::LOAD_BALANCER_CONTROLLER.name)
        .await
        .unwrap();
    assert!(
        gone.as_ref()
            .is_none_or(|a| a.metadata.deletion_timestamp.is_some()),
        "{gone:?}"
    );

    let down = bootstrap(&without, state.path())
        .down(&run, &DownOptions::default())
        .await
        .unwrap();
    assert_eq!(
        down.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        down.summary
    );
    slices
        .delete(&slice_name, &Default::default())
        .await
        .unwrap();
    support::settled(&admin, &env).await;
}

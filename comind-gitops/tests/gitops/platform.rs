//! The platform phases (baseline and services) on the real API server, through
//! `Bootstrap` as the CLI runs it. Their namespaces, ClusterRoles and application
//! Secrets have fixed, cluster-wide names (one environment per cluster), so one test
//! runs both phase suites and then walks the whole life of one environment: up with
//! (fake) platform services bound into the cluster, a no-op up, the roles proven by
//! real requests of users in their groups (the API server's token file gives them;
//! only `admin` is in `system:masters`), a hand edit repaired, a team removed and
//! pruned, and `down` keeping what Comind did not create.

use comind_core::config::ResourceName;
use std::sync::Arc;

use comind_core::engine::RunOptions;
use comind_core::event::RunOutcome;
use comind_core::service::{CacheEndpoint, ClusterTarget, PostgresEndpoint};
use comind_core::testing::conformance::{PhaseFixture, phase_suite};
use comind_core::testing::{FakeProvider, FakeService, World};
use comind_core::{Action, Bootstrap, Change, DownOptions, Environment, UpOptions};
use comind_core::{Outputs, Phase, PhaseId, Provider, ServiceEndpoint, ServiceKind};
use comind_gitops::GitopsProvider;
use comind_gitops::apply::Kind;
use comind_gitops::platform::{baseline, services};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::require_peer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::support;

/// A bootstrap of `env` with the in-cluster layer and fake platform services (in
/// `world`), as a new process makes it.
fn bootstrap(env: &Environment, state: &std::path::Path, world: &World) -> Bootstrap {
    let copy = Environment::with_state_root(env.config().clone(), state);
    let mut services = FakeProvider::new("services");
    for kind in ServiceKind::ALL {
        services = services.with_service(FakeService::new(kind, world));
    }
    Bootstrap::new(copy)
        .with_provider(services)
        .with_provider(GitopsProvider::new())
}

fn changes(report: &comind_core::engine::RunReport) -> Vec<Change> {
    report
        .plans
        .values()
        .flat_map(|p| p.changes.clone())
        .collect()
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

async fn allowed<T, F: std::future::Future<Output = kube::Result<T>>>(request: F) -> bool {
    match request.await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 403 => false,
        Err(other) => panic!("not an RBAC answer: {other}"),
    }
}

/// The core phase suite's view of one platform phase: the phase, its dependencies'
/// outputs, and what carries its labels in the cluster (objects being deleted no
/// longer count).
struct PlatformFixture {
    env: Arc<Environment>,
    admin: kube::Client,
    /// Which of the provider's phases.
    index: usize,
    component: &'static str,
    kinds: Vec<Kind>,
    inputs: std::collections::HashMap<PhaseId, Outputs>,
}

/// The provider the suites run: an embedder's own client, no kubeconfig in the
/// configuration.
fn embedded(admin: &kube::Client) -> GitopsProvider {
    GitopsProvider::with_cluster(admin.clone(), "the test control plane")
}

#[async_trait::async_trait]
impl PhaseFixture for PlatformFixture {
    fn phase(&self) -> Arc<dyn Phase> {
        embedded(&self.admin)
            .phases(&self.env)
            .unwrap()
            .remove(self.index)
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    fn inputs(&self) -> std::collections::HashMap<PhaseId, Outputs> {
        self.inputs.clone()
    }

    async fn owned_resources(&self) -> comind_core::Result<Vec<String>> {
        let selector = format!(
            "comind.dev/environment={},comind.dev/component={}",
            self.env.name(),
            self.component
        );
        let mut names = Vec::new();
        for kind in &self.kinds {
            let api: Api<kube::api::DynamicObject> =
                Api::all_with(self.admin.clone(), &kind.resource);
            for object in api
                .list(&kube::api::ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
            {
                if object.metadata.deletion_timestamp.is_none() {
                    names.push(format!("{} {:?}", kind.name(), object.metadata.name));
                }
            }
        }
        Ok(names)
    }
}

/// Waits until every namespace of `names` is gone (the namespace controller empties
/// each first), so that the next environment can take the same names.
async fn until_gone(admin: &kube::Client, names: impl IntoIterator<Item = String>) {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    for name in names {
        while namespaces.get_opt(&name).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "{name} never went");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The services phase's suite: two services (an address, a DNS name) bound into
/// namespaces the test makes, as the baseline would.
async fn services_suite(peer: &KubePeer, admin: &kube::Client, state: &std::path::Path) {
    let env = support::env(peer, "svc", state, |c| c.gitops.kubeconfig = None);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let bound = [baseline::services_namespace(&env), "user-apps".to_string()];
    for name in &bound {
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .unwrap();
    }
    let postgres = ServiceEndpoint::Postgres(PostgresEndpoint {
        host: "127.0.0.1".into(),
        port: 15432,
        username: "app".into(),
        password: comind_core::Secret::new("suite-pg-password"),
        databases: vec!["app".into()],
        require_tls: false,
    });
    let cache = ServiceEndpoint::Cache(CacheEndpoint {
        host: "cache.example.internal".into(),
        port: 6379,
        password: comind_core::Secret::new("suite-redis-password"),
        tls: false,
    });
    let mut inputs = std::collections::HashMap::new();
    for (endpoint, host, port) in [
        (postgres, "192.0.2.21", 5432),
        (cache, "cache.example.internal", 6379),
    ] {
        let kind = endpoint.kind();
        let mut outputs = endpoint.to_outputs();
        outputs.extend(
            ClusterTarget {
                host: host.into(),
                port,
            }
            .to_outputs(kind),
        );
        inputs.insert(PhaseId::new(kind.id()), outputs);
    }
    // Disabled: no outputs, nothing bound.
    for kind in [ServiceKind::ObjectStore, ServiceKind::Queue] {
        inputs.insert(PhaseId::new(kind.id()), Outputs::new());
    }
    phase_suite(&PlatformFixture {
        env: env.clone(),
        admin: admin.clone(),
        index: 1,
        component: services::COMPONENT,
        kinds: services::kinds(),
        inputs,
    })
    .await;
    for name in &bound {
        namespaces.delete(name, &Default::default()).await.unwrap();
    }
    until_gone(admin, bound).await;
}

#[tokio::test]
async fn the_platform_phases_pass_their_suites_then_land_bind_the_services_converge_prove_the_roles_and_down_keeps_what_is_not_ours()
 {
    let peer = require_peer!(KubePeer::shared());
    let _platform = support::cluster_wide(peer).await;
    let state = tempfile::tempdir().unwrap();
    // The suites first, each in an environment of its own: the platform's names are
    // cluster-wide, so this test is the only one that lays them. It reaches the
    // cluster through a client handed in, as an embedder without the CLI would.
    let suite_env = support::env(peer, "suite", state.path(), |c| {
        c.gitops.kubeconfig = None;
        c.local.cluster.enabled = false;
    });
    assert!(GitopsProvider::new().phases(&suite_env).unwrap().is_empty());
    let admin = support::client(peer, User::Admin).await;
    // A run of this binary a moment ago (the control plane outlives it by seconds),
    // or another test, may still be deleting the platform's namespaces.
    support::settled(&admin, &suite_env).await;
    phase_suite(&PlatformFixture {
        env: suite_env.clone(),
        admin: admin.clone(),
        index: 0,
        component: baseline::COMPONENT,
        kinds: baseline::kinds(),
        inputs: std::collections::HashMap::new(),
    })
    .await;
    until_gone(
        &admin,
        baseline::namespaces(&suite_env)
            .into_iter()
            .map(|ns| ns.name),
    )
    .await;
    services_suite(peer, &admin, state.path()).await;

    let env = support::env(peer, "base", state.path(), |c| {
        c.platform.teams = vec![ResourceName::new("backend").unwrap()];
    });
    let run = RunOptions::default();
    let world = World::new();

    let plan = bootstrap(&env, state.path(), &world)
        .plan(&run)
        .await
        .unwrap();
    assert_eq!(
        plan.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        plan.summary
    );
    let planned = changes(&plan);
    assert!(planned.len() > 30, "{planned:?}");
    assert!(planned.iter().all(|c| c.action == Action::Create));
    // The services are made by the same run: their bindings are named, their
    // content known after apply.
    let binding = planned
        .iter()
        .find(|c| c.name == "backend/platform-postgres")
        .unwrap_or_else(|| panic!("{planned:?}"));
    assert!(
        binding
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("known after apply")),
        "{binding:?}"
    );

    let up = bootstrap(&env, state.path(), &world)
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        up.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        up.summary
    );
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in baseline::namespaces(&env) {
        let live = namespaces.get(&ns.name).await.unwrap();
        let labels = live.metadata.labels.unwrap();
        assert_eq!(labels["comind.dev/environment"], env.name());
    }
    let quota: Api<ResourceQuota> = Api::namespaced(admin.clone(), "backend");
    let hard = quota
        .get("comind-quota")
        .await
        .unwrap()
        .spec
        .unwrap()
        .hard
        .unwrap();
    assert_eq!(hard["pods"].0, "50");

    // The services, bound by stable names: a selector-less Service with the
    // container's address in Comind's EndpointSlice, and the same Secret, naming the
    // Service, in platform-<env> and every application namespace.
    let platform_ns = baseline::services_namespace(&env);
    let service = Api::<Service>::namespaced(admin.clone(), &platform_ns)
        .get("postgres")
        .await
        .unwrap();
    let spec = service.spec.unwrap();
    assert!(spec.selector.is_none(), "{spec:?}");
    assert_eq!(spec.ports.unwrap()[0].port, 5432);
    let slice = Api::<EndpointSlice>::namespaced(admin.clone(), &platform_ns)
        .get("postgres")
        .await
        .unwrap();
    assert_eq!(slice.endpoints[0].addresses, ["192.0.2.11"]);
    // The backups: accepted by the real API server (schedule, time zone, the Secret
    // keys the CronJobs read are the ones the services' Secrets hold).
    let cron_jobs =
        Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(admin.clone(), &platform_ns);
    let postgres_backup = cron_jobs
        .get(comind_gitops::platform::backups::POSTGRES_CRONJOB)
        .await
        .unwrap();
    let spec = postgres_backup.spec.unwrap();
    assert_eq!(
        (spec.schedule.as_str(), spec.time_zone.as_deref()),
        ("0 3 * * *", Some("UTC"))
    );
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    cron_jobs
        .get(comind_gitops::platform::backups::OBJECTS_CRONJOB)
        .await
        .unwrap();
    let postgres_keys = Api::<Secret>::namespaced(admin.clone(), &platform_ns)
        .get(&services::secret_name(ServiceKind::Postgres))
        .await
        .unwrap()
        .data
        .unwrap();
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
        for var in container.env.iter().flatten() {
            let Some(reference) = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            else {
                continue;
            };
            if reference.name == services::secret_name(ServiceKind::Postgres) {
                assert!(postgres_keys.contains_key(&reference.key), "{reference:?}");
            }
        }
    }
    let secret_data = |ns: &str, kind: ServiceKind| {
        let api = Api::<Secret>::namespaced(admin.clone(), ns);
        async move {
            api.get(&services::secret_name(kind))
                .await
                .unwrap()
                .data
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
                .collect::<std::collections::BTreeMap<_, _>>()
        }
    };
    let in_platform = secret_data(&platform_ns, ServiceKind::Postgres).await;
    let password = world.secret(&format!("{}/postgres", env.name()));
    assert_eq!(
        in_platform["DATABASE_URL"],
        format!(
            "postgres://app:{password}@postgres.{platform_ns}.svc:5432/{}",
            env.config().services.postgres.databases[0]
        )
    );
    for ns in ["user-apps", "backend"] {
        assert_eq!(secret_data(ns, ServiceKind::Postgres).await, in_platform);
    }
    let queue = secret_data("backend", ServiceKind::Queue).await;
    assert_eq!(
        queue["SQS_ENDPOINT"],
        format!("http://queue.{platform_ns}.svc:9324")
    );
    assert!(
        !format!("{up:?}").contains(&password),
        "the run's report never holds a secret"
    );

    // A second run: nothing planned, nothing written.
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let version = |r: ClusterRole| r.metadata.resource_version.unwrap();
    let before = version(roles.get(baseline::ROLE_READONLY).await.unwrap());
    let again = bootstrap(&env, state.path(), &world)
        .plan(&run)
        .await
        .unwrap();
    assert!(changes(&again).is_empty(), "{:?}", changes(&again));
    let up = bootstrap(&env, state.path(), &world)
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(up.summary.changes, 0, "{:?}", up.summary);
    assert_eq!(
        version(roles.get(baseline::ROLE_READONLY).await.unwrap()),
        before
    );

    // The postgres container stops: its phase will start it, so what the cluster
    // holds of it is known after apply; the plan names it and prunes none of it.
    let container = env.resource_name("postgres");
    assert!(world.set_running("test", &container, false));
    let stopped = changes(
        &bootstrap(&env, state.path(), &world)
            .plan(&run)
            .await
            .unwrap(),
    );
    assert!(
        stopped
            .iter()
            .all(|c| c.action != Action::Delete && !c.name.contains("cache")),
        "{stopped:?}"
    );
    assert!(
        stopped.iter().any(|c| c.action == Action::Update
            && c.name == format!("{platform_ns}/postgres")
            && c.reason
                .as_deref()
                .is_some_and(|r| r.contains("known after apply"))),
        "{stopped:?}"
    );
    assert!(world.set_running("test", &container, true));

    // The roles, proven by requests of users in their groups.
    let dave = support::client(peer, User::Dave).await; // platform:developer
    let rita = support::client(peer, User::Rita).await; // platform:readonly
    let alice = support::client(peer, User::Alice).await; // platform:admin
    let nobody = support::client(peer, User::Nobody).await;
    let cm = |c: &kube::Client, ns: &str| Api::<ConfigMap>::namespaced(c.clone(), ns);
    let secrets = |c: &kube::Client, ns: &str| Api::<Secret>::namespaced(c.clone(), ns);
    let pods = |c: &kube::Client, ns: &str| Api::<Pod>::namespaced(c.clone(), ns);
    let deployments = |c: &kube::Client, ns: &str| Api::<Deployment>::namespaced(c.clone(), ns);
    let post = PostParams::default();
    // Developers: workloads and Secrets in application namespaces, read elsewhere.
    assert!(allowed(cm(&dave, "backend").create(&post, &config_map("dave-was-here"))).await);
    assert!(allowed(secrets(&dave, "backend").list(&Default::default())).await);
    assert!(allowed(deployments(&dave, "user-apps").list(&Default::default())).await);
    assert!(allowed(pods(&dave, "platform").list(&Default::default())).await);
    assert!(!allowed(secrets(&dave, "platform").list(&Default::default())).await);
    assert!(!allowed(cm(&dave, "platform").create(&post, &config_map("nope"))).await);
    // Readers: everything but Secrets, and no writes.
    assert!(allowed(pods(&rita, "backend").list(&Default::default())).await);
    assert!(allowed(deployments(&rita, "platform").list(&Default::default())).await);
    assert!(!allowed(secrets(&rita, "backend").list(&Default::default())).await);
    assert!(!allowed(cm(&rita, "backend").create(&post, &config_map("nope"))).await);
    // Administrators: anything; someone in no group: nothing.
    assert!(allowed(secrets(&alice, "platform").list(&Default::default())).await);
    assert!(allowed(cm(&alice, "platform").create(&post, &config_map("alice-was-here"))).await);
    cm(&alice, "platform")
        .delete("alice-was-here", &Default::default())
        .await
        .unwrap();
    assert!(!allowed(pods(&nobody, "backend").list(&Default::default())).await);

    // A quota edited by hand: the plan names the field, up takes it back.
    quota
        .patch(
            "comind-quota",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"hard": {"pods": "500"}}})),
        )
        .await
        .unwrap();
    let drift = changes(
        &bootstrap(&env, state.path(), &world)
            .plan(&run)
            .await
            .unwrap(),
    );
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].action, Action::Update);
    assert_eq!(drift[0].name, "backend/comind-quota");
    assert!(
        drift[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("spec.hard.pods"),
        "{drift:?}"
    );
    bootstrap(&env, state.path(), &world)
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    let hard = quota
        .get("comind-quota")
        .await
        .unwrap()
        .spec
        .unwrap()
        .hard
        .unwrap();
    assert_eq!(hard["pods"].0, "50");

    // The team goes from the configuration: its namespace and binding are pruned. It
    // holds the developer's ConfigMap, which is not Comind's, so a prune would delete
    // it with the namespace: first, `down`'s rule is checked on `user-apps` below.
    let mut config = env.config().clone();
    config.platform.teams.clear();
    let fewer = std::sync::Arc::new(Environment::with_state_root(config, state.path()));
    cm(&admin, "backend")
        .delete("dave-was-here", &Default::default())
        .await
        .unwrap();
    let pruned = changes(
        &bootstrap(&fewer, state.path(), &world)
            .plan(&run)
            .await
            .unwrap(),
    );
    assert!(
        pruned.iter().all(|c| c.action == Action::Delete)
            && pruned.iter().any(|c| c.name == "backend"),
        "{pruned:?}"
    );
    let up = bootstrap(&fewer, state.path(), &world)
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(
        up.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        up.summary
    );

    // `down`: everything Comind made goes, but a namespace holding something of
    // someone else's is kept with that object.
    cm(&admin, "user-apps")
        .create(&post, &config_map("someone-elses"))
        .await
        .unwrap();
    let down_bootstrap = bootstrap(&fewer, state.path(), &world);
    let mut events = down_bootstrap.events().subscribe();
    let down = down_bootstrap
        .down(&run, &DownOptions::default())
        .await
        .unwrap();
    let mut kept = Vec::new();
    while let Some(record) = events.try_recv() {
        if let comind_core::event::Event::PhaseFinished { kept: k, .. } = &record.event {
            // The fake services keep their data volumes, as real ones do.
            kept.extend(
                k.iter()
                    .filter(|k| k.kind != "volume")
                    .map(|k| format!("{} {}: {}", k.kind, k.name, k.reason)),
            );
        }
    }
    assert_eq!(kept.len(), 1, "only user-apps is kept: {kept:?}");
    assert!(kept[0].contains("someone-elses"), "{kept:?}");
    assert_eq!(
        down.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        down.summary
    );
    assert!(
        roles
            .get_opt(baseline::ROLE_READONLY)
            .await
            .unwrap()
            .is_none()
    );
    let kept = namespaces.get("user-apps").await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "user-apps is kept"
    );
    assert!(
        cm(&admin, "user-apps")
            .get_opt("someone-elses")
            .await
            .unwrap()
            .is_some()
    );
    let platform = namespaces.get_opt("platform").await.unwrap();
    assert!(
        platform.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "platform, which only Comind used, is deleted"
    );
    // What was kept is the test's own: removed, so that a run of this binary again on
    // the same control plane (it lives a few seconds after the last test) starts clean.
    namespaces
        .delete("user-apps", &Default::default())
        .await
        .unwrap();
}

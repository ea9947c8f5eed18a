//! The platform baseline on the real API server, through `Bootstrap` as the CLI runs
//! it. Its namespaces and ClusterRoles have fixed, cluster-wide names, so one test
//! walks the whole life of one environment: up, a no-op up, the roles proven by real
//! requests of users in their groups (the API server's token file gives them; only
//! `admin` is in `system:masters`), a hand edit repaired, a team removed and pruned,
//! and `down` keeping what Comind did not create.

use comind_core::config::ResourceName;
use std::sync::Arc;

use comind_core::engine::RunOptions;
use comind_core::event::RunOutcome;
use comind_core::testing::conformance::{PhaseFixture, phase_suite};
use comind_core::{Action, Bootstrap, Change, DownOptions, Environment, UpOptions};
use comind_core::{Phase, Provider};
use comind_gitops::GitopsProvider;
use comind_gitops::platform::baseline;
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::require_peer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::support;

/// A bootstrap of `env` with the in-cluster layer only, as a new process makes it.
fn bootstrap(env: &Environment, state: &std::path::Path) -> Bootstrap {
    let copy = Environment::with_state_root(env.config().clone(), state);
    Bootstrap::new(copy).with_provider(GitopsProvider::new())
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

/// The core phase suite's view of the baseline: the phase, and what carries its
/// labels in the cluster (objects being deleted no longer count).
struct BaselineFixture {
    env: Arc<Environment>,
    admin: kube::Client,
}

/// The provider the suite runs: an embedder's own client, no kubeconfig in the
/// configuration.
fn embedded(admin: &kube::Client) -> GitopsProvider {
    GitopsProvider::with_cluster(admin.clone(), "the test control plane")
}

#[async_trait::async_trait]
impl PhaseFixture for BaselineFixture {
    fn phase(&self) -> Arc<dyn Phase> {
        embedded(&self.admin).phases(&self.env).unwrap().remove(0)
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    async fn owned_resources(&self) -> comind_core::Result<Vec<String>> {
        let selector = format!(
            "comind.dev/environment={},comind.dev/component={}",
            self.env.name(),
            baseline::COMPONENT
        );
        let mut names = Vec::new();
        for kind in baseline::kinds() {
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

#[tokio::test]
async fn the_baseline_passes_the_phase_suite_then_lands_converges_proves_its_roles_and_down_keeps_what_is_not_ours()
 {
    let peer = require_peer!(KubePeer::shared());
    let state = tempfile::tempdir().unwrap();
    // The suite first, in an environment of its own: the baseline's names are
    // cluster-wide, so this test is the only one that lays it. It reaches the
    // cluster through a client handed in, as an embedder without the CLI would.
    let suite_env = support::env(peer, "suite", state.path(), |c| c.gitops.kubeconfig = None);
    assert!(GitopsProvider::new().phases(&suite_env).unwrap().is_empty());
    let admin = support::client(peer, User::Admin).await;
    phase_suite(&BaselineFixture {
        env: suite_env.clone(),
        admin: admin.clone(),
    })
    .await;
    // Its namespaces finish terminating (the namespace controller empties them first)
    // before the next environment takes the same names.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    for ns in baseline::namespaces(&suite_env) {
        while namespaces.get_opt(&ns.name).await.unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never went",
                ns.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    let env = support::env(peer, "base", state.path(), |c| {
        c.platform.teams = vec![ResourceName::new("backend").unwrap()];
    });
    let run = RunOptions::default();

    let plan = bootstrap(&env, state.path()).plan(&run).await.unwrap();
    assert_eq!(
        plan.summary.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        plan.summary
    );
    let planned = changes(&plan);
    assert!(planned.len() > 30, "{planned:?}");
    assert!(planned.iter().all(|c| c.action == Action::Create));

    let up = bootstrap(&env, state.path())
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

    // A second run: nothing planned, nothing written.
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let version = |r: ClusterRole| r.metadata.resource_version.unwrap();
    let before = version(roles.get(baseline::ROLE_READONLY).await.unwrap());
    let again = bootstrap(&env, state.path()).plan(&run).await.unwrap();
    assert!(changes(&again).is_empty(), "{:?}", changes(&again));
    let up = bootstrap(&env, state.path())
        .up(&run, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(up.summary.changes, 0, "{:?}", up.summary);
    assert_eq!(
        version(roles.get(baseline::ROLE_READONLY).await.unwrap()),
        before
    );

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
    let drift = changes(&bootstrap(&env, state.path()).plan(&run).await.unwrap());
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
    bootstrap(&env, state.path())
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
    let pruned = changes(&bootstrap(&fewer, state.path()).plan(&run).await.unwrap());
    assert!(
        pruned.iter().all(|c| c.action == Action::Delete)
            && pruned.iter().any(|c| c.name == "backend"),
        "{pruned:?}"
    );
    let up = bootstrap(&fewer, state.path())
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
    let down_bootstrap = bootstrap(&fewer, state.path());
    let mut events = down_bootstrap.events().subscribe();
    let down = down_bootstrap
        .down(&run, &DownOptions::default())
        .await
        .unwrap();
    let mut kept = Vec::new();
    while let Some(record) = events.try_recv() {
        if let comind_core::event::Event::PhaseFinished { kept: k, .. } = &record.event {
            kept.extend(
                k.iter()
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
}

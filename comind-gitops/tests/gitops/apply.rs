//! The apply engine against the real API server: converge, no-op, prune, refusal,
//! validation, CRDs with their custom resources, and a plan that names changed fields.
//! Each test works in namespaces and names of its own, so they run in parallel.

use std::collections::BTreeMap;
use std::time::Duration;

use comind_core::reconcile::Pass;
use comind_core::{Action, ErrorKind, Operation};
use comind_gitops::apply::{Applier, Kind, Object, ObjectSet, Scope};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::require_peer;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::support;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

fn namespace(name: &str) -> Object {
    Object::typed(&Namespace {
        metadata: meta(name, None),
        ..Namespace::default()
    })
    .unwrap()
}

fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> Object {
    Object::typed(&ConfigMap {
        metadata: meta(name, Some(ns)),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    })
    .unwrap()
}

fn quota(ns: &str, pods: &str) -> Object {
    Object::typed(&ResourceQuota {
        metadata: meta("quota", Some(ns)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                "pods".to_string(),
                Quantity(pods.into()),
            )])),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    })
    .unwrap()
}

fn set(objects: Vec<Object>) -> ObjectSet {
    ObjectSet::new(
        "apply-test",
        objects,
        vec![
            Kind::of::<Namespace>(),
            Kind::of::<ConfigMap>(),
            Kind::of::<ResourceQuota>(),
        ],
    )
}

struct Fixture {
    peer: &'static KubePeer,
    env: std::sync::Arc<comind_core::Environment>,
    applier: Applier,
    ns: String,
    _state: tempfile::TempDir,
}

impl Fixture {
    async fn new(peer: &'static KubePeer) -> Fixture {
        let state = tempfile::tempdir().unwrap();
        let env = support::env(peer, "apply", state.path(), |_| {});
        let applier = Applier::new(support::client(peer, User::Admin).await);
        Fixture {
            ns: format!("t-{}", env.name()),
            peer,
            env,
            applier,
            _state: state,
        }
    }

    async fn run(&self, pass: &mut Pass, objects: Vec<Object>) -> comind_core::Result<()> {
        let operation = if pass.is_apply() {
            Operation::Apply
        } else {
            Operation::Plan
        };
        let ctx = support::ctx(&self.env, operation);
        self.applier
            .reconcile(&ctx, pass, &set(objects))
            .await
            .map(|_| ())
    }

    async fn apply(&self, objects: Vec<Object>) -> Vec<comind_core::Change> {
        let mut pass = Pass::apply();
        self.run(&mut pass, objects).await.unwrap();
        pass.into_changes()
    }

    async fn plan(&self, objects: Vec<Object>) -> Vec<comind_core::Change> {
        let mut pass = Pass::plan();
        self.run(&mut pass, objects).await.unwrap();
        pass.into_changes()
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.applier.client().clone(), &self.ns)
    }

    async fn resource_versions(&self) -> Vec<String> {
        // Only what the test applied: the root-CA publisher adds `kube-root-ca.crt` to a
        // new namespace whenever it gets to it, a write that is not Comind's.
        let mut versions: Vec<String> = self
            .config_maps()
            .list(&kube::api::ListParams::default().labels("comind.dev/component=apply-test"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| c.metadata.resource_version.unwrap())
            .collect();
        let ns: Api<Namespace> = Api::all(self.applier.client().clone());
        versions.push(
            ns.get(&self.ns)
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap(),
        );
        versions.sort();
        versions
    }
}

#[tokio::test]
async fn a_second_apply_makes_no_write_and_a_removed_object_is_pruned() {
    let peer = require_peer!(KubePeer::shared());
    let f = Fixture::new(peer).await;
    let ns = f.ns.clone();
    let objects = || {
        vec![
            namespace(&ns),
            config_map(&ns, "one", &[("a", "1")]),
            config_map(&ns, "two", &[("b", "2")]),
        ]
    };
    // Planned before anything exists: the namespace's objects cannot be dry-run yet.
    let plan = f.plan(objects()).await;
    assert_eq!(plan.len(), 3, "{plan:?}");
    assert!(plan.iter().all(|c| c.action == Action::Create));

    let first = f.apply(objects()).await;
    assert_eq!(first.len(), 3, "{first:?}");
    let live = f.config_maps().get("one").await.unwrap();
    let labels = live.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "comind");
    assert_eq!(labels["comind.dev/environment"], f.env.name());
    assert_eq!(labels["comind.dev/component"], "apply-test");
    assert!(labels.contains_key("comind.dev/spec-hash"));

    let before = f.resource_versions().await;
    assert!(
        f.plan(objects()).await.is_empty(),
        "converged: nothing planned"
    );
    assert!(
        f.apply(objects()).await.is_empty(),
        "converged: nothing applied"
    );
    assert_eq!(f.resource_versions().await, before, "no object was written");

    // `two` is no longer rendered: pruned.
    let changes = f
        .apply(vec![namespace(&ns), config_map(&ns, "one", &[("a", "1")])])
        .await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].action, Action::Delete);
    assert_eq!(changes[0].name, format!("{ns}/two"));
    assert!(f.config_maps().get_opt("two").await.unwrap().is_none());
    let _ = f.peer;
}

#[tokio::test]
async fn a_same_named_object_that_is_not_comind_s_stops_the_run_before_any_write() {
    let peer = require_peer!(KubePeer::shared());
    let f = Fixture::new(peer).await;
    let ns = f.ns.clone();
    f.apply(vec![namespace(&ns)]).await;
    // Someone else's ConfigMap, with the name Comind wants.
    let theirs = ConfigMap {
        metadata: meta("taken", Some(&ns)),
        data: Some(BTreeMap::from([(
            "owner".to_string(),
            "someone".to_string(),
        )])),
        ..ConfigMap::default()
    };
    f.config_maps()
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let mut pass = Pass::apply();
    let err = f
        .run(
            &mut pass,
            vec![
                namespace(&ns),
                config_map(&ns, "mine", &[("a", "1")]),
                config_map(&ns, "taken", &[("a", "1")]),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string().contains(&format!("ConfigMap {ns}/taken")),
        "{err}"
    );
    assert!(pass.changes().is_empty(), "{:?}", pass.changes());
    assert!(
        f.config_maps().get_opt("mine").await.unwrap().is_none(),
        "nothing was written"
    );
    let untouched = f.config_maps().get("taken").await.unwrap();
    assert_eq!(untouched.data.unwrap()["owner"], "someone");
    assert!(untouched.metadata.labels.is_none());
}

#[tokio::test]
async fn an_invalid_object_is_refused_with_the_server_s_field_message_and_nothing_else_lands() {
    let peer = require_peer!(KubePeer::shared());
    let f = Fixture::new(peer).await;
    let ns = f.ns.clone();
    f.apply(vec![namespace(&ns)]).await;
    let mut pass = Pass::apply();
    let err = f
        .run(
            &mut pass,
            vec![
                namespace(&ns),
                config_map(&ns, "fine", &[("a", "1")]),
                quota(&ns, "not-a-quantity"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("ResourceQuota") && text.contains("quota"),
        "{text}"
    );
    assert!(
        text.contains("quantities must match"),
        "the server's message: {text}"
    );
    assert!(
        f.config_maps().get_opt("fine").await.unwrap().is_none(),
        "the stage was not written"
    );
}

#[tokio::test]
async fn a_hand_edit_shows_as_an_update_naming_the_field_and_up_takes_it_back() {
    let peer = require_peer!(KubePeer::shared());
    let f = Fixture::new(peer).await;
    let ns = f.ns.clone();
    let objects = || vec![namespace(&ns), quota(&ns, "10")];
    f.apply(objects()).await;
    // Someone edits the quota by hand (another field manager).
    let quotas: Api<ResourceQuota> = Api::namespaced(f.applier.client().clone(), &ns);
    quotas
        .patch(
            "quota",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"hard": {"pods": "99"}}})),
        )
        .await
        .unwrap();
    let plan = f.plan(objects()).await;
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0].action, Action::Update);
    assert!(
        plan[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("spec.hard.pods"),
        "{plan:?}"
    );
    let applied = f.apply(objects()).await;
    assert_eq!(applied, plan, "up does what the plan said");
    let live = quotas.get("quota").await.unwrap();
    assert_eq!(
        live.spec.unwrap().hard.unwrap()["pods"],
        Quantity("10".into())
    );
    assert!(f.plan(objects()).await.is_empty());
}

#[tokio::test]
async fn a_crd_and_its_custom_resources_land_in_one_run() {
    let peer = require_peer!(KubePeer::shared());
    let f = Fixture::new(peer).await;
    let ns = f.ns.clone();
    // A group of this test's own, so parallel runs do not share the CRD.
    let group = format!("{}.test.comind.dev", f.env.name());
    let crd = Object::dynamic(
        Kind::of::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(),
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}")},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "properties": {
                            "size": {"type": "integer"}
                        }}}
                    }}
                }]
            }
        }),
    )
    .unwrap();
    let widget_kind = Kind::custom(&group, "v1", "Widget", "widgets", Scope::Namespaced);
    let widget = |size: i64| {
        Object::dynamic(
            widget_kind.clone(),
            serde_json::json!({
                "apiVersion": format!("{group}/v1"),
                "kind": "Widget",
                "metadata": {"name": "w", "namespace": ns},
                "spec": {"size": size}
            }),
        )
        .unwrap()
    };
    let mut objects = vec![crd.clone(), namespace(&ns), widget(3)];
    let plan = f.plan(objects.clone()).await;
    assert_eq!(plan.len(), 3, "{plan:?}");
    let mut pass = Pass::apply();
    let ctx = support::ctx(&f.env, Operation::Apply);
    let mut with_widgets = set(objects.clone());
    with_widgets.kinds.push(widget_kind.clone());
    f.applier
        .reconcile(&ctx, &mut pass, &with_widgets)
        .await
        .unwrap();
    assert_eq!(pass.changes().len(), 3, "{:?}", pass.changes());
    let widgets: Api<kube::api::DynamicObject> =
        Api::namespaced_with(f.applier.client().clone(), &ns, &widget_kind.resource);
    let live = widgets.get("w").await.unwrap();
    assert_eq!(live.data["spec"]["size"], 3);
    // A schema violation in the custom resource is refused with the field.
    objects[2] = Object::dynamic(
        widget_kind.clone(),
        serde_json::json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": ns},
            "spec": {"size": "large"}
        }),
    )
    .unwrap();
    let mut pass = Pass::apply();
    let err = f
        .applier
        .reconcile(&ctx, &mut pass, &set(objects))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("spec.size"), "{err}");
    // Clean up the cluster-wide CRD.
    let down = f
        .applier
        .destroy(&ctx, "apply-test", &[Kind::of::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(), widget_kind])
        .await
        .unwrap();
    assert!(!down.changes.is_empty());
}

/// A custom resource whose CRD another party installs (Argo CD syncing a chart, as
/// MetalLB's pool stands on the MetalLB chart's CRDs): a plan lists it as created
/// while the CRD is not served, and an apply that starts before the CRD lands waits
/// for it to be established instead of failing on the API's 404.
#[tokio::test]
async fn a_custom_resource_waits_for_a_crd_someone_else_installs() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let peer = require_peer!(KubePeer::shared());
    let f = Fixture::new(peer).await;
    let ns = f.ns.clone();
    let group = format!("{}.late.comind.dev", f.env.name());
    let gadget_kind = Kind::custom(&group, "v1", "Gadget", "gadgets", Scope::Namespaced);
    let gadget = Object::dynamic(
        gadget_kind.clone(),
        serde_json::json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Gadget",
            "metadata": {"name": "g", "namespace": ns},
            "spec": {"size": 1}
        }),
    )
    .unwrap();
    let objects = vec![namespace(&ns), gadget];
    let mut with_gadgets = set(objects.clone());
    with_gadgets.kinds.push(gadget_kind.clone());

    let mut pass = Pass::plan();
    let ctx = support::ctx(&f.env, Operation::Plan);
    f.applier
        .reconcile(&ctx, &mut pass, &with_gadgets)
        .await
        .unwrap();
    let planned: Vec<String> = pass.changes().iter().map(|c| c.name.clone()).collect();
    assert!(planned.contains(&format!("{ns}/g")), "{planned:?}");

    // The other party: the CRD lands a moment after the apply has begun.
    let crds: Api<CustomResourceDefinition> = Api::all(f.applier.client().clone());
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    // The apply starts first; the CRD lands only once the apply reports that it waits
    // for it (an engine that does not wait fails on the API's 404 before that).
    let ctx = support::ctx(&f.env, Operation::Apply);
    let mut events = ctx.events().subscribe();
    let crd_name = format!("gadgets.{group}");
    let apply = {
        let (applier, ctx) = (f.applier.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut pass = Pass::apply();
            applier.reconcile(&ctx, &mut pass, &with_gadgets).await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let record = events.recv().await.expect("the apply's events end");
            if let comind_core::event::Event::PhaseProgress { message, .. } = &record.event
                && message.contains(&crd_name)
            {
                break;
            }
        }
    })
    .await
    .expect("the apply reports waiting for the CRD");
    crds.create(&Default::default(), &crd).await.unwrap();
    apply.await.unwrap().unwrap();
    let gadgets: Api<kube::api::DynamicObject> =
        Api::namespaced_with(f.applier.client().clone(), &ns, &gadget_kind.resource);
    assert_eq!(gadgets.get("g").await.unwrap().data["spec"]["size"], 1);
    crds.delete(&format!("gadgets.{group}"), &Default::default())
        .await
        .unwrap();
}

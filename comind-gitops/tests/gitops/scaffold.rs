//! `comind app new`'s chart, checked by Helm's own code: `helm-lite` of
//! `../shared/test-peers` (Helm v3.19's `template` and `lint`) lints the scaffolded
//! chart strictly and renders it for a dev and a production environment; the rendered
//! objects are then validated by the real API server (a server-side dry run).

use std::path::{Path, PathBuf};
use std::process::Command;

use comind_core::{Environment, ServiceKind};
use comind_gitops::scaffold::{self, AppSpec};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::peers::Missing;
use comind_test_support::{names, oracles, require_peer};

use crate::support;

/// `helm-lite`, unpacked once into the build's cache.
fn helm_lite() -> Result<PathBuf, Missing> {
    oracles::unpacked(oracles::HELM_LITE)
}

fn helm(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "helm-lite {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[tokio::test]
async fn the_scaffolded_chart_lints_renders_per_environment_and_is_valid_kubernetes() {
    let helm_lite = require_peer!(helm_lite());
    let peer = require_peer!(KubePeer::shared());
    let repo = tempfile::tempdir().unwrap();
    let env = Environment::with_state_root(comind_core::Config::default(), repo.path());
    let spec = AppSpec {
        name: "my-app".into(),
        team: "backend".into(),
        image: "registry.example:5000/backend/my-app:1.2.3".into(),
        port: 8080,
        environments: vec!["dev".into(), "prod".into()],
        uses: vec![ServiceKind::Postgres, ServiceKind::Queue],
    };
    let done = scaffold::new_app(&env, repo.path(), &spec, false, false).unwrap();
    assert!(done.written.len() >= 12, "{done:?}");
    let chart = repo.path().join("apps/backend/my-app/chart");
    let chart = chart.to_str().unwrap();

    for environment in ["dev", "prod"] {
        let values = format!("{chart}/values-{environment}.yaml");
        helm(&helm_lite, &["lint", chart, "-f", &values, "--strict"]);
    }
    let render = |environment: &str| {
        documents(&helm(
            &helm_lite,
            &[
                "template",
                chart,
                "--name",
                "backend-my-app",
                "--namespace",
                "backend",
                "-f",
                &format!("{chart}/values-{environment}.yaml"),
            ],
        ))
    };
    let dev = render("dev");
    let prod = render("prod");
    let kinds = |docs: &[serde_json::Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !kinds(&dev).contains(&"HorizontalPodAutoscaler".to_string()),
        "{:?}",
        kinds(&dev)
    );
    assert!(
        kinds(&prod).contains(&"HorizontalPodAutoscaler".to_string()),
        "{:?}",
        kinds(&prod)
    );
    for kind in [
        "Deployment",
        "Service",
        "Ingress",
        "ServiceAccount",
        "NetworkPolicy",
    ] {
        assert!(
            kinds(&dev).contains(&kind.to_string()),
            "{kind} in {:?}",
            kinds(&dev)
        );
    }
    let deployment = dev.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(
        container["image"],
        "registry.example:5000/backend/my-app:1.2.3"
    );
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "platform-postgres"
    );
    assert_eq!(
        container["envFrom"][1]["secretRef"]["name"],
        "platform-queue"
    );
    let ingress = dev.iter().find(|d| d["kind"] == "Ingress").unwrap();
    assert_eq!(ingress["spec"]["ingressClassName"], "traefik");
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        "my-app.dev.127.0.0.1.nip.io"
    );

    // On AWS the load balancer sends to the Pods from the VPC: the policy admits the
    // VPC's range instead of the k3s Traefik.
    let aws_repo = tempfile::tempdir().unwrap();
    let mut aws_config = comind_core::Config::default();
    aws_config.profile = comind_core::Profile::Aws;
    let vpc = aws_config.aws.vpc.cidr.clone();
    let aws_env = Environment::with_state_root(aws_config, aws_repo.path());
    let aws_spec = AppSpec {
        environments: vec!["dev".into()],
        ..spec.clone()
    };
    scaffold::new_app(&aws_env, aws_repo.path(), &aws_spec, false, false).unwrap();
    let aws_chart = aws_repo.path().join("apps/backend/my-app/chart");
    let aws_chart = aws_chart.to_str().unwrap();
    helm(
        &helm_lite,
        &[
            "lint",
            aws_chart,
            "-f",
            &format!("{aws_chart}/values-dev.yaml"),
            "--strict",
        ],
    );
    let aws = documents(&helm(
        &helm_lite,
        &[
            "template",
            aws_chart,
            "--name",
            "backend-my-app",
            "--namespace",
            "backend",
            "-f",
            &format!("{aws_chart}/values-dev.yaml"),
        ],
    ));
    let policy = aws.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"],
        vpc.as_str(),
        "{policy}"
    );
    let local_policy = dev.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert!(
        local_policy["spec"]["ingress"][0]["from"][0]["ipBlock"].is_null(),
        "{local_policy}"
    );

    // Valid for the real API server: a server-side dry run of every object, in a
    // namespace of the test's own.
    let admin = support::client(peer, User::Admin).await;
    let namespace = names::unique("scaffold");
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(admin.clone());
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    let discovery = kube::Discovery::new(admin.clone()).run().await.unwrap();
    for doc in prod.iter().chain(dev.iter()).chain(aws.iter()) {
        let object: kube::api::DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let types = object.types.clone().unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(&types).unwrap();
        let (resource, _) = discovery.resolve_gvk(&gvk).unwrap();
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(admin.clone(), &namespace, &resource);
        let params = kube::api::PatchParams::apply("comind-test").dry_run();
        api.patch(
            object.metadata.name.as_deref().unwrap(),
            &params,
            &kube::api::Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("{} is refused: {e}", types.kind));
    }
    namespaces
        .delete(&namespace, &Default::default())
        .await
        .unwrap();

    // Again: nothing changes. An edited file is kept and named, unless forced.
    let again = scaffold::new_app(&env, repo.path(), &spec, false, false).unwrap();
    assert!(
        again.written.is_empty() && again.kept.is_empty(),
        "{again:?}"
    );
    let values = repo.path().join("apps/backend/my-app/chart/values.yaml");
    std::fs::write(&values, "replicaCount: 3\n").unwrap();
    let kept = scaffold::new_app(&env, repo.path(), &spec, false, false).unwrap();
    assert_eq!(
        kept.kept,
        [PathBuf::from("apps/backend/my-app/chart/values.yaml")]
    );
    assert_eq!(
        std::fs::read_to_string(&values).unwrap(),
        "replicaCount: 3\n"
    );
    let forced = scaffold::new_app(&env, repo.path(), &spec, true, false).unwrap();
    assert_eq!(forced.replaced.len(), 1);
    // Bad names write nothing.
    let empty = tempfile::tempdir().unwrap();
    let bad = AppSpec {
        name: "Bad_Name".into(),
        ..spec
    };
    assert!(scaffold::new_app(&env, empty.path(), &bad, false, false).is_err());
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// The scaffolded files, compared with the reviewed copies in
/// `tests/gitops/snapshots/` (`COMIND_UPDATE_SNAPSHOTS=1` writes them anew, to be
/// reviewed as a diff): a change to the templates is visible in review.
#[test]
fn the_scaffolded_files_match_their_reviewed_snapshots() {
    let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/unused");
    let spec = AppSpec {
        name: "my-app".into(),
        team: "backend".into(),
        image: "comind-dev-registry:5000/backend/my-app:0.1.0".into(),
        port: 8080,
        environments: vec!["dev".into(), "prod".into()],
        uses: vec![ServiceKind::Postgres],
    };
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gitops/snapshots/my-app");
    let update = std::env::var_os("COMIND_UPDATE_SNAPSHOTS").is_some();
    for (path, content) in scaffold::files(&env, &spec).unwrap() {
        let relative = path.strip_prefix("apps/backend/my-app/chart").unwrap();
        let snapshot = snapshots.join(relative);
        if update {
            std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
            std::fs::write(&snapshot, &content).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (COMIND_UPDATE_SNAPSHOTS=1 writes it)",
                snapshot.display()
            )
        });
        assert_eq!(
            content,
            expected,
            "{} differs from its snapshot",
            relative.display()
        );
    }
}

/// Names drawn at random: every valid pair lints; every invalid one writes nothing.
#[test]
fn random_names_lint_when_valid_and_write_nothing_when_not() {
    let helm_lite = require_peer!(helm_lite());
    let env = Environment::with_state_root(comind_core::Config::default(), "/tmp/unused");
    let mut rng = fastrand::Rng::with_seed(11);
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789-_.A".chars().collect();
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..60 {
        let len = rng.usize(1..40);
        let name: String = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let spec = AppSpec {
            name: name.clone(),
            team: "team-a".into(),
            image: "example/app:1".into(),
            port: 8080,
            environments: vec!["dev".into()],
            uses: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        match scaffold::new_app(&env, dir.path(), &spec, false, false) {
            Ok(_) if valid < 8 => {
                valid += 1;
                let chart = dir.path().join(format!("apps/team-a/{name}/chart"));
                let chart = chart.to_str().unwrap();
                helm(
                    &helm_lite,
                    &[
                        "lint",
                        chart,
                        "-f",
                        &format!("{chart}/values-dev.yaml"),
                        "--strict",
                    ],
                );
            }
            Ok(_) => valid += 1,
            Err(_) => {
                invalid += 1;
                assert_eq!(
                    std::fs::read_dir(dir.path()).unwrap().count(),
                    0,
                    "{name:?} wrote something"
                );
            }
        }
    }
    assert!(
        valid > 0 && invalid > 0,
        "both kinds were drawn: {valid} valid, {invalid} invalid"
    );
}

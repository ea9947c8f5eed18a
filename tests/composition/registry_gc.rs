//! The registry's garbage-collection CronJob, run for real: the Pod that
//! `platform/registry` renders (comind-gitops), run as a container of its image with
//! its arguments, its ConfigMap and its host path, against the registry that
//! comind-local brings up. The host path is what k3d mounts on the server nodes from
//! the cluster configuration comind-local writes: the registry's data volume. No
//! kubelet runs the Job here (the manifest is checked by the real API server in the
//! CLI's local test), and no k3s node mounts the volume (the k3d double's nodes
//! cannot run Pods); everything else is the real registry and the real collector.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use comind::gitops::platform::registry as platform_registry;
use comind::local::cluster::config::{K3dConfig, RegistryAccess};
use comind::local::registry::{
    OUTPUT_REGISTRY_PASSWORD, OUTPUT_REGISTRY_URL, OUTPUT_REGISTRY_USER, RegistryPhase,
};
use comind_core::cluster::REGISTRY_NODE_PATH;
use comind_core::engine::RunOptions;
use comind_core::{Bootstrap, Config, Environment, PhaseId, Secret, UpOptions};
use comind_test_support::docker::{self, LabelCleanup, REGISTRY_IMAGE};
use comind_test_support::names::unique;
use comind_test_support::ports::free_port;
use comind_test_support::require_peer;
use k8s_openapi::api::core::v1::PodSpec;

/// `docker` with a configuration directory of its own (the login stays in it).
fn docker_cli(config_dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A one-file image holding `body`, tagged `tag`, labelled for cleanup.
fn tiny_image(config_dir: &Path, tag: &str, env: &str, body: &[u8]) {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "hello.txt", body).unwrap();
    let tar = archive.into_inner().unwrap();
    let label = format!(
        "LABEL {}={env}",
        comind_core::environment::LABEL_ENVIRONMENT
    );
    let (ok, text) = docker_cli(
        config_dir,
        &["import", "--change", &label, "-", tag],
        Some(&tar),
    );
    assert!(ok, "docker import {tag}: {text}");
}

fn pod_of(job: &k8s_openapi::api::batch::v1::CronJob) -> PodSpec {
    job.spec
        .clone()
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
}

/// The named volume k3d mounts at `path` on the server nodes, from the cluster
/// configuration comind-local writes for `env`.
fn node_volume(env: &Environment, path: &str) -> String {
    let access = RegistryAccess {
        cluster_name: RegistryPhase::cluster_name(env),
        host_port: env.config().local.cluster.registry_port.get(),
        data_volume: RegistryPhase::data_volume(env),
        username: "comind".into(),
        password: Secret::new("unused"),
    };
    let yaml = K3dConfig::render(env, Some(&access)).to_yaml().unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let entry = doc["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume"].as_str().unwrap().ends_with(&format!(":{path}")))
        .unwrap_or_else(|| panic!("no volume at {path} in {yaml}"));
    assert_eq!(entry["nodeFilters"][0], "server:*");
    let spec = entry["volume"].as_str().unwrap();
    spec[..spec.len() - path.len() - 1].to_string()
}

/// Runs the CronJob's Pod as Docker would under a kubelet: its image (the test config
/// names the stand-in), its arguments, its security context, the ConfigMap as files,
/// the host path as what k3d mounts there. Exit status and output.
fn run_the_job(env: &Environment, config_dir: &Path) -> (bool, String) {
    let job = platform_registry::gc_cron_job(env);
    let pod = pod_of(&job);
    let container = &pod.containers[0];
    let config = platform_registry::gc_config_map(env);
    let files = tempfile::tempdir().unwrap();
    for (name, text) in config.data.unwrap() {
        std::fs::write(files.path().join(name), text).unwrap();
    }
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        "none".into(),
        "--label".into(),
        format!(
            "{}={}",
            comind_core::environment::LABEL_ENVIRONMENT,
            env.name()
        ),
    ];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    args.push("--read-only".into());
    assert_eq!(security.allow_privilege_escalation, Some(false));
    args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    assert_eq!(
        security.capabilities.unwrap().drop.unwrap(),
        ["ALL".to_string()]
    );
    args.extend(["--cap-drop".into(), "ALL".into()]);
    let volumes: HashMap<String, _> = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    for mount in container.volume_mounts.clone().unwrap() {
        let volume = &volumes[&mount.name];
        let source = if let Some(map) = &volume.config_map {
            assert_eq!(map.name, platform_registry::GC_NAME);
            files.path().display().to_string()
        } else if let Some(host) = &volume.host_path {
            assert_eq!(host.path, REGISTRY_NODE_PATH);
            node_volume(env, &host.path)
        } else {
            panic!("an unexpected volume {volume:?}");
        };
        let read_only = if mount.read_only == Some(true) {
            ":ro"
        } else {
            ""
        };
        args.extend([
            "-v".into(),
            format!("{source}:{}{read_only}", mount.mount_path),
        ]);
    }
    args.push(container.image.clone().unwrap());
    args.extend(container.args.clone().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_cli(config_dir, &args, None)
}

#[tokio::test]
async fn the_gc_cronjob_deletes_untagged_layers_and_a_layer_pushed_again_is_stored_again() {
    require_peer!(docker::ready(&[REGISTRY_IMAGE]).await);
    let state = tempfile::tempdir().unwrap();
    let name = unique("rgc");
    let _leftovers = LabelCleanup::new(&name);
    let yaml = format!(
        "environment: {name}\ngitops:\n  argocd:\n    enabled: false\nlocal:\n  cluster:\n    \
         registry_image: {REGISTRY_IMAGE}\n    registry_port: {}\n",
        free_port()
    );
    let config = Config::from_yaml_str(&yaml, "comind.yaml").unwrap();
    let mut bootstrap = Bootstrap::new(Environment::with_state_root(config, state.path()));
    for provider in comind::providers(comind_core::Profile::Local).unwrap() {
        bootstrap = bootstrap.with_shared_provider(provider);
    }
    // The registry alone (and its network): the cluster's part is the volume mount,
    // read from the configuration it would be created with.
    let only = RunOptions {
        only: vec![PhaseId::new("registry")],
        ..Default::default()
    };
    let report = bootstrap.up(&only, &UpOptions::default()).await.unwrap();
    assert!(report.succeeded(), "{:?}", report.summary);
    let env = bootstrap.env();
    let out = &report.outputs[&PhaseId::new("registry")];
    let url = out.require(OUTPUT_REGISTRY_URL).unwrap().to_string();
    let user = out.require(OUTPUT_REGISTRY_USER).unwrap().to_string();
    let password = out.require(OUTPUT_REGISTRY_PASSWORD).unwrap().to_string();

    let config_dir = tempfile::tempdir().unwrap();
    let (logged_in, text) = docker_cli(
        config_dir.path(),
        &["login", &url, "-u", &user, "--password-stdin"],
        Some(password.as_bytes()),
    );
    assert!(logged_in, "{text}");
    let image = format!("{url}/comind-test/gc:1");
    let first = format!("{url}/comind-test/gc:first");
    tiny_image(config_dir.path(), &first, &name, b"comind gc test, first\n");
    let (tagged, text) = docker_cli(config_dir.path(), &["tag", &first, &image], None);
    assert!(tagged, "{text}");
    let (pushed, text) = docker_cli(config_dir.path(), &["push", &image], None);
    assert!(pushed, "{text}");
    // The tag moves on: the first image's layer is referenced by nothing.
    tiny_image(
        config_dir.path(),
        &image,
        &name,
        b"comind gc test, second\n",
    );
    let (pushed, text) = docker_cli(config_dir.path(), &["push", &image], None);
    assert!(pushed, "{text}");

    let (collected, log) = run_the_job(env, config_dir.path());
    assert!(collected, "the job fails: {log}");
    let deleted = log
        .lines()
        .filter(|l| l.to_lowercase().contains("deleting blob"))
        .count();
    assert!(deleted > 0, "the untagged layer is deleted: {log}");

    // The tag that stayed still pulls.
    let (removed, text) = docker_cli(config_dir.path(), &["rmi", &image], None);
    assert!(removed, "{text}");
    let (pulled, text) = docker_cli(config_dir.path(), &["pull", &image], None);
    assert!(pulled, "the tagged image survives the collection: {text}");

    // The first image comes back under the tag. The running registry must not
    // remember the deleted layer (a blob descriptor cache would): the push uploads it
    // again, and a fresh pull finds it.
    let (tagged, text) = docker_cli(config_dir.path(), &["tag", &first, &image], None);
    assert!(tagged, "{text}");
    let (pushed, text) = docker_cli(config_dir.path(), &["push", &image], None);
    assert!(pushed, "{text}");
    for tag in [&image, &first] {
        let (removed, text) = docker_cli(config_dir.path(), &["rmi", tag], None);
        assert!(removed, "{text}");
    }
    let (pulled, text) = docker_cli(config_dir.path(), &["pull", &image], None);
    assert!(
        pulled,
        "a layer deleted by the collection and pushed again is stored again: {text}"
    );

    let (again, log) = run_the_job(env, config_dir.path());
    assert!(again, "a second collection succeeds: {log}");

    let down = bootstrap
        .down(
            &RunOptions {
                destroy: comind_core::DestroyOptions { purge: true },
                ..only
            },
            &comind_core::DownOptions::default(),
        )
        .await
        .unwrap();
    assert!(down.succeeded(), "{:?}", down.summary);

    // The test's images (the pulled one, and the second one whose tag moved on) are
    // not Comind's to remove: the test removes them by the label it gave them.
    let filter = format!(
        "label={}={name}",
        comind_core::environment::LABEL_ENVIRONMENT
    );
    let (listed, ids) = docker_cli(
        config_dir.path(),
        &["images", "-q", "--filter", &filter],
        None,
    );
    assert!(listed, "{ids}");
    let mut ids: Vec<&str> = ids.split_whitespace().collect();
    ids.sort_unstable();
    ids.dedup();
    if !ids.is_empty() {
        let mut args = vec!["rmi", "-f"];
        args.extend(ids);
        let (removed, text) = docker_cli(config_dir.path(), &args, None);
        assert!(removed, "{text}");
    }
}

//! The `comind` binary on the local profile against the real Docker engine, with the
//! locally built test images (see `scripts/test-env`): a user's session end to end.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use comind_test_support::docker::{
    self, ELASTICMQ_IMAGE, GIT_SERVER_IMAGE, K3S_NODE_IMAGE, LabelCleanup, MINIO_IMAGE,
    POSTGRES_IMAGE, REDIS_IMAGE, REGISTRY_IMAGE, SERVICE_IMAGES,
};
use comind_test_support::docker_proxy::{self, DockerApiProxy, Trap};
use comind_test_support::k3d::K3dDouble;
use comind_test_support::kube::KubePeer;
use comind_test_support::ports::free_port;
use comind_test_support::{names, require_peer};
use serde_json::Value;

use crate::support::{Run, Scratch, git};

/// The services of `comind.yaml` and the stand-in image each runs.
const IMAGES: [(&str, &str); 4] = [
    ("postgres", POSTGRES_IMAGE),
    ("object_store", MINIO_IMAGE),
    ("cache", REDIS_IMAGE),
    ("queue", ELASTICMQ_IMAGE),
];

/// An environment of its own: unique name, free ports, test images. Purged on drop by
/// `comind down --purge`, and whatever that leaves is removed by its label.
struct LocalEnv {
    scratch: Scratch,
    name: String,
    ports: HashMap<&'static str, u16>,
    _leftovers: LabelCleanup,
}

/// Argo CD left out (`gitops:` lines): it needs its release manifest and its
/// workloads' kubelet, which the gitops tests provide. The local Git server goes with
/// it.
const NO_ARGOCD: &str = "  argocd:\n    enabled: false\n";

impl LocalEnv {
    /// The services alone, plus `extra` configuration.
    fn new(extra: &str) -> LocalEnv {
        Self::make(extra, NO_ARGOCD, None)
    }

    /// The services with `gitops` lines (under `gitops:`); unless they turn Argo CD
    /// off, the local Git server too.
    fn with_gitops(gitops: &str) -> LocalEnv {
        Self::make("", gitops, None)
    }

    /// The whole local profile but Argo CD: the services, the registry and the
    /// cluster, made by the k3d double `k3d`.
    fn with_cluster(k3d: &K3dDouble) -> LocalEnv {
        Self::make("", NO_ARGOCD, Some((k3d, "")))
    }

    /// The whole local profile with Argo CD from the test peers' copy of its release
    /// (and its checksum), the local Git server, and the add-ons, MetalLB included.
    fn with_platform(k3d: &K3dDouble) -> LocalEnv {
        let manifest = comind_test_support::argo_cd::manifest();
        let gitops = format!(
            "  argocd:\n    manifest: {}\n    sha256: {}\n    sync_timeout: 2m\n",
            manifest.display(),
            comind::gitops::platform::argocd::release::PINNED_SHA256
        );
        Self::make("", &gitops, Some((k3d, "    load_balancer: metallb\n")))
    }

    /// Plays what runs inside the cluster once `comind up` has made it: the kubelets
    /// of Argo CD's Pods (`Kubelet`), and Argo CD's application controller, reporting
    /// `apps` synced and healthy as they appear. Nothing of either runs here.
    fn play_the_cluster(&self, apps: &'static [&'static str]) -> std::thread::JoinHandle<()> {
        let kubeconfig = self
            .scratch
            .state_dir()
            .join("local")
            .join(&self.name)
            .join("kubeconfig");
        let context = format!("k3d-comind-{}", self.name);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let deadline = Instant::now() + Duration::from_secs(240);
                while !kubeconfig.exists() {
                    assert!(Instant::now() < deadline, "the cluster never came");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let client = comind::gitops::access::connect(&kubeconfig, Some(&context))
                    .await
                    .unwrap()
                    .client;
                let _kubelet =
                    comind_test_support::kubelet::Kubelet::start(client.clone(), "argocd");
                let status = comind_test_support::argo_cd::synced_and_healthy();
                for app in apps {
                    // With the CRDs each chart's sync installs (MetalLB's, the
                    // PrometheusRule).
                    comind_test_support::argo_cd::until_reported(&client, &[app], &status).await;
                }
            });
        })
    }

    fn make(extra: &str, gitops: &str, k3d: Option<(&K3dDouble, &str)>) -> LocalEnv {
        let scratch = Scratch::new();
        let name = names::unique("e2e");
        let mut ports = HashMap::new();
        for key in [
            "postgres",
            "object_store",
            "console",
            "cache",
            "queue",
            "registry",
            "api",
            "http",
            "https",
            "git",
        ] {
            ports.insert(key, free_port());
        }
        let cluster = match k3d {
            None => "    enabled: false\n".to_string(),
            Some((k3d, cluster)) => format!(
                "    k3d: {}\n    registry_image: {REGISTRY_IMAGE}\n    registry_port: {}\n    \
                 api_port: {}\n    http_port: {}\n    https_port: {}\n{cluster}",
                k3d.binary().display(),
                ports["registry"],
                ports["api"],
                ports["http"],
                ports["https"]
            ),
        };
        let mut yaml = format!(
            "environment: {name}\nlocal:\n  ready_timeout: 90s\n  cluster:\n{cluster}services:\n"
        );
        for (service, image) in IMAGES {
            yaml.push_str(&format!("  {service}:\n    local:\n      image: {image}\n"));
            yaml.push_str(&format!("      port: {}\n", ports[service]));
            if service == "object_store" {
                yaml.push_str(&format!("      console_port: {}\n", ports["console"]));
            }
        }
        yaml.push_str(&format!(
            "gitops:\n  repo:\n    local:\n      image: {GIT_SERVER_IMAGE}\n      port: {}\n{gitops}",
            ports["git"]
        ));
        yaml.push_str(extra);
        scratch.config(&yaml);
        LocalEnv {
            scratch,
            _leftovers: LabelCleanup::new(name.clone()),
            name,
            ports,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.scratch.run(args)
    }

    /// Names of containers, volumes and networks carrying this environment's label.
    fn labelled(&self) -> Vec<String> {
        let filter = format!("label=comind.dev/environment={}", self.name);
        let mut names = Vec::new();
        for (what, format) in [
            (vec!["ps", "-a"], "{{.Names}}"),
            (vec!["volume", "ls"], "{{.Name}}"),
            (vec!["network", "ls"], "{{.Name}}"),
        ] {
            let mut args = what.clone();
            args.extend(["--filter", &filter, "--format", format]);
            let out = Command::new("docker").args(&args).output().unwrap();
            names.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| format!("{} {l}", what[0])),
            );
        }
        names.sort();
        names
    }
}

impl Drop for LocalEnv {
    fn drop(&mut self) {
        let _ = self.scratch.run(&["down", "--purge"]);
    }
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn env_lines(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

#[test]
fn a_full_session_up_outputs_status_down_and_purge() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let env = LocalEnv::new("");

    let plan = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.code,
        3,
        "changes are pending before the first up: {}",
        plan.all()
    );
    assert!(plan.stdout.contains("+ create container"), "{}", plan.all());
    assert!(env.labelled().is_empty(), "plan created nothing");

    let up = env.run(&["-o", "json", "up"]);
    assert_eq!(up.code, 0, "{}", up.all());
    let events = json_lines(&up);
    assert_eq!(events.first().unwrap()["type"], "run_started");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_finished", "the last line is the summary");
    let summary = &last["summary"];
    for key in [
        "wall_ms",
        "critical_path_ms",
        "critical_path",
        "changes",
        "phases",
    ] {
        assert!(!summary[key].is_null(), "summary.{key} missing: {summary}");
    }
    assert!(summary["changes"].as_u64().unwrap() >= 9, "{summary}");
    let phases: Vec<&str> = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["outcome"], "succeeded", "{p}");
            assert!(p["duration_ms"].is_u64());
            p["id"].as_str().unwrap()
        })
        .collect();
    for id in ["network", "postgres", "object-store", "cache", "queue"] {
        assert!(phases.contains(&id), "{id} in {phases:?}");
        let terminal = events
            .iter()
            .filter(|e| e["phase"] == id)
            .filter(|e| {
                ["phase_finished", "phase_failed", "phase_skipped"]
                    .contains(&e["type"].as_str().unwrap())
            })
            .count();
        assert_eq!(terminal, 1, "{id} has exactly one terminal event");
    }
    assert!(events.iter().all(|e| e["v"] == 1));
    // Each service's steps, with their times, so a slow one can be found.
    for (id, wanted) in [
        (
            "postgres",
            &[
                "inspect",
                "volume",
                "create",
                "upload",
                "start",
                "first_answer",
                "setup",
                "probe",
            ][..],
        ),
        (
            "object-store",
            &["create", "first_answer", "setup", "probe"][..],
        ),
        ("cache", &["create", "start", "probe"][..]),
        ("queue", &["create", "first_answer", "setup", "probe"][..]),
    ] {
        let steps: Vec<(&str, u64)> = events
            .iter()
            .filter(|e| e["type"] == "phase_step" && e["phase"] == id)
            .map(|e| {
                (
                    e["step"].as_str().unwrap(),
                    e["duration_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        for step in wanted {
            assert!(
                steps.iter().any(|(s, _)| s == step),
                "{id} reports its step {step}: {steps:?}"
            );
        }
        let phase_ms = summary["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()["duration_ms"]
            .as_u64()
            .unwrap();
        let total: u64 = steps.iter().map(|(_, ms)| ms).sum();
        assert!(
            total <= phase_ms + steps.len() as u64,
            "{id}: its steps ({total} ms) fit in the phase ({phase_ms} ms): {steps:?}"
        );
    }
    let wall = summary["wall_ms"].as_u64().unwrap();
    let critical = summary["critical_path_ms"].as_u64().unwrap();
    assert!(
        critical <= wall + 5,
        "critical path {critical} > wall {wall}"
    );
    for event in &events {
        let text = event.to_string();
        assert!(
            !text.contains("postgres://app:"),
            "a secret leaked into an event: {text}"
        );
    }

    // Outputs work with real clients from the host.
    let outputs = env.run(&["outputs", "--format", "env", "--reveal"]);
    assert_eq!(outputs.code, 0, "{}", outputs.all());
    let vars = env_lines(&outputs.stdout);
    let masked = env.run(&["outputs"]);
    assert!(
        masked.stdout.contains("DATABASE_URL='<redacted>'"),
        "{}",
        masked.all()
    );
    assert!(!masked.stdout.contains(&vars["POSTGRES_PASSWORD"]));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(clients::use_every_service(&vars, "before-down"));

    // A second up changes nothing and says so.
    let again = env.run(&["up"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("0 change(s) made"), "{}", again.all());
    let plan = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains("No changes"), "{}", plan.all());

    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{}", status.all());
    assert_eq!(
        status.stdout.matches("ready").count(),
        5,
        "{}",
        status.all()
    );

    // down keeps data; up brings it back.
    let down = env.run(&["down"]);
    assert_eq!(down.code, 0, "{}", down.all());
    assert!(down.stdout.contains("kept:"), "{}", down.all());
    let left = env.labelled();
    assert!(
        left.iter().all(|n| n.starts_with("volume ")),
        "only volumes remain: {left:?}"
    );
    assert_eq!(left.len(), 4, "{left:?}");
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{}", up.all());
    // `down` stopped PostgreSQL cleanly: no crash recovery on the next start.
    let logs = Command::new("docker")
        .args(["logs", &format!("comind-{}-postgres", env.name)])
        .output()
        .unwrap();
    let logs =
        String::from_utf8_lossy(&logs.stderr).into_owned() + &String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("database system is ready"), "{logs}");
    assert!(
        !logs.contains("not properly shut down"),
        "down killed PostgreSQL: {logs}"
    );
    let vars_after = env_lines(&env.run(&["outputs", "--reveal"]).stdout);
    assert_eq!(
        vars_after["POSTGRES_PASSWORD"], vars["POSTGRES_PASSWORD"],
        "credentials are reused"
    );
    runtime.block_on(clients::data_survived(&vars_after, "before-down"));

    let purge = env.run(&["down", "--purge"]);
    assert_eq!(purge.code, 0, "{}", purge.all());
    assert!(
        env.labelled().is_empty(),
        "purge leaves nothing: {:?}",
        env.labelled()
    );
    assert_eq!(env.ports.len(), 10);
}

#[test]
fn disabling_a_service_removes_it_and_purge_still_finds_it() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let env = LocalEnv::new("");
    assert_eq!(env.run(&["up", "--only", "cache"]).code, 0);
    let off = [("COMIND_SERVICES__CACHE__ENABLED", "false")];
    let plan = env.scratch.run_with_env(&["plan"], &off);
    assert!(
        plan.stdout.contains("delete service cache (disabled"),
        "{}",
        plan.all()
    );
    let up = env.scratch.run_with_env(&["up", "--only", "cache"], &off);
    assert_eq!(up.code, 0, "{}", up.all());
    let left = env.labelled();
    assert!(
        !left.iter().any(|n| n.starts_with("ps ")),
        "the container is gone: {left:?}"
    );
    assert!(
        left.iter().any(|n| n.contains("cache-data")),
        "its data is kept: {left:?}"
    );
    let purge = env.scratch.run_with_env(&["down", "--purge"], &off);
    assert_eq!(purge.code, 0, "{}", purge.all());
    assert!(env.labelled().is_empty(), "{:?}", env.labelled());
}

#[test]
fn a_port_taken_by_another_program_is_rejected_before_anything_is_created() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let env = LocalEnv::new("");
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", env.ports["cache"])).unwrap();
    let run = env.run(&["up"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let port = env.ports["cache"].to_string();
    assert!(
        run.stdout.contains(&port) || run.stderr.contains(&port),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains("services.cache.local.port"),
        "{}",
        run.all()
    );
    assert!(
        env.labelled().is_empty(),
        "nothing was created: {:?}",
        env.labelled()
    );
    // The JSON stream of the same refusal, as the README documents it.
    let run = env.run(&["-o", "json", "up"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let events = json_lines(&run);
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "phase_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.all());
    assert_eq!(failed[0]["phase"], "cache");
    assert_eq!(failed[0]["error"]["kind"], "invalid_input", "{}", run.all());
    assert!(
        failed[0]["error"].to_string().contains(&port),
        "{}",
        run.all()
    );
    let skipped = events
        .iter()
        .filter(|e| e["type"] == "phase_skipped")
        .count();
    assert_eq!(
        skipped,
        4,
        "network and the other three services: {}",
        run.all()
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["summary"]["outcome"], "rejected", "{}", run.all());
    assert!(env.labelled().is_empty());
}

#[test]
fn a_failing_phase_exits_1_and_independent_services_still_come_up() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    // Nothing listens on port 1: the pull fails at once.
    let env = LocalEnv::new("");
    let config = std::fs::read_to_string(env.scratch.path().join("comind.yaml")).unwrap();
    env.scratch
        .config(&config.replace(REDIS_IMAGE, "127.0.0.1:1/comind-test/nope:1"));
    let run = env.run(&["-o", "json", "up"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let events = json_lines(&run);
    let summary = &events.last().unwrap()["summary"];
    let outcome = |id: &str| {
        summary["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome("cache").as_deref(), Some("failed"));
    assert_eq!(outcome("postgres").as_deref(), Some("succeeded"));
    assert_eq!(outcome("queue").as_deref(), Some("succeeded"));
    let failed = events.iter().find(|e| e["type"] == "phase_failed").unwrap();
    let message = failed["error"].to_string();
    assert!(
        message.contains("127.0.0.1:1/comind-test/nope:1"),
        "{message}"
    );
}

#[test]
fn an_interrupt_cancels_with_130_and_the_next_up_resumes() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let env = LocalEnv::new("");
    let mut child = env
        .scratch
        .command()
        .args(["-o", "json", "up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // Interrupt once the services have started, while they are still coming up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("\"phase_started\"") && line.contains("\"postgres\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "postgres never started: {seen:?}"
        );
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(130), "{rest:?}");
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["summary"]["outcome"], "cancelled");

    let resumed = env.run(&["up"]);
    assert_eq!(resumed.code, 0, "the next up resumes: {}", resumed.all());
    assert_eq!(env.run(&["status"]).code, 0);
}

#[test]
fn a_run_killed_between_creating_a_container_and_configuring_it_is_resumed() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let env = LocalEnv::new("");
    // The first upload of configuration files into a new container is held by the
    // proxy: the daemon never sees it, and the run is killed right there.
    let proxy = DockerApiProxy::start(&docker_proxy::daemon_socket(), Trap::file_upload())
        .expect("start the Docker API proxy");
    let mut child = env
        .scratch
        .command()
        .args(["up"])
        .env("DOCKER_HOST", proxy.docker_host())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let trapped = proxy.wait_trapped(Duration::from_secs(120));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(trapped, "the run never uploaded a container's files");
    drop(proxy);

    let unfinished = Command::new("docker")
        .args(["ps", "-a", "--filter"])
        .arg(format!("label=comind.dev/environment={}", env.name))
        .args(["--filter", "status=created", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    let unfinished = String::from_utf8_lossy(&unfinished.stdout).into_owned();
    assert!(
        !unfinished.trim().is_empty(),
        "the kill left a created, never configured container"
    );

    let plan = env.run(&["plan"]);
    assert!(
        plan.stdout.contains("never started") && plan.stdout.contains("upload its configuration"),
        "the plan completes the unfinished container ({unfinished}): {}",
        plan.all()
    );
    let resumed = env.run(&["up"]);
    assert_eq!(resumed.code, 0, "the next up resumes: {}", resumed.all());
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "every service answers: {}", status.all());
    let again = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "nothing is left to do: {}", again.all());
}

#[test]
fn up_lays_the_platform_and_binds_the_docker_services_into_a_configured_cluster_and_down_removes_it()
 {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let peer = require_peer!(KubePeer::shared());
    let env = LocalEnv::with_gitops(&format!(
        "  kubeconfig: {}
{NO_ARGOCD}",
        peer.kubeconfig().display()
    ));
    let up = env.run(&["-o", "json", "up"]);
    assert_eq!(up.code, 0, "{}", up.all());
    let events = json_lines(&up);
    let summary = &events.last().unwrap()["summary"];
    let baseline = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "platform/baseline")
        .unwrap_or_else(|| panic!("no baseline phase: {summary}"));
    assert_eq!(baseline["outcome"], "succeeded", "{summary}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async {
        comind::gitops::access::connect(&peer.kubeconfig(), None)
            .await
            .unwrap()
            .client
    });
    let namespaces = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());

    // The services are bound by their in-cluster names: the Service's endpoint is the
    // container's address on the environment's network (where the k3d nodes join),
    // and the application Secrets hold the outputs' credentials with that name.
    let services = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "platform/services")
        .unwrap_or_else(|| panic!("no services phase: {summary}"));
    assert_eq!(services["outcome"], "succeeded", "{summary}");
    let platform_ns = format!("platform-{}", env.name);
    let container = format!("comind-{}-postgres", env.name);
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"comind-{}\").IPAddress}}}}",
                env.name
            ),
            &container,
        ])
        .output()
        .unwrap();
    let address = String::from_utf8(inspect.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(!address.is_empty(), "{container} has an address");
    let slice = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
                client.clone(),
                &platform_ns,
            )
            .get("postgres"),
        )
        .unwrap();
    assert_eq!(slice.endpoints[0].addresses, [address]);
    let vars = env_lines(&env.run(&["outputs", "--reveal"]).stdout);
    let secret = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "user-apps")
                .get("platform-postgres"),
        )
        .unwrap();
    let data = secret.data.unwrap();
    let database_url = String::from_utf8(data["DATABASE_URL"].0.clone()).unwrap();
    assert_eq!(
        database_url,
        vars["DATABASE_URL"].replace(
            &format!("127.0.0.1:{}", env.ports["postgres"]),
            &format!("postgres.{platform_ns}.svc:5432")
        )
    );
    assert!(
        !up.all().contains(&vars["POSTGRES_PASSWORD"]),
        "the run never prints a secret"
    );
    let live = |name: &str| {
        runtime
            .block_on(namespaces.get_opt(name))
            .unwrap()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
    };
    let platform = live(&format!("platform-{}", env.name)).expect("platform-<env> exists");
    assert_eq!(
        platform.metadata.labels.unwrap()["comind.dev/environment"],
        env.name
    );
    assert!(live("user-apps").is_some());
    assert_eq!(
        env.run(&["plan", "--detailed-exitcode"]).code,
        0,
        "converged"
    );
    let doctor = env.run(&["doctor"]);
    assert!(
        doctor.all().contains("Kubernetes 1.36 answers"),
        "doctor reaches the configured cluster: {}",
        doctor.all()
    );

    let down = env.run(&["down"]);
    assert_eq!(down.code, 0, "{}", down.all());
    assert!(
        live(&format!("platform-{}", env.name)).is_none(),
        "removed by down"
    );
    assert!(live("user-apps").is_none());
}

#[test]
fn up_makes_the_cluster_and_lays_the_platform_on_it_then_down_removes_it() {
    let mut images = SERVICE_IMAGES.to_vec();
    images.extend([REGISTRY_IMAGE, K3S_NODE_IMAGE, GIT_SERVER_IMAGE]);
    require_peer!(docker::ready_blocking(&images));
    let k3d = require_peer!(K3dDouble::new());
    let env = LocalEnv::with_platform(&k3d);

    let doctor = env.run(&["doctor"]);
    assert!(
        doctor.all().contains("v5.9.0 at"),
        "doctor checks the configured k3d: {}",
        doctor.all()
    );
    let cluster = env.play_the_cluster(&["root", "sealed-secrets", "monitoring", "metallb"]);
    let up = env.run(&["-o", "json", "up"]);
    assert_eq!(up.code, 0, "{}", up.all());
    cluster.join().unwrap();
    assert!(
        up.stdout.contains("the local GitOps repository is empty"),
        "up says how to fill the empty repository instead of waiting for it: {}",
        up.all()
    );
    let events = json_lines(&up);
    let summary = &events.last().unwrap()["summary"];
    for id in [
        "registry",
        "git-server",
        "cluster",
        "platform/baseline",
        "platform/services",
        "platform/registry",
        "platform/argocd",
        "platform/gitops",
        "platform/addons",
        "platform/load-balancer",
    ] {
        let phase = summary["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no {id} phase: {summary}"));
        assert_eq!(phase["outcome"], "succeeded", "{id}: {summary}");
    }
    let vars = env_lines(&env.run(&["outputs", "--reveal"]).stdout);
    assert_eq!(vars["KUBE_CONTEXT"], format!("k3d-comind-{}", env.name));
    for secret in [
        "REGISTRY_PASSWORD",
        "ARGOCD_ADMIN_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ] {
        assert!(
            !up.all().contains(&vars[secret]),
            "the run printed {secret}"
        );
    }
    assert_eq!(
        vars["ARGOCD_URL"],
        format!(
            "http://argocd.{}.127.0.0.1.nip.io:{}",
            env.name, env.ports["http"]
        )
    );
    let masked = env_lines(&env.run(&["outputs"]).stdout);
    assert_ne!(
        masked["ARGOCD_ADMIN_PASSWORD"],
        vars["ARGOCD_ADMIN_PASSWORD"]
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(
        status.all().contains("monitoring Synced/Healthy"),
        "status lists the Applications: {}",
        status.all()
    );
    // The consoles, asked: the queue's endpoint answers; the ingress does not (no
    // Traefik runs behind the k3d double's load balancer).
    let consoles = status.stdout.split("consoles (").nth(1).unwrap_or_default();
    assert!(
        consoles.contains(&format!("{}  answers (HTTP", vars["SQS_ENDPOINT"])),
        "{}",
        status.all()
    );
    assert!(
        consoles.contains(&format!("{}  does not answer", vars["ARGOCD_URL"])),
        "{}",
        status.all()
    );
    assert!(
        consoles
            .contains("prometheus    in the cluster only: `comind open prometheus` forwards to it"),
        "{}",
        status.all()
    );
    let opened = env.run(&["-o", "json", "open", "queue"]);
    assert_eq!(opened.code, 0, "{}", opened.all());
    let line: Value = serde_json::from_str(opened.stdout.trim()).unwrap();
    assert_eq!(line["url"], vars["SQS_ENDPOINT"], "{line}");
    assert_eq!(line["type"], "console", "{line}");
    // The queue is not in the cluster: nothing to forward to.
    let forward = env.run(&["open", "queue", "--forward"]);
    assert_eq!(forward.code, 2, "{}", forward.all());
    assert!(
        forward.stderr.contains("cannot be forwarded"),
        "{}",
        forward.all()
    );
    // Argo CD's ingress does not answer, so `open` goes through the API server, which
    // cannot forward here (no kubelet): a clear failure, and no address printed.
    let opened = env.run(&["open", "argocd"]);
    assert_eq!(opened.code, 1, "{}", opened.all());
    assert!(
        opened
            .stderr
            .contains(&format!("argocd at {} does not answer", vars["ARGOCD_URL"]))
            && opened
                .stderr
                .contains("cannot forward to Pod argocd/argocd-server-"),
        "{}",
        opened.all()
    );
    assert!(opened.stdout.is_empty(), "{}", opened.all());
    let unknown = env.run(&["open", "kibana"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());

    // The platform is on the cluster's own API server, with the services bound.
    let printed = env.run(&["kubeconfig"]);
    assert_eq!(printed.code, 0, "{}", printed.all());
    assert!(printed.stdout.contains(&format!("k3d-comind-{}", env.name)));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async {
        comind::gitops::access::connect(
            std::path::Path::new(&vars["KUBECONFIG"]),
            Some(&vars["KUBE_CONTEXT"]),
        )
        .await
        .unwrap()
        .client
    });
    let secret = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                client.clone(),
                "user-apps",
            )
            .get("platform-cache"),
        )
        .unwrap();
    // The registry through the ingress, under the seed's host name.
    let platform_ns = format!("platform-{}", env.name);
    let ingress = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(
                client.clone(),
                &platform_ns,
            )
            .get("registry"),
        )
        .unwrap();
    let spec = ingress.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
    assert_eq!(
        spec.rules.unwrap()[0].host.as_deref(),
        Some(format!("registry.{}.127.0.0.1.nip.io", env.name).as_str())
    );
    let slice = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
                client.clone(),
                &platform_ns,
            )
            .get("registry"),
        )
        .unwrap();
    assert_eq!(
        slice.endpoints[0].addresses,
        [vars["REGISTRY_CLUSTER_HOST"].clone()]
    );
    // The registry's garbage collection: a CronJob the API server accepted, on the
    // data the server node mounts from the registry's volume (its run against the real
    // registry is the composition test `registry_gc`).
    let gc = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(
                client.clone(),
                &platform_ns,
            )
            .get("registry-gc"),
        )
        .unwrap();
    assert_eq!(gc.spec.unwrap().schedule, "30 4 * * 0");
    let mounts = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}",
            &format!("k3d-comind-{}-server-0", env.name),
        ])
        .output()
        .unwrap();
    let mounts = String::from_utf8(mounts.stdout).unwrap();
    assert!(
        mounts.contains(&format!(
            "comind-{}-registry-data:/var/lib/comind/registry",
            env.name
        )),
        "{mounts}"
    );
    // `backup run`: the nightly Job now, from its CronJob; the test plays the kubelet
    // by ending the Pod the real Job controller makes, and the command reports the
    // Job complete.
    let backup = std::thread::scope(|scope| {
        let running = scope.spawn(|| env.run(&["-o", "json", "backup", "run", "postgres"]));
        runtime.block_on(async {
            let jobs = kube::Api::<k8s_openapi::api::batch::v1::Job>::namespaced(
                client.clone(),
                &platform_ns,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            let job = loop {
                let listed = jobs.list(&Default::default()).await.unwrap();
                if let Some(name) = listed
                    .items
                    .into_iter()
                    .filter_map(|j| j.metadata.name)
                    .find(|n| n.starts_with("postgres-backup-manual-"))
                {
                    break name;
                }
                assert!(Instant::now() < deadline, "backup run made no Job");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
                client.clone(),
                &platform_ns,
            );
            comind_test_support::kubelet::end_job_pod(&pods, &job, 0).await;
        });
        running.join().unwrap()
    });
    assert_eq!(backup.code, 0, "{}", backup.all());
    let line: Value = serde_json::from_str(backup.stdout.trim()).unwrap();
    assert_eq!(line["backups"][0]["kind"], "postgres", "{line}");
    assert_eq!(line["backups"][0]["outcome"], "complete", "{line}");
    backup_list_and_restore(&env, &vars, &runtime, &client, &platform_ns);
    let url = String::from_utf8(secret.data.unwrap()["REDIS_URL"].0.clone()).unwrap();
    assert!(
        url.ends_with(&format!("@cache.platform-{}.svc:6379/0", env.name)),
        "{url}"
    );
    // MetalLB's pool is carved from the Docker network's real subnet.
    let subnet = Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            &format!("comind-{}", env.name),
        ])
        .output()
        .unwrap();
    let subnet = String::from_utf8(subnet.stdout).unwrap().trim().to_string();
    let pool_kind = kube::api::ApiResource {
        group: "metallb.io".into(),
        version: "v1beta1".into(),
        api_version: "metallb.io/v1beta1".into(),
        kind: "IPAddressPool".into(),
        plural: "ipaddresspools".into(),
    };
    let pool = runtime
        .block_on(
            kube::Api::<kube::api::DynamicObject>::namespaced_with(
                client.clone(),
                "kube-system",
                &pool_kind,
            )
            .get("comind"),
        )
        .unwrap();
    assert_eq!(
        pool.data["spec"]["addresses"][0],
        comind::local::cluster::load_balancer_pool(&subnet).unwrap()
    );

    // Argo CD pulls from the local Git server, bound into the cluster like the
    // services.
    let repository = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "argocd")
                .get("gitops-repository"),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(repository.data.unwrap()["url"].0.clone()).unwrap(),
        format!(
            "git://git-server.platform-{}.svc.cluster.local:9418/gitops.git",
            env.name
        )
    );
    let git_slice = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
                client.clone(),
                &platform_ns,
            )
            .get("git-server"),
        )
        .unwrap();
    assert_eq!(
        git_slice.endpoints[0].addresses,
        [vars["GIT_SERVER_CLUSTER_HOST"].clone()]
    );

    // An application scaffolded into a repository is listed with Argo CD's view of
    // it (no ApplicationSet controller runs here, so it has no Application yet).
    let repo = env.scratch.path().join("gitops");
    let new = env.run(&[
        "app",
        "new",
        "web",
        "--team",
        "user-apps",
        "--repo",
        repo.to_str().unwrap(),
    ]);
    assert_eq!(new.code, 0, "{}", new.all());
    let listed = env.run(&["app", "list", "--repo", repo.to_str().unwrap()]);
    assert!(
        listed.stdout.contains("user-apps-web") && listed.stdout.contains("not in Argo CD yet"),
        "{}",
        listed.all()
    );

    // Converged: a second up changes nothing and asks k3d to change nothing.
    let before = k3d.mutating_calls();
    let again = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(k3d.mutating_calls(), before);

    let gc = env.run(&["-o", "json", "registry", "gc"]);
    assert_eq!(gc.code, 0, "{}", gc.all());
    assert!(
        gc.stdout.contains("\"deleted_blobs\":0"),
        "nothing pushed yet: {}",
        gc.all()
    );

    // `--merge` writes only where KUBECONFIG says.
    let merged_into = env.scratch.path().join("my-kubeconfig");
    let merged = env.scratch.run_with_env(
        &["kubeconfig", "--merge"],
        &[("KUBECONFIG", merged_into.to_str().unwrap())],
    );
    assert_eq!(merged.code, 0, "{}", merged.all());
    let text = std::fs::read_to_string(&merged_into).unwrap();
    assert!(text.contains(&format!("k3d-comind-{}", env.name)), "{text}");

    let down = env.run(&["down", "--purge"]);
    assert_eq!(down.code, 0, "{}", down.all());
    let (_, listed) = k3d.run(&["cluster", "list", "-o", "json"]);
    assert!(
        !listed.contains(&format!("comind-{}", env.name)),
        "{listed}"
    );
    assert!(env.labelled().is_empty(), "{:?}", env.labelled());
}

#[test]
fn a_run_killed_during_k3d_cluster_create_is_resumed_by_the_next_up() {
    let mut images = SERVICE_IMAGES.to_vec();
    images.extend([REGISTRY_IMAGE, K3S_NODE_IMAGE]);
    require_peer!(docker::ready_blocking(&images));
    let k3d = require_peer!(K3dDouble::new());
    let env = LocalEnv::with_cluster(&k3d);
    // `comind up` and the k3d it runs share a process group, as a terminal's job does:
    // it is killed whole once k3d has made the first node container.
    let mut child = env
        .scratch
        .command()
        .args(["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let server = format!("k3d-comind-{}-server-0", env.name);
    let deadline = Instant::now() + Duration::from_secs(180);
    let exists = |name: &str| {
        Command::new("docker")
            .args(["container", "inspect", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    while !exists(&server) {
        assert!(Instant::now() < deadline, "k3d never made {server}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "comind up ended before k3d made a node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = format!("-{}", child.id());
    let killed = Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();

    let plan = env.run(&["plan"]);
    assert!(
        plan.stdout
            .contains(&format!("k3d cluster comind-{}", env.name)),
        "the plan finishes the cluster the kill interrupted: {}",
        plan.all()
    );
    let resumed = env.run(&["up"]);
    assert_eq!(resumed.code, 0, "the next up resumes: {}", resumed.all());
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "every phase is ready: {}", status.all());
    let again = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "nothing is left to do: {}", again.all());
}

#[test]
fn doctor_reports_the_engine_and_ports() {
    require_peer!(docker::ready_blocking(&SERVICE_IMAGES));
    let env = LocalEnv::new("");
    let gc = env.run(&["registry", "gc"]);
    assert_eq!(
        gc.code,
        2,
        "the services alone have no registry: {}",
        gc.all()
    );
    assert!(gc.all().contains("no registry of Comind's"), "{}", gc.all());
    let run = env.run(&["-o", "json", "doctor"]);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let text = report.to_string();
    assert!(text.to_lowercase().contains("docker"), "{text}");
    assert!(
        text.contains(&env.ports["postgres"].to_string()),
        "ports are checked: {text}"
    );
    let failed: Vec<&Value> = checks.iter().filter(|c| c["status"] == "failed").collect();
    assert_eq!(
        run.code,
        if failed.is_empty() { 0 } else { 1 },
        "{}",
        run.all()
    );
}

/// `backup list` reads the backup bucket in the layout the backup scripts write (the
/// composition tests show the scripts write it); `restore postgres` refuses what it
/// cannot do before it makes anything, then restores the newest complete backup by a
/// Job whose Pod the test ends as a kubelet would.
fn backup_list_and_restore(
    env: &LocalEnv,
    vars: &HashMap<String, String>,
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    namespace: &str,
) {
    let listed = env.run(&["-o", "json", "backup", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    let line: Value = serde_json::from_str(listed.stdout.trim()).unwrap();
    assert_eq!(line["bucket"], vars["S3_BUCKET_BACKUPS"], "{line}");
    assert_eq!(line["postgres"], serde_json::json!([]), "{line}");
    assert_eq!(
        line["objects"][0]["bucket"], vars["S3_BUCKET_UPLOADS"],
        "{line}"
    );
    assert_eq!(line["objects"][0]["objects"], 0, "{line}");

    // Two dumps, the newer one's upload cut short (no .sha256), and a mirrored object.
    let s3 = clients::s3(vars);
    let bucket = &vars["S3_BUCKET_BACKUPS"];
    let prefix = format!("postgres/{}", env.name);
    runtime.block_on(async {
        for (key, body) in [
            (format!("{prefix}/20261201T030000Z.sql.gz"), "complete dump"),
            (format!("{prefix}/20261201T030000Z.sql.gz.sha256"), "sum"),
            (format!("{prefix}/20261202T030000Z.sql.gz"), "cut"),
            (
                format!("objects/{}/report.pdf", vars["S3_BUCKET_UPLOADS"]),
                "pdf",
            ),
        ] {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.as_bytes().to_vec().into())
                .send()
                .await
                .unwrap();
        }
    });
    let listed = env.run(&["-o", "json", "backup", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    let line: Value = serde_json::from_str(listed.stdout.trim()).unwrap();
    let postgres = &line["postgres"];
    assert_eq!(
        postgres[0]["key"], "20261202T030000Z.sql.gz",
        "newest first: {line}"
    );
    assert_eq!(postgres[0]["complete"], false, "{line}");
    assert_eq!(postgres[1]["key"], "20261201T030000Z.sql.gz", "{line}");
    assert_eq!(postgres[1]["complete"], true, "{line}");
    assert_eq!(postgres[1]["taken"], "2026-12-01T03:00:00Z", "{line}");
    assert_eq!(postgres[1]["bytes"], 13, "{line}");
    assert_eq!(line["objects"][0]["objects"], 1, "{line}");
    let human = env.run(&["backup", "list", "postgres"]);
    assert!(
        human.stdout.contains("2026-12-01T03:00:00Z")
            && human.stdout.contains("incomplete")
            && !human.stdout.contains("Bucket mirrors"),
        "{}",
        human.all()
    );

    // Refused before anything is made: no terminal to confirm on, a wrong name, an
    // incomplete or unknown backup.
    let jobs = kube::Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), namespace);
    let restore_jobs = || {
        runtime
            .block_on(jobs.list(&Default::default()))
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .filter(|n| n.starts_with("postgres-restore-"))
            .collect::<Vec<_>>()
    };
    for (args, says) in [
        (
            vec!["restore", "postgres"],
            "there is no terminal to ask on",
        ),
        (
            vec!["restore", "postgres", "--confirm", "prod"],
            "does not name this environment",
        ),
        (
            vec![
                "restore",
                "postgres",
                "--from",
                "20261202T030000Z.sql.gz",
                "--confirm",
                &env.name,
            ],
            "is incomplete",
        ),
        (
            vec![
                "restore",
                "postgres",
                "--from",
                "nope.sql.gz",
                "--confirm",
                &env.name,
            ],
            "there is no backup `nope.sql.gz`",
        ),
    ] {
        let refused = env.run(&args);
        assert_eq!(refused.code, 2, "{args:?}: {}", refused.all());
        assert!(refused.stderr.contains(says), "{args:?}: {}", refused.all());
    }
    assert!(restore_jobs().is_empty(), "a refused restore made a Job");

    // The newest complete backup, restored by a Job; its administrator's Secret is
    // gone once it ends.
    let restored = std::thread::scope(|scope| {
        let running =
            scope.spawn(|| env.run(&["-o", "json", "restore", "postgres", "--confirm", &env.name]));
        runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            let job = loop {
                if let Some(name) = jobs
                    .list(&Default::default())
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .filter_map(|j| j.metadata.name)
                    .find(|n| n.starts_with("postgres-restore-"))
                {
                    break name;
                }
                assert!(Instant::now() < deadline, "restore made no Job");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let pods =
                kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace);
            comind_test_support::kubelet::end_job_pod(&pods, &job, 0).await;
        });
        running.join().unwrap()
    });
    assert_eq!(restored.code, 0, "{}", restored.all());
    let line: Value = serde_json::from_str(restored.stdout.trim()).unwrap();
    assert_eq!(line["restore"]["key"], "20261201T030000Z.sql.gz", "{line}");
    assert_eq!(line["restore"]["outcome"], "complete", "{line}");
    let job = line["restore"]["job"].as_str().unwrap();
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
    assert!(
        runtime
            .block_on(secrets.get_opt(&format!("{job}-admin")))
            .unwrap()
            .is_none(),
        "the administrator's Secret outlived the restore"
    );
}

mod clients {
    //! Real clients for each service, configured only from `comind outputs`.

    use std::collections::HashMap;

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

    pub async fn use_every_service(vars: &HashMap<String, String>, marker: &str) {
        let (client, connection) =
            tokio_postgres::connect(&vars["DATABASE_URL"], tokio_postgres::NoTls)
                .await
                .expect("DATABASE_URL connects");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS e2e (marker text); INSERT INTO e2e VALUES ('{marker}')"
            ))
            .await
            .unwrap();

        let s3 = s3(vars);
        let bucket = &vars["S3_BUCKET_UPLOADS"];
        s3.put_object()
            .bucket(bucket)
            .key(marker)
            .body(marker.as_bytes().to_vec().into())
            .send()
            .await
            .expect("S3 put with the outputs' credentials");

        let redis = redis::Client::open(vars["REDIS_URL"].as_str()).unwrap();
        let mut conn = redis
            .get_multiplexed_async_connection()
            .await
            .expect("REDIS_URL connects");
        let _: () = redis::cmd("SET")
            .arg("e2e")
            .arg(marker)
            .query_async(&mut conn)
            .await
            .unwrap();

        let sqs = sqs(vars);
        sqs.send_message()
            .queue_url(&vars["SQS_QUEUE_URL_JOBS"])
            .message_body(marker)
            .send()
            .await
            .expect("SQS send to the queue URL from the outputs");
    }

    pub async fn data_survived(vars: &HashMap<String, String>, marker: &str) {
        let (client, connection) =
            tokio_postgres::connect(&vars["DATABASE_URL"], tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        let rows = client
            .query("SELECT marker FROM e2e WHERE marker = $1", &[&marker])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "the row survived down and up");

        let object = s3(vars)
            .get_object()
            .bucket(&vars["S3_BUCKET_UPLOADS"])
            .key(marker)
            .send()
            .await
            .expect("the object survived down and up");
        let body = object.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], marker.as_bytes());

        let redis = redis::Client::open(vars["REDIS_URL"].as_str()).unwrap();
        let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
        let value: String = redis::cmd("GET")
            .arg("e2e")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            value, marker,
            "the key survived down and up (append-only file)"
        );
    }

    pub fn s3(vars: &HashMap<String, String>) -> aws_sdk_s3::Client {
        // The MinIO stand-in (SeaweedFS) answers object calls with a retryable 500 for
        // a moment after its container restarts, although ListBuckets (the readiness
        // probe) already works; real MinIO does not. Retry long enough to ride it out.
        let retry = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(12)
            .with_initial_backoff(std::time::Duration::from_millis(250));
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .retry_config(retry)
            .endpoint_url(&vars["S3_ENDPOINT"])
            .region(Region::new(vars["S3_REGION"].clone()))
            .credentials_provider(Credentials::new(
                &vars["S3_ACCESS_KEY_ID"],
                &vars["S3_SECRET_ACCESS_KEY"],
                None,
                None,
                "comind-outputs",
            ))
            .force_path_style(vars["S3_FORCE_PATH_STYLE"] == "true")
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    fn sqs(vars: &HashMap<String, String>) -> aws_sdk_sqs::Client {
        let key = vars
            .get("SQS_ACCESS_KEY_ID")
            .cloned()
            .unwrap_or_else(|| "x".into());
        let secret = vars
            .get("SQS_SECRET_ACCESS_KEY")
            .cloned()
            .unwrap_or_else(|| "x".into());
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .endpoint_url(&vars["SQS_ENDPOINT"])
            .region(aws_sdk_sqs::config::Region::new(vars["SQS_REGION"].clone()))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key,
                secret,
                None,
                None,
                "comind-outputs",
            ))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }
}

#[test]
fn gitops_push_fills_the_local_git_server_with_the_committed_head() {
    require_peer!(docker::ready_blocking(&[GIT_SERVER_IMAGE]));
    let env = LocalEnv::with_gitops("");
    let repo = env.scratch.path().join("gitops");

    // Before up: no server to push to.
    let init = env.run(&["gitops", "init", repo.to_str().unwrap()]);
    assert_eq!(init.code, 0, "{}", init.all());
    let early = env.run(&["gitops", "push", repo.to_str().unwrap()]);
    assert_eq!(early.code, 1, "{}", early.all());
    assert!(early.stderr.contains("comind up"), "{}", early.all());

    // Not a Git work tree: say how to make one.
    let up = env.run(&["up", "--only", "git-server"]);
    assert_eq!(up.code, 0, "{}", up.all());
    let not_repo = env.run(&["gitops", "push", repo.to_str().unwrap()]);
    assert_eq!(not_repo.code, 2, "{}", not_repo.all());
    assert!(
        not_repo.stderr.contains("not a Git work tree") && not_repo.stderr.contains("git"),
        "{}",
        not_repo.all()
    );

    git(&repo, &["init", "--quiet", "--initial-branch=work"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "layout"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("draft.yaml"), "kind: List\n").unwrap();
    let pushed = env.run(&["gitops", "push", repo.to_str().unwrap()]);
    assert_eq!(pushed.code, 0, "{}", pushed.all());
    assert!(
        pushed.stdout.contains(&commit[..12]) && pushed.stdout.contains("branch main"),
        "says what was pushed where: {}",
        pushed.all()
    );
    assert!(
        pushed.stderr.contains("only committed work"),
        "warns about the uncommitted file: {}",
        pushed.all()
    );
    let vars = env_lines(&env.run(&["outputs"]).stdout);
    let url = &vars["GITOPS_REPO_URL"];
    assert_eq!(
        url,
        &format!("git://127.0.0.1:{}/gitops.git", env.ports["git"])
    );
    let remote = git(&repo, &["ls-remote", url, "refs/heads/main"]);
    assert!(remote.starts_with(&commit), "{remote}");

    // A history that drops the server's commit is refused unless --force.
    git(&repo, &["checkout", "--quiet", "--orphan", "other"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "rewritten"]);
    let rewritten = git(&repo, &["rev-parse", "HEAD"]);
    let refused = env.run(&["gitops", "push", repo.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(refused.stderr.contains("--force"), "{}", refused.all());
    assert!(git(&repo, &["ls-remote", url, "refs/heads/main"]).starts_with(&commit));
    let forced = env.run(&[
        "-o",
        "json",
        "gitops",
        "push",
        "--force",
        repo.to_str().unwrap(),
    ]);
    assert_eq!(forced.code, 0, "{}", forced.all());
    let line: Value = serde_json::from_str(forced.stdout.trim()).unwrap();
    assert_eq!(line["commit"], rewritten.as_str());
    assert_eq!(line["branch"], "main");
    assert!(git(&repo, &["ls-remote", url, "refs/heads/main"]).starts_with(&rewritten));

    // `app deploy` to the same server over git://, with libgit2 (no git binary):
    // refused while the work tree has an unrelated change, then the app's commit
    // lands on the branch.
    let repo_arg = repo.to_str().unwrap();
    let new = env.run(&["app", "new", "web", "--team", "backend", "--repo", repo_arg]);
    assert_eq!(new.code, 0, "{}", new.all());
    std::fs::write(repo.join("draft.yaml"), "kind: List\nitems: []\n").unwrap();
    let refused = env.run(&["app", "deploy", "web", "--repo", repo_arg, "--no-wait"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains("draft.yaml"), "{}", refused.all());
    git(&repo, &["checkout", "--quiet", "--", "draft.yaml"]);
    let deployed = env.run(&[
        "-o",
        "json",
        "app",
        "deploy",
        "web",
        "--repo",
        repo_arg,
        "--no-wait",
    ]);
    assert_eq!(deployed.code, 0, "{}", deployed.all());
    let line: Value = serde_json::from_str(deployed.stdout.trim()).unwrap();
    let commit = line["commit"].as_str().expect("a commit");
    assert!(git(&repo, &["ls-remote", url, "refs/heads/main"]).starts_with(commit));
}

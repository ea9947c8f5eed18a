//! The k3d configuration file (`k3d.io/v1alpha5`, `kind: Simple`) Comind writes for
//! the environment's cluster: a pure function of the environment and its registry.
//!
//! - Name `comind-<env>`, the configured servers and agents, the pinned k3s image.
//! - The API on `127.0.0.1:<api_port>`; `<http_port>:80` and `<https_port>:443` on the
//!   load balancer, on 127.0.0.1 only, so the k3s Traefik serves ingress there.
//! - The environment's Docker network, so Pods reach the service containers.
//! - The registry as a mirror: its name on the network and `localhost:<port>` both
//!   resolve to it, with its credentials (`registries.config`; `registries.use` is for
//!   registries k3d made itself, which this one is not).
//! - The kubeconfig is never written into `~/.kube/config` and the current context is
//!   never switched: Comind keeps its own in the state directory.
//! - The ownership labels and the spec hash on every node container
//!   (`options.runtime.labels`), which is how a later run recognises the cluster.
//! - With `load_balancer: metallb`, k3s's ServiceLB is disabled on the servers.
//!
//! The registry's password is in the file, which lives in the state directory with
//! mode 0600 and reaches k3d by path; the spec hash sees a placeholder instead.

use std::collections::BTreeMap;

use comind_core::cluster::REGISTRY_NODE_PATH;
use comind_core::config::LoadBalancer;
use comind_core::environment::spec_hash;
use comind_core::{Environment, Error, Result, Secret};
use serde::Serialize;

/// The node filter that selects every node of the cluster.
const EVERY_NODE: [&str; 3] = ["server:*", "agent:*", "loadbalancer"];

/// What the cluster needs to pull from the environment's registry.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    /// `comind-<env>-registry:5000`: its name and port on the network.
    pub cluster_name: String,
    /// The port it is published on at 127.0.0.1, for the `localhost:<port>` mirror.
    pub host_port: u16,
    /// The named volume of its data, which the server nodes mount at
    /// [`REGISTRY_NODE_PATH`] for the garbage-collection CronJob.
    pub data_volume: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// The k3d configuration file, as serialized.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct K3dConfig {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    servers: u32,
    agents: u32,
    #[serde(rename = "kubeAPI")]
    kube_api: KubeApi,
    image: String,
    network: String,
    ports: Vec<Filtered<PortEntry>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<Filtered<VolumeEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registries: Option<Registries>,
    options: Options,
}

#[derive(Debug, Clone, Serialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeApi {
    host: String,
    #[serde(rename = "hostIP")]
    host_ip: String,
    host_port: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Filtered<T> {
    #[serde(flatten)]
    value: T,
    node_filters: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct PortEntry {
    port: String,
}

#[derive(Debug, Clone, Serialize)]
struct VolumeEntry {
    volume: String,
}

#[derive(Debug, Clone, Serialize)]
struct LabelEntry {
    label: String,
}

#[derive(Debug, Clone, Serialize)]
struct ArgEntry {
    arg: String,
}

#[derive(Debug, Clone, Serialize)]
struct Registries {
    /// k3s's `registries.yaml`, inline.
    config: String,
}

#[derive(Debug, Clone, Serialize)]
struct Options {
    k3d: K3dOptions,
    k3s: K3sOptions,
    kubeconfig: KubeconfigOptions,
    runtime: RuntimeOptions,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct K3dOptions {
    wait: bool,
    timeout: String,
    disable_loadbalancer: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct K3sOptions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_args: Vec<Filtered<ArgEntry>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeconfigOptions {
    update_default_kubeconfig: bool,
    switch_current_context: bool,
}

#[derive(Debug, Clone, Serialize)]
struct RuntimeOptions {
    labels: Vec<Filtered<LabelEntry>>,
}

/// The cluster's name: `comind-<env>`; k3d names its node containers
/// `k3d-comind-<env>-server-0` and so on, and its kubeconfig context
/// `k3d-comind-<env>`.
pub fn cluster_name(env: &Environment) -> String {
    format!("comind-{}", env.name())
}

/// The kubeconfig context k3d gives the cluster.
pub fn context_name(env: &Environment) -> String {
    format!("k3d-{}", cluster_name(env))
}

/// How long `k3d cluster create` may wait for its nodes (k3d's own `--timeout`).
pub const CREATE_TIMEOUT: &str = "300s";

impl K3dConfig {
    /// The configuration of `env`'s cluster, pulling from `registry`.
    pub fn render(env: &Environment, registry: Option<&RegistryAccess>) -> Self {
        let settings = &env.config().local.cluster;
        let filters = |f: &[&str]| f.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let loopback_port = |host: u16, container: u16| Filtered {
            value: PortEntry {
                port: format!("127.0.0.1:{host}:{container}"),
            },
            node_filters: filters(&["loadbalancer"]),
        };
        let mut extra_args = Vec::new();
        if settings.load_balancer == LoadBalancer::Metallb {
            extra_args.push(Filtered {
                value: ArgEntry {
                    arg: "--disable=servicelb".to_string(),
                },
                node_filters: filters(&["server:*"]),
            });
        }
        // The registry's data on every server node, for its garbage-collection
        // CronJob (a Pod there with a host path). k3d mounts an existing named volume
        // as it is, and does not delete it with the cluster: it is not k3d's.
        let volumes = registry
            .filter(|_| settings.registry_gc.enabled)
            .map(|r| Filtered {
                value: VolumeEntry {
                    volume: format!("{}:{REGISTRY_NODE_PATH}", r.data_volume),
                },
                node_filters: filters(&["server:*"]),
            })
            .into_iter()
            .collect();
        let spec = Self {
            api_version: "k3d.io/v1alpha5",
            kind: "Simple",
            metadata: Metadata {
                name: cluster_name(env),
            },
            servers: settings.servers,
            agents: settings.agents,
            kube_api: KubeApi {
                host: "127.0.0.1".to_string(),
                host_ip: "127.0.0.1".to_string(),
                host_port: settings.api_port.get().to_string(),
            },
            image: settings.image.to_string(),
            network: env.config().local_network(),
            ports: vec![
                loopback_port(settings.http_port.get(), 80),
                loopback_port(settings.https_port.get(), 443),
            ],
            volumes,
            registries: registry.map(|r| Registries {
                config: registries_yaml(r),
            }),
            options: Options {
                k3d: K3dOptions {
                    wait: true,
                    timeout: CREATE_TIMEOUT.to_string(),
                    disable_loadbalancer: false,
                },
                k3s: K3sOptions { extra_args },
                kubeconfig: KubeconfigOptions {
                    update_default_kubeconfig: false,
                    switch_current_context: false,
                },
                runtime: RuntimeOptions { labels: Vec::new() },
            },
        };
        let hash = spec.hash();
        let mut spec = spec;
        spec.options.runtime.labels = env
            .labels(super::CLUSTER_COMPONENT, Some(&hash))
            .into_iter()
            .map(|(k, v)| Filtered {
                value: LabelEntry {
                    label: format!("{k}={v}"),
                },
                node_filters: filters(&EVERY_NODE),
            })
            .collect();
        spec
    }

    /// The hash of everything but the ownership labels, with the registry's password
    /// replaced by a placeholder: what the node containers carry as their spec hash.
    pub fn hash(&self) -> String {
        let mut hashed = self.clone();
        hashed.options.runtime.labels.clear();
        if let Some(registries) = hashed.registries.as_mut() {
            registries.config = String::from("<registry credentials>");
        }
        spec_hash(&hashed)
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Whether k3d makes its load balancer node.
    pub fn has_loadbalancer(&self) -> bool {
        !self.options.k3d.disable_loadbalancer
    }

    /// Servers and agents.
    pub fn nodes(&self) -> (u32, u32) {
        (self.servers, self.agents)
    }

    /// The file's text.
    ///
    /// # Errors
    /// `Internal` if it does not serialize (a bug).
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| Error::internal(format!("cannot write the k3d configuration: {e}")))
    }
}

/// k3s's `registries.yaml`: the registry under its network name and under
/// `localhost:<port>` (the name images are pushed by from the host), both served by
/// the container, with its credentials. It is written as a block of several lines:
/// k3d reads a one-line value as the path of a file.
fn registries_yaml(registry: &RegistryAccess) -> String {
    let endpoint = format!("http://{}", registry.cluster_name);
    let mirror = serde_json::json!({ "endpoint": [endpoint] });
    let mirrors: BTreeMap<String, serde_json::Value> = [
        registry.cluster_name.clone(),
        format!("localhost:{}", registry.host_port),
    ]
    .into_iter()
    .map(|name| (name, mirror.clone()))
    .collect();
    let configs = BTreeMap::from([(
        registry.cluster_name.clone(),
        serde_json::json!({
            "auth": {
                "username": registry.username,
                "password": registry.password.expose(),
            }
        }),
    )]);
    let doc = serde_json::json!({ "mirrors": mirrors, "configs": configs });
    // The YAML writer quotes whatever needs quoting, whatever the password holds.
    serde_yaml_ng::to_string(&doc).unwrap_or_else(|_| {
        // A JSON value always serializes; keep the type total without a panic.
        format!("{doc}\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::Config;

    fn env(edit: impl FnOnce(&mut Config)) -> Environment {
        let mut config = Config::default();
        edit(&mut config);
        Environment::with_state_root(config, "/tmp/x")
    }

    fn registry(password: &str) -> RegistryAccess {
        RegistryAccess {
            cluster_name: "comind-dev-registry:5000".into(),
            host_port: 5000,
            data_volume: "comind-dev-registry-data".into(),
            username: "comind".into(),
            password: Secret::new(password),
        }
    }

    fn yaml(config: &K3dConfig) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&config.to_yaml().unwrap()).unwrap()
    }

    #[test]
    fn the_file_names_everything_from_the_configuration() {
        let config = K3dConfig::render(&env(|_| {}), Some(&registry("pw-Secret-1")));
        let doc = yaml(&config);
        assert_eq!(doc["apiVersion"], "k3d.io/v1alpha5");
        assert_eq!(doc["kind"], "Simple");
        assert_eq!(doc["metadata"]["name"], "comind-dev");
        assert_eq!(doc["servers"], 1);
        assert_eq!(doc["agents"], 2);
        assert_eq!(doc["image"], "rancher/k3s:v1.36.2-k3s1");
        assert_eq!(doc["network"], "comind-dev");
        assert_eq!(doc["kubeAPI"]["hostIP"], "127.0.0.1");
        assert_eq!(doc["kubeAPI"]["hostPort"], "6443");
        assert_eq!(doc["ports"][0]["port"], "127.0.0.1:8080:80");
        assert_eq!(doc["ports"][1]["port"], "127.0.0.1:8443:443");
        assert_eq!(doc["ports"][0]["nodeFilters"][0], "loadbalancer");
        let kubeconfig = &doc["options"]["kubeconfig"];
        assert_eq!(kubeconfig["updateDefaultKubeconfig"], false);
        assert_eq!(kubeconfig["switchCurrentContext"], false);
        let labels: Vec<String> = doc["options"]["runtime"]["labels"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|l| l["label"].as_str().unwrap().to_string())
            .collect();
        assert!(labels.contains(&"comind.dev/environment=dev".to_string()));
        assert!(labels.contains(&"comind.dev/component=cluster".to_string()));
        assert!(
            labels
                .iter()
                .any(|l| l.starts_with("comind.dev/spec-hash="))
        );
        let inline = doc["registries"]["config"].as_str().unwrap();
        assert!(inline.contains('\n'), "k3d reads one line as a path");
        let registries: serde_json::Value = serde_yaml_ng::from_str(inline).unwrap();
        assert_eq!(
            registries["mirrors"]["localhost:5000"]["endpoint"][0],
            "http://comind-dev-registry:5000"
        );
        assert_eq!(
            registries["configs"]["comind-dev-registry:5000"]["auth"]["password"],
            "pw-Secret-1"
        );
        assert!(doc["options"]["k3s"].get("extraArgs").is_none());
    }

    #[test]
    fn the_hash_ignores_the_registry_password_and_follows_the_spec() {
        let one = K3dConfig::render(&env(|_| {}), Some(&registry("a")));
        let two = K3dConfig::render(&env(|_| {}), Some(&registry("b")));
        assert_eq!(one.hash(), two.hash());
        let labels = serde_json::to_string(&one.options.runtime.labels).unwrap();
        assert!(labels.contains(&format!("comind.dev/spec-hash={}", one.hash())));
        let labels = serde_json::to_string(&one.options.runtime).unwrap();
        assert!(!labels.contains("\"a\""));
        let more = K3dConfig::render(&env(|c| c.local.cluster.agents = 3), Some(&registry("a")));
        assert_ne!(one.hash(), more.hash());
    }

    #[test]
    fn the_server_nodes_mount_the_registry_data_for_its_garbage_collection() {
        let config = K3dConfig::render(&env(|_| {}), Some(&registry("a")));
        let doc = yaml(&config);
        assert_eq!(
            doc["volumes"][0]["volume"],
            "comind-dev-registry-data:/var/lib/comind/registry"
        );
        assert_eq!(doc["volumes"][0]["nodeFilters"][0], "server:*");
        let off = K3dConfig::render(
            &env(|c| c.local.cluster.registry_gc.enabled = false),
            Some(&registry("a")),
        );
        assert!(yaml(&off).get("volumes").is_none());
        assert_ne!(off.hash(), config.hash(), "switching it is a spec change");
    }

    #[test]
    fn metallb_turns_servicelb_off() {
        let config = K3dConfig::render(
            &env(|c| c.local.cluster.load_balancer = LoadBalancer::Metallb),
            None,
        );
        let doc = yaml(&config);
        assert_eq!(
            doc["options"]["k3s"]["extraArgs"][0]["arg"],
            "--disable=servicelb"
        );
        assert_eq!(
            doc["options"]["k3s"]["extraArgs"][0]["nodeFilters"][0],
            "server:*"
        );
    }
}

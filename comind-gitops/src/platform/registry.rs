//! The environment's image registry through the ingress (`platform/registry`, where a
//! profile makes a registry: the local one): `http://registry.<env>.127.0.0.1.nip.io:<http_port>`,
//! the seed's URL, served by the cluster's ingress controller (the k3s Traefik).
//!
//! The registry is a container on the environment's network, so it is bound into the
//! cluster as the platform services are: a Service `registry` in `platform-<env>` with
//! no selector and an EndpointSlice listing the container's address, then an Ingress
//! for the host name. Pulls by the nodes do not go this way (they use the mirror k3d
//! configures); this is for people and tools outside the cluster. Docker pushes to a
//! name other than `localhost` only over TLS unless it is listed in the daemon's
//! `insecure-registries`; `REGISTRY_URL` (`127.0.0.1:<port>`) needs neither.
//!
//! With `local.cluster.registry_gc.enabled` (the default) the phase also owns the
//! registry's maintenance: a CronJob `registry-gc` that runs the registry image's own
//! collector (`registry garbage-collect --delete-untagged`, what `comind registry gc`
//! runs on demand) on the registry's data, which the cluster's server nodes mount at
//! [`REGISTRY_NODE_PATH`] from the registry's volume. Its Pod runs on a server node
//! with that host path, with the registry's configuration from a ConfigMap, never
//! talks to the network or the API, and runs as root (the registry's files are
//! root's) with no capabilities and a read-only root file system.

use std::collections::BTreeMap;

use comind_core::cluster::{
    REGISTRY_CLUSTER_HOST, REGISTRY_CLUSTER_PORT, REGISTRY_CONFIG, REGISTRY_CONFIG_DIR,
    REGISTRY_CONFIG_FILE, REGISTRY_CONFIG_PATH, REGISTRY_NODE_PATH, REGISTRY_PHASE_ID,
};
use comind_core::{Environment, Error, Input, PhaseContext, PhaseId, Result};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, HostPathVolumeSource, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecurityContext, Service, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::baseline;
use super::services::{endpoint_slice, meta, reachable, selectorless_service};
use crate::apply::{Kind, Object, ObjectSet, Pending};

/// The phase's id.
pub const ID: &str = "platform/registry";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-registry";
/// The name of the Service and the Ingress.
const NAME: &str = "registry";
/// The name of the garbage collection's CronJob and of its ConfigMap.
pub const GC_NAME: &str = "registry-gc";
/// Where the Pod sees the registry's data: where the registry container has it, so
/// the one configuration file serves both.
const DATA_PATH: &str = "/var/lib/registry";

/// The registry's host name: `registry.<env>.127.0.0.1.nip.io` (nip.io resolves it to
/// 127.0.0.1, where the cluster's load balancer listens).
pub fn host(env: &Environment) -> String {
    super::ingress::host(env, NAME)
}

/// The kinds the phase owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<Service>(),
        Kind::of::<EndpointSlice>(),
        Kind::of::<Ingress>(),
        Kind::of::<ConfigMap>(),
        Kind::of::<CronJob>(),
    ]
}

/// The desired objects, from the registry phase's outputs in `ctx`.
///
/// # Errors
/// `Internal` when the registry phase publishes no address (a broken contract);
/// `InvalidInput` when its address is one no Pod can reach.
pub fn render(ctx: &PhaseContext) -> Result<ObjectSet> {
    let env = ctx.env();
    let namespace = baseline::services_namespace(env);
    let registry = PhaseId::new(REGISTRY_PHASE_ID);
    let value = |key: &str| match ctx.input(&registry, key) {
        Input::Known(value) => Ok(Some(value.expose().to_string())),
        Input::KnownAfterApply => Ok(None),
        Input::Missing => Err(Error::internal(format!(
            "the registry phase published no `{key}`"
        ))),
    };
    let (Some(host), Some(port)) = (value(REGISTRY_CLUSTER_HOST)?, value(REGISTRY_CLUSTER_PORT)?)
    else {
        let service = Object::typed(&Service {
            metadata: meta(NAME, NAME, &namespace),
            ..Service::default()
        })?;
        // Known by name only: the content is ignored.
        let ingress = Object::typed(&ingress(env, &namespace, 0))?;
        return Ok(
            ObjectSet::new(COMPONENT, garbage_collection(env)?, kinds()).with_pending(Pending {
                objects: vec![service, ingress],
                label: (super::services::LABEL_SERVICE.to_string(), NAME.to_string()),
                reason: "the registry changes in this run: its address is known after apply"
                    .to_string(),
            }),
        );
    };
    let ip = host.parse().map_err(|_| {
        Error::internal(format!(
            "the registry's cluster address `{host}` is not an IP address"
        ))
    })?;
    reachable(NAME, ip)?;
    let port: u16 = port.parse().map_err(|_| {
        Error::internal(format!(
            "the registry's cluster port `{port}` is not a port"
        ))
    })?;
    let mut objects = vec![
        Object::typed(&selectorless_service(NAME, &namespace, port))?,
        Object::typed(&endpoint_slice(NAME, &namespace, ip, port))?,
        Object::typed(&ingress(env, &namespace, port))?,
    ];
    objects.extend(garbage_collection(env)?);
    Ok(ObjectSet::new(COMPONENT, objects, kinds()))
}

/// The garbage collection's ConfigMap and CronJob, when it is scheduled; none when
/// it is not (so turning it off prunes them).
fn garbage_collection(env: &Environment) -> Result<Vec<Object>> {
    if !env.config().local.cluster.registry_gc.enabled {
        return Ok(Vec::new());
    }
    Ok(vec![
        Object::typed(&gc_config_map(env))?,
        Object::typed(&gc_cron_job(env))?,
    ])
}

fn gc_meta(env: &Environment) -> ObjectMeta {
    ObjectMeta {
        name: Some(GC_NAME.to_string()),
        namespace: Some(baseline::services_namespace(env)),
        labels: Some(gc_labels()),
        ..ObjectMeta::default()
    }
}

fn gc_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), GC_NAME.to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "comind-platform".to_string(),
        ),
    ])
}

/// The registry's configuration, as the CronJob's Pod mounts it.
pub fn gc_config_map(env: &Environment) -> ConfigMap {
    ConfigMap {
        metadata: gc_meta(env),
        data: Some(BTreeMap::from([(
            REGISTRY_CONFIG_FILE.to_string(),
            REGISTRY_CONFIG.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// The garbage collection's CronJob.
pub fn gc_cron_job(env: &Environment) -> CronJob {
    let settings = &env.config().local.cluster;
    let gc = &settings.registry_gc;
    let quantity = |q: &str| Quantity(q.to_string());
    let container = Container {
        name: "collect".to_string(),
        // The registry's own image: its collector knows its storage layout.
        image: Some(settings.registry_image.to_string()),
        // The image's entrypoint runs `registry <args>` for `garbage-collect`.
        args: Some(vec![
            "garbage-collect".to_string(),
            "--delete-untagged".to_string(),
            REGISTRY_CONFIG_PATH.to_string(),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("50m")),
                ("memory".to_string(), quantity("64Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), quantity("512Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_string(),
                mount_path: REGISTRY_CONFIG_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".to_string(),
                mount_path: DATA_PATH.to_string(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".to_string()),
        automount_service_account_token: Some(false),
        // Only the server nodes mount the registry's data (k3d's `server:*` filter).
        node_selector: Some(BTreeMap::from([(
            "node-role.kubernetes.io/control-plane".to_string(),
            "true".to_string(),
        )])),
        tolerations: Some(vec![
            Toleration {
                key: Some("node-role.kubernetes.io/control-plane".to_string()),
                operator: Some("Exists".to_string()),
                effect: Some("NoSchedule".to_string()),
                ..Toleration::default()
            },
            Toleration {
                key: Some("CriticalAddonsOnly".to_string()),
                operator: Some("Exists".to_string()),
                ..Toleration::default()
            },
        ]),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: GC_NAME.to_string(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "data".to_string(),
                host_path: Some(HostPathVolumeSource {
                    path: REGISTRY_NODE_PATH.to_string(),
                    // The mount k3d made: never an empty directory made in its place.
                    type_: Some("Directory".to_string()),
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    let labels = gc_labels();
    CronJob {
        metadata: gc_meta(env),
        spec: Some(CronJobSpec {
            schedule: gc.schedule.clone(),
            time_zone: Some(gc.time_zone.clone()),
            concurrency_policy: Some("Forbid".to_string()),
            // A run missed by more than an hour (the machine slept) waits for the
            // next one: collecting at a busier time risks a push in flight.
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(1),
                    active_deadline_seconds: Some(3600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}

fn ingress(env: &Environment, namespace: &str, port: u16) -> Ingress {
    super::ingress::console(env, NAME, meta(NAME, NAME, namespace), NAME, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::{Operation, Outputs};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn ctx(outputs: Outputs) -> PhaseContext {
        let env = Arc::new(Environment::with_state_root(
            comind_core::Config::default(),
            "/tmp/x",
        ));
        PhaseContext::standalone(
            PhaseId::new(ID),
            Operation::Plan,
            env,
            HashMap::from([(PhaseId::new(REGISTRY_PHASE_ID), outputs)]),
        )
    }

    #[test]
    fn the_registry_is_served_by_traefik_under_the_seeds_host_name() {
        let set = render(&ctx(Outputs::new()
            .text(REGISTRY_CLUSTER_HOST, "172.20.0.9")
            .text(REGISTRY_CLUSTER_PORT, "5000")))
        .unwrap();
        let ingress = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "Ingress")
            .unwrap();
        let spec = &ingress.object.data["spec"];
        assert_eq!(spec["ingressClassName"], "traefik");
        assert_eq!(spec["rules"][0]["host"], "registry.dev.127.0.0.1.nip.io");
        assert_eq!(
            spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
            5000
        );
        let slice = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "EndpointSlice")
            .unwrap();
        assert_eq!(
            slice.object.data["endpoints"][0]["addresses"][0],
            "172.20.0.9"
        );
    }

    #[test]
    fn the_garbage_collection_runs_the_registry_image_on_the_server_nodes_data() {
        let set = render(&ctx(Outputs::new()
            .text(REGISTRY_CLUSTER_HOST, "172.20.0.9")
            .text(REGISTRY_CLUSTER_PORT, "5000")))
        .unwrap();
        let job = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "CronJob")
            .unwrap();
        let spec = &job.object.data["spec"];
        assert_eq!(spec["schedule"], "30 4 * * 0");
        assert_eq!(spec["timeZone"], "UTC");
        assert_eq!(spec["concurrencyPolicy"], "Forbid");
        let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(
            pod["nodeSelector"]["node-role.kubernetes.io/control-plane"],
            "true"
        );
        assert_eq!(pod["volumes"][1]["hostPath"]["path"], REGISTRY_NODE_PATH);
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "registry:3.0.0");
        assert_eq!(
            container["args"],
            serde_json::json!(["garbage-collect", "--delete-untagged", REGISTRY_CONFIG_PATH])
        );
        let config = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "ConfigMap")
            .unwrap();
        assert_eq!(
            config.object.data["data"][REGISTRY_CONFIG_FILE],
            REGISTRY_CONFIG
        );
    }

    #[test]
    fn without_the_garbage_collection_its_objects_are_not_rendered() {
        let mut config = comind_core::Config::default();
        config.local.cluster.registry_gc.enabled = false;
        let env = Arc::new(Environment::with_state_root(config, "/tmp/x"));
        let ctx = PhaseContext::standalone(
            PhaseId::new(ID),
            Operation::Plan,
            env,
            HashMap::from([(
                PhaseId::new(REGISTRY_PHASE_ID),
                Outputs::new()
                    .text(REGISTRY_CLUSTER_HOST, "172.20.0.9")
                    .text(REGISTRY_CLUSTER_PORT, "5000"),
            )]),
        );
        let set = render(&ctx).unwrap();
        assert!(
            set.objects
                .iter()
                .all(|o| o.kind.resource.kind != "CronJob")
        );
        // Still owned, so one made earlier is pruned.
        assert!(set.kinds.iter().any(|k| k.resource.kind == "CronJob"));
    }

    #[test]
    fn a_registry_without_its_address_breaks_the_contract() {
        let missing = render(&ctx(Outputs::new()));
        assert!(
            missing.is_err(),
            "a registry without its address breaks the contract"
        );
    }
}

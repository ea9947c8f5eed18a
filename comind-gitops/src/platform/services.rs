//! The platform services in the cluster (`platform/services`): one stable in-cluster
//! name per service, the same on both profiles, and its Secret in every namespace that
//! uses it.
//!
//! - A Service `<service>` in `platform-<env>` (`postgres.platform-<env>.svc`,
//!   `object-store…`, `cache…`, `queue…`), on the port the service listens on. Where
//!   the cluster reaches the service at an IP address (a container on the
//!   environment's Docker network, which the k3d cluster joins) the Service has no
//!   selector and an EndpointSlice of Comind's lists that address; where it reaches a
//!   DNS name (RDS, ElastiCache, S3, SQS) the Service is an `ExternalName` alias of
//!   it. Both are converged on every run, so a container that came back at another
//!   address is found again by the next `up`.
//! - A Secret `platform-<service>` in `platform-<env>` and in each application
//!   namespace (`user-apps` and the teams'), holding the keys the `outputs` command
//!   gives (`DATABASE_URL`, `REDIS_URL`, `S3_*`, `SQS_*`) rewritten to the in-cluster
//!   name, so an application's environment reads the same on both profiles. A
//!   service whose clients check its TLS certificate's name (HTTPS APIs, Redis over
//!   TLS) keeps its own name there: an alias would fail that check.
//!
//! A disabled service has no outputs, so nothing is rendered for it and what an
//! earlier run made is pruned. [`render`] is a pure function of the environment and
//! the services' bindings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use comind_core::service::ClusterTarget;
use comind_core::{
    Environment, Error, PhaseContext, PhaseId, Result, ServiceEndpoint, ServiceKind,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::baseline::{self, Tier};
use crate::apply::{Kind, Object, ObjectSet, Pending};

/// The phase's id.
pub const ID: &str = "platform/services";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-services";
/// The label naming the service an object is for (`postgres`, `object-store`, ...).
pub const LABEL_SERVICE: &str = "comind.dev/service";
/// The label that ties an EndpointSlice to its Service.
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that keeps Kubernetes' EndpointSlice controllers off a slice.
const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// The Secret an application reads a service's keys from, in every namespace:
/// `platform-postgres`, `platform-object-store`, `platform-cache`, `platform-queue`.
pub fn secret_name(kind: ServiceKind) -> String {
    format!("platform-{}", kind.id())
}

/// The name Pods reach a service by: `postgres.platform-<env>.svc`.
pub fn in_cluster_host(env: &Environment, kind: ServiceKind) -> String {
    format!("{}.{}.svc", kind.id(), baseline::services_namespace(env))
}

/// The kinds the phase owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<Service>(),
        Kind::of::<EndpointSlice>(),
        Kind::of::<Secret>(),
    ]
}

/// One enabled service as its phase published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Where and how applications use it, as the host sees it.
    pub endpoint: ServiceEndpoint,
    /// Where Pods connect to it.
    pub target: ClusterTarget,
}

/// What the services' phases published, for `kinds`: a binding per enabled service,
/// and the kinds whose outputs are known only after apply (a planning pass while the
/// service changes).
///
/// # Errors
/// When a service's outputs do not read back as its endpoint (its backend breaks the
/// core contract).
pub fn bindings(
    ctx: &PhaseContext,
    kinds: &[ServiceKind],
) -> Result<(Vec<Binding>, Vec<ServiceKind>)> {
    let mut bound = Vec::new();
    let mut pending = Vec::new();
    for &kind in kinds {
        match ctx.inputs_of(&PhaseId::new(kind.id()))? {
            None => pending.push(kind),
            // Disabled in `comind.yaml`: nothing to bind.
            Some(outputs) if outputs.is_empty() => {}
            Some(outputs) => bound.push(Binding {
                endpoint: ServiceEndpoint::from_outputs(kind, outputs)?,
                target: ClusterTarget::from_outputs(kind, outputs)?,
            }),
        }
    }
    Ok((bound, pending))
}

/// The namespaces that get every service's Secret: `platform-<env>` and the
/// application namespaces.
fn secret_namespaces(env: &Environment) -> Vec<String> {
    let mut all = vec![baseline::services_namespace(env)];
    all.extend(
        baseline::namespaces(env)
            .into_iter()
            .filter(|ns| ns.tier == Tier::Apps)
            .map(|ns| ns.name),
    );
    all
}

/// The desired objects of `env` for `bound` services; `pending` ones are listed by
/// name only (see [`Pending`]).
///
/// # Errors
/// `InvalidInput` when a service's cluster target is an address no Pod can reach (the
/// host's loopback); `Internal` if an object does not serialize (a bug).
pub fn render(env: &Environment, bound: &[Binding], pending: &[ServiceKind]) -> Result<ObjectSet> {
    let namespace = baseline::services_namespace(env);
    let mut objects = Vec::new();
    for binding in bound {
        let kind = binding.endpoint.kind();
        let target = &binding.target;
        match target.ip() {
            Some(ip) => {
                reachable(kind.id(), ip)?;
                objects.push(Object::typed(&selectorless_service(
                    kind.id(),
                    &namespace,
                    target.port,
                ))?);
                objects.push(Object::typed(&endpoint_slice(
                    kind.id(),
                    &namespace,
                    ip,
                    target.port,
                ))?);
            }
            None => objects.push(Object::typed(&alias_service(kind, &namespace, target))?),
        }
        let for_pods = if binding.endpoint.verifies_server_name() {
            binding.endpoint.clone()
        } else {
            binding
                .endpoint
                .reached_at(&in_cluster_host(env, kind), target.port)?
        };
        let data: BTreeMap<String, ByteString> = for_pods
            .to_outputs()
            .iter()
            .map(|(key, value)| {
                (
                    key.to_string(),
                    ByteString(value.expose().as_bytes().to_vec()),
                )
            })
            .collect();
        for ns in secret_namespaces(env) {
            objects.push(Object::typed(&secret(kind, &ns, Some(data.clone())))?);
        }
    }
    let mut set = ObjectSet::new(COMPONENT, objects, kinds());
    for &kind in pending {
        let mut named = vec![Object::typed(&Service {
            metadata: meta(kind.id(), kind.id(), &namespace),
            ..Service::default()
        })?];
        for ns in secret_namespaces(env) {
            named.push(Object::typed(&secret(kind, &ns, None))?);
        }
        set = set.with_pending(Pending {
            objects: named,
            label: (LABEL_SERVICE.to_string(), kind.id().to_string()),
            reason: format!(
                "{kind} changes in this run: its address and credentials are known after apply"
            ),
        });
    }
    Ok(set)
}

/// The phase's render: the bindings of `kinds` from the context, then [`render`].
pub(crate) fn renderer(kinds: Vec<ServiceKind>) -> super::Render {
    Arc::new(move |ctx: &PhaseContext| {
        let (bound, pending) = bindings(ctx, &kinds)?;
        render(ctx.env(), &bound, &pending)
    })
}

/// Refuses an address that means "this machine" wherever it is used: a Pod that
/// connects there reaches itself, not the service.
pub(crate) fn reachable(service: &str, ip: IpAddr) -> Result<()> {
    if ip.is_loopback() || ip.is_unspecified() {
        return Err(Error::invalid_input(format!(
            "the {service} service is reached at {ip}, an address Pods cannot reach it at"
        ))
        .with_resource(format!("service {service}"))
        .with_hint(
            "publish the service where the cluster's nodes can reach it (an address on a \
             network they share), or disable it in comind.yaml",
        ));
    }
    Ok(())
}

pub(crate) fn meta(service: &str, name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            LABEL_SERVICE.to_string(),
            service.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn port(service: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(service.to_string()),
        port: i32::from(port),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// A Service with no selector: its endpoints are the EndpointSlice Comind writes.
pub(crate) fn selectorless_service(service: &str, namespace: &str, target_port: u16) -> Service {
    Service {
        metadata: meta(service, service, namespace),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            ports: Some(vec![ServicePort {
                target_port: Some(IntOrString::Int(i32::from(target_port))),
                ..port(service, target_port)
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(crate) fn endpoint_slice(
    service: &str,
    namespace: &str,
    ip: IpAddr,
    target_port: u16,
) -> EndpointSlice {
    let mut metadata = meta(service, service, namespace);
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_SERVICE_NAME.to_string(), service.to_string());
    labels.insert(LABEL_SLICE_MANAGED_BY.to_string(), "comind".to_string());
    EndpointSlice {
        metadata,
        address_type: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some(service.to_string()),
            port: Some(i32::from(target_port)),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }
}

/// A Service that is a DNS alias (CNAME) of the managed endpoint.
fn alias_service(kind: ServiceKind, namespace: &str, target: &ClusterTarget) -> Service {
    Service {
        metadata: meta(kind.id(), kind.id(), namespace),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".to_string()),
            external_name: Some(target.host.clone()),
            ports: Some(vec![port(kind.id(), target.port)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn secret(
    kind: ServiceKind,
    namespace: &str,
    data: Option<BTreeMap<String, ByteString>>,
) -> Secret {
    Secret {
        metadata: meta(kind.id(), &secret_name(kind), namespace),
        type_: Some("Opaque".to_string()),
        data,
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::Config;
    use comind_core::secret::Secret as CoreSecret;
    use comind_core::service::{CacheEndpoint, PostgresEndpoint, QueueEndpoint, QueueInfo};

    fn env() -> Environment {
        let mut config = Config::default();
        config.platform.teams = vec!["payments".parse().unwrap()];
        Environment::with_state_root(config, "/tmp/x")
    }

    fn postgres(target: &str) -> Binding {
        Binding {
            endpoint: ServiceEndpoint::Postgres(PostgresEndpoint {
                host: "127.0.0.1".into(),
                port: 15432,
                username: "app".into(),
                password: CoreSecret::new("pg-Secret-9"),
                databases: vec!["dev".into()],
                require_tls: false,
            }),
            target: ClusterTarget {
                host: target.into(),
                port: 5432,
            },
        }
    }

    fn of_kind<'a>(set: &'a ObjectSet, kind: &str) -> Vec<&'a Object> {
        set.objects
            .iter()
            .filter(|o| o.kind.resource.kind == kind)
            .collect()
    }

    fn data(object: &Object) -> BTreeMap<String, String> {
        let secret: Secret =
            serde_json::from_value(serde_json::to_value(&object.object).unwrap()).unwrap();
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    }

    #[test]
    fn a_container_gets_a_selectorless_service_and_its_address_in_a_slice() {
        let env = env();
        let set = render(&env, &[postgres("172.19.0.3")], &[]).unwrap();
        let services = of_kind(&set, "Service");
        assert_eq!(services.len(), 1);
        let service = &services[0].object.data["spec"];
        assert_eq!(services[0].reference().path(), "platform-dev/postgres");
        assert!(service.get("selector").is_none());
        assert_eq!(service["ports"][0]["port"], 5432);
        let slices = of_kind(&set, "EndpointSlice");
        assert_eq!(slices.len(), 1);
        let slice = &slices[0].object;
        assert_eq!(slice.data["endpoints"][0]["addresses"][0], "172.19.0.3");
        assert_eq!(slice.data["addressType"], "IPv4");
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "postgres");
        assert_eq!(labels[LABEL_SLICE_MANAGED_BY], "comind");
    }

    #[test]
    fn a_managed_endpoint_gets_an_alias_and_no_slice() {
        let env = env();
        let set = render(&env, &[postgres("db.abc.us-east-1.rds.amazonaws.com")], &[]).unwrap();
        let services = of_kind(&set, "Service");
        let spec = &services[0].object.data["spec"];
        assert_eq!(spec["type"], "ExternalName");
        assert_eq!(spec["externalName"], "db.abc.us-east-1.rds.amazonaws.com");
        assert!(of_kind(&set, "EndpointSlice").is_empty());
    }

    #[test]
    fn every_namespace_that_uses_the_services_gets_the_same_secret_with_in_cluster_names() {
        let env = env();
        let set = render(&env, &[postgres("172.19.0.3")], &[]).unwrap();
        let secrets = of_kind(&set, "Secret");
        let paths: Vec<String> = secrets.iter().map(|o| o.reference().path()).collect();
        assert_eq!(
            paths,
            [
                "platform-dev/platform-postgres",
                "user-apps/platform-postgres",
                "payments/platform-postgres"
            ]
        );
        let first = data(secrets[0]);
        assert_eq!(
            first["DATABASE_URL"],
            "postgres://app:pg-Secret-9@postgres.platform-dev.svc:5432/dev"
        );
        assert_eq!(first["POSTGRES_HOST"], "postgres.platform-dev.svc");
        assert_eq!(first["POSTGRES_PORT"], "5432");
        assert!(!first.contains_key("POSTGRES_CLUSTER_HOST"));
        for secret in &secrets {
            assert_eq!(data(secret), first);
        }
    }

    #[test]
    fn no_label_or_annotation_holds_a_secret() {
        let env = env();
        let cache = Binding {
            endpoint: ServiceEndpoint::Cache(CacheEndpoint {
                host: "127.0.0.1".into(),
                port: 16379,
                password: CoreSecret::new("redis-Secret-7"),
                tls: false,
            }),
            target: ClusterTarget {
                host: "172.19.0.4".into(),
                port: 6379,
            },
        };
        let set = render(&env, &[postgres("172.19.0.3"), cache], &[]).unwrap();
        for object in &set.objects {
            let object = object.clone().owned_by(&env, COMPONENT);
            let meta = serde_json::to_string(&object.object.metadata).unwrap();
            assert!(!meta.contains("Secret-"), "{meta}");
            if object.kind.resource.kind != "Secret" {
                let all = serde_json::to_string(&object.object).unwrap();
                assert!(!all.contains("Secret-"), "{all}");
            }
        }
    }

    #[test]
    fn tls_checked_names_are_kept_and_plain_ones_rewritten() {
        let env = env();
        let sqs = |url: &str, host: &str, port: u16| Binding {
            endpoint: ServiceEndpoint::Queue(QueueEndpoint {
                endpoint_url: url.into(),
                region: "eu-west-1".into(),
                credentials: None,
                queues: vec![QueueInfo {
                    name: "jobs".into(),
                    url: format!("{url}/1234/dev-jobs"),
                    dlq_url: format!("{url}/1234/dev-jobs-dlq"),
                }],
            }),
            target: ClusterTarget {
                host: host.into(),
                port,
            },
        };
        let set = render(
            &env,
            &[sqs(
                "https://sqs.eu-west-1.amazonaws.com",
                "sqs.eu-west-1.amazonaws.com",
                443,
            )],
            &[],
        )
        .unwrap();
        let secret = data(of_kind(&set, "Secret")[0]);
        assert_eq!(
            secret["SQS_QUEUE_URL_JOBS"],
            "https://sqs.eu-west-1.amazonaws.com/1234/dev-jobs"
        );
        let set = render(
            &env,
            &[sqs("http://127.0.0.1:19324", "172.19.0.5", 9324)],
            &[],
        )
        .unwrap();
        let secret = data(of_kind(&set, "Secret")[0]);
        assert_eq!(
            secret["SQS_QUEUE_URL_JOBS"],
            "http://queue.platform-dev.svc:9324/1234/dev-jobs"
        );
    }

    #[test]
    fn a_loopback_target_is_refused_with_what_to_do() {
        let err = render(&env(), &[postgres("127.0.0.1")], &[]).unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("Pods cannot reach"), "{err}");
    }

    #[test]
    fn pending_services_are_named_and_kept_from_pruning() {
        let env = env();
        let set = render(&env, &[], &[ServiceKind::Cache]).unwrap();
        assert!(set.objects.is_empty());
        assert_eq!(set.pending.len(), 1);
        let names: Vec<String> = set.pending[0]
            .objects
            .iter()
            .map(|o| o.reference().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "Service platform-dev/cache",
                "Secret platform-dev/platform-cache",
                "Secret user-apps/platform-cache",
                "Secret payments/platform-cache"
            ]
        );
        assert_eq!(set.pending[0].label.1, "cache");
    }
}

//! The platform baseline (`platform/baseline`): the seed's multi-tenancy.
//!
//! - Namespaces: `argocd`, `platform`, `platform-<env>`, `monitoring` (the platform's),
//!   and `user-apps` plus one per team in `platform.teams` (the applications').
//! - In each: a ResourceQuota and a LimitRange (small in a dev environment, larger
//!   when `production: true`, every value overridable in `platform.quota` and
//!   `platform.limits`).
//! - In each: a default-deny NetworkPolicy (ingress and egress) and the allows the
//!   platform needs: DNS to kube-system, traffic inside the namespace, scraping from
//!   `monitoring`; in application namespaces also ingress from the ingress controller
//!   and egress to the platform services; in platform namespaces egress to the API
//!   server; `argocd` and `monitoring` keep all egress (Git, Helm repositories,
//!   scrape targets), and Argo CD's own ingress policies then govern its pods.
//! - ClusterRoles `platform:admin` (everything), `platform:developer` (workloads,
//!   Secrets included, bound per application namespace) and `platform:readonly` (read,
//!   no Secrets), bound to the groups of `platform.rbac`: developers also read
//!   everywhere through `platform:readonly`, so they never read a Secret outside their
//!   namespaces.
//!
//! [`render`] is a pure function of the environment.

use std::collections::BTreeMap;

use comind_core::config::Profile;
use comind_core::{Environment, Result};
use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, Namespace};
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::apply::{Kind, Object, ObjectSet};

/// The phase's id.
pub const ID: &str = "platform/baseline";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-baseline";

/// The label that says what a namespace is for: `platform` or `apps`.
pub const LABEL_NAMESPACE_TIER: &str = "comind.dev/tier";
/// The label Kubernetes sets on every namespace: its name.
const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// The ClusterRole of platform administrators.
pub const ROLE_ADMIN: &str = "platform:admin";
/// The ClusterRole of developers, bound in each application namespace.
pub const ROLE_DEVELOPER: &str = "platform:developer";
/// The ClusterRole of readers: everything but Secrets.
pub const ROLE_READONLY: &str = "platform:readonly";

/// What a namespace is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The platform's own components.
    Platform,
    /// Applications.
    Apps,
}

impl Tier {
    fn label(self) -> &'static str {
        match self {
            Tier::Platform => "platform",
            Tier::Apps => "apps",
        }
    }
}

/// One namespace of the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineNamespace {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub tier: Tier,
}

/// The namespaces of `env`'s baseline, platform ones first.
pub fn namespaces(env: &Environment) -> Vec<BaselineNamespace> {
    let platform = |name: String| BaselineNamespace {
        name,
        tier: Tier::Platform,
    };
    let apps = |name: String| BaselineNamespace {
        name,
        tier: Tier::Apps,
    };
    let mut all = vec![
        platform("argocd".to_string()),
        platform("platform".to_string()),
        platform(services_namespace(env)),
        platform("monitoring".to_string()),
        apps("user-apps".to_string()),
    ];
    all.extend(
        env.config()
            .platform
            .teams
            .iter()
            .map(|t| apps(t.to_string())),
    );
    all
}

/// The namespace of the platform services' in-cluster side: `platform-<env>`.
pub fn services_namespace(env: &Environment) -> String {
    comind_core::cluster::services_namespace(env.name())
}

/// The kinds the baseline owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<Namespace>(),
        Kind::of::<ResourceQuota>(),
        Kind::of::<LimitRange>(),
        Kind::of::<NetworkPolicy>(),
        Kind::of::<ClusterRole>(),
        Kind::of::<ClusterRoleBinding>(),
        Kind::of::<RoleBinding>(),
    ]
}

/// The desired baseline of `env`.
///
/// # Errors
/// `Internal` only if an object does not serialize (a bug).
pub fn render(env: &Environment) -> Result<ObjectSet> {
    let mut objects = Vec::new();
    let namespaces = namespaces(env);
    for ns in &namespaces {
        objects.push(Object::typed(&namespace(ns))?);
        objects.push(Object::typed(&quota(env, &ns.name))?);
        objects.push(Object::typed(&limits(env, &ns.name))?);
        for policy in network_policies(env, ns) {
            objects.push(Object::typed(&policy)?);
        }
    }
    for role in cluster_roles() {
        objects.push(Object::typed(&role)?);
    }
    let rbac = &env.config().platform.rbac;
    objects.push(Object::typed(&cluster_binding(
        ROLE_ADMIN,
        ROLE_ADMIN,
        &rbac.admin_groups,
    ))?);
    objects.push(Object::typed(&cluster_binding(
        ROLE_READONLY,
        ROLE_READONLY,
        &rbac.readonly_groups,
    ))?);
    // Developers read everywhere (no Secrets) and edit in application namespaces.
    objects.push(Object::typed(&cluster_binding(
        "platform:developer-read",
        ROLE_READONLY,
        &rbac.developer_groups,
    ))?);
    for ns in namespaces.iter().filter(|n| n.tier == Tier::Apps) {
        objects.push(Object::typed(&developer_binding(
            &ns.name,
            &rbac.developer_groups,
        ))?);
    }
    Ok(ObjectSet::new(COMPONENT, objects, kinds()))
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

fn namespace(ns: &BaselineNamespace) -> Namespace {
    let mut metadata = meta(&ns.name, None);
    metadata.labels = Some(BTreeMap::from([(
        LABEL_NAMESPACE_TIER.to_string(),
        ns.tier.label().to_string(),
    )]));
    Namespace {
        metadata,
        ..Namespace::default()
    }
}

fn q(value: &str) -> Quantity {
    Quantity(value.to_string())
}

/// `configured`, else the default for a dev or a production environment.
fn pick(
    configured: Option<&comind_core::config::Quantity>,
    dev: &str,
    production: &str,
    env: &Environment,
) -> Quantity {
    match configured {
        Some(value) => q(value.as_str()),
        None if env.config().production => q(production),
        None => q(dev),
    }
}

fn quota(env: &Environment, namespace: &str) -> ResourceQuota {
    let settings = &env.config().platform.quota;
    let pods = settings
        .pods
        .unwrap_or(if env.config().production { 200 } else { 50 });
    let hard = BTreeMap::from([
        (
            "requests.cpu".to_string(),
            pick(settings.requests_cpu.as_ref(), "4", "16", env),
        ),
        (
            "requests.memory".to_string(),
            pick(settings.requests_memory.as_ref(), "8Gi", "32Gi", env),
        ),
        (
            "limits.cpu".to_string(),
            pick(settings.limits_cpu.as_ref(), "8", "32", env),
        ),
        (
            "limits.memory".to_string(),
            pick(settings.limits_memory.as_ref(), "16Gi", "64Gi", env),
        ),
        ("pods".to_string(), q(&pods.to_string())),
    ]);
    ResourceQuota {
        metadata: meta("comind-quota", Some(namespace)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

fn limits(env: &Environment, namespace: &str) -> LimitRange {
    let settings = &env.config().platform.limits;
    LimitRange {
        metadata: meta("comind-limits", Some(namespace)),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                default_request: Some(BTreeMap::from([
                    (
                        "cpu".to_string(),
                        pick(settings.default_request_cpu.as_ref(), "100m", "100m", env),
                    ),
                    (
                        "memory".to_string(),
                        pick(
                            settings.default_request_memory.as_ref(),
                            "128Mi",
                            "128Mi",
                            env,
                        ),
                    ),
                ])),
                default: Some(BTreeMap::from([
                    (
                        "cpu".to_string(),
                        pick(settings.default_cpu.as_ref(), "500m", "1", env),
                    ),
                    (
                        "memory".to_string(),
                        pick(settings.default_memory.as_ref(), "512Mi", "1Gi", env),
                    ),
                ])),
                ..LimitRangeItem::default()
            }],
        }),
    }
}

fn everything() -> LabelSelector {
    LabelSelector::default()
}

fn policy(
    namespace: &str,
    name: &str,
    types: &[&str],
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(name, Some(namespace)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(everything()),
            policy_types: Some(types.iter().map(ToString::to_string).collect()),
            ingress,
            egress,
        }),
    }
}

fn namespace_peer(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                LABEL_NAMESPACE_NAME.to_string(),
                name.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

pub(crate) fn anywhere() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: "0.0.0.0/0".to_string(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

pub(crate) fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".to_string()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    }
}

fn udp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("UDP".to_string()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    }
}

/// The ports of the platform services as applications reach them: PostgreSQL, Redis,
/// the S3 API (MinIO locally, HTTPS on AWS), the SQS API (ElasticMQ locally, HTTPS on
/// AWS).
pub(crate) const SERVICE_PORTS: [i32; 5] = [5432, 6379, 9000, 9324, 443];

/// The ports of the Kubernetes API as Pods reach it: 443 through the `kubernetes`
/// Service, 6443 where the endpoint is a k3s server.
const API_SERVER_PORTS: [i32; 2] = [443, 6443];

fn network_policies(env: &Environment, ns: &BaselineNamespace) -> Vec<NetworkPolicy> {
    let name = ns.name.as_str();
    let mut policies = vec![
        policy(name, "default-deny", &["Ingress", "Egress"], None, None),
        policy(
            name,
            "allow-dns",
            &["Egress"],
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![namespace_peer("kube-system")]),
                ports: Some(vec![udp(53), tcp(53)]),
            }]),
        ),
        policy(
            name,
            "allow-same-namespace",
            &["Ingress", "Egress"],
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(everything()),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: None,
            }]),
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(everything()),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: None,
            }]),
        ),
        policy(
            name,
            "allow-from-monitoring",
            &["Ingress"],
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![namespace_peer("monitoring")]),
                ports: None,
            }]),
            None,
        ),
    ];
    let from_ingress = policy(
        name,
        "allow-from-ingress",
        &["Ingress"],
        Some(vec![NetworkPolicyIngressRule {
            from: Some(ingress_sources(env)),
            ports: None,
        }]),
        None,
    );
    match ns.tier {
        Tier::Apps => {
            policies.push(from_ingress);
            policies.push(policy(
                name,
                "allow-platform-services",
                &["Egress"],
                None,
                // The services live outside the cluster network (Docker containers
                // locally, RDS, ElastiCache, S3 and SQS on AWS): the ports pin the
                // rule, not the addresses.
                Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![anywhere()]),
                    ports: Some(SERVICE_PORTS.iter().map(|p| tcp(*p)).collect()),
                }]),
            ));
        }
        Tier::Platform => {
            if name == "argocd" || name == "monitoring" {
                if name == "argocd" {
                    // argocd-server's UI and API behind the ingress.
                    policies.push(from_ingress);
                }
                policies.push(policy(
                    name,
                    "allow-all-egress",
                    &["Egress"],
                    None,
                    Some(vec![NetworkPolicyEgressRule {
                        to: None,
                        ports: None,
                    }]),
                ));
            } else {
                policies.push(policy(
                    name,
                    "allow-api-server",
                    &["Egress"],
                    None,
                    Some(vec![NetworkPolicyEgressRule {
                        to: Some(vec![anywhere()]),
                        ports: Some(API_SERVER_PORTS.iter().map(|p| tcp(*p)).collect()),
                    }]),
                ));
            }
        }
    }
    policies
}

/// Where ingress traffic comes from: locally the Traefik that k3s runs in
/// `kube-system`; on AWS the Application Load Balancer, whose targets are Pod IPs it
/// reaches from inside the VPC.
fn ingress_sources(env: &Environment) -> Vec<NetworkPolicyPeer> {
    match env.config().profile {
        Profile::Local => vec![namespace_peer("kube-system")],
        Profile::Aws => vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: env.config().aws.vpc.cidr.clone(),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        }],
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(ToString::to_string).collect()),
        resources: Some(resources.iter().map(ToString::to_string).collect()),
        verbs: verbs.iter().map(ToString::to_string).collect(),
        ..PolicyRule::default()
    }
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// The platform's three ClusterRoles.
fn cluster_roles() -> Vec<ClusterRole> {
    let role = |name: &str, rules: Vec<PolicyRule>| ClusterRole {
        metadata: meta(name, None),
        rules: Some(rules),
        ..ClusterRole::default()
    };
    vec![
        role(
            ROLE_ADMIN,
            vec![
                rule(&["*"], &["*"], &["*"]),
                PolicyRule {
                    non_resource_urls: Some(vec!["*".to_string()]),
                    verbs: vec!["*".to_string()],
                    ..PolicyRule::default()
                },
            ],
        ),
        role(
            ROLE_DEVELOPER,
            vec![
                rule(
                    &[""],
                    &[
                        "pods",
                        "pods/log",
                        "pods/portforward",
                        "services",
                        "configmaps",
                        "secrets",
                        "serviceaccounts",
                        "persistentvolumeclaims",
                    ],
                    &WRITE,
                ),
                rule(&[""], &["events", "endpoints"], &READ),
                rule(
                    &["apps"],
                    &["deployments", "statefulsets", "daemonsets", "replicasets"],
                    &WRITE,
                ),
                rule(&["batch"], &["jobs", "cronjobs"], &WRITE),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], &WRITE),
                rule(&["networking.k8s.io"], &["ingresses"], &WRITE),
                rule(&["policy"], &["poddisruptionbudgets"], &WRITE),
            ],
        ),
        role(
            ROLE_READONLY,
            vec![
                // Every core resource but Secrets, by name: RBAC has no "all but".
                rule(
                    &[""],
                    &[
                        "pods",
                        "pods/log",
                        "services",
                        "endpoints",
                        "configmaps",
                        "events",
                        "namespaces",
                        "nodes",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "resourcequotas",
                        "limitranges",
                        "serviceaccounts",
                        "replicationcontrollers",
                    ],
                    &READ,
                ),
                rule(
                    &[
                        "apps",
                        "batch",
                        "autoscaling",
                        "networking.k8s.io",
                        "policy",
                        "discovery.k8s.io",
                        "argoproj.io",
                        "bitnami.com",
                        "monitoring.coreos.com",
                    ],
                    &["*"],
                    &READ,
                ),
            ],
        ),
    ]
}

fn subjects(groups: &[String]) -> Vec<Subject> {
    groups
        .iter()
        .map(|g| Subject {
            kind: "Group".to_string(),
            name: g.clone(),
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            namespace: None,
        })
        .collect()
}

fn role_ref(role: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: "ClusterRole".to_string(),
        name: role.to_string(),
    }
}

fn cluster_binding(name: &str, role: &str, groups: &[String]) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: role_ref(role),
        subjects: Some(subjects(groups)),
    }
}

fn developer_binding(namespace: &str, groups: &[String]) -> RoleBinding {
    RoleBinding {
        metadata: meta(ROLE_DEVELOPER, Some(namespace)),
        role_ref: role_ref(ROLE_DEVELOPER),
        subjects: Some(subjects(groups)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::Config;
    use comind_core::config::ResourceName;

    fn env(edit: impl FnOnce(&mut Config)) -> Environment {
        let mut config = Config::default();
        edit(&mut config);
        Environment::with_state_root(config, "/tmp/x")
    }

    fn of_kind<'a>(set: &'a ObjectSet, kind: &str) -> Vec<&'a Object> {
        set.objects
            .iter()
            .filter(|o| o.object.types.as_ref().is_some_and(|t| t.kind == kind))
            .collect()
    }

    #[test]
    fn every_namespace_has_quota_limits_and_a_default_deny() {
        let env = env(|c| c.platform.teams = vec![ResourceName::new("backend").unwrap()]);
        let set = render(&env).unwrap();
        let names: Vec<&str> = of_kind(&set, "Namespace")
            .iter()
            .map(|o| o.name())
            .collect();
        assert_eq!(
            names,
            [
                "argocd",
                "platform",
                "platform-dev",
                "monitoring",
                "user-apps",
                "backend"
            ]
        );
        for ns in names {
            for (kind, name) in [
                ("ResourceQuota", "comind-quota"),
                ("LimitRange", "comind-limits"),
                ("NetworkPolicy", "default-deny"),
                ("NetworkPolicy", "allow-dns"),
            ] {
                assert!(
                    set.objects.iter().any(|o| o.namespace() == Some(ns)
                        && o.name() == name
                        && o.object.types.as_ref().unwrap().kind == kind),
                    "{kind} {name} in {ns}"
                );
            }
        }
        let deny = set
            .objects
            .iter()
            .find(|o| o.name() == "default-deny" && o.namespace() == Some("backend"))
            .unwrap();
        let spec = &deny.object.data["spec"];
        assert_eq!(
            spec["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert_eq!(spec["podSelector"], serde_json::json!({}));
        assert!(spec.get("ingress").is_none() && spec.get("egress").is_none());
    }

    #[test]
    fn quotas_are_larger_in_production_and_overridable() {
        let hard = |env: &Environment| {
            let set = render(env).unwrap();
            of_kind(&set, "ResourceQuota")[0].object.data["spec"]["hard"].clone()
        };
        let dev = hard(&env(|_| {}));
        let prod = hard(&env(|c| c.production = true));
        assert_eq!(dev["requests.cpu"], "4");
        assert_eq!(prod["requests.cpu"], "16");
        assert_eq!(prod["pods"], "200");
        let custom = hard(&env(|c| {
            c.platform.quota.requests_memory =
                Some(comind_core::config::Quantity::new("3Gi").unwrap());
            c.platform.quota.pods = Some(7);
        }));
        assert_eq!(custom["requests.memory"], "3Gi");
        assert_eq!(custom["pods"], "7");
    }

    #[test]
    fn the_readonly_role_never_grants_secrets_and_developers_edit_only_app_namespaces() {
        let set = render(&env(|_| {})).unwrap();
        let readonly = set
            .objects
            .iter()
            .find(|o| o.name() == ROLE_READONLY)
            .unwrap();
        let rules = readonly.object.data["rules"].as_array().unwrap();
        for rule in rules {
            let groups = rule["apiGroups"].as_array().unwrap();
            let resources = rule["resources"].as_array().unwrap();
            if groups.contains(&serde_json::json!("")) {
                assert!(!resources.contains(&serde_json::json!("secrets")));
                assert!(!resources.contains(&serde_json::json!("*")));
            }
        }
        let bindings: Vec<Option<&str>> = of_kind(&set, "RoleBinding")
            .iter()
            .map(|o| o.namespace())
            .collect();
        assert_eq!(bindings, [Some("user-apps")]);
    }

    #[test]
    fn no_label_or_annotation_holds_anything_but_ownership_and_tiers() {
        let env = env(|_| {});
        let set = render(&env).unwrap();
        for object in set.objects {
            let object = object.owned_by(&env, COMPONENT);
            let labels = object.object.metadata.labels.clone().unwrap_or_default();
            assert!(
                labels
                    .keys()
                    .all(|k| k.starts_with("comind.dev/") || k == "app.kubernetes.io/managed-by"),
                "{labels:?}"
            );
            assert!(object.object.metadata.annotations.is_none());
        }
    }

    #[test]
    fn ingress_comes_from_traefik_locally_and_from_the_vpc_on_aws() {
        let local = ingress_sources(&env(|_| {}));
        assert!(local[0].namespace_selector.is_some());
        let aws = ingress_sources(&env(|c| c.profile = Profile::Aws));
        assert_eq!(aws[0].ip_block.as_ref().unwrap().cidr, "10.40.0.0/16");
    }
}

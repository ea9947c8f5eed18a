//! The shape of `comind.yaml`, with every default.
//!
//! Every struct denies unknown fields and defaults every field, so an empty file (or
//! none) is a complete local dev environment, and a typo is an error at its line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Origins;
use super::types::{
    DurationSetting, EnvironmentName, Identifier, ImageRef, Port, Profile, Quantity, ResourceName,
};

fn image(reference: &str) -> ImageRef {
    // Only called with the literal defaults below, which the unit tests parse.
    ImageRef::new(reference).unwrap_or_else(|_| unreachable!("default image `{reference}`"))
}

fn name(value: &str) -> ResourceName {
    ResourceName::new(value).unwrap_or_else(|_| unreachable!("default name `{value}`"))
}

fn ident(value: &str) -> Identifier {
    Identifier::new(value).unwrap_or_else(|_| unreachable!("default identifier `{value}`"))
}

/// The default PostgreSQL image of the local profile.
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:16.6-alpine";
/// The default MinIO image of the local profile.
pub const DEFAULT_MINIO_IMAGE: &str = "minio/minio:RELEASE.2025-04-22T22-12-26Z";
/// The default Redis image of the local profile.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.4.2-alpine";
/// The default ElasticMQ image of the local profile.
pub const DEFAULT_ELASTICMQ_IMAGE: &str = "softwaremill/elasticmq-native:1.6.11";
/// The default k3s image of the local cluster: the Kubernetes minor the tests' API
/// server runs (1.36), in upstream support, never `latest`.
pub const DEFAULT_K3S_IMAGE: &str = "rancher/k3s:v1.36.2-k3s1";
/// The default image of the local registry: CNCF Distribution 3, the maintained line
/// (2.x gets security fixes only).
pub const DEFAULT_REGISTRY_IMAGE: &str = "registry:3.0.0";

/// The default Argo CD release: the newest patch of the current stable 3.x minor at
/// this release (3.5; Argo CD supports its three newest minors), whose `install.yaml`
/// checksum is pinned in `comind-gitops`.
pub const DEFAULT_ARGOCD_VERSION: &str = "v3.5.1";
/// The default image of the local Git server: the Git project's own `git daemon`
/// (packaged by alpine/git, rebuilt with every Git release; 2.49 is a maintained Git
/// line), serving the repository over the Git protocol, which Argo CD pulls from. A
/// tag, never `latest`, so every machine runs the same server.
pub const DEFAULT_GIT_SERVER_IMAGE: &str = "alpine/git:v2.49.1";
/// The image of the backup Jobs' object-store steps (upload, mirror, retention).
/// rclone: maintained, one static binary that speaks S3 to MinIO and AWS alike, and
/// copies incrementally with checksums. Pinned, never `latest`.
pub const DEFAULT_RCLONE_IMAGE: &str = "rclone/rclone:1.71.2";

/// The default Kubernetes version of an EKS cluster: a version in EKS's standard
/// support at this release (older ones cost extra in extended support, then are
/// upgraded by AWS).
pub const DEFAULT_EKS_VERSION: &str = "1.35";

/// The oldest Kubernetes minor the platform supports: the objects the in-cluster
/// layer renders are those of this API (its `k8s-openapi` types).
pub const OLDEST_KUBERNETES: (u32, u32) = (1, 33);

/// The whole configuration of one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The environment's name; part of every resource name. Default `dev`.
    pub environment: EnvironmentName,
    /// `local` or `aws`. Default `local`.
    pub profile: Profile,
    /// Marks a production environment: destructive changes need explicit confirmation.
    pub production: bool,
    /// Where credentials, kubeconfigs, the lock and the last event log live. Default
    /// `$COMIND_STATE_DIR`, else `$XDG_STATE_HOME/comind`, else `~/.local/state/comind`.
    pub state_dir: Option<PathBuf>,
    /// How the engine runs phases.
    pub engine: EngineSettings,
    /// Per-phase overrides, by phase id.
    pub phases: BTreeMap<String, PhaseSettings>,
    /// The platform services.
    pub services: Services,
    /// Settings of the local profile.
    pub local: LocalSettings,
    /// Settings of the AWS profile.
    pub aws: AwsSettings,
    /// How Comind reaches the cluster it lays the platform on.
    pub gitops: GitopsSettings,
    /// The platform laid on the cluster: namespaces, quotas, limits, RBAC.
    pub platform: PlatformSettings,
    /// Where each value came from; not part of the file.
    #[serde(skip)]
    pub(crate) origins: Origins,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            environment: EnvironmentName::default(),
            profile: Profile::Local,
            production: false,
            state_dir: None,
            engine: EngineSettings::default(),
            phases: BTreeMap::new(),
            services: Services::default(),
            local: LocalSettings::default(),
            aws: AwsSettings::default(),
            gitops: GitopsSettings::default(),
            platform: PlatformSettings::default(),
            origins: Origins::default(),
        }
    }
}

/// How the engine schedules, times and retries phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// How many phases may run at once. Default 64: independent phases of a normal
    /// bootstrap never wait for each other.
    pub concurrency: u32,
    /// Default time a phase may take, retries included. Default `30m`.
    pub timeout: DurationSetting,
    /// How many times a transient failure is retried. Default 3.
    pub retries: u32,
    /// First retry delay; doubles each attempt, with jitter. Default `1s`.
    pub retry_delay: DurationSetting,
    /// Longest retry delay. Default `30s`.
    pub retry_max_delay: DurationSetting,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            concurrency: 64,
            timeout: DurationSetting::minutes(30),
            retries: 3,
            retry_delay: DurationSetting::seconds(1),
            retry_max_delay: DurationSetting::seconds(30),
        }
    }
}

/// Overrides for one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhaseSettings {
    /// Time the phase may take, retries included.
    pub timeout: Option<DurationSetting>,
    /// How many times a transient failure is retried.
    pub retries: Option<u32>,
}

/// The platform services.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Services {
    /// PostgreSQL (required).
    pub postgres: PostgresSettings,
    /// S3-compatible object storage (required).
    pub object_store: ObjectStoreSettings,
    /// Redis (optional).
    pub cache: CacheSettings,
    /// SQS-compatible queues (optional).
    pub queue: QueueSettings,
}

/// PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Must stay `true`: the platform needs PostgreSQL.
    pub enabled: bool,
    /// Databases to create. Default `[dev]`.
    pub databases: Vec<Identifier>,
    /// The application role that owns the databases. Default `app`.
    pub user: Identifier,
    /// Local profile: the container.
    pub local: PostgresLocal,
    /// AWS profile: the RDS instance.
    pub aws: RdsSettings,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            enabled: true,
            databases: vec![ident("dev")],
            user: ident("app"),
            local: PostgresLocal::default(),
            aws: RdsSettings::default(),
        }
    }
}

/// The local PostgreSQL container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresLocal {
    /// Image. Default [`DEFAULT_POSTGRES_IMAGE`].
    pub image: ImageRef,
    /// Host port on 127.0.0.1. Default 5432.
    pub port: Port,
}

impl Default for PostgresLocal {
    fn default() -> Self {
        PostgresLocal {
            image: image(DEFAULT_POSTGRES_IMAGE),
            port: Port::constant(5432),
        }
    }
}

/// The RDS PostgreSQL instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RdsSettings {
    /// Instance class. Default `db.t4g.micro`.
    pub instance_class: String,
    /// Allocated storage in GiB. Default 20.
    pub storage_gb: u32,
    /// PostgreSQL engine version. Default `16.4`.
    pub engine_version: String,
    /// Days of automated backups. Default 7.
    pub backup_retention_days: u32,
    /// Standby in a second availability zone. Default `false`.
    pub multi_az: bool,
    /// How many final snapshots `down` keeps, newest first; older ones of ours go
    /// when `down` takes a new one. At least 1: the newest is what `up` restores.
    /// Default 1.
    pub final_snapshots: u32,
}

impl Default for RdsSettings {
    fn default() -> Self {
        RdsSettings {
            instance_class: "db.t4g.micro".to_string(),
            storage_gb: 20,
            engine_version: "16.4".to_string(),
            backup_retention_days: 7,
            multi_az: false,
            final_snapshots: 1,
        }
    }
}

/// S3-compatible object storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreSettings {
    /// Must stay `true`: backups and uploads need it.
    pub enabled: bool,
    /// Buckets to create; each is named `comind-<env>-<bucket>`. Default
    /// `[backups, uploads]`.
    pub buckets: Vec<ResourceName>,
    /// The bucket that receives backups and carries the expiry rule. Default `backups`.
    pub backup_bucket: ResourceName,
    /// Days backups are kept. Default 7.
    pub backup_retention_days: u32,
    /// Local profile: the MinIO container.
    pub local: ObjectStoreLocal,
}

impl Default for ObjectStoreSettings {
    fn default() -> Self {
        ObjectStoreSettings {
            enabled: true,
            buckets: vec![name("backups"), name("uploads")],
            backup_bucket: name("backups"),
            backup_retention_days: 7,
            local: ObjectStoreLocal::default(),
        }
    }
}

/// The local MinIO container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreLocal {
    /// Image. Default [`DEFAULT_MINIO_IMAGE`].
    pub image: ImageRef,
    /// S3 API host port on 127.0.0.1. Default 9000.
    pub port: Port,
    /// Console host port on 127.0.0.1. Default 9001.
    pub console_port: Port,
}

impl Default for ObjectStoreLocal {
    fn default() -> Self {
        ObjectStoreLocal {
            image: image(DEFAULT_MINIO_IMAGE),
            port: Port::constant(9000),
            console_port: Port::constant(9001),
        }
    }
}

/// Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Whether to run it. Default `true`.
    pub enabled: bool,
    /// Local profile: the container.
    pub local: CacheLocal,
    /// AWS profile: the ElastiCache replication group.
    pub aws: ElastiCacheSettings,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            local: CacheLocal::default(),
            aws: ElastiCacheSettings::default(),
        }
    }
}

/// The local Redis container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheLocal {
    /// Image. Default [`DEFAULT_REDIS_IMAGE`].
    pub image: ImageRef,
    /// Host port on 127.0.0.1. Default 6379.
    pub port: Port,
}

impl Default for CacheLocal {
    fn default() -> Self {
        CacheLocal {
            image: image(DEFAULT_REDIS_IMAGE),
            port: Port::constant(6379),
        }
    }
}

/// The ElastiCache Redis replication group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElastiCacheSettings {
    /// Node type. Default `cache.t4g.micro`.
    pub node_type: String,
    /// Read replicas besides the primary. Default 1.
    pub replicas: u32,
    /// Redis engine version. Default `7.1`.
    pub engine_version: String,
    /// How many final snapshots `down` keeps, newest first; older ones of ours go
    /// when `down` takes a new one. At least 1: the newest is what `up` restores.
    /// Default 1.
    pub final_snapshots: u32,
}

impl Default for ElastiCacheSettings {
    fn default() -> Self {
        ElastiCacheSettings {
            node_type: "cache.t4g.micro".to_string(),
            replicas: 1,
            engine_version: "7.1".to_string(),
            final_snapshots: 1,
        }
    }
}

/// SQS-compatible queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Whether to run it. Default `true`.
    pub enabled: bool,
    /// Queues to create, each with a dead-letter queue `<name>-dlq`. Default `[jobs]`.
    pub queues: Vec<ResourceName>,
    /// Receives before a message moves to the dead-letter queue. Default 5.
    pub max_receive_count: u32,
    /// Local profile: the ElasticMQ container.
    pub local: QueueLocal,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            enabled: true,
            queues: vec![name("jobs")],
            max_receive_count: 5,
            local: QueueLocal::default(),
        }
    }
}

/// The local ElasticMQ container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueLocal {
    /// Image. Default [`DEFAULT_ELASTICMQ_IMAGE`].
    pub image: ImageRef,
    /// Host port on 127.0.0.1. Default 9324.
    pub port: Port,
}

impl Default for QueueLocal {
    fn default() -> Self {
        QueueLocal {
            image: image(DEFAULT_ELASTICMQ_IMAGE),
            port: Port::constant(9324),
        }
    }
}

/// Settings of the local profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSettings {
    /// The Docker network the services and the cluster share. Default `comind-<env>`.
    pub network: Option<ResourceName>,
    /// How long a service may take to answer its probe after starting. Default `2m`.
    pub ready_timeout: DurationSetting,
    /// Docker Engine API endpoint. Default: `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
    /// The k3d cluster.
    pub cluster: K3dSettings,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            network: None,
            ready_timeout: DurationSetting::minutes(2),
            docker_host: None,
            cluster: K3dSettings::default(),
        }
    }
}

/// The local k3d cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct K3dSettings {
    /// Whether the local profile makes the cluster and its registry. Default `true`;
    /// `false` runs the services alone (for applications run on the host), as does
    /// `gitops.kubeconfig` (the platform then goes on that cluster).
    pub enabled: bool,
    /// The `k3d` binary (v5): a path, or a name looked up on `PATH`. Default `k3d`.
    pub k3d: PathBuf,
    /// The k3s image of every node. Default [`DEFAULT_K3S_IMAGE`].
    pub image: ImageRef,
    /// What serves Services of type LoadBalancer. Default `servicelb`.
    pub load_balancer: LoadBalancer,
    /// The registry's image. Default [`DEFAULT_REGISTRY_IMAGE`].
    pub registry_image: ImageRef,
    /// Server nodes. Default 1.
    pub servers: u32,
    /// Agent nodes. Default 2.
    pub agents: u32,
    /// Kubernetes API host port. Default 6443.
    pub api_port: Port,
    /// Ingress HTTP host port. Default 8080.
    pub http_port: Port,
    /// Ingress HTTPS host port. Default 8443.
    pub https_port: Port,
    /// Image registry host port. Default 5000.
    pub registry_port: Port,
    /// The registry's scheduled garbage collection (a CronJob of `platform/registry`).
    pub registry_gc: RegistryGcSettings,
}

impl Default for K3dSettings {
    fn default() -> Self {
        K3dSettings {
            enabled: true,
            k3d: PathBuf::from("k3d"),
            image: image(DEFAULT_K3S_IMAGE),
            load_balancer: LoadBalancer::default(),
            registry_image: image(DEFAULT_REGISTRY_IMAGE),
            servers: 1,
            agents: 2,
            api_port: Port::constant(6443),
            http_port: Port::constant(8080),
            https_port: Port::constant(8443),
            registry_port: Port::constant(5000),
            registry_gc: RegistryGcSettings::default(),
        }
    }
}

/// The registry's scheduled garbage collection: a CronJob in `platform-<env>` that runs
/// the registry image's own collector (`registry garbage-collect --delete-untagged`) on
/// the registry's data, which the cluster's server nodes mount. It deletes what no tag
/// references any more, as `comind registry gc` does on demand. Distribution's
/// collector does not see a push in flight, so schedule it when nobody pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryGcSettings {
    /// Whether the CronJob exists (and the server nodes mount the registry's data).
    /// Default `true`.
    pub enabled: bool,
    /// When it runs (cron). Default `30 4 * * 0` (Sundays 04:30, after the backups).
    pub schedule: String,
    /// The time zone of the schedule (an IANA name). Default `UTC`.
    pub time_zone: String,
}

impl Default for RegistryGcSettings {
    fn default() -> Self {
        RegistryGcSettings {
            enabled: true,
            schedule: "30 4 * * 0".to_string(),
            time_zone: "UTC".to_string(),
        }
    }
}

/// What serves Services of type LoadBalancer in the local cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancer {
    /// k3s's own ServiceLB (klipper-lb): nothing to install.
    #[default]
    Servicelb,
    /// MetalLB, with an address pool taken from the Docker network's real subnet;
    /// k3s's ServiceLB is then disabled.
    Metallb,
}

/// Settings of the AWS profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsSettings {
    /// Region. Default: the standard AWS chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Endpoint override for every service. Default: `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint_url: Option<String>,
    /// The VPC.
    pub vpc: VpcSettings,
    /// The EKS cluster.
    pub cluster: EksSettings,
    /// How long to wait for each kind of resource to become available.
    pub timeouts: AwsTimeouts,
    /// Where the environment's long-lived secrets (the Sealed Secrets controller's
    /// key) are kept. Default `state`, the state directory.
    pub secret_store: SecretStoreKind,
}

/// Where an environment on AWS keeps the secrets it makes once (the sealing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretStoreKind {
    /// The state directory (`credentials/`, 0600): back it up.
    #[default]
    State,
    /// AWS Secrets Manager, secret `comind/<environment>/<name>` in the environment's
    /// region, tagged as Comind's: shared by everyone who runs the environment, and
    /// kept when a state directory is lost.
    SecretsManager,
}

/// The environment's VPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VpcSettings {
    /// Use this existing VPC instead of creating one. It is never deleted.
    pub id: Option<String>,
    /// Subnets of the existing VPC to use (at least two availability zones).
    pub subnet_ids: Vec<String>,
    /// CIDR of the VPC Comind creates. Default `10.40.0.0/16`.
    pub cidr: String,
}

impl Default for VpcSettings {
    fn default() -> Self {
        VpcSettings {
            id: None,
            subnet_ids: Vec::new(),
            cidr: "10.40.0.0/16".to_string(),
        }
    }
}

/// The EKS cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EksSettings {
    /// Kubernetes version. Default [`DEFAULT_EKS_VERSION`].
    pub version: String,
    /// The managed node group.
    pub node_group: NodeGroupSettings,
    /// IAM principals (roles or users, by ARN) given Kubernetes groups of the
    /// baseline through EKS access entries. The identity that runs Comind gets
    /// cluster admin through an entry of its own, whatever this lists.
    pub access: Vec<ClusterAccess>,
    /// The CIDRs the public API endpoint answers (the private endpoint is always on).
    /// Default: `0.0.0.0/0` outside production (with a `doctor` warning); a
    /// production environment must name them.
    pub public_access_cidrs: Option<Vec<String>>,
    /// EKS managed add-on versions, by add-on name (`vpc-cni`, `coredns`,
    /// `kube-proxy`, `eks-pod-identity-agent`, `aws-ebs-csi-driver`). Default: the
    /// version EKS names the default for the cluster's Kubernetes version.
    pub addon_versions: BTreeMap<String, String>,
}

impl Default for EksSettings {
    fn default() -> Self {
        EksSettings {
            version: DEFAULT_EKS_VERSION.to_string(),
            node_group: NodeGroupSettings::default(),
            access: Vec::new(),
            public_access_cidrs: None,
            addon_versions: BTreeMap::new(),
        }
    }
}

/// The Kubernetes groups of the platform's baseline an access entry may carry.
pub const CLUSTER_ACCESS_GROUPS: [&str; 3] =
    ["platform:admin", "platform:developer", "platform:readonly"];

/// The EKS managed add-ons Comind installs, in the order they are installed.
pub const EKS_ADDONS: [&str; 5] = [
    "vpc-cni",
    "kube-proxy",
    "coredns",
    "eks-pod-identity-agent",
    "aws-ebs-csi-driver",
];

/// One IAM principal and the Kubernetes groups it gets, through an EKS access entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterAccess {
    /// The ARN of an IAM role (`arn:aws:iam::<account>:role/<name>`) or user.
    pub principal: String,
    /// Groups of [`CLUSTER_ACCESS_GROUPS`].
    pub groups: Vec<String>,
}

/// The EKS managed node group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeGroupSettings {
    /// Instance types. Default `[t3.large]`.
    pub instance_types: Vec<String>,
    /// Minimum nodes. Default 2.
    pub min_size: u32,
    /// Maximum nodes. Default 4.
    pub max_size: u32,
    /// Desired nodes. Default 2.
    pub desired_size: u32,
    /// Root volume size in GiB. Default 50.
    pub disk_gb: u32,
}

impl Default for NodeGroupSettings {
    fn default() -> Self {
        NodeGroupSettings {
            instance_types: vec!["t3.large".to_string()],
            min_size: 2,
            max_size: 4,
            desired_size: 2,
            disk_gb: 50,
        }
    }
}

/// How long to wait for AWS resources; generous enough for real AWS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsTimeouts {
    /// EKS cluster. Default `30m`.
    pub cluster: DurationSetting,
    /// EKS node group. Default `30m`.
    pub node_group: DurationSetting,
    /// RDS instance. Default `45m`.
    pub database: DurationSetting,
    /// ElastiCache replication group. Default `30m`.
    pub cache: DurationSetting,
    /// Each EKS managed add-on. Default `20m`.
    pub addon: DurationSetting,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            cluster: DurationSetting::minutes(30),
            node_group: DurationSetting::minutes(30),
            database: DurationSetting::minutes(45),
            cache: DurationSetting::minutes(30),
            addon: DurationSetting::minutes(20),
        }
    }
}

/// How Comind reaches the cluster it lays the platform on, and the GitOps layer on it:
/// Argo CD and the repository it deploys from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitopsSettings {
    /// A kubeconfig of an existing cluster to lay the platform on, instead of the
    /// cluster the profile makes: the profile's cluster phase is then left out (its
    /// services still run). Default: none, the profile's own cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The context of `kubeconfig` to use. Default: its current context.
    pub context: Option<String>,
    /// The DNS domain the platform's consoles are served under (`argocd.<domain>`),
    /// one you control, such as the seed's `comind.pro`. Default: none; the local
    /// profile then serves them at `<console>.<env>.127.0.0.1.nip.io`, and a cluster
    /// elsewhere needs it.
    pub domain: Option<String>,
    /// Argo CD.
    pub argocd: ArgocdSettings,
    /// The GitOps repository Argo CD deploys from.
    pub repo: RepoSettings,
    /// The platform's add-ons, each an Argo CD Application of a pinned chart.
    pub addons: AddonsSettings,
}

/// The platform's add-ons.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddonsSettings {
    /// The Sealed Secrets controller.
    pub sealed_secrets: AddonSettings,
    /// kube-prometheus-stack: Prometheus, Grafana, Alertmanager.
    pub monitoring: AddonSettings,
    /// MetalLB, installed only with `local.cluster.load_balancer: metallb`.
    pub metallb: AddonSettings,
    /// The AWS Load Balancer Controller (the `alb` ingress class), on the aws profile
    /// only.
    pub load_balancer_controller: AddonSettings,
}

/// One add-on: on or off, re-pinned, with values of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddonSettings {
    /// Whether to install it. Default `true`.
    pub enabled: bool,
    /// The chart version instead of Comind's pin.
    pub version: Option<String>,
    /// The Helm repository instead of the chart's own (a mirror).
    pub repo_url: Option<String>,
    /// Helm values merged over Comind's, key by key (yours win). No secrets here:
    /// this file is not a vault, and values end up in the Application object.
    pub values: Option<serde_json::Value>,
}

impl Default for AddonSettings {
    fn default() -> Self {
        AddonSettings {
            enabled: true,
            version: None,
            repo_url: None,
            values: None,
        }
    }
}

/// The Argo CD release Comind installs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArgocdSettings {
    /// Whether to install Argo CD (and the GitOps wiring on it). Default `true`.
    pub enabled: bool,
    /// The release. Default [`DEFAULT_ARGOCD_VERSION`]; another needs `sha256`.
    pub version: String,
    /// Where its `install.yaml` comes from instead of the release's URL: a local file
    /// (air-gapped installs) or an `https://` URL (a mirror). A URL needs `sha256`.
    pub manifest: Option<String>,
    /// The SHA-256 (hex) the manifest must have. Default: the pinned sum of the
    /// default release's `install.yaml`.
    pub sha256: Option<String>,
    /// How long each of Comind's Applications may take to be synced and healthy.
    /// Default `10m`.
    pub sync_timeout: DurationSetting,
    /// How long an Application may stay `Degraded` before `up` fails (a rollout passes
    /// through it). Default `2m`.
    pub degraded_grace: DurationSetting,
}

impl Default for ArgocdSettings {
    fn default() -> Self {
        ArgocdSettings {
            enabled: true,
            version: DEFAULT_ARGOCD_VERSION.to_string(),
            manifest: None,
            sha256: None,
            sync_timeout: DurationSetting::minutes(10),
            degraded_grace: DurationSetting::minutes(2),
        }
    }
}

/// The GitOps repository: the source of truth Argo CD deploys the platform's
/// environments (`<path>/envs/<env>`) and the applications (`<path>/apps/<team>/<app>`)
/// from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepoSettings {
    /// The repository's URL (`https://…`, `ssh://…`, `git@host:path`), or `local`: a Git
    /// server Comind runs on the local profile's network, which `comind gitops push`
    /// fills. Default `local`.
    pub url: String,
    /// The branch, tag or commit Argo CD follows. Default `main`.
    pub revision: String,
    /// The directory in the repository that holds `envs/` and `apps/`. Default `.`.
    pub path: String,
    /// The user name for a token (HTTPS). Default `git`.
    pub username: String,
    /// A file holding an HTTPS access token. Never the token itself in this file.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding an HTTPS access token.
    pub token_env: Option<String>,
    /// A file holding an SSH private key.
    pub ssh_key_file: Option<PathBuf>,
    /// An environment variable holding an SSH private key.
    pub ssh_key_env: Option<String>,
    /// A known hosts file (OpenSSH's format) that `comind app deploy` checks an SSH
    /// remote's host key against, instead of ssh's own (`~/.ssh/known_hosts`).
    pub ssh_known_hosts: Option<PathBuf>,
    /// The local Git server (`url: local`).
    pub local: GitServerLocal,
}

impl Default for RepoSettings {
    fn default() -> Self {
        RepoSettings {
            url: LOCAL_REPO.to_string(),
            revision: "main".to_string(),
            path: ".".to_string(),
            username: "git".to_string(),
            token_file: None,
            token_env: None,
            ssh_key_file: None,
            ssh_key_env: None,
            ssh_known_hosts: None,
            local: GitServerLocal::default(),
        }
    }
}

impl RepoSettings {
    /// Whether the repository is the local Git server Comind runs.
    pub fn is_local(&self) -> bool {
        self.url == LOCAL_REPO
    }
}

/// The value of `gitops.repo.url` that asks for the local Git server.
pub const LOCAL_REPO: &str = "local";

/// The local Git server container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitServerLocal {
    /// Image. Default [`DEFAULT_GIT_SERVER_IMAGE`].
    pub image: ImageRef,
    /// Host port on 127.0.0.1. Default 9418 (the Git protocol's).
    pub port: Port,
}

impl Default for GitServerLocal {
    fn default() -> Self {
        GitServerLocal {
            image: image(DEFAULT_GIT_SERVER_IMAGE),
            port: Port::constant(9418),
        }
    }
}

/// The platform baseline: namespaces, quotas, limits and the groups of its roles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformSettings {
    /// Team namespaces for applications, each with the baseline's quota, limits and
    /// network policies. Default: none (`user-apps` is always there).
    pub teams: Vec<ResourceName>,
    /// The quota of every platform namespace. Defaults are small in a dev environment
    /// and larger when `production: true`.
    pub quota: QuotaSettings,
    /// The default requests and limits of a container that sets none (LimitRange).
    pub limits: LimitSettings,
    /// Which groups get the platform's roles.
    pub rbac: RbacSettings,
    /// The daily backups of the platform services (`platform/backups`).
    pub backups: BackupSettings,
}

/// The backup CronJobs: PostgreSQL dumps and object-store mirrors into the backup
/// bucket (`services.object_store.backup_bucket`), kept for
/// `services.object_store.backup_retention_days`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Whether the CronJobs exist. Default `true`.
    pub enabled: bool,
    /// The time zone of the schedules (an IANA name). Default `UTC`.
    pub time_zone: String,
    /// When PostgreSQL is dumped (cron). Default `0 3 * * *` (03:00).
    pub postgres_schedule: String,
    /// When the buckets are mirrored (cron). Default `0 4 * * *` (04:00).
    pub objects_schedule: String,
    /// The image of the dump and restore steps (`pg_dumpall`, `psql`); it must be
    /// of the server's major version or newer. Default: the local PostgreSQL
    /// service's image, or `postgres:<engine major>-alpine` on AWS.
    pub postgres_image: Option<ImageRef>,
    /// The image of the object-store steps. Default [`DEFAULT_RCLONE_IMAGE`].
    pub rclone_image: ImageRef,
    /// The size limit of a Job's scratch volume, where the dump is written and
    /// checked before upload. Default `10Gi`.
    pub scratch_size: Quantity,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            enabled: true,
            time_zone: "UTC".to_string(),
            postgres_schedule: "0 3 * * *".to_string(),
            objects_schedule: "0 4 * * *".to_string(),
            postgres_image: None,
            rclone_image: image(DEFAULT_RCLONE_IMAGE),
            scratch_size: Quantity::new("10Gi")
                .unwrap_or_else(|_| unreachable!("a literal quantity")),
        }
    }
}

/// A namespace's ResourceQuota; unset fields take the environment's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSettings {
    /// Sum of CPU requests. Default `4` (dev) or `16` (production).
    pub requests_cpu: Option<Quantity>,
    /// Sum of memory requests. Default `8Gi` or `32Gi`.
    pub requests_memory: Option<Quantity>,
    /// Sum of CPU limits. Default `8` or `32`.
    pub limits_cpu: Option<Quantity>,
    /// Sum of memory limits. Default `16Gi` or `64Gi`.
    pub limits_memory: Option<Quantity>,
    /// Pods. Default 50 or 200.
    pub pods: Option<u32>,
}

/// A namespace's LimitRange for containers; unset fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// CPU request of a container that sets none. Default `100m`.
    pub default_request_cpu: Option<Quantity>,
    /// Memory request of a container that sets none. Default `128Mi`.
    pub default_request_memory: Option<Quantity>,
    /// CPU limit of a container that sets none. Default `500m` (dev) or `1` (production).
    pub default_cpu: Option<Quantity>,
    /// Memory limit of a container that sets none. Default `512Mi` or `1Gi`.
    pub default_memory: Option<Quantity>,
}

/// The groups bound to the platform's ClusterRoles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RbacSettings {
    /// Groups bound to `platform:admin`. Default `[platform:admin]`.
    pub admin_groups: Vec<String>,
    /// Groups bound to `platform:developer`. Default `[platform:developer]`.
    pub developer_groups: Vec<String>,
    /// Groups bound to `platform:readonly`. Default `[platform:readonly]`.
    pub readonly_groups: Vec<String>,
}

impl Default for RbacSettings {
    fn default() -> Self {
        RbacSettings {
            admin_groups: vec!["platform:admin".to_string()],
            developer_groups: vec!["platform:developer".to_string()],
            readonly_groups: vec!["platform:readonly".to_string()],
        }
    }
}

//! The commented `comind.yaml` that `comind init` writes.

/// A complete, commented configuration whose active lines equal the defaults. Every
/// commented line shows a field with its default value.
pub const INIT_TEMPLATE: &str = r#"# comind.yaml: one environment of the Comind-Ops platform.
# Every field has a default; delete what you do not change.
# Any field can also be set from the environment, e.g.
#   COMIND_ENV=staging  COMIND_SERVICES__POSTGRES__LOCAL__PORT=5433

# Name of the environment: lowercase letters, digits and '-', starting with a letter,
# at most 20 characters. Part of every resource name (comind-<environment>-postgres).
environment: dev

# Where it runs: local (k3d + Docker on this machine) or aws (EKS, RDS, S3,
# ElastiCache, SQS).
profile: local

# A production environment refuses destructive changes without explicit confirmation.
# production: false

# Generated credentials, kubeconfigs, the lock and the last run's event log.
# state_dir: ~/.local/state/comind

# engine:
#   concurrency: 64        # phases running at once
#   timeout: 30m           # default time a phase may take, retries included
#   retries: 3             # retries of transient failures, with backoff and jitter
#   retry_delay: 1s
#   retry_max_delay: 30s

# Per-phase overrides, by phase id (see `comind plan`):
# phases:
#   postgres:
#     timeout: 10m
#     retries: 5

services:
  postgres:                # required
    databases: [dev]
    user: app
    # local:
    #   image: postgres:16.6-alpine
    #   port: 5432
    # aws:
    #   instance_class: db.t4g.micro
    #   storage_gb: 20
    #   engine_version: "16.4"
    #   backup_retention_days: 7
    #   multi_az: false
    #   final_snapshots: 1   # kept by `down`, newest first

  object_store:            # required
    buckets: [backups, uploads]
    # backup_bucket: backups
    # backup_retention_days: 7
    # local:
    #   image: minio/minio:RELEASE.2025-04-22T22-12-26Z
    #   port: 9000
    #   console_port: 9001

  cache:
    enabled: true
    # local:
    #   image: redis:7.4.2-alpine
    #   port: 6379
    # aws:
    #   node_type: cache.t4g.micro
    #   replicas: 1
    #   engine_version: "7.1"
    #   final_snapshots: 1   # kept by `down`, newest first

  queue:
    enabled: true
    queues: [jobs]           # each gets a dead-letter queue <name>-dlq
    # max_receive_count: 5
    # local:
    #   image: softwaremill/elasticmq-native:1.6.11
    #   port: 9324

# local:
#   network: comind-dev      # default comind-<environment>
#   ready_timeout: 2m
#   docker_host: unix:///var/run/docker.sock
#   cluster:
#     enabled: true          # false: the services alone, no cluster or registry
#     k3d: k3d               # the k3d v5 binary (a path, or a name on PATH)
#     image: rancher/k3s:v1.36.2-k3s1
#     load_balancer: servicelb   # or metallb
#     registry_image: registry:3.0.0
#     servers: 1
#     agents: 2
#     api_port: 6443
#     http_port: 8080
#     https_port: 8443
#     registry_port: 5000
#     registry_gc:           # the registry's weekly garbage collection (a CronJob)
#       enabled: true
#       schedule: "30 4 * * 0"
#       time_zone: UTC

# aws:
#   region: eu-west-1        # default: the AWS chain (AWS_REGION, ~/.aws/config)
#   endpoint_url: http://127.0.0.1:5000   # default: AWS_ENDPOINT_URL, else AWS
#   vpc:
#     cidr: 10.40.0.0/16
#     # id: vpc-0123456789abcdef0          # use an existing VPC instead
#     # subnet_ids: [subnet-a, subnet-b]
#   cluster:
#     version: "1.35"
#     node_group:
#       instance_types: [t3.large]
#       min_size: 2
#       max_size: 4
#       desired_size: 2
#       disk_gb: 50
#     # IAM principals given the baseline's groups (platform:admin, platform:developer,
#     # platform:readonly) through EKS access entries:
#     access: [{principal: "arn:aws:iam::123456789012:role/Developers", groups: [platform:developer]}]
#     public_access_cidrs: [203.0.113.0/24]   # default 0.0.0.0/0; required when production
#     addon_versions: {vpc-cni: v1.20.4-eksbuild.2}   # default: EKS's for the Kubernetes version
#   secret_store: state      # or secrets-manager: the Sealed Secrets key in AWS Secrets Manager
#   timeouts:
#     cluster: 30m
#     node_group: 30m
#     database: 45m
#     cache: 30m
#     addon: 20m

# gitops:
#   # Lay the platform on an existing cluster instead of the one the profile makes:
#   kubeconfig: ~/.kube/config
#   context: my-cluster      # default: the kubeconfig's current context
#   domain: comind.pro       # consoles at argocd.<domain>; default (local) <console>.<env>.127.0.0.1.nip.io
#   argocd:
#     enabled: true
#     version: v3.5.1        # another release needs its install.yaml's sha256
#     # manifest: ./install.yaml   # a local file or an https:// mirror instead of the release URL
#     # sha256: 795a3a97…           # the manifest's SHA-256; default: v3.5.1's, pinned
#     sync_timeout: 10m      # for each of Comind's Applications to be synced and healthy
#     degraded_grace: 2m     # how long one may stay Degraded before up fails
#   repo:                    # the GitOps repository Argo CD deploys from
#     url: local             # a Git server on the local network, filled by `comind gitops push`
#     revision: main
#     path: .                # the directory holding envs/ and apps/
#     username: git
#     # For a remote url, one credential, read from a file or the environment (never
#     # written here): token_file, token_env (HTTPS), ssh_key_file or ssh_key_env (SSH).
#     # Argo CD reads with it; `comind app deploy` pushes with it (over SSH it runs
#     # OpenSSH's `ssh`, which also checks the host key against ssh_known_hosts: FILE,
#     # default ~/.ssh/known_hosts).
#     local:
#       image: alpine/git:v2.49.1
#       port: 9418
#   addons:                  # each an Argo CD Application of a pinned Helm chart
#     sealed_secrets:
#       enabled: true
#       # version: 2.18.4      # the chart version instead of Comind's pin
#       # repo_url: https://charts.example/mirror
#     monitoring:            # kube-prometheus-stack; Grafana at grafana.<env>.127.0.0.1.nip.io
#       enabled: true
#     metallb:               # only with local.cluster.load_balancer: metallb
#       enabled: true
#     load_balancer_controller:  # aws profile: the AWS Load Balancer Controller (ingress class alb)
#       enabled: true
#       # values: {prometheus: {prometheusSpec: {retention: 7d}}}

# The platform baseline inside the cluster:
# platform:
#   teams: [backend]         # team namespaces, with the same quota, limits and policies
#   quota:                   # per namespace; defaults are larger when production: true
#     requests_cpu: "4"
#     requests_memory: 8Gi
#     limits_cpu: "8"
#     limits_memory: 16Gi
#     pods: 50
#   limits:                  # for containers that set none
#     default_request_cpu: 100m
#     default_request_memory: 128Mi
#     default_cpu: 500m
#     default_memory: 512Mi
#   rbac:
#     admin_groups: [platform:admin]
#     developer_groups: [platform:developer]
#     readonly_groups: [platform:readonly]
#   backups:                 # CronJobs in platform-<env>, into services.object_store.backup_bucket
#     enabled: true
#     time_zone: UTC
#     postgres_schedule: 0 3 * * *
#     objects_schedule: 0 4 * * *
#     # postgres_image: postgres:16.6-alpine   # default: the PostgreSQL service's (local) or postgres:<major>-alpine (aws)
#     rclone_image: rclone/rclone:1.71.2
#     scratch_size: 10Gi
"#;

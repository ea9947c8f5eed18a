//! Checks that span more than one field, or that a single type cannot express.

use std::collections::HashMap;

use super::{Config, Problem};

/// SQS allows a maximum receive count from 1 to 1000.
const MAX_RECEIVE_COUNT: u32 = 1000;
/// Bucket names are global in S3 and limited to 63 characters.
const MAX_BUCKET_NAME: usize = 63;
/// SQS queue names are limited to 80 characters.
const MAX_QUEUE_NAME: usize = 80;

pub(super) fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_engine(config, &mut problems);
    check_required_services(config, &mut problems);
    check_lists(config, &mut problems);
    check_ports(config, &mut problems);
    check_aws(config, &mut problems);
    check_platform(config, &mut problems);
    check_gitops(config, &mut problems);
    problems
}

fn is_sha256(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A DNS subdomain (RFC 1123): dot-separated labels of lowercase letters, digits and
/// `-`, at most 253 characters.
fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn check_gitops(config: &Config, problems: &mut Vec<Problem>) {
    let gitops = &config.gitops;
    let argocd = &gitops.argocd;
    if let Some(domain) = &gitops.domain
        && !is_dns_subdomain(domain)
    {
        problems.push(config.problem(
            "gitops.domain",
            format!("`{domain}` is not a DNS domain: use lowercase labels such as `comind.pro`"),
        ));
    }
    if let Some(sum) = &argocd.sha256
        && !is_sha256(sum)
    {
        problems.push(config.problem(
            "gitops.argocd.sha256",
            "the checksum must be 64 hexadecimal digits (a SHA-256, as `sha256sum` prints it)",
        ));
    }
    if !argocd.version.starts_with('v') || argocd.version.contains(['/', ' ']) {
        problems.push(config.problem(
            "gitops.argocd.version",
            format!(
                "`{}` is not an Argo CD release tag: use one such as `{}`",
                argocd.version,
                super::DEFAULT_ARGOCD_VERSION
            ),
        ));
    }
    let remote = argocd
        .manifest
        .as_deref()
        .is_some_and(|m| m.starts_with("https://") || m.starts_with("http://"));
    if argocd.sha256.is_none() && remote {
        problems.push(config.problem(
            "gitops.argocd.manifest",
            "a manifest fetched from a URL needs its checksum in `gitops.argocd.sha256`",
        ));
    }
    if argocd.sha256.is_none()
        && argocd.manifest.is_none()
        && argocd.version != super::DEFAULT_ARGOCD_VERSION
    {
        problems.push(config.problem(
            "gitops.argocd.version",
            format!(
                "Comind pins the checksum of {} only: give the checksum of {}'s `install.yaml` \
                 in `gitops.argocd.sha256`",
                super::DEFAULT_ARGOCD_VERSION,
                argocd.version
            ),
        ));
    }
    let repo = &gitops.repo;
    for (field, value) in [("url", &repo.url), ("revision", &repo.revision)] {
        if value.trim().is_empty() {
            problems.push(config.problem(
                &format!("gitops.repo.{field}"),
                format!("the repository's {field} must not be empty"),
            ));
        }
    }
    if repo.path.starts_with('/') || repo.path.split('/').any(|part| part == "..") {
        problems.push(config.problem(
            "gitops.repo.path",
            format!(
                "`{}` must be a directory inside the repository: a relative path without `..`",
                repo.path
            ),
        ));
    }
    // `https://user:token@host/...` would put the token in this file.
    if let Some((_, rest)) = repo.url.split_once("://")
        && rest
            .split('/')
            .next()
            // `user:password@`, not `user@host:port`.
            .and_then(|authority| authority.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    {
        problems.push(config.problem(
            "gitops.repo.url",
            "the URL carries a password: remove it and name a file or an environment variable \
             holding the token in `gitops.repo.token_file` or `gitops.repo.token_env`",
        ));
    }
    let credentials = [
        ("token_file", repo.token_file.is_some()),
        ("token_env", repo.token_env.is_some()),
        ("ssh_key_file", repo.ssh_key_file.is_some()),
        ("ssh_key_env", repo.ssh_key_env.is_some()),
    ];
    let given: Vec<&str> = credentials
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if given.len() > 1 {
        problems.push(config.problem(
            &format!("gitops.repo.{}", given[1]),
            format!(
                "the repository takes one credential; {} are given: keep one",
                given.join(" and ")
            ),
        ));
    }
    if repo.is_local() && !given.is_empty() {
        problems.push(config.problem(
            &format!("gitops.repo.{}", given[0]),
            "the local Git server takes no credentials: remove them, or name a remote \
             repository in `gitops.repo.url`",
        ));
    }
    let ssh_url = repo.url.starts_with("ssh://")
        || (!repo.url.contains("://") && repo.url.contains('@') && repo.url.contains(':'));
    if ssh_url && (repo.token_file.is_some() || repo.token_env.is_some()) {
        problems.push(config.problem(
            "gitops.repo.url",
            "an SSH URL authenticates with a key: use `ssh_key_file` or `ssh_key_env`, or an \
             `https://` URL for a token",
        ));
    }
    if !ssh_url && repo.ssh_known_hosts.is_some() {
        problems.push(config.problem(
            "gitops.repo.ssh_known_hosts",
            "known hosts are for an SSH URL (`ssh://…` or `git@host:path`): remove it, or \
             name the repository's SSH URL",
        ));
    }
    if repo.url.starts_with("https://")
        && (repo.ssh_key_file.is_some() || repo.ssh_key_env.is_some())
    {
        problems.push(config.problem(
            "gitops.repo.url",
            "an `https://` URL authenticates with a token: use `token_file` or `token_env`, or \
             an SSH URL for a key",
        ));
    }
    // The GitOps layer on a cluster that is not on this machine's Docker network.
    let elsewhere = config.profile == super::Profile::Aws && config.gitops.kubeconfig.is_some();
    if elsewhere && argocd.enabled && repo.is_local() {
        problems.push(config.problem(
            "gitops.repo.url",
            "the local Git server runs on the local profile only: name the repository Argo CD \
             deploys from (https:// or SSH)",
        ));
    }
    let controller = &gitops.addons.load_balancer_controller;
    let named = controller
        .values
        .as_ref()
        .and_then(|v| v.get("clusterName"))
        .and_then(serde_json::Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if elsewhere && argocd.enabled && controller.enabled && !named {
        problems.push(config.problem(
            "gitops.addons.load_balancer_controller",
            "the AWS Load Balancer Controller needs the name of the EKS cluster that              `gitops.kubeconfig` reaches: set `values: {clusterName: <name>}` (and `region`,              `vpcId`), or `enabled: false` if the cluster has an ingress controller",
        ));
    }
    if elsewhere && argocd.enabled && gitops.domain.is_none() {
        problems.push(config.problem(
            "gitops.domain",
            "Argo CD's console needs a domain you control on AWS (it is served at \
             `argocd.<domain>`): set `gitops.domain`",
        ));
    }
}

/// Namespaces the baseline makes itself (besides `platform-<env>`) or that belong to
/// Kubernetes: a team may not take them.
const RESERVED_NAMESPACES: [&str; 8] = [
    "argocd",
    "platform",
    "monitoring",
    "user-apps",
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
];

fn check_platform(config: &Config, problems: &mut Vec<Problem>) {
    let platform = &config.platform;
    let own = format!("platform-{}", config.environment);
    for (i, team) in platform.teams.iter().enumerate() {
        if RESERVED_NAMESPACES.contains(&team.as_str()) || team.as_str() == own {
            problems.push(config.problem(
                &format!("platform.teams[{i}]"),
                format!(
                    "`{team}` is a namespace the platform or Kubernetes uses; name the team's \
                     namespace otherwise"
                ),
            ));
        }
    }
    for (i, team) in duplicates(platform.teams.iter().map(|t| t.as_str())) {
        problems.push(config.problem(
            &format!("platform.teams[{i}]"),
            format!("team `{team}` is listed twice"),
        ));
    }
    let backups = &platform.backups;
    for (field, schedule) in [
        (
            "platform.backups.postgres_schedule",
            &backups.postgres_schedule,
        ),
        (
            "platform.backups.objects_schedule",
            &backups.objects_schedule,
        ),
    ] {
        check_schedule(config, field, schedule, problems);
    }
    check_time_zone(
        config,
        "platform.backups.time_zone",
        &backups.time_zone,
        problems,
    );
    let rbac = &platform.rbac;
    for (field, groups) in [
        ("admin_groups", &rbac.admin_groups),
        ("developer_groups", &rbac.developer_groups),
        ("readonly_groups", &rbac.readonly_groups),
    ] {
        for (i, group) in groups.iter().enumerate() {
            if group.trim().is_empty() || group.starts_with("system:") {
                problems.push(config.problem(
                    &format!("platform.rbac.{field}[{i}]"),
                    format!(
                        "group `{group}` cannot be bound: use a non-empty group name outside \
                         `system:` (those belong to Kubernetes)"
                    ),
                ));
            }
        }
    }
    if config
        .gitops
        .context
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        problems.push(config.problem(
            "gitops.context",
            "the context must not be empty; leave it out to use the kubeconfig's current context",
        ));
    }
    if config.gitops.context.is_some() && config.gitops.kubeconfig.is_none() {
        problems.push(config.problem(
            "gitops.context",
            "a context needs `gitops.kubeconfig`, the file it is in",
        ));
    }
}

/// A five-field cron schedule, as a CronJob takes it.
fn check_schedule(config: &Config, field: &str, schedule: &str, problems: &mut Vec<Problem>) {
    let fields = schedule.split_whitespace().count();
    let allowed = schedule
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " */,-".contains(c));
    if fields != 5 || !allowed {
        problems.push(config.problem(
            field,
            format!(
                "`{schedule}` is not a cron schedule: give five fields (minute hour \
                 day-of-month month day-of-week), e.g. `0 3 * * *`"
            ),
        ));
    }
}

/// An IANA time zone name, as a CronJob's `spec.timeZone` takes it.
fn check_time_zone(config: &Config, field: &str, zone: &str, problems: &mut Vec<Problem>) {
    if zone.is_empty()
        || zone.starts_with('/')
        || zone.contains("..")
        || !zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
    {
        problems.push(config.problem(
            field,
            format!(
                "`{zone}` is not a time zone name: use an IANA name such as `UTC` or \
                 `Europe/Berlin`"
            ),
        ));
    }
}

fn check_engine(config: &Config, problems: &mut Vec<Problem>) {
    let engine = &config.engine;
    if engine.concurrency == 0 || engine.concurrency > 1024 {
        problems.push(config.problem(
            "engine.concurrency",
            format!(
                "concurrency {} is out of range: use 1 to 1024",
                engine.concurrency
            ),
        ));
    }
    if engine.retry_delay > engine.retry_max_delay {
        problems.push(config.problem(
            "engine.retry_delay",
            format!(
                "retry_delay ({}) is longer than retry_max_delay ({}); make it shorter",
                engine.retry_delay, engine.retry_max_delay
            ),
        ));
    }
    for (id, settings) in &config.phases {
        if let Some(retries) = settings.retries
            && retries > 20
        {
            problems.push(config.problem(
                &format!("phases.{id}.retries"),
                format!("{retries} retries is too many: use 0 to 20"),
            ));
        }
    }
    if engine.retries > 20 {
        problems.push(config.problem(
            "engine.retries",
            format!("{} retries is too many: use 0 to 20", engine.retries),
        ));
    }
}

fn check_required_services(config: &Config, problems: &mut Vec<Problem>) {
    if !config.services.postgres.enabled {
        problems.push(config.problem(
            "services.postgres.enabled",
            "PostgreSQL is required by the platform and cannot be disabled; remove this line",
        ));
    }
    if !config.services.object_store.enabled {
        problems.push(config.problem(
            "services.object_store.enabled",
            "object storage is required (backups and uploads live there) and cannot be \
             disabled; remove this line",
        ));
    }
}

fn duplicates<'a>(items: impl Iterator<Item = &'a str>) -> Vec<(usize, &'a str)> {
    let mut seen = HashMap::new();
    let mut dups = Vec::new();
    for (i, item) in items.enumerate() {
        if seen.insert(item, i).is_some() {
            dups.push((i, item));
        }
    }
    dups
}

fn check_lists(config: &Config, problems: &mut Vec<Problem>) {
    let env = config.environment.as_str();
    let pg = &config.services.postgres;
    if pg.databases.is_empty() {
        problems.push(config.problem(
            "services.postgres.databases",
            "at least one database is needed, e.g. `[dev]`",
        ));
    }
    for (i, db) in duplicates(pg.databases.iter().map(|d| d.as_str())) {
        problems.push(config.problem(
            &format!("services.postgres.databases[{i}]"),
            format!("database `{db}` is listed twice"),
        ));
    }
    if pg.databases.iter().any(|d| d.as_str() == "postgres") {
        problems.push(config.problem(
            "services.postgres.databases",
            "`postgres` is the server's maintenance database; choose another name",
        ));
    }
    if pg.user.as_str() == "postgres" {
        problems.push(config.problem(
            "services.postgres.user",
            "`postgres` is the superuser; the application role needs a name of its own",
        ));
    }

    let store = &config.services.object_store;
    if store.buckets.is_empty() {
        problems.push(config.problem(
            "services.object_store.buckets",
            "at least one bucket is needed, e.g. `[backups, uploads]`",
        ));
    }
    for (i, bucket) in duplicates(store.buckets.iter().map(|b| b.as_str())) {
        problems.push(config.problem(
            &format!("services.object_store.buckets[{i}]"),
            format!("bucket `{bucket}` is listed twice"),
        ));
    }
    for (i, bucket) in store.buckets.iter().enumerate() {
        let full = format!("comind-{env}-{bucket}");
        if full.len() > MAX_BUCKET_NAME || bucket.as_str().len() < 3 {
            problems.push(config.problem(
                &format!("services.object_store.buckets[{i}]"),
                format!(
                    "bucket `{bucket}` becomes `{full}`, which must be 3 to {MAX_BUCKET_NAME} \
                     characters long; use a name of 3 characters or more and shorten the \
                     name or the environment"
                ),
            ));
        }
    }
    if !store.buckets.contains(&store.backup_bucket) {
        problems.push(config.problem_at_set(
            &[
                "services.object_store.backup_bucket",
                "services.object_store.buckets",
            ],
            format!(
                "backup bucket `{}` is not in `buckets`; add it there or set \
                 `backup_bucket` to one of them",
                store.backup_bucket
            ),
        ));
    }
    if store.backup_retention_days == 0 {
        problems.push(config.problem(
            "services.object_store.backup_retention_days",
            "backups must be kept at least 1 day",
        ));
    }

    let queue = &config.services.queue;
    if queue.enabled && queue.queues.is_empty() {
        problems.push(config.problem(
            "services.queue.queues",
            "the queue service is enabled but no queues are listed; list at least one, \
             or set `services.queue.enabled: false`",
        ));
    }
    for (i, name) in duplicates(queue.queues.iter().map(|q| q.as_str())) {
        problems.push(config.problem(
            &format!("services.queue.queues[{i}]"),
            format!("queue `{name}` is listed twice"),
        ));
    }
    for (i, name) in queue.queues.iter().enumerate() {
        let dlq = format!("comind-{env}-{name}-dlq");
        if dlq.len() > MAX_QUEUE_NAME {
            problems.push(config.problem(
                &format!("services.queue.queues[{i}]"),
                format!("queue `{name}` makes `{dlq}`, longer than {MAX_QUEUE_NAME} characters"),
            ));
        }
        if name.as_str().ends_with("-dlq") {
            problems.push(config.problem(
                &format!("services.queue.queues[{i}]"),
                format!("queue `{name}` ends in `-dlq`, which is reserved for dead-letter queues"),
            ));
        }
    }
    if queue.max_receive_count == 0 || queue.max_receive_count > MAX_RECEIVE_COUNT {
        problems.push(config.problem(
            "services.queue.max_receive_count",
            format!(
                "max_receive_count {} is out of range: use 1 to {MAX_RECEIVE_COUNT}",
                queue.max_receive_count
            ),
        ));
    }
}

fn check_ports(config: &Config, problems: &mut Vec<Problem>) {
    use super::Profile;
    if config.profile != Profile::Local {
        return;
    }
    let s = &config.services;
    let k = &config.local.cluster;
    let mut ports: Vec<(&str, u16)> = vec![
        ("services.postgres.local.port", s.postgres.local.port.get()),
        (
            "services.object_store.local.port",
            s.object_store.local.port.get(),
        ),
        (
            "services.object_store.local.console_port",
            s.object_store.local.console_port.get(),
        ),
    ];
    if s.cache.enabled {
        ports.push(("services.cache.local.port", s.cache.local.port.get()));
    }
    if s.queue.enabled {
        ports.push(("services.queue.local.port", s.queue.local.port.get()));
    }
    ports.extend([
        ("local.cluster.api_port", k.api_port.get()),
        ("local.cluster.http_port", k.http_port.get()),
        ("local.cluster.https_port", k.https_port.get()),
        ("local.cluster.registry_port", k.registry_port.get()),
    ]);
    let gitops = &config.gitops;
    if gitops.argocd.enabled && gitops.repo.is_local() {
        ports.push(("gitops.repo.local.port", gitops.repo.local.port.get()));
    }
    let mut first_user: HashMap<u16, &str> = HashMap::new();
    for (field, port) in ports {
        if let Some(previous) = first_user.get(&port) {
            // Report at whichever of the two the user set, so the location is useful.
            let at = config.problem_at_set(&[field, previous], "").field;
            let other = if at == field { *previous } else { field };
            problems.push(config.problem(
                &at,
                format!(
                    "host port {port} is also used by `{other}`; every published port \
                     must be different"
                ),
            ));
        } else {
            first_user.insert(port, field);
        }
    }
    if k.servers == 0 || k.servers > 7 {
        problems.push(config.problem(
            "local.cluster.servers",
            format!("{} servers is out of range: use 1 to 7", k.servers),
        ));
    }
    if k.agents > 20 {
        problems.push(config.problem(
            "local.cluster.agents",
            format!("{} agents is out of range: use 0 to 20", k.agents),
        ));
    }
    if k.registry_gc.enabled {
        let gc = &k.registry_gc;
        check_schedule(
            config,
            "local.cluster.registry_gc.schedule",
            &gc.schedule,
            problems,
        );
        check_time_zone(
            config,
            "local.cluster.registry_gc.time_zone",
            &gc.time_zone,
            problems,
        );
    }
    let metallb = config.gitops.addons.metallb.enabled && config.gitops.argocd.enabled;
    if k.load_balancer == crate::config::LoadBalancer::Metallb && !metallb {
        // Choosing it turns k3s's ServiceLB off; MetalLB is an add-on Argo CD installs,
        // so without it there would be no load balancer at all.
        problems.push(config.problem(
            "local.cluster.load_balancer",
            "metallb is installed by Argo CD as an add-on, and choosing it turns k3s's \
             ServiceLB off: keep `gitops.argocd.enabled` and `gitops.addons.metallb.enabled`, \
             or use servicelb (the default)",
        ));
    }
    if k.k3d.as_os_str().is_empty() {
        problems.push(config.problem(
            "local.cluster.k3d",
            "is empty: name the k3d binary (a path, or a name on PATH)".to_string(),
        ));
    }
}

fn check_aws(config: &Config, problems: &mut Vec<Problem>) {
    let aws = &config.aws;
    if config.profile != super::Profile::Aws
        && aws.secret_store == super::SecretStoreKind::SecretsManager
    {
        // Silently keeping the key in the state directory instead would leave it where
        // the user did not ask for it.
        problems.push(config.problem(
            "aws.secret_store",
            "`secrets-manager` keeps secrets in AWS Secrets Manager, which only the `aws` \
             profile reaches; remove the setting, or use `profile: aws`",
        ));
    }
    if let Some(region) = &aws.region {
        let parts: Vec<&str> = region.split('-').collect();
        let valid = parts.len() >= 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
            && parts
                .last()
                .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
        if !valid {
            problems.push(config.problem(
                "aws.region",
                format!("`{region}` is not an AWS region name, such as `eu-west-1`"),
            ));
        }
    }
    if let Some(url) = &aws.endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problems.push(config.problem(
            "aws.endpoint_url",
            format!("`{url}` is not an http:// or https:// URL"),
        ));
    }
    let vpc = &aws.vpc;
    if vpc.id.is_none() && !vpc.subnet_ids.is_empty() {
        problems.push(config.problem(
            "aws.vpc.subnet_ids",
            "subnet_ids are only used with an existing VPC; set `aws.vpc.id` too, \
             or remove them",
        ));
    }
    if vpc.id.is_some() && vpc.subnet_ids.len() < 2 {
        problems.push(config.problem(
            "aws.vpc.subnet_ids",
            "an existing VPC needs at least two private subnets in different availability \
             zones listed in `aws.vpc.subnet_ids`",
        ));
    }
    if !is_cidr16_to_24(&vpc.cidr) {
        problems.push(config.problem(
            "aws.vpc.cidr",
            format!(
                "`{}` is not an IPv4 CIDR block from /16 to /24, such as `10.40.0.0/16`",
                vpc.cidr
            ),
        ));
    }
    check_cluster_access(config, problems);
    let ng = &aws.cluster.node_group;
    if ng.max_size == 0 {
        problems.push(config.problem(
            "aws.cluster.node_group.max_size",
            "max_size must be at least 1",
        ));
    }
    if ng.min_size > ng.max_size {
        problems.push(config.problem_at_set(
            &[
                "aws.cluster.node_group.min_size",
                "aws.cluster.node_group.max_size",
            ],
            format!(
                "min_size {} is larger than max_size {}",
                ng.min_size, ng.max_size
            ),
        ));
    }
    if ng.desired_size < ng.min_size || ng.desired_size > ng.max_size {
        problems.push(config.problem_at_set(
            &[
                "aws.cluster.node_group.desired_size",
                "aws.cluster.node_group.min_size",
                "aws.cluster.node_group.max_size",
            ],
            format!(
                "desired_size {} must lie between min_size {} and max_size {}",
                ng.desired_size, ng.min_size, ng.max_size
            ),
        ));
    }
    if ng.instance_types.is_empty() {
        problems.push(config.problem(
            "aws.cluster.node_group.instance_types",
            "at least one instance type is needed, e.g. `[t3.large]`",
        ));
    }
    let arm = ng
        .instance_types
        .iter()
        .filter(|t| super::is_arm_instance_type(t))
        .count();
    if arm != 0 && arm != ng.instance_types.len() {
        problems.push(config.problem(
            "aws.cluster.node_group.instance_types",
            format!(
                "the list mixes ARM (Graviton) and x86 types: {}; one node group runs one \
                 architecture",
                ng.instance_types.join(", ")
            ),
        ));
    }
    if ng.disk_gb < 20 {
        problems.push(config.problem(
            "aws.cluster.node_group.disk_gb",
            format!(
                "nodes need a root volume of at least 20 GiB, got {}",
                ng.disk_gb
            ),
        ));
    }
    match super::version_numbers(&aws.cluster.version, 2).as_deref() {
        None => problems.push(config.problem(
            "aws.cluster.version",
            format!(
                "`{}` is not a Kubernetes version such as {}",
                aws.cluster.version,
                super::DEFAULT_EKS_VERSION
            ),
        )),
        Some([major, minor, ..]) if (*major, *minor) < super::OLDEST_KUBERNETES => {
            problems.push(config.problem(
                "aws.cluster.version",
                format!(
                    "Kubernetes {} is older than {}.{}, the oldest version the platform \
                     supports; use {} or newer",
                    aws.cluster.version,
                    super::OLDEST_KUBERNETES.0,
                    super::OLDEST_KUBERNETES.1,
                    super::DEFAULT_EKS_VERSION
                ),
            ));
        }
        Some(_) => {}
    }
    let rds = &config.services.postgres.aws;
    if config.profile == super::Profile::Aws && config.services.postgres.databases.len() > 1 {
        problems.push(config.problem(
            "services.postgres.databases",
            format!(
                "the aws profile makes one database ({}): RDS creates it with the instance, \
                 and further databases need SQL from inside the VPC, which Comind does not \
                 run yet; list one database",
                config.services.postgres.databases[0]
            ),
        ));
    }
    if !(20..=65536).contains(&rds.storage_gb) {
        problems.push(config.problem(
            "services.postgres.aws.storage_gb",
            format!(
                "{} GiB is out of range for RDS PostgreSQL: use 20 to 65536",
                rds.storage_gb
            ),
        ));
    }
    if super::version_numbers(&rds.engine_version, 1).is_none() {
        problems.push(config.problem(
            "services.postgres.aws.engine_version",
            format!(
                "`{}` is not a PostgreSQL version such as 16.4",
                rds.engine_version
            ),
        ));
    }
    if rds.backup_retention_days > 35 {
        problems.push(config.problem(
            "services.postgres.aws.backup_retention_days",
            format!(
                "{} days is more than RDS allows: use 0 to 35",
                rds.backup_retention_days
            ),
        ));
    }
    for (field, kept) in [
        ("services.postgres.aws.final_snapshots", rds.final_snapshots),
        (
            "services.cache.aws.final_snapshots",
            config.services.cache.aws.final_snapshots,
        ),
    ] {
        if kept == 0 {
            problems.push(config.problem(
                field,
                "0 would leave `up` nothing to restore after `down`: keep at least 1 \
                 (`comind down --purge` is what removes them all)",
            ));
        }
    }
    if config.services.cache.aws.replicas > 5 {
        problems.push(config.problem(
            "services.cache.aws.replicas",
            format!(
                "{} replicas is more than ElastiCache allows: use 0 to 5",
                config.services.cache.aws.replicas
            ),
        ));
    }
}

/// `aws.cluster.access`, `public_access_cidrs` and `addon_versions`.
fn check_cluster_access(config: &Config, problems: &mut Vec<Problem>) {
    let cluster = &config.aws.cluster;
    let mut seen = std::collections::HashSet::new();
    for (i, grant) in cluster.access.iter().enumerate() {
        let field = format!("aws.cluster.access[{i}]");
        if !is_iam_principal(&grant.principal) {
            problems.push(config.problem(
                &format!("{field}.principal"),
                format!(
                    "`{}` is not the ARN of an IAM role or user, such as \
                     `arn:aws:iam::123456789012:role/Developers` (an assumed-role session \
                     ARN cannot hold an access entry: name its role)",
                    grant.principal
                ),
            ));
        }
        if !seen.insert(grant.principal.as_str()) {
            problems.push(config.problem(
                &format!("{field}.principal"),
                format!(
                    "`{}` is listed twice; list each principal once with all its groups",
                    grant.principal
                ),
            ));
        }
        if grant.groups.is_empty() {
            problems.push(config.problem(
                &format!("{field}.groups"),
                format!(
                    "is empty: name at least one of {}",
                    super::CLUSTER_ACCESS_GROUPS.join(", ")
                ),
            ));
        }
        for group in &grant.groups {
            if !super::CLUSTER_ACCESS_GROUPS.contains(&group.as_str()) {
                problems.push(config.problem(
                    &format!("{field}.groups"),
                    format!(
                        "`{group}` is not a group of the platform's baseline; use {}",
                        super::CLUSTER_ACCESS_GROUPS.join(", ")
                    ),
                ));
            }
        }
    }
    match &cluster.public_access_cidrs {
        Some(cidrs) if cidrs.is_empty() => problems.push(
            config.problem(
                "aws.cluster.public_access_cidrs",
                "is empty: name the CIDRs that may reach the public API endpoint, such as \
             your office's `203.0.113.0/24`"
                    .to_string(),
            ),
        ),
        Some(cidrs) => {
            for cidr in cidrs {
                if !is_ipv4_cidr(cidr) {
                    problems.push(config.problem(
                        "aws.cluster.public_access_cidrs",
                        format!("`{cidr}` is not an IPv4 CIDR block such as `203.0.113.0/24`"),
                    ));
                }
            }
        }
        None if config.production && config.profile == super::Profile::Aws => {
            problems.push(
                config.problem(
                    "aws.cluster.public_access_cidrs",
                    "is required in a production environment: name the CIDRs that may reach \
                 the public API endpoint (the default would open it to 0.0.0.0/0)"
                        .to_string(),
                ),
            );
        }
        None => {}
    }
    for (name, version) in &cluster.addon_versions {
        if !super::EKS_ADDONS.contains(&name.as_str()) {
            problems.push(config.problem(
                &format!("aws.cluster.addon_versions.{name}"),
                format!(
                    "`{name}` is not an add-on Comind installs; pin one of {}",
                    super::EKS_ADDONS.join(", ")
                ),
            ));
        }
        if version.trim().is_empty() || version == "latest" {
            problems.push(config.problem(
                &format!("aws.cluster.addon_versions.{name}"),
                format!(
                    "`{version}` is not an add-on version such as `v1.20.4-eksbuild.2`; \
                     leave the add-on out to use EKS's default"
                ),
            ));
        }
    }
}

/// `arn:<partition>:iam::<account>:role/<name>` or `...:user/<name>`.
fn is_iam_principal(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    prefix == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (resource
            .strip_prefix("role/")
            .or_else(|| resource.strip_prefix("user/")))
        .is_some_and(|name| !name.is_empty())
}

fn is_ipv4_cidr(cidr: &str) -> bool {
    let Some((addr, bits)) = cidr.split_once('/') else {
        return false;
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

fn is_cidr16_to_24(cidr: &str) -> bool {
    let Some((addr, bits)) = cidr.split_once('/') else {
        return false;
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok()
        && bits.parse::<u8>().is_ok_and(|b| (16..=24).contains(&b))
}

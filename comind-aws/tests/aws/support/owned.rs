//! What each component of an environment owns, listed through the real AWS API (moto)
//! by ownership tags: what the conformance suites check against, and what the
//! bootstrap tests count.

use std::collections::BTreeMap;

use comind_core::Environment;

use super::Peek;

type Tags = BTreeMap<String, String>;

fn rds_tags(tags: &[aws_sdk_rds::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

fn ec2_filters(env: &Environment, component: &str) -> Vec<aws_sdk_ec2::types::Filter> {
    env.selector(Some(component))
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        })
        .collect()
}

fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// Network resources: `kind id` of each. What the tag-filtered describes return is
/// checked against the tags again, since moto ignores some filters (NAT gateways).
pub async fn network(peek: &Peek, env: &Environment) -> Vec<String> {
    let f = || Some(ec2_filters(env, "network"));
    let ours = |tags: &[aws_sdk_ec2::types::Tag]| env.owns(&ec2_tags(tags), Some("network"));
    let mut out = Vec::new();
    let vpcs = peek
        .ec2
        .describe_vpcs()
        .set_filters(f())
        .send()
        .await
        .unwrap();
    out.extend(
        vpcs.vpcs()
            .iter()
            .filter(|v| ours(v.tags()))
            .map(|v| format!("vpc {}", v.vpc_id().unwrap())),
    );
    let subnets = peek
        .ec2
        .describe_subnets()
        .set_filters(f())
        .send()
        .await
        .unwrap();
    out.extend(
        subnets
            .subnets()
            .iter()
            .filter(|s| ours(s.tags()))
            .map(|s| format!("subnet {}", s.subnet_id().unwrap())),
    );
    let groups = peek
        .ec2
        .describe_security_groups()
        .set_filters(f())
        .send()
        .await
        .unwrap();
    out.extend(
        groups
            .security_groups()
            .iter()
            .filter(|g| ours(g.tags()))
            .map(|g| format!("security-group {}", g.group_id().unwrap())),
    );
    let igws = peek
        .ec2
        .describe_internet_gateways()
        .set_filters(f())
        .send()
        .await
        .unwrap();
    out.extend(
        igws.internet_gateways()
            .iter()
            .filter(|g| ours(g.tags()))
            .map(|g| format!("internet-gateway {}", g.internet_gateway_id().unwrap())),
    );
    let nats = peek
        .ec2
        .describe_nat_gateways()
        .set_filter(f())
        .send()
        .await
        .unwrap();
    out.extend(
        nats.nat_gateways()
            .iter()
            .filter(|n| ours(n.tags()))
            .filter(|n| n.state().map(|s| s.as_str()) != Some("deleted"))
            .map(|n| format!("nat-gateway {}", n.nat_gateway_id().unwrap())),
    );
    let eips = peek
        .ec2
        .describe_addresses()
        .set_filters(f())
        .send()
        .await
        .unwrap();
    out.extend(
        eips.addresses()
            .iter()
            .filter(|a| ours(a.tags()))
            .map(|a| format!("elastic-ip {}", a.allocation_id().unwrap())),
    );
    let tables = peek
        .ec2
        .describe_route_tables()
        .set_filters(f())
        .send()
        .await
        .unwrap();
    out.extend(
        tables
            .route_tables()
            .iter()
            .filter(|t| ours(t.tags()))
            .map(|t| format!("route-table {}", t.route_table_id().unwrap())),
    );
    out
}

/// IAM roles.
pub async fn iam(peek: &Peek, env: &Environment) -> Vec<String> {
    let prefix = env.resource_name("");
    let roles = peek.iam.list_roles().send().await.unwrap();
    let mut out = Vec::new();
    for role in roles.roles() {
        if !role.role_name().starts_with(&prefix) {
            continue;
        }
        let tags = peek
            .iam
            .list_role_tags()
            .role_name(role.role_name())
            .send()
            .await
            .unwrap();
        let tags: Tags = tags
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        if env.owns(&tags, Some("iam")) {
            out.push(format!("iam-role {}", role.role_name()));
        }
    }
    out
}

/// The EKS cluster, its node groups and launch templates.
pub async fn cluster(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let clusters = peek.eks.list_clusters().send().await.unwrap();
    for name in clusters.clusters() {
        let cluster = peek.eks.describe_cluster().name(name).send().await.unwrap();
        let tags: Tags = cluster
            .cluster()
            .and_then(|c| c.tags())
            .map(|t| t.clone().into_iter().collect())
            .unwrap_or_default();
        if env.owns(&tags, Some("cluster")) {
            out.push(format!("eks-cluster {name}"));
        }
        let groups = peek
            .eks
            .list_nodegroups()
            .cluster_name(name)
            .send()
            .await
            .unwrap();
        for group in groups.nodegroups() {
            let ng = peek
                .eks
                .describe_nodegroup()
                .cluster_name(name)
                .nodegroup_name(group)
                .send()
                .await
                .unwrap();
            let tags: Tags = ng
                .nodegroup()
                .and_then(|n| n.tags())
                .map(|t| t.clone().into_iter().collect())
                .unwrap_or_default();
            if env.owns(&tags, Some("cluster")) {
                out.push(format!("eks-nodegroup {group}"));
            }
        }
    }
    let templates = peek
        .ec2
        .describe_launch_templates()
        .set_filters(Some(ec2_filters(env, "cluster")))
        .send()
        .await
        .unwrap();
    out.extend(
        templates
            .launch_templates()
            .iter()
            .filter(|t| env.owns(&ec2_tags(t.tags()), Some("cluster")))
            .map(|t| format!("launch-template {}", t.launch_template_name().unwrap())),
    );
    out.extend(kms_keys(peek, env).await);
    out
}

/// The cluster's KMS keys that are not scheduled for deletion: by alias (as `kept`
/// reports them), or `kms-key <id>` for one no alias names (a leak).
pub async fn kms_keys(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let keys = peek.kms.list_keys().send().await.unwrap();
    for key in keys.keys() {
        let id = key.key_id().unwrap();
        let tags: Tags = peek
            .kms
            .list_resource_tags()
            .key_id(id)
            .send()
            .await
            .unwrap()
            .tags()
            .iter()
            .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
            .collect();
        let described = peek.kms.describe_key().key_id(id).send().await.unwrap();
        let state = described.key_metadata().and_then(|m| m.key_state());
        if !env.owns(&tags, Some("cluster"))
            || state == Some(&aws_sdk_kms::types::KeyState::PendingDeletion)
        {
            continue;
        }
        let aliases = peek.kms.list_aliases().key_id(id).send().await.unwrap();
        match aliases.aliases().first().and_then(|a| a.alias_name()) {
            Some(alias) => out.push(alias.to_string()),
            None => out.push(format!("kms-key {id}")),
        }
    }
    out
}

/// RDS instances, subnet groups and snapshots (names only, as `kept` reports them).
pub async fn postgres(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let dbs = peek.rds.describe_db_instances().send().await.unwrap();
    for db in dbs.db_instances() {
        if env.owns(&rds_tags(db.tag_list()), Some("postgres")) {
            out.push(db.db_instance_identifier().unwrap().to_string());
        }
    }
    let snapshots = peek.rds.describe_db_snapshots().send().await.unwrap();
    for snap in snapshots.db_snapshots() {
        if env.owns(&rds_tags(snap.tag_list()), Some("postgres")) {
            out.push(snap.db_snapshot_identifier().unwrap().to_string());
        }
    }
    let groups = peek.rds.describe_db_subnet_groups().send().await.unwrap();
    for group in groups.db_subnet_groups() {
        let tags = peek
            .rds
            .list_tags_for_resource()
            .resource_name(group.db_subnet_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        if env.owns(&rds_tags(tags.tag_list()), Some("postgres")) {
            out.push(format!(
                "subnet-group:{}",
                group.db_subnet_group_name().unwrap()
            ));
        }
    }
    out
}

async fn elasticache_tags(peek: &Peek, arn: &str) -> Tags {
    let tags = peek
        .elasticache
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .unwrap();
    tags.tag_list()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// ElastiCache replication groups, snapshots and subnet groups.
pub async fn cache(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let groups = peek
        .elasticache
        .describe_replication_groups()
        .send()
        .await
        .unwrap();
    for group in groups.replication_groups() {
        if env.owns(
            &elasticache_tags(peek, group.arn().unwrap()).await,
            Some("cache"),
        ) {
            out.push(group.replication_group_id().unwrap().to_string());
        }
    }
    let snapshots = peek.elasticache.describe_snapshots().send().await.unwrap();
    for snap in snapshots.snapshots() {
        if env.owns(
            &elasticache_tags(peek, snap.arn().unwrap()).await,
            Some("cache"),
        ) {
            out.push(snap.snapshot_name().unwrap().to_string());
        }
    }
    let subnets = peek
        .elasticache
        .describe_cache_subnet_groups()
        .send()
        .await
        .unwrap();
    for group in subnets.cache_subnet_groups() {
        if env.owns(
            &elasticache_tags(peek, group.arn().unwrap()).await,
            Some("cache"),
        ) {
            out.push(format!(
                "subnet-group:{}",
                group.cache_subnet_group_name().unwrap()
            ));
        }
    }
    out
}

/// S3 buckets.
pub async fn object_store(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let buckets = peek.s3.list_buckets().send().await.unwrap();
    for bucket in buckets.buckets() {
        let name = bucket.name().unwrap();
        let tags = match peek.s3.get_bucket_tagging().bucket(name).send().await {
            Ok(tags) => tags
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(_) => Tags::new(),
        };
        if env.owns(&tags, Some("object-store")) {
            out.push(name.to_string());
        }
    }
    out
}

/// SQS queues.
pub async fn queue(peek: &Peek, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    let queues = peek.sqs.list_queues().send().await.unwrap();
    for url in queues.queue_urls() {
        let tags = peek
            .sqs
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .unwrap();
        let tags: Tags = tags
            .tags()
            .map(|t| t.clone().into_iter().collect())
            .unwrap_or_default();
        if env.owns(&tags, Some("queue")) {
            out.push(url.rsplit('/').next().unwrap().to_string());
        }
    }
    out
}

//! Ownership tags, in each AWS service's shape.
//!
//! Everything this crate creates carries the ownership tags of DESIGN.md
//! (`comind.dev/managed-by`, `comind.dev/environment`, `comind.dev/component`,
//! `comind.dev/spec-hash`, see [`Environment::labels`]). Discovery goes by those tags
//! and by deterministic names; a resource that has one of our names but not our tags
//! belongs to someone else and is never changed or deleted ([`require_owned`]).

use std::collections::{BTreeMap, HashMap};

use comind_core::{Environment, Error, Result};

/// Tags as a sorted map.
pub(crate) type Tags = BTreeMap<String, String>;

/// The tag EC2 shows as a resource's name.
pub(crate) const NAME: &str = "Name";

/// Prefix of the tags Comind owns; every other tag belongs to the user.
const OWN_PREFIX: &str = "comind.dev/";

/// The ownership tags of a resource of `component` with the desired spec `spec`.
pub(crate) fn ownership(env: &Environment, component: &str, spec: Option<&str>) -> Tags {
    env.labels(component, spec)
}

/// [`ownership`] plus the EC2 `Name` tag.
pub(crate) fn named(env: &Environment, component: &str, spec: Option<&str>, name: &str) -> Tags {
    let mut tags = ownership(env, component, spec);
    tags.insert(NAME.to_string(), name.to_string());
    tags
}

/// Tags the user (or their tooling) added: everything but ours and AWS's own. They
/// travel with the data through a final snapshot and a restore.
pub(crate) fn user_tags(tags: &Tags) -> Tags {
    tags.iter()
        .filter(|(k, _)| !k.starts_with(OWN_PREFIX) && !k.starts_with("aws:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Ok when `tags` mark `kind` `name` as this environment's `component`; otherwise the
/// conflict that stops the run.
///
/// # Errors
/// `Conflict` naming the resource.
pub(crate) fn require_owned(
    env: &Environment,
    component: &str,
    kind: &str,
    name: &str,
    tags: &Tags,
) -> Result<()> {
    if env.owns(tags, Some(component)) {
        Ok(())
    } else {
        Err(not_ours(env, component, kind, name))
    }
}

/// The conflict of a resource that has our name but not our tags.
pub(crate) fn not_ours(env: &Environment, component: &str, kind: &str, name: &str) -> Error {
    Error::conflict(format!(
        "{kind} `{name}` already exists but is not tagged as the `{component}` of Comind \
         environment `{}`; Comind never changes or deletes what it did not create, so it \
         stopped here",
        env.name()
    ))
    .with_resource(format!("{kind} {name}"))
    .with_hint(
        "if it is a leftover, delete or rename it; if it is in use, choose another \
         environment name (`environment` in comind.yaml)",
    )
}

/// EC2 tags.
pub(crate) fn to_ec2(tags: &Tags) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// From EC2 tags.
pub(crate) fn from_ec2(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// EC2 tag specifications for a resource of `resource_type` created with `tags`.
pub(crate) fn ec2_spec(
    resource_type: aws_sdk_ec2::types::ResourceType,
    tags: &Tags,
) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(to_ec2(tags)))
        .build()
}

/// What discovery asks AWS for by tags, and checks again on every answer.
///
/// A tag-filtered describe is a request, not a guarantee: a backend may ignore the
/// filter (moto does for `DescribeNatGateways`), and adopting or deleting what it
/// returned unchecked would touch another environment's resources. So every
/// discovery builds its filters from a `Selector` and keeps only what
/// [`Selector::verified`] lets through.
#[derive(Debug, Clone)]
pub(crate) struct Selector<'a> {
    env: &'a Environment,
    component: &'a str,
    /// Tags besides the ownership ones (such as the network's `comind.dev/role`).
    extra: Tags,
}

impl<'a> Selector<'a> {
    /// This environment's resources of `component`.
    pub(crate) fn new(env: &'a Environment, component: &'a str) -> Self {
        Selector {
            env,
            component,
            extra: Tags::new(),
        }
    }

    /// Only those also tagged `key` = `value`.
    #[must_use]
    pub(crate) fn with(mut self, key: &str, value: &str) -> Self {
        self.extra.insert(key.to_string(), value.to_string());
        self
    }

    /// The EC2 filters that ask for them.
    pub(crate) fn ec2_filters(&self) -> Vec<aws_sdk_ec2::types::Filter> {
        self.env
            .selector(Some(self.component))
            .iter()
            .chain(&self.extra)
            .map(|(k, v)| {
                aws_sdk_ec2::types::Filter::builder()
                    .name(format!("tag:{k}"))
                    .values(v)
                    .build()
            })
            .collect()
    }

    /// Whether `tags` mark a resource as one of them.
    pub(crate) fn matches(&self, tags: &Tags) -> bool {
        self.env.owns(tags, Some(self.component))
            && self.extra.iter().all(|(k, v)| tags.get(k) == Some(v))
    }

    /// Whether `tags` mark `kind` `id` (found by a listing or a tag-filtered describe)
    /// as one of them; when not, a debug trace says it was left out.
    pub(crate) fn check(&self, kind: &str, id: &str, tags: &Tags) -> bool {
        let ours = self.matches(tags);
        if !ours {
            tracing::debug!(
                kind,
                id,
                environment = %self.env.name(),
                component = self.component,
                "left out {kind} {id}: AWS returned it, but its tags do not mark it as ours"
            );
        }
        ours
    }

    /// What a describe filtered by [`Selector::ec2_filters`] returned, without what its
    /// tags say is not ours (see [`Selector::check`]).
    pub(crate) fn verified<T>(
        &self,
        kind: &str,
        found: impl IntoIterator<Item = T>,
        tags: impl Fn(&T) -> Tags,
        id: impl Fn(&T) -> String,
    ) -> Vec<T> {
        found
            .into_iter()
            .filter(|item| self.check(kind, &id(item), &tags(item)))
            .collect()
    }
}

/// An EC2 filter `name` = `value`.
pub(crate) fn ec2_filter(name: &str, value: impl Into<String>) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .values(value)
        .build()
}

/// RDS tags.
pub(crate) fn to_rds(tags: &Tags) -> Vec<aws_sdk_rds::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// From RDS tags.
pub(crate) fn from_rds(tags: &[aws_sdk_rds::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// ElastiCache tags.
pub(crate) fn to_elasticache(tags: &Tags) -> Vec<aws_sdk_elasticache::types::Tag> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_elasticache::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        })
        .collect()
}

/// From ElastiCache tags.
pub(crate) fn from_elasticache(tags: &[aws_sdk_elasticache::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// IAM tags.
///
/// # Errors
/// Never in practice: the SDK only refuses a tag without key or value, and both are
/// always set here.
pub(crate) fn to_iam(tags: &Tags) -> Result<Vec<aws_sdk_iam::types::Tag>> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| Error::internal(format!("cannot build IAM tag `{k}`: {e}")))
        })
        .collect()
}

/// From IAM tags.
pub(crate) fn from_iam(tags: &[aws_sdk_iam::types::Tag]) -> Tags {
    tags.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// An S3 tag set.
///
/// # Errors
/// Never in practice: key and value are always set.
pub(crate) fn to_s3(tags: &Tags) -> Result<aws_sdk_s3::types::Tagging> {
    let set = tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_s3::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| Error::internal(format!("cannot build S3 tag `{k}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    aws_sdk_s3::types::Tagging::builder()
        .set_tag_set(Some(set))
        .build()
        .map_err(|e| Error::internal(format!("cannot build S3 tag set: {e}")))
}

/// From S3 tags.
pub(crate) fn from_s3(tags: &[aws_sdk_s3::types::Tag]) -> Tags {
    tags.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// KMS tags.
///
/// # Errors
/// Never in practice: key and value are always set.
pub(crate) fn to_kms(tags: &Tags) -> Result<Vec<aws_sdk_kms::types::Tag>> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_kms::types::Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .map_err(|e| Error::internal(format!("cannot build KMS tag `{k}`: {e}")))
        })
        .collect()
}

/// From KMS tags.
pub(crate) fn from_kms(tags: &[aws_sdk_kms::types::Tag]) -> Tags {
    tags.iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
}

/// Tags as the plain map EKS and SQS take.
pub(crate) fn to_map(tags: &Tags) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// From the plain map EKS and SQS return.
pub(crate) fn from_map(tags: Option<&HashMap<String, String>>) -> Tags {
    tags.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The ownership tags in `desired` that `live` lacks or holds with another value (a
/// spec hash that moved on); what a re-tag call must send.
pub(crate) fn missing(desired: &Tags, live: &Tags) -> Tags {
    desired
        .iter()
        .filter(|(k, v)| live.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::environment::LABEL_SPEC_HASH;
    use comind_core::testing::test_env;

    #[test]
    fn ownership_is_checked_per_environment_and_component() {
        let dir = std::env::temp_dir();
        let env = test_env("tags", &dir);
        let tags = ownership(&env, "network", Some("abc"));
        assert!(require_owned(&env, "network", "vpc", "v", &tags).is_ok());
        let err = require_owned(&env, "postgres", "vpc", "v", &tags).unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::Conflict);
        assert!(err.message().contains("`v`"), "{err}");
        let bare = Tags::new();
        assert!(require_owned(&env, "network", "vpc", "v", &bare).is_err());
        let other = test_env("other", &dir);
        assert!(require_owned(&other, "network", "vpc", "v", &tags).is_err());
    }

    #[test]
    fn user_tags_leave_ours_out() {
        let dir = std::env::temp_dir();
        let env = test_env("tags", &dir);
        let mut tags = ownership(&env, "postgres", Some("abc"));
        tags.insert("team".into(), "data".into());
        tags.insert("aws:cloudformation:stack-name".into(), "x".into());
        let user = user_tags(&tags);
        assert_eq!(user.len(), 1);
        assert_eq!(user["team"], "data");
        assert_eq!(tags.get(LABEL_SPEC_HASH).map(String::as_str), Some("abc"));
        let mut live = tags.clone();
        live.insert(LABEL_SPEC_HASH.into(), "old".into());
        let want = missing(&ownership(&env, "postgres", Some("abc")), &live);
        assert_eq!(want.len(), 1);
        assert_eq!(want[LABEL_SPEC_HASH], "abc");
    }

    #[test]
    fn what_a_filtered_describe_returns_is_checked_against_the_tags() {
        let dir = std::env::temp_dir();
        let env = test_env("tags", &dir);
        let other = test_env("other", &dir);
        let role = "comind.dev/role";
        let selector = Selector::new(&env, "network").with(role, "nat:a");
        let mut ours = ownership(&env, "network", None);
        ours.insert(role.into(), "nat:a".into());
        let mut theirs = ownership(&other, "network", None);
        theirs.insert(role.into(), "nat:a".into());
        let mut other_role = ours.clone();
        other_role.insert(role.into(), "nat:b".into());
        let found = vec![("mine", ours), ("theirs", theirs), ("b", other_role)];
        let kept = selector.verified(
            "nat-gateway",
            found,
            |(_, t)| t.clone(),
            |(id, _)| id.to_string(),
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, "mine");
        let filters = selector.ec2_filters();
        assert_eq!(filters.len(), 4, "{filters:?}");
        assert!(
            filters
                .iter()
                .any(|f| f.name() == Some("tag:comind.dev/environment")
                    && f.values() == ["tags".to_string()])
        );
    }

    #[test]
    fn shapes_round_trip() {
        let mut tags = Tags::new();
        tags.insert("a".into(), "1".into());
        tags.insert("b".into(), "2".into());
        assert_eq!(from_ec2(&to_ec2(&tags)), tags);
        assert_eq!(from_rds(&to_rds(&tags)), tags);
        assert_eq!(from_elasticache(&to_elasticache(&tags)), tags);
        assert_eq!(from_iam(&to_iam(&tags).unwrap()), tags);
        assert_eq!(from_s3(to_s3(&tags).unwrap().tag_set()), tags);
        assert_eq!(from_map(Some(&to_map(&tags))), tags);
    }
}

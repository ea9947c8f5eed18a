//! The `object-store` service on S3.
//!
//! The configured buckets (default `backups` and `uploads`), each named
//! `comind-<env>-<bucket>`, with public access blocked, default encryption (SSE-S3
//! unless the user chose KMS), versioning, a policy that refuses requests without TLS,
//! and on the backup bucket a lifecycle rule that expires backups (and their old
//! versions) after `backup_retention_days`. The user's own tags, policy statements and
//! lifecycle rules are kept.
//!
//! `down` deletes empty buckets and keeps those holding objects (old versions and
//! delete markers count); `down --purge` empties and deletes them. Applications reach
//! S3 with their workload identity, so the outputs hold no static credentials.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, Delete, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    ObjectIdentifier, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    VersioningConfiguration,
};
use comind_core::reconcile::Pass;
use comind_core::service::ObjectStoreEndpoint;
use comind_core::{
    Change, DestroyOptions, Destroyed, Environment, Error, ErrorKind, Kept, PhaseContext, Result,
    ServiceBackend, ServiceEndpoint, ServiceKind,
};
use serde_json::{Value, json};

use crate::clients::{Clients, Connector};
use crate::create::{self, Made, single_attempt};
use crate::error::{AwsResultExt, built};
use crate::tags::{self, Selector, Tags};

const COMPONENT: &str = "object-store";
/// The id of the lifecycle rule Comind owns on the backup bucket.
const EXPIRY_RULE: &str = "comind-backup-expiry";
/// The id of the bucket policy statement Comind owns.
const TLS_STATEMENT: &str = "ComindDenyInsecureTransport";
/// Incomplete multipart uploads of backups are abandoned after this many days.
const ABORT_UPLOADS_AFTER_DAYS: i32 = 1;

/// S3 object storage.
pub struct S3ObjectStore {
    aws: Arc<Connector>,
}

impl std::fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ObjectStore").finish_non_exhaustive()
    }
}

impl S3ObjectStore {
    pub(crate) fn new(aws: Arc<Connector>) -> Self {
        S3ObjectStore { aws }
    }
}

/// A configured bucket: its name in comind.yaml and in S3.
struct Bucket {
    short: String,
    name: String,
    backups: bool,
}

fn buckets(env: &Environment) -> Vec<Bucket> {
    let settings = &env.config().services.object_store;
    settings
        .buckets
        .iter()
        .map(|b| Bucket {
            short: b.as_str().to_string(),
            name: env.resource_name(b.as_str()),
            backups: b == &settings.backup_bucket,
        })
        .collect()
}

/// The policy statement that refuses plain-HTTP requests.
fn tls_statement(partition: &str, bucket: &str) -> Value {
    json!({
        "Sid": TLS_STATEMENT,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [
            format!("arn:{partition}:s3:::{bucket}"),
            format!("arn:{partition}:s3:::{bucket}/*"),
        ],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}
    })
}

/// `live` (a bucket policy, if any) with our statement in place; `None` when it is
/// there already.
fn with_tls_statement(live: Option<&str>, statement: &Value) -> Option<Value> {
    let mut policy: Value = live
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_else(|| json!({"Version": "2012-10-17", "Statement": []}));
    let statements = match policy.get_mut("Statement") {
        Some(Value::Array(list)) => list,
        Some(single) => {
            *single = Value::Array(vec![single.clone()]);
            match single {
                Value::Array(list) => list,
                _ => return None,
            }
        }
        None => {
            policy["Statement"] = json!([]);
            match policy.get_mut("Statement") {
                Some(Value::Array(list)) => list,
                _ => return None,
            }
        }
    };
    if statements.iter().any(|s| s == statement) {
        return None;
    }
    statements.retain(|s| s.get("Sid").and_then(Value::as_str) != Some(TLS_STATEMENT));
    statements.push(statement.clone());
    Some(policy)
}

fn expiry_rule(days: i32) -> Result<LifecycleRule> {
    built(
        LifecycleRule::builder()
            .id(EXPIRY_RULE)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .expiration(LifecycleExpiration::builder().days(days).build())
            // With versioning on, an expired object becomes an old version; expire
            // those too, or nothing is ever freed.
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(days)
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(ABORT_UPLOADS_AFTER_DAYS)
                    .build(),
            )
            .build(),
        "the backup lifecycle rule",
    )
}

fn expiry_matches(rule: &LifecycleRule, days: i32) -> bool {
    rule.status() == &ExpirationStatus::Enabled
        && rule.expiration().and_then(LifecycleExpiration::days) == Some(days)
        && rule
            .noncurrent_version_expiration()
            .and_then(NoncurrentVersionExpiration::noncurrent_days)
            == Some(days)
}

/// One pass over the buckets: it records each change on `pass`, and makes it only when
/// `pass` applies.
struct Run<'a> {
    env: &'a Environment,
    clients: &'a Clients,
    pass: &'a mut Pass,
}

impl<'a> Run<'a> {
    fn new(env: &'a Environment, clients: &'a Clients, pass: &'a mut Pass) -> Self {
        Run { env, clients, pass }
    }

    fn desired_tags(&self) -> Tags {
        tags::ownership(self.env, COMPONENT, None)
    }

    /// Whether `name` exists (and is ours to look at).
    async fn exists(&self, name: &str) -> Result<bool> {
        let resource = format!("bucket {name}");
        match self
            .clients
            .s3
            .head_bucket()
            .bucket(name)
            .send()
            .await
            .found("s3:HeadBucket", &resource)
        {
            Ok(found) => Ok(found.is_some()),
            // S3 answers 403 for a bucket of another account: the name is taken.
            Err(err) if err.kind() == ErrorKind::Permission => Err(Error::conflict(format!(
                "bucket `{name}` exists but belongs to another AWS account (or this identity \
                 may not read it); bucket names are global across all accounts"
            ))
            .with_resource(resource)
            .with_hint("choose another environment name (`environment` in comind.yaml)")),
            Err(err) => Err(err),
        }
    }

    async fn tags_of(&self, name: &str) -> Result<Tags> {
        let out = self
            .clients
            .s3
            .get_bucket_tagging()
            .bucket(name)
            .send()
            .await
            .found_or(
                "s3:GetBucketTagging",
                format!("bucket {name}"),
                &["NoSuchTagSet"],
            )?;
        Ok(out.map(|o| tags::from_s3(o.tag_set())).unwrap_or_default())
    }

    async fn converge(&mut self) -> Result<()> {
        let retention = i32::try_from(
            self.env
                .config()
                .services
                .object_store
                .backup_retention_days,
        )
        .map_err(|_| {
            Error::invalid_input("`backup_retention_days` is too large")
                .with_resource("comind.yaml services.object_store.backup_retention_days")
        })?;
        for bucket in buckets(self.env) {
            if self.exists(&bucket.name).await? {
                let live = self.tags_of(&bucket.name).await?;
                tags::require_owned(self.env, COMPONENT, "bucket", &bucket.name, &live)?;
                self.configure(&bucket, retention, Some(&live)).await?;
            } else {
                let why = if bucket.backups {
                    format!("backups expire after {retention} days")
                } else {
                    "versioned, encrypted, private".to_string()
                };
                if self
                    .pass
                    .will(Change::create("bucket", &bucket.name).because(why))
                {
                    match self.create(&bucket.name).await? {
                        Made::Created(()) => self.configure(&bucket, retention, None).await?,
                        // Made by a create whose answer was lost, or by a dying earlier
                        // run: its settings are whatever that run got to.
                        Made::Found(live) => {
                            self.configure(&bucket, retention, Some(&live)).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the bucket with its tags; finds it (with its tags) when it exists
    /// already: made by a create whose answer was lost, or by a dying earlier run.
    async fn create(&self, name: &str) -> Result<Made<(), Tags>> {
        // Tagged in the same call (S3 takes tags at creation for general purpose
        // buckets), so no crash can leave a bucket of ours that looks like someone
        // else's: there is no create-then-tag window.
        let tags = tags::to_s3(&self.desired_tags())?.tag_set().to_vec();
        let mut configuration = CreateBucketConfiguration::builder().set_tags(Some(tags));
        // us-east-1 is the one region that must not be named as a location.
        if self.clients.region != "us-east-1" {
            configuration = configuration
                .location_constraint(BucketLocationConstraint::from(self.clients.region.as_str()));
        }
        let configuration = configuration.build();
        let resource = format!("bucket {name}");
        create::once(
            &resource,
            || async {
                self.clients
                    .s3
                    .create_bucket()
                    .bucket(name)
                    .create_bucket_configuration(configuration.clone())
                    .customize()
                    .config_override(single_attempt::s3())
                    .send()
                    .await
                    .aws("s3:CreateBucket", &resource)
                    .map(drop)
            },
            || async {
                if !self.exists(name).await? {
                    return Ok(None);
                }
                let live = self.tags_of(name).await?;
                tags::require_owned(self.env, COMPONENT, "bucket", name, &live)?;
                Ok(Some(live))
            },
        )
        .await
    }

    /// Brings a bucket's settings to the desired ones; `live_tags` is `None` for a
    /// bucket just created (every setting is then known to be missing).
    async fn configure(
        &mut self,
        bucket: &Bucket,
        retention: i32,
        live_tags: Option<&Tags>,
    ) -> Result<()> {
        let name = bucket.name.as_str();
        let resource = format!("bucket {name}");
        let fresh = live_tags.is_none();
        let s3 = &self.clients.s3;

        // A bucket just created has its tags from the create; only a bucket whose tags
        // moved on (a changed spec) is tagged again.
        let desired = self.desired_tags();
        let missing = live_tags.map_or_else(Tags::new, |live| tags::missing(&desired, live));
        if !missing.is_empty()
            && self
                .pass
                .will(Change::update("bucket", name).because("ownership tags"))
        {
            let mut all = live_tags.cloned().unwrap_or_default();
            all.extend(desired.clone());
            s3.put_bucket_tagging()
                .bucket(name)
                .tagging(tags::to_s3(&all)?)
                .send()
                .await
                .aws("s3:PutBucketTagging", &resource)?;
        }

        let blocked = if fresh {
            false
        } else {
            let out = s3
                .get_public_access_block()
                .bucket(name)
                .send()
                .await
                .found("s3:GetPublicAccessBlock", &resource)?;
            out.as_ref()
                .and_then(|o| o.public_access_block_configuration())
                .is_some_and(|c| {
                    c.block_public_acls() == Some(true)
                        && c.ignore_public_acls() == Some(true)
                        && c.block_public_policy() == Some(true)
                        && c.restrict_public_buckets() == Some(true)
                })
        };
        if !blocked
            && (fresh
                || self
                    .pass
                    .will(Change::update("bucket", name).because("block public access")))
        {
            s3.put_public_access_block()
                .bucket(name)
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .aws("s3:PutPublicAccessBlock", &resource)?;
        }

        let encrypted = if fresh {
            false
        } else {
            let out = s3
                .get_bucket_encryption()
                .bucket(name)
                .send()
                .await
                .found("s3:GetBucketEncryption", &resource)?;
            out.as_ref()
                .and_then(|o| o.server_side_encryption_configuration())
                .is_some_and(|c| {
                    c.rules().iter().any(|r| {
                        r.apply_server_side_encryption_by_default()
                            .is_some_and(|d| !d.sse_algorithm().as_str().is_empty())
                    })
                })
        };
        if !encrypted
            && (fresh
                || self
                    .pass
                    .will(Change::update("bucket", name).because("default encryption")))
        {
            let by_default = built(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::Aes256)
                    .build(),
                "the bucket encryption",
            )?;
            let configuration = built(
                ServerSideEncryptionConfiguration::builder()
                    .rules(
                        ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(by_default)
                            .bucket_key_enabled(true)
                            .build(),
                    )
                    .build(),
                "the bucket encryption",
            )?;
            s3.put_bucket_encryption()
                .bucket(name)
                .server_side_encryption_configuration(configuration)
                .send()
                .await
                .aws("s3:PutBucketEncryption", &resource)?;
        }

        let versioned = if fresh {
            false
        } else {
            let out = s3
                .get_bucket_versioning()
                .bucket(name)
                .send()
                .await
                .aws("s3:GetBucketVersioning", &resource)?;
            out.status() == Some(&BucketVersioningStatus::Enabled)
        };
        if !versioned
            && (fresh
                || self
                    .pass
                    .will(Change::update("bucket", name).because("versioning")))
        {
            s3.put_bucket_versioning()
                .bucket(name)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .aws("s3:PutBucketVersioning", &resource)?;
        }

        let statement = tls_statement(self.clients.partition(), name);
        let live_policy = if fresh {
            None
        } else {
            s3.get_bucket_policy()
                .bucket(name)
                .send()
                .await
                .found("s3:GetBucketPolicy", &resource)?
                .and_then(|o| o.policy)
        };
        if let Some(policy) = with_tls_statement(live_policy.as_deref(), &statement)
            && (fresh
                || self
                    .pass
                    .will(Change::update("bucket", name).because("deny requests without TLS")))
        {
            s3.put_bucket_policy()
                .bucket(name)
                .policy(policy.to_string())
                .send()
                .await
                .aws("s3:PutBucketPolicy", &resource)?;
        }

        if bucket.backups {
            let rules = if fresh {
                Vec::new()
            } else {
                s3.get_bucket_lifecycle_configuration()
                    .bucket(name)
                    .send()
                    .await
                    .found("s3:GetBucketLifecycleConfiguration", &resource)?
                    .map(|o| o.rules().to_vec())
                    .unwrap_or_default()
            };
            let ours = rules.iter().find(|r| r.id() == Some(EXPIRY_RULE));
            if !ours.is_some_and(|r| expiry_matches(r, retention))
                && (fresh
                    || self.pass.will(
                        Change::update("bucket", name)
                            .because(format!("backups expire after {retention} days")),
                    ))
            {
                let mut all: Vec<LifecycleRule> = rules
                    .into_iter()
                    .filter(|r| r.id() != Some(EXPIRY_RULE))
                    .collect();
                all.push(expiry_rule(retention)?);
                let configuration = built(
                    BucketLifecycleConfiguration::builder()
                        .set_rules(Some(all))
                        .build(),
                    "the backup lifecycle",
                )?;
                s3.put_bucket_lifecycle_configuration()
                    .bucket(name)
                    .lifecycle_configuration(configuration)
                    .send()
                    .await
                    .aws("s3:PutBucketLifecycleConfiguration", &resource)?;
            }
        }
        Ok(())
    }

    /// Whether the bucket holds anything: objects, old versions or delete markers.
    async fn holds_data(&self, name: &str) -> Result<bool> {
        let out = self
            .clients
            .s3
            .list_object_versions()
            .bucket(name)
            .max_keys(1)
            .send()
            .await
            .aws("s3:ListObjectVersions", format!("bucket {name}"))?;
        Ok(!out.versions().is_empty() || !out.delete_markers().is_empty())
    }

    /// Deletes every object version and delete marker of `name`.
    async fn empty(&self, ctx: &PhaseContext, name: &str) -> Result<()> {
        let resource = format!("bucket {name}");
        let mut deleted = 0usize;
        loop {
            let page = self
                .clients
                .s3
                .list_object_versions()
                .bucket(name)
                .max_keys(1000)
                .send()
                .await
                .aws("s3:ListObjectVersions", &resource)?;
            let mut objects = Vec::new();
            for (key, version) in page
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(
                    page.delete_markers()
                        .iter()
                        .map(|m| (m.key(), m.version_id())),
                )
            {
                let Some(key) = key else { continue };
                objects.push(built(
                    ObjectIdentifier::builder()
                        .key(key)
                        .set_version_id(version.map(str::to_string))
                        .build(),
                    "an object to delete",
                )?);
            }
            if objects.is_empty() {
                return Ok(());
            }
            deleted += objects.len();
            let out = self
                .clients
                .s3
                .delete_objects()
                .bucket(name)
                .delete(built(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build(),
                    "the objects to delete",
                )?)
                .send()
                .await
                .aws("s3:DeleteObjects", &resource)?;
            if let Some(error) = out.errors().first() {
                return Err(Error::unavailable(format!(
                    "could not delete `{}` from bucket {name}: {}",
                    error.key().unwrap_or("?"),
                    error.message().unwrap_or("no reason given")
                ))
                .with_resource(resource));
            }
            ctx.progress(format!("emptying bucket {name}: {deleted} objects deleted"));
        }
    }

    /// Our buckets: the configured names, and any other bucket of this environment
    /// carrying our tags (one dropped from comind.yaml).
    async fn owned_buckets(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut names: Vec<String> = buckets(self.env).into_iter().map(|b| b.name).collect();
        let listed = self
            .clients
            .s3
            .list_buckets()
            .send()
            .await
            .aws("s3:ListBuckets", "buckets")?;
        let prefix = self.env.resource_prefix();
        for bucket in listed.buckets() {
            if let Some(name) = bucket.name()
                && name.starts_with(&prefix)
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
        let mut ours = Vec::new();
        let mut foreign = Vec::new();
        for name in names {
            if !self.exists(&name).await? {
                continue;
            }
            let live = self.tags_of(&name).await?;
            if Selector::new(self.env, COMPONENT).check("bucket", &name, &live) {
                ours.push(name);
            } else if buckets(self.env).iter().any(|b| b.name == name) {
                foreign.push(name);
            }
        }
        Ok((ours, foreign))
    }
}

#[async_trait]
impl ServiceBackend for S3ObjectStore {
    fn kind(&self) -> ServiceKind {
        ServiceKind::ObjectStore
    }

    fn ready_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        let mut pass = Pass::plan();
        let run = Run::new(ctx.env(), &clients, &mut pass);
        for bucket in buckets(ctx.env()) {
            if run.exists(&bucket.name).await? {
                let live = run.tags_of(&bucket.name).await?;
                tags::require_owned(ctx.env(), COMPONENT, "bucket", &bucket.name, &live)?;
            }
        }
        Ok(())
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        Run::new(ctx.env(), &clients, pass).converge().await
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let clients = self.aws.clients(ctx.env()).await?;
        for bucket in buckets(ctx.env()) {
            clients
                .s3
                .head_bucket()
                .bucket(&bucket.name)
                .send()
                .await
                .aws("s3:HeadBucket", format!("bucket {}", bucket.name))
                // Just created: let the wait look again.
                .map_err(|e| {
                    if e.kind() == ErrorKind::NotFound {
                        e.transient(true)
                    } else {
                        e
                    }
                })?;
        }
        Ok(())
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let clients = self.aws.clients(ctx.env()).await?;
        Ok(ServiceEndpoint::ObjectStore(ObjectStoreEndpoint {
            endpoint_url: clients.service_url("s3"),
            region: clients.region.clone(),
            credentials: None,
            path_style: clients.endpoint_url.is_some(),
            buckets: buckets(ctx.env())
                .into_iter()
                .map(|b| (b.short, b.name))
                .collect(),
        }))
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        let clients = self.aws.clients(ctx.env()).await?;
        // The run only reads here; what `down` deletes is listed in `destroyed`.
        let mut pass = Pass::apply();
        let run = Run::new(ctx.env(), &clients, &mut pass);
        let (ours, foreign) = run.owned_buckets().await?;
        let mut destroyed = Destroyed::default();
        for name in foreign {
            destroyed.kept.push(Kept {
                kind: "bucket".into(),
                name,
                reason: "not created by Comind (no ownership tags); left untouched".into(),
            });
        }
        for name in ours {
            ctx.checkpoint()?;
            if run.holds_data(&name).await? {
                if !options.purge {
                    destroyed.kept.push(Kept {
                        kind: "bucket".into(),
                        name,
                        reason: "holds objects; `comind down --purge` deletes them".into(),
                    });
                    continue;
                }
                run.empty(ctx, &name).await?;
            }
            destroyed.changes.push(Change::delete("bucket", &name));
            clients
                .s3
                .delete_bucket()
                .bucket(&name)
                .send()
                .await
                .found("s3:DeleteBucket", format!("bucket {name}"))?;
        }
        Ok(destroyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_statement_joins_the_users_policy_once() {
        let ours = tls_statement("aws", "b");
        let fresh = with_tls_statement(None, &ours).unwrap();
        assert_eq!(fresh["Statement"].as_array().unwrap().len(), 1);
        let text = fresh.to_string();
        assert!(
            with_tls_statement(Some(&text), &ours).is_none(),
            "already there"
        );
        let user =
            json!({"Version": "2012-10-17", "Statement": {"Sid": "Mine", "Effect": "Allow"}});
        let merged = with_tls_statement(Some(&user.to_string()), &ours).unwrap();
        let list = merged["Statement"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["Sid"], "Mine");
        let other = tls_statement("aws", "c");
        let replaced = with_tls_statement(Some(&text), &other).unwrap();
        assert_eq!(replaced["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_expiry_rule_covers_old_versions() {
        let rule = expiry_rule(7).unwrap();
        assert!(expiry_matches(&rule, 7));
        assert!(!expiry_matches(&rule, 8));
    }
}

//! What the platform's backups hold, read from the backup bucket through the S3 API,
//! and who a restore runs as: `comind backup list` and `comind restore
//! postgres`, for any embedder.
//!
//! The layout is the one the backup scripts write (`platform/backups`):
//! `postgres/<env>/<stamp>.sql.gz`, complete once `<stamp>.sql.gz.sha256` is beside
//! it, and `objects/<bucket>/…`, the mirror of each bucket. The object store is
//! reached as the environment's outputs describe it (`S3_ENDPOINT`, `S3_REGION`, and
//! the static credentials a local object store has); on AWS the caller's own
//! credentials sign, as for every other call Comind makes.

use std::collections::BTreeMap;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use comind_core::engine::RunOptions;
use comind_core::{Bootstrap, Environment, Error, PhaseId, Profile, ServiceKind};
use comind_gitops::platform::backups::restore::RestoreCredentials;
use serde::Serialize;

/// One PostgreSQL backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostgresBackup {
    /// Its name under `postgres/<env>/` (`<stamp>.sql.gz`): what `restore --from`
    /// takes.
    pub key: String,
    /// When it was taken (RFC 3339, UTC), from its name.
    pub taken: Option<String>,
    /// The dump's size (gzip), in bytes.
    pub bytes: u64,
    /// Whether its `.sha256` is there: the upload finished, and a restore checks the
    /// dump against it. An incomplete one is an upload cut short and is never
    /// restored.
    pub complete: bool,
}

/// The mirror of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketMirror {
    /// The bucket mirrored (its real name).
    pub bucket: String,
    /// How many objects its mirror holds.
    pub objects: u64,
    /// Their total size, in bytes.
    pub bytes: u64,
    /// When the newest of them was written (RFC 3339), if any.
    pub newest: Option<String>,
}

/// What the backup bucket holds for one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupListing {
    /// The backup bucket (its real name).
    pub bucket: String,
    /// The PostgreSQL backups' prefix (`postgres/<env>/`).
    pub postgres_prefix: String,
    /// The PostgreSQL backups, newest first.
    pub postgres: Vec<PostgresBackup>,
    /// The mirrors: every mirrored bucket, by name (one never mirrored yet has no
    /// objects).
    pub objects: Vec<BucketMirror>,
}

impl BackupListing {
    /// The newest complete PostgreSQL backup: what a restore takes by default.
    pub fn newest_complete(&self) -> Option<&PostgresBackup> {
        self.postgres.iter().find(|b| b.complete)
    }

    /// The PostgreSQL backup named `key` (its name under the prefix, or its whole
    /// object key).
    pub fn find(&self, key: &str) -> Option<&PostgresBackup> {
        let key = key.strip_prefix(&self.postgres_prefix).unwrap_or(key);
        self.postgres.iter().find(|b| b.key == key)
    }

    /// The PostgreSQL backup a restore takes: the one named `from` (its name under
    /// the prefix, or its whole object key), else the newest complete one.
    ///
    /// # Errors
    /// `InvalidInput` when `from` names no backup, or one whose upload did not finish
    /// (no `.sha256`: it is never restored); `NotFound` when there is no complete
    /// backup. Each says that nothing was restored and how to choose.
    pub fn choose(&self, from: Option<&str>) -> Result<&PostgresBackup, Error> {
        let Some(key) = from else {
            return self.newest_complete().ok_or_else(|| {
                Error::not_found(format!(
                    "there is no complete PostgreSQL backup in s3://{}/{}; nothing was restored",
                    self.bucket, self.postgres_prefix
                ))
                .with_hint("`comind backup run postgres` takes one")
            });
        };
        let backup = self.find(key).ok_or_else(|| {
            Error::invalid_input(format!(
                "there is no backup `{key}` in s3://{}/{}; nothing was restored",
                self.bucket, self.postgres_prefix
            ))
            .with_hint("`comind backup list postgres` shows the backups")
        })?;
        if !backup.complete {
            return Err(Error::invalid_input(format!(
                "backup `{key}` is incomplete (its upload did not finish: no .sha256); \
                 nothing was restored"
            ))
            .with_hint("choose a complete one: `comind backup list postgres`"));
        }
        Ok(backup)
    }
}

/// Lists the backups of `bootstrap`'s environment: asks the object-store phase where
/// the store is (a read-only plan of it), then reads the backup bucket.
///
/// # Errors
/// `NotFound` when the object store or its backup bucket does not exist (no `up`
/// yet); `Unavailable` when the store does not answer; `InvalidInput` when the
/// environment has no object store.
pub async fn list(bootstrap: &Bootstrap) -> Result<BackupListing, Error> {
    let env = bootstrap.env();
    let client = object_store(bootstrap).await?;
    list_with(&client, env).await
}

/// Lists the backups of `env` with an S3 client of its object store.
///
/// # Errors
/// As [`list`].
pub async fn list_with(
    client: &aws_sdk_s3::Client,
    env: &Environment,
) -> Result<BackupListing, Error> {
    let store = &env.config().services.object_store;
    let bucket = env.resource_name(store.backup_bucket.as_str());
    let postgres_prefix = format!("postgres/{}/", env.name());
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut sums = std::collections::BTreeSet::new();
    for object in list_objects(client, &bucket, &postgres_prefix).await? {
        let name = object.key.trim_start_matches(&postgres_prefix).to_string();
        if let Some(dump) = name.strip_suffix(".sha256") {
            sums.insert(dump.to_string());
        } else if name.ends_with(".sql.gz") {
            sizes.insert(name, object.bytes);
        }
    }
    let mut postgres: Vec<PostgresBackup> = sizes
        .into_iter()
        .map(|(key, bytes)| PostgresBackup {
            taken: stamp_time(key.trim_end_matches(".sql.gz")),
            complete: sums.contains(&key),
            key,
            bytes,
        })
        .collect();
    // Stamps sort as times.
    postgres.sort_by(|a, b| b.key.cmp(&a.key));

    let mut mirrors: BTreeMap<String, BucketMirror> =
        comind_gitops::platform::backups::mirrored_buckets(env)
            .into_iter()
            .map(|name| {
                (
                    name.clone(),
                    BucketMirror {
                        bucket: name,
                        objects: 0,
                        bytes: 0,
                        newest: None,
                    },
                )
            })
            .collect();
    for object in list_objects(client, &bucket, "objects/").await? {
        let Some((name, _)) = object.key.trim_start_matches("objects/").split_once('/') else {
            continue;
        };
        let mirror = mirrors
            .entry(name.to_string())
            .or_insert_with(|| BucketMirror {
                bucket: name.to_string(),
                objects: 0,
                bytes: 0,
                newest: None,
            });
        mirror.objects += 1;
        mirror.bytes += object.bytes;
        if object.modified > mirror.newest {
            mirror.newest = object.modified;
        }
    }
    Ok(BackupListing {
        bucket,
        postgres_prefix,
        postgres,
        objects: mirrors.into_values().collect(),
    })
}

/// Who a restore of `env`'s PostgreSQL runs as (the container's superuser locally,
/// the RDS master user on AWS), and the application role whose password it sets
/// again (locally; on AWS the application uses the master user today), from the
/// state directory.
///
/// # Errors
/// `NotFound` before the first `up`; `InvalidInput` when the profile is not in this
/// build.
pub fn restore_credentials(env: &Environment) -> Result<RestoreCredentials, Error> {
    match env.profile() {
        #[cfg(feature = "local")]
        Profile::Local => Ok(RestoreCredentials {
            admin: comind_local::PostgresBackend::superuser(env)?,
            app_role: Some(comind_local::PostgresBackend::app_role_verifier(env)?),
        }),
        #[cfg(feature = "aws")]
        Profile::Aws => Ok(RestoreCredentials {
            admin: comind_aws::RdsPostgres::master_credentials(env)?,
            app_role: None,
        }),
        #[allow(unreachable_patterns)]
        other => Err(super::missing(other)),
    }
}

/// An S3 client of `bootstrap`'s object store, as its outputs describe it.
///
/// # Errors
/// As [`list`].
pub async fn object_store(bootstrap: &Bootstrap) -> Result<aws_sdk_s3::Client, Error> {
    let env = bootstrap.env();
    if !env.config().services.object_store.enabled {
        return Err(Error::invalid_input(format!(
            "environment `{}` has no object store, so it has no backups",
            env.name()
        ))
        .with_hint("enable `services.object_store` in comind.yaml"));
    }
    let phase = PhaseId::new(ServiceKind::ObjectStore.id());
    let run = RunOptions {
        only: vec![phase.clone()],
        ..RunOptions::default()
    };
    let (outputs, report) = bootstrap.outputs(&run).await?;
    if let Some(error) = report
        .summary
        .phases
        .iter()
        .find(|p| p.id == phase)
        .and_then(|p| p.error.clone())
    {
        return Err(Error::unavailable(format!(
            "cannot find the object store of environment `{}`: {error}",
            env.name()
        ))
        .with_resource(format!("service {phase}")));
    }
    let endpoint = outputs.get("S3_ENDPOINT").map(|v| v.expose().to_string());
    let Some(endpoint) = endpoint else {
        return Err(Error::not_found(format!(
            "the object store of environment `{}` is not there yet",
            env.name()
        ))
        .with_resource(format!("service {phase}"))
        .with_hint("run `comind up`"));
    };
    let region = outputs
        .get("S3_REGION")
        .map_or_else(|| "us-east-1".to_string(), |v| v.expose().to_string());
    let path_style = outputs
        .get("S3_FORCE_PATH_STYLE")
        .is_none_or(|v| v.expose() != "false");
    let static_credentials = match (
        outputs.get("S3_ACCESS_KEY_ID"),
        outputs.get("S3_SECRET_ACCESS_KEY"),
    ) {
        (Some(key), Some(secret)) => Some(aws_sdk_s3::config::Credentials::new(
            key.expose(),
            secret.expose(),
            None,
            None,
            "comind",
        )),
        _ => None,
    };
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.clone()))
        .endpoint_url(endpoint)
        .force_path_style(path_style)
        // Transient answers (a store just restarted, a throttle) are retried; a store
        // that does not answer fails within seconds, not minutes.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .build(),
        );
    match static_credentials {
        Some(credentials) => config = config.credentials_provider(credentials),
        None => config = caller_credentials(config, &region).await?,
    }
    Ok(aws_sdk_s3::Client::from_conf(config.build()))
}

/// The caller's own AWS credentials (the SDK's chain), for a store without static
/// ones.
#[cfg(feature = "aws")]
async fn caller_credentials(
    config: aws_sdk_s3::config::Builder,
    region: &str,
) -> Result<aws_sdk_s3::config::Builder, Error> {
    let sdk = comind_aws::load_sdk_config(Some(region), None).await;
    let provider = sdk.credentials_provider().ok_or_else(|| {
        Error::permission("no AWS credentials to read the backup bucket with")
            .with_hint("configure AWS credentials as for `comind up`")
    })?;
    Ok(config.credentials_provider(provider))
}

#[cfg(not(feature = "aws"))]
async fn caller_credentials(
    _config: aws_sdk_s3::config::Builder,
    _region: &str,
) -> Result<aws_sdk_s3::config::Builder, Error> {
    Err(Error::permission(
        "the object store has no static credentials, and this build has no AWS credential chain",
    )
    .with_hint("build comind with the `aws` feature"))
}

/// One listed object.
struct Listed {
    key: String,
    bytes: u64,
    modified: Option<String>,
}

async fn list_objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Listed>, Error> {
    let mut listed = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            let resource = format!("bucket {bucket}");
            match err.code() {
                Some("NoSuchBucket") => {
                    Error::not_found(format!("the backup bucket {bucket} does not exist"))
                        .with_resource(resource)
                        .with_hint("run `comind up`, which makes it")
                }
                Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                    Error::permission(format!(
                        "the object store refused to list {prefix} in {bucket}: {}",
                        DisplayErrorContext(&err)
                    ))
                    .with_resource(resource)
                    .with_hint("check the credentials Comind uses for the object store")
                }
                _ => Error::unavailable(format!(
                    "cannot list {prefix} in the backup bucket {bucket}: {}",
                    DisplayErrorContext(&err)
                ))
                .with_resource(resource)
                .with_hint("check that the object store runs (`comind status`)"),
            }
        })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            listed.push(Listed {
                key: key.to_string(),
                bytes: object
                    .size()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0),
                modified: object
                    .last_modified()
                    .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()),
            });
        }
    }
    Ok(listed)
}

/// `20261203T030012Z` as `2026-12-03T03:00:12Z`; `None` for another name.
fn stamp_time(stamp: &str) -> Option<String> {
    let bytes = stamp.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let shaped =
        bytes.len() == 16 && digits(0..8) && bytes[8] == b'T' && digits(9..15) && bytes[15] == b'Z';
    shaped.then(|| {
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &stamp[0..4],
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13],
            &stamp[13..15]
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stamps_read_as_times_and_other_names_as_none() {
        assert_eq!(
            stamp_time("20261203T030012Z").as_deref(),
            Some("2026-12-03T03:00:12Z")
        );
        assert_eq!(stamp_time("20261203T0300Z"), None);
        assert_eq!(stamp_time("my-dump"), None);
        assert_eq!(stamp_time("2026120XT030012Z"), None);
    }

    #[test]
    fn the_default_restore_is_the_newest_complete_backup() {
        let backup = |key: &str, complete| PostgresBackup {
            key: key.to_string(),
            taken: None,
            bytes: 1,
            complete,
        };
        let listing = BackupListing {
            bucket: "b".into(),
            postgres_prefix: "postgres/dev/".into(),
            postgres: vec![
                backup("20261203T030000Z.sql.gz", false),
                backup("20261202T030000Z.sql.gz", true),
            ],
            objects: vec![],
        };
        assert_eq!(
            listing.newest_complete().unwrap().key,
            "20261202T030000Z.sql.gz"
        );
        assert!(
            listing
                .find("postgres/dev/20261203T030000Z.sql.gz")
                .is_some()
        );
        assert!(listing.find("nope.sql.gz").is_none());
        // A restore's choice: the newest complete one, the one named, never an
        // incomplete one, and an error for a name that is not there.
        assert_eq!(listing.choose(None).unwrap().key, "20261202T030000Z.sql.gz");
        assert_eq!(
            listing
                .choose(Some("postgres/dev/20261202T030000Z.sql.gz"))
                .unwrap()
                .key,
            "20261202T030000Z.sql.gz"
        );
        let incomplete = listing.choose(Some("20261203T030000Z.sql.gz")).unwrap_err();
        assert_eq!(incomplete.kind(), comind_core::ErrorKind::InvalidInput);
        assert!(
            incomplete.to_string().contains("incomplete"),
            "{incomplete}"
        );
        let missing = listing.choose(Some("nope.sql.gz")).unwrap_err();
        assert!(
            missing.to_string().contains("no backup `nope.sql.gz`"),
            "{missing}"
        );
        let empty = BackupListing {
            postgres: vec![backup("20261203T030000Z.sql.gz", false)],
            ..listing.clone()
        };
        let none = empty.choose(None).unwrap_err();
        assert_eq!(none.kind(), comind_core::ErrorKind::NotFound);
    }
}

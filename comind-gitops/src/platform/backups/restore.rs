//! A restore of PostgreSQL from one of its backups: a Job in `platform-<env>` that
//! runs the scripts the backups' ConfigMap carries, `postgres-fetch.sh` (rclone:
//! download the dump and its SHA-256) then `postgres-restore.sh` (the PostgreSQL
//! image: check the dump against its SHA-256, then replay it; the dump drops and
//! recreates each database).
//!
//! Restoring needs the server's administrator (the dump recreates databases and
//! their owners), which the platform's own Secret does not hold: the administrator's
//! credentials go into a Secret of the restore's own, `<job>-admin`, owned by the Job
//! (so removing the Job removes it) and removed by [`finish`] once the Job ends. The
//! Job is never retried by the Job controller (`backoffLimit: 0`): a restore that
//! failed part-way is for a person to look at, not to be run again unseen.
//!
//! The dump holds the roles without their passwords (`--no-role-passwords`), so a
//! restore would leave the application role unable to log in: the restore's Secret
//! also carries the role's password as a SCRAM-SHA-256 verifier (never the password
//! itself), which the restore sets again once the dump is in.
//!
//! A restore is refused while a backup or another restore of PostgreSQL runs, and it
//! holds the nightly backup off while it runs: a dump taken half-way through a
//! restore would be of neither database, and would become the newest "good" backup
//! that retention keeps. The hold is the CronJob's `spec.suspend` and an annotation
//! naming the restore's Job, both owned by a field manager of their own
//! ([`HOLD_MANAGER`]) so that `up`'s apply (which never sets them) leaves them be.
//! [`finish`] lifts it; a hold whose restore ended unseen (the command stopped while
//! the Job ran) is lifted by the next restore and by the backups phase on `up`
//! ([`release_ended_hold`]).

use std::collections::BTreeMap;
use std::time::Duration;

use comind_core::state::Credentials;
use comind_core::{Environment, Error, PhaseContext, Result, ServiceKind};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::run::{self, BackupKind, JobHints};
use super::{
    POSTGRES_CRONJOB, from_secret, job_labels, meta, object_store_env, plain, pod_spec,
    postgres_image, step,
};
use crate::apply::error::api_error;
use crate::platform::baseline;
use crate::platform::services::secret_name;

/// The name of the restore Jobs (and their label `app.kubernetes.io/name`).
pub const RESTORE_JOB: &str = "postgres-restore";
/// The field manager that owns a restore's hold on the nightly backup.
pub const HOLD_MANAGER: &str = "comind-restore";
/// The annotation on the PostgreSQL backup's CronJob naming the restore Job that holds
/// it off.
pub const ANNOTATION_HELD_BY: &str = "comind.dev/held-by-restore";
/// How long a finished restore Job (and its Pods' logs) stays before the cluster
/// removes it.
const KEEP_FINISHED: i32 = 24 * 3600;

/// Who a restore runs as, and what it gives back.
#[derive(Debug, Clone)]
pub struct RestoreCredentials {
    /// The server's administrator (the container's superuser, RDS's master user).
    pub admin: Credentials,
    /// The application role whose password the restore sets again, when it is not
    /// the administrator: its name and its SCRAM-SHA-256 verifier.
    pub app_role: Option<(String, comind_core::Secret)>,
}

/// A restore Job that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRestore {
    /// Its namespace (`platform-<env>`).
    pub namespace: String,
    /// The Job's name.
    pub name: String,
    /// The backup it restores: its name under `<backup bucket>/postgres/<env>/`.
    pub key: String,
}

impl StartedRestore {
    /// The Secret holding the administrator's credentials for this restore.
    pub fn admin_secret(&self) -> String {
        admin_secret_name(&self.name)
    }
}

fn admin_secret_name(job: &str) -> String {
    format!("{job}-admin")
}

/// Checks that a restore of `env`'s PostgreSQL can start now: the backups are laid
/// (their scripts and CronJob exist), and neither a backup nor a restore runs.
///
/// # Errors
/// `NotFound` when the backups are not laid; `Conflict` when a backup or a restore
/// runs; the API's error otherwise.
pub async fn check(client: &kube::Client, env: &Environment) -> Result<()> {
    checked(client, env).await.map(drop)
}

/// [`check`], returning the PostgreSQL backup's CronJob.
async fn checked(client: &kube::Client, env: &Environment) -> Result<CronJob> {
    let cron_job = run::check(client, env, BackupKind::Postgres)
        .await
        .map_err(|err| match err.kind() {
            comind_core::ErrorKind::Conflict => {
                err.with_hint("wait for the backup to end, then restore")
            }
            _ => err,
        })?;
    let namespace = baseline::services_namespace(env);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let running: Vec<String> = jobs
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={RESTORE_JOB}")))
        .await
        .map_err(|e| api_error("list", &format!("Jobs in {namespace}"), e))?
        .items
        .into_iter()
        .filter(|job| !run::finished(job))
        .filter_map(|job| job.metadata.name)
        .collect();
    if !running.is_empty() {
        return Err(Error::conflict(format!(
            "a restore of PostgreSQL is running already (Job {})",
            running.join(", ")
        ))
        .with_resource(format!("Job {namespace}/{}", running.join(", ")))
        .with_hint("wait for it to end (or delete the Job), then run the command again"));
    }
    Ok(cron_job)
}

/// Checks that `key` names a dump as the backups name them: one file name (no
/// path, no control character) ending in `.sql.gz`.
///
/// # Errors
/// `InvalidInput` otherwise.
pub fn check_key(key: &str) -> Result<()> {
    let plain = !key.is_empty()
        && !key.starts_with('.')
        && !key.contains('/')
        && !key.chars().any(char::is_control)
        && key.ends_with(".sql.gz");
    if plain {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "`{}` is not the name of a PostgreSQL backup (a file name ending in .sql.gz, \
             such as 20261203T030000Z.sql.gz); nothing was restored",
            key.escape_debug()
        ))
        .with_hint("`comind backup list postgres` shows the backups"))
    }
}

/// The restore Job of the backup `key` (a name under `<backup bucket>/postgres/<env>/`,
/// as `backup list` shows it), named `name`; the administrator's credentials come
/// from the Secret `<name>-admin`.
pub fn restore_job(env: &Environment, name: &str, key: &str) -> Job {
    let settings = &env.config().platform.backups;
    let production = env.is_production();
    let mut fetch_env = object_store_env(env);
    fetch_env.push(plain("RESTORE_KEY", key));
    let steps = vec![
        step(
            "fetch",
            settings.rclone_image.as_str(),
            "postgres-fetch.sh",
            fetch_env,
            production,
        ),
        step(
            "restore",
            &postgres_image(env),
            "postgres-restore.sh",
            admin_env(env, &admin_secret_name(name)),
            production,
        ),
    ];
    let labels = job_labels(RESTORE_JOB);
    let mut metadata = meta(env, name);
    metadata.labels = Some(labels.clone());
    metadata.annotations = Some(BTreeMap::from([(
        "comind.dev/restore-key".to_string(),
        key.to_string(),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(6 * 3600),
            ttl_seconds_after_finished: Some(KEEP_FINISHED),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(env, steps)),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// libpq's variables for the restore: the server from the platform's PostgreSQL
/// Secret, the administrator from the restore's own Secret.
fn admin_env(env: &Environment, admin_secret: &str) -> Vec<EnvVar> {
    let platform = secret_name(ServiceKind::Postgres);
    let mut vars = vec![
        from_secret("PGHOST", &platform, "POSTGRES_HOST", false),
        from_secret("PGPORT", &platform, "POSTGRES_PORT", false),
        from_secret("PGUSER", admin_secret, "username", false),
        from_secret("PGPASSWORD", admin_secret, "password", false),
        from_secret("APP_USER", admin_secret, "app-user", true),
        from_secret("APP_VERIFIER", admin_secret, "app-verifier", true),
        plain("BACKUP_DIR", super::SCRATCH_DIR),
        plain("HOME", "/tmp"),
    ];
    if env.profile() == comind_core::config::Profile::Aws {
        vars.push(plain("PGSSLMODE", "require"));
    }
    vars
}

/// Starts the restore of the backup `key` into `env`'s PostgreSQL as `credentials` say (after
/// [`check`]): the Job, then the administrator's Secret owned by it (the Job's Pod
/// waits for the Secret to exist).
///
/// # Errors
/// As [`check`]; the API's error when the Job or the Secret cannot be made (a Job
/// whose Secret could not be made is removed again).
pub async fn start(
    client: &kube::Client,
    env: &Environment,
    credentials: &RestoreCredentials,
    key: &str,
) -> Result<StartedRestore> {
    check_key(key)?;
    release_ended_hold(client, env).await?;
    let cron_job = checked(client, env).await?;
    let namespace = baseline::services_namespace(env);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = format!("{RESTORE_JOB}-{}", run::unix_now());
    // The Job first: its Pod cannot start before the administrator's Secret exists,
    // and the hold names it.
    let created = jobs
        .create(&PostParams::default(), &restore_job(env, &name, key))
        .await
        .map_err(|e| api_error("create", &format!("Job {namespace}/{name}"), e))?;
    let started = StartedRestore {
        namespace: namespace.clone(),
        name: name.clone(),
        key: key.to_string(),
    };
    let undo = |err: Error| async {
        let _ = jobs.delete(&name, &DeleteParams::background()).await;
        let _ = release(client, &namespace).await;
        Err(err)
    };
    if let Err(err) = hold(client, &namespace, &name).await {
        return undo(err).await;
    }
    // A nightly run may have started between the check and the hold.
    match run::running_jobs(&jobs, &namespace, &cron_job).await {
        Ok(running) if running.is_empty() => {}
        Ok(running) => {
            return undo(
                Error::conflict(format!(
                    "the postgres backup started while the restore was being set up (Job {})",
                    running.join(", ")
                ))
                .with_resource(format!("CronJob {namespace}/{POSTGRES_CRONJOB}"))
                .with_hint("wait for the backup to end, then restore"),
            )
            .await;
        }
        Err(err) => return undo(err).await,
    }
    let secret = admin_secret(&started, &created, credentials);
    if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
        return undo(api_error(
            "create",
            &format!("Secret {namespace}/{}", started.admin_secret()),
            e,
        ))
        .await;
    }
    Ok(started)
}

/// Applies, as the hold's field manager, `patch` (the hold's fields, or none) to the
/// nightly PostgreSQL CronJob; `verb` and `hint` say what failed and what to do.
async fn apply_hold(
    client: &kube::Client,
    namespace: &str,
    patch: serde_json::Value,
    verb: &str,
    hint: String,
) -> Result<()> {
    Api::<CronJob>::namespaced(client.clone(), namespace)
        .patch(
            POSTGRES_CRONJOB,
            &PatchParams::apply(HOLD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| {
            api_error(verb, &format!("CronJob {namespace}/{POSTGRES_CRONJOB}"), e).with_hint(hint)
        })?;
    Ok(())
}

/// Holds the nightly PostgreSQL backup off for the restore Job `job`.
async fn hold(client: &kube::Client, namespace: &str, job: &str) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": POSTGRES_CRONJOB,
            "annotations": {ANNOTATION_HELD_BY: job},
        },
        "spec": {"suspend": true},
    });
    let hint = "nothing was restored; run the command again".to_string();
    apply_hold(client, namespace, patch, "suspend", hint).await
}

/// Lifts the hold: the hold's manager applies nothing, so the fields only it owned
/// (the suspension and the annotation) are removed, and the CronJob runs on schedule.
async fn release(client: &kube::Client, namespace: &str) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": POSTGRES_CRONJOB},
    });
    let hint = format!(
        "the nightly backup stays suspended: run `comind up`, or remove `spec.suspend` and \
         the annotation {ANNOTATION_HELD_BY} from CronJob {namespace}/{POSTGRES_CRONJOB}"
    );
    apply_hold(client, namespace, patch, "resume", hint).await
}

/// The restore Job holding `env`'s nightly PostgreSQL backup off, if one does.
///
/// # Errors
/// The API's error.
pub async fn held_by(client: &kube::Client, env: &Environment) -> Result<Option<String>> {
    held_in(client, &baseline::services_namespace(env)).await
}

async fn held_in(client: &kube::Client, namespace: &str) -> Result<Option<String>> {
    let cron_job = Api::<CronJob>::namespaced(client.clone(), namespace)
        .get_opt(POSTGRES_CRONJOB)
        .await
        .map_err(|e| {
            api_error(
                "read",
                &format!("CronJob {namespace}/{POSTGRES_CRONJOB}"),
                e,
            )
        })?;
    Ok(cron_job
        .and_then(|cron_job| cron_job.metadata.annotations)
        .and_then(|mut annotations| annotations.remove(ANNOTATION_HELD_BY)))
}

/// Lifts a hold on `env`'s nightly PostgreSQL backup whose restore Job has ended (or
/// is gone), and says whether it did; a hold of a restore still running stays.
///
/// # Errors
/// The API's error.
pub async fn release_ended_hold(client: &kube::Client, env: &Environment) -> Result<bool> {
    let Some(job) = held_by(client, env).await? else {
        return Ok(false);
    };
    let namespace = baseline::services_namespace(env);
    let live = Api::<Job>::namespaced(client.clone(), &namespace)
        .get_opt(&job)
        .await
        .map_err(|e| api_error("read", &format!("Job {namespace}/{job}"), e))?;
    if live.as_ref().is_some_and(|live| !run::finished(live)) {
        return Ok(false);
    }
    release(client, &namespace).await?;
    Ok(true)
}

/// The administrator's Secret of `restore`, owned by its Job.
fn admin_secret(restore: &StartedRestore, job: &Job, credentials: &RestoreCredentials) -> Secret {
    let admin = &credentials.admin;
    let mut data = BTreeMap::from([
        (
            "username".to_string(),
            ByteString(admin.username.clone().into_bytes()),
        ),
        (
            "password".to_string(),
            ByteString(admin.password.expose().as_bytes().to_vec()),
        ),
    ]);
    if let Some((role, verifier)) = &credentials.app_role {
        data.insert(
            "app-user".to_string(),
            ByteString(role.clone().into_bytes()),
        );
        data.insert(
            "app-verifier".to_string(),
            ByteString(verifier.expose().as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(restore.admin_secret()),
            namespace: Some(restore.namespace.clone()),
            labels: Some(job_labels(RESTORE_JOB)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_string(),
                kind: "Job".to_string(),
                name: restore.name.clone(),
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Waits until the restore completes, reporting its progress on `ctx`. The
/// administrator's Secret stays: [`finish`] removes it once the Job has ended.
///
/// # Errors
/// `Unavailable` (permanent) when the restore failed, with the failed step's exit;
/// `Timeout` after `timeout`; `Cancelled`.
pub async fn wait(
    client: &kube::Client,
    ctx: &PhaseContext,
    restore: &StartedRestore,
    timeout: Duration,
) -> Result<Option<Duration>> {
    let resource = format!("Job {}/{}", restore.namespace, restore.name);
    run::wait_for_job(
        client,
        ctx,
        &restore.namespace,
        &restore.name,
        timeout,
        JobHints {
            failed: "fix the cause; the databases may be partly restored, so restore again \
                     before using them",
            left_running: &format!(
                "its outcome will be in the status of {resource}; a new restore is refused \
                 until it ends, and Secret {}/{} (the database administrator's password) \
                 stays until the Job is removed (a day after it ends)",
                restore.namespace,
                restore.admin_secret()
            ),
        },
    )
    .await
}

/// Removes the administrator's Secret of `restore` once its Job has ended (complete,
/// failed, or gone), and says whether it did: a Job still running needs it.
///
/// # Errors
/// The API's error; the hint names the Secret to remove by hand.
pub async fn finish(client: &kube::Client, restore: &StartedRestore) -> Result<bool> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &restore.namespace);
    let job = jobs.get_opt(&restore.name).await.map_err(|e| {
        api_error(
            "read",
            &format!("Job {}/{}", restore.namespace, restore.name),
            e,
        )
        .with_hint(format!(
            "delete Secret {}/{} (the database administrator's password) once the Job ends",
            restore.namespace,
            restore.admin_secret()
        ))
    })?;
    if job.as_ref().is_some_and(|job| !run::finished(job)) {
        return Ok(false);
    }
    remove_admin_secret(client, restore).await?;
    // Another restore's hold is not this one's to lift.
    if held_in(client, &restore.namespace).await?.as_ref() == Some(&restore.name) {
        release(client, &restore.namespace).await?;
    }
    Ok(true)
}

/// Removes the administrator's Secret of `restore` (gone already is fine).
///
/// # Errors
/// The API's error.
pub async fn remove_admin_secret(client: &kube::Client, restore: &StartedRestore) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &restore.namespace);
    let name = restore.admin_secret();
    match secrets.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(
            api_error("remove", &format!("Secret {}/{name}", restore.namespace), e)
                .with_hint("it holds the database administrator's password: delete it by hand"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use comind_core::config::{Config, EnvironmentName};

    fn env() -> Environment {
        let mut config = Config::default();
        config.environment = EnvironmentName::new("dev").unwrap();
        Environment::with_state_root(config, "/nonexistent")
    }

    #[test]
    fn only_backup_file_names_are_restore_keys() {
        assert!(check_key("20261203T030000Z.sql.gz").is_ok());
        for bad in [
            "",
            "../x.sql.gz",
            "a/b.sql.gz",
            ".sql.gz",
            "x.sql.gz\n",
            "x.sql",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_restore_fetches_then_restores_as_the_administrator_and_is_never_retried() {
        let env = env();
        let job = restore_job(&env, "postgres-restore-1", "20261203T030000Z.sql.gz");
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        let fetch = &pod.init_containers.unwrap()[0];
        assert_eq!(fetch.name, "fetch");
        assert!(
            fetch
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "RESTORE_KEY"
                    && v.value.as_deref() == Some("20261203T030000Z.sql.gz"))
        );
        let restore = &pod.containers[0];
        assert_eq!(
            restore.command.as_ref().unwrap()[1],
            "/scripts/postgres-restore.sh"
        );
        let from = |name: &str| {
            let var = restore
                .env
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == name)
                .unwrap();
            let selector = var.value_from.as_ref().unwrap().secret_key_ref.clone();
            selector.unwrap().name
        };
        assert_eq!(from("PGUSER"), "postgres-restore-1-admin");
        assert_eq!(from("PGPASSWORD"), "postgres-restore-1-admin");
        assert_eq!(from("PGHOST"), "platform-postgres");
        // The backups' NetworkPolicy lets it reach the services.
        assert!(
            spec.template.metadata.unwrap().labels.unwrap()[super::super::LABEL_BACKUP]
                == RESTORE_JOB
        );
    }
}

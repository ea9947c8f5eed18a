//! A backup now: a Job made from the backup's CronJob, as the CronJob controller
//! would make it at the scheduled time, then waited for until it completes or fails.
//!
//! The Job is the CronJob's own `jobTemplate` (so it runs exactly the scripts,
//! images, Secrets and limits of the nightly run), named `<cronjob>-manual-<unix
//! time>`, annotated `cronjob.kubernetes.io/instantiate: manual` and owned by the
//! CronJob (so its history limits and a `down` clean it up with the CronJob). The
//! CronJob's `concurrencyPolicy: Forbid` is kept both ways: while a Job of the
//! CronJob runs, no manual one is started; and the manual Job is entered in the
//! CronJob's `status.active` (the CronJob controller lists only the Jobs it made
//! there, and would start a scheduled run beside one it did not), which the
//! controller clears itself once the Job ends.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comind_core::wait::{Backoff, Observed, Status, Wait};
use comind_core::{Environment, Error, ErrorKind, PhaseContext, Result};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use super::{OBJECTS_CRONJOB, POSTGRES_CRONJOB};
use crate::apply::error::api_error;
use crate::platform::baseline;

/// The annotation the CronJob controller's tooling puts on a Job started by hand.
pub const ANNOTATION_INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";
/// The label the Job controller puts on a Job's Pods.
const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// How often a running backup Job is looked at: it takes seconds to hours.
const JOB_POLL: Backoff = Backoff {
    initial: Duration::from_millis(500),
    steady: Duration::ZERO,
    max: Duration::from_secs(5),
    factor: 1.5,
};

/// One of the platform's backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackupKind {
    /// The PostgreSQL dump (`postgres-backup`).
    Postgres,
    /// The object-store mirror (`objects-backup`).
    Objects,
}

impl BackupKind {
    /// Every backup, in the order they run at night.
    pub const ALL: [BackupKind; 2] = [BackupKind::Postgres, BackupKind::Objects];

    /// Its CronJob's name.
    pub fn cron_job(self) -> &'static str {
        match self {
            BackupKind::Postgres => POSTGRES_CRONJOB,
            BackupKind::Objects => OBJECTS_CRONJOB,
        }
    }

    /// `postgres` or `objects`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Postgres => "postgres",
            BackupKind::Objects => "objects",
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup Job that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedJob {
    /// Which backup.
    pub kind: BackupKind,
    /// Its namespace (`platform-<env>`).
    pub namespace: String,
    /// The Job's name.
    pub name: String,
    /// Whether the CronJob counts it as running (its `status.active`), so that a
    /// scheduled run waits for it; `false` when that could not be written (the Job
    /// runs all the same, and a scheduled run may start beside it).
    pub counted: bool,
}

/// How a finished backup Job ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedJob {
    /// The Job.
    pub job: StartedJob,
    /// From its start to its completion, as the Job's status says (`None` when the
    /// API did not say).
    pub duration: Option<Duration>,
}

/// Checks that the backup `kind` of `env` can start now, and returns its CronJob.
///
/// # Errors
/// `NotFound` when the CronJob does not exist (backups off, or `up` not run);
/// `Conflict` when a Job of the CronJob is still running; the API's error otherwise.
pub async fn check(client: &kube::Client, env: &Environment, kind: BackupKind) -> Result<CronJob> {
    let namespace = baseline::services_namespace(env);
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let resource = format!("CronJob {namespace}/{}", kind.cron_job());
    let cron_job = cron_jobs
        .get_opt(kind.cron_job())
        .await
        .map_err(|e| api_error("read", &resource, e))?
        .ok_or_else(|| {
            Error::not_found(format!(
                "environment `{}` has no {kind} backup: {resource} does not exist",
                env.name()
            ))
            .with_resource(resource.clone())
            .with_hint(
                "run `comind up` (with `platform.backups.enabled: true`, the default) to lay \
                 the backups",
            )
        })?;
    let running = running_jobs(&jobs, &namespace, &cron_job).await?;
    // A dump taken while a restore replaces the databases would be of neither.
    if kind == BackupKind::Postgres {
        let restoring: Vec<String> = jobs
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name={}",
                super::restore::RESTORE_JOB
            )))
            .await
            .map_err(|e| api_error("list", &format!("Jobs in {namespace}"), e))?
            .items
            .into_iter()
            .filter(|job| !finished(job))
            .filter_map(|job| job.metadata.name)
            .collect();
        if !restoring.is_empty() {
            return Err(Error::conflict(format!(
                "PostgreSQL is being restored (Job {}); a backup now would be of half-restored data",
                restoring.join(", ")
            ))
            .with_resource(resource)
            .with_hint("wait for the restore to end, then run the backup"));
        }
    }
    if !running.is_empty() {
        return Err(Error::conflict(format!(
            "the {kind} backup is running already (Job {}); its CronJob forbids a second \
             one at the same time",
            running.join(", ")
        ))
        .with_resource(resource)
        .with_hint("wait for it to end, then run the command again"));
    }
    Ok(cron_job)
}

/// The Jobs of `cron_job` (in `namespace`, listed through `jobs`) that have not ended.
///
/// # Errors
/// The API's error.
pub(super) async fn running_jobs(
    jobs: &Api<Job>,
    namespace: &str,
    cron_job: &CronJob,
) -> Result<Vec<String>> {
    let uid = cron_job.metadata.uid.clone().unwrap_or_default();
    Ok(jobs
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("list", &format!("Jobs in {namespace}"), e))?
        .items
        .into_iter()
        .filter(|job| owned_by(job, &uid) && !finished(job))
        .filter_map(|job| job.metadata.name)
        .collect())
}

/// Starts the backup `kind` of `env` now, from its CronJob (after [`check`]).
///
/// # Errors
/// As [`check`]; the API's error when the Job cannot be made.
pub async fn start(
    client: &kube::Client,
    env: &Environment,
    kind: BackupKind,
) -> Result<StartedJob> {
    let cron_job = check(client, env, kind).await?;
    let namespace = baseline::services_namespace(env);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let job = job_from(&cron_job, &job_name(kind.cron_job(), unix_now()))?;
    let name = job.metadata.name.clone().unwrap_or_default();
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .map_err(|e| api_error("create", &format!("Job {namespace}/{name}"), e))?;
    let counted = count_as_active(client, &namespace, kind.cron_job(), &created)
        .await
        .is_ok();
    Ok(StartedJob {
        kind,
        namespace,
        name,
        counted,
    })
}

/// Enters `job` in the CronJob's `status.active`, so the controller's Forbid holds off
/// a scheduled run until the Job ends (the controller removes it then). Optimistic:
/// the patch names the resourceVersion it read, and is tried again on a conflict.
async fn count_as_active(
    client: &kube::Client,
    namespace: &str,
    cron_job: &str,
    job: &Job,
) -> Result<()> {
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let resource = format!("CronJob {namespace}/{cron_job}");
    let reference = ObjectReference {
        api_version: Some("batch/v1".to_string()),
        kind: Some("Job".to_string()),
        name: job.metadata.name.clone(),
        namespace: Some(namespace.to_string()),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let live = cron_jobs
            .get(cron_job)
            .await
            .map_err(|e| api_error("read", &resource, e))?;
        let mut active = live
            .status
            .and_then(|status| status.active)
            .unwrap_or_default();
        active.push(reference.clone());
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": live.metadata.resource_version},
            "status": {"active": active},
        });
        match cron_jobs
            .patch_status(cron_job, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 3 => {}
            Err(e) => return Err(api_error("count the manual Job as active in", &resource, e)),
        }
    }
}

/// Waits until `job` completes, reporting its progress on `ctx`.
///
/// # Errors
/// `Unavailable` (permanent) when the Job failed, with its condition's reason and the
/// exit of its Pods' failed containers; `Timeout` after `timeout`; `Cancelled`.
pub async fn wait(
    client: &kube::Client,
    ctx: &PhaseContext,
    job: &StartedJob,
    timeout: Duration,
) -> Result<CompletedJob> {
    let resource = format!("Job {}/{}", job.namespace, job.name);
    let duration = wait_for_job(
        client,
        ctx,
        &job.namespace,
        &job.name,
        timeout,
        JobHints {
            failed: "fix the cause, then run the backup again",
            left_running: &format!(
                "its outcome will be in the status of {resource} (and a failure raises the \
                 backups' alert); a new `comind backup run` is refused until it ends"
            ),
        },
    )
    .await?;
    Ok(CompletedJob {
        job: job.clone(),
        duration,
    })
}

/// What a failed or abandoned wait for a Job tells the user to do.
pub(super) struct JobHints<'a> {
    /// After the Job failed, once its logs are read.
    pub(super) failed: &'a str,
    /// When the wait ends (timeout, Ctrl-C) and the Job goes on without us.
    pub(super) left_running: &'a str,
}

/// Waits until the Job `namespace/name` completes, reporting its progress on `ctx`,
/// and returns how long it ran (as its status says).
pub(super) async fn wait_for_job(
    client: &kube::Client,
    ctx: &PhaseContext,
    namespace: &str,
    name: &str,
    timeout: Duration,
    hints: JobHints<'_>,
) -> Result<Option<Duration>> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let resource = format!("Job {namespace}/{name}");
    let hint = format!(
        "the Job's Pods keep their logs until the Job is removed: read them through the \
         API server (Pods labelled {LABEL_JOB_NAME}={name}), then {}",
        hints.failed
    );
    let waited = Wait::new("job", name, "complete", timeout, None)
        .with_backoff(JOB_POLL)
        .on("the cluster")
        .with_failed_hint(&hint)
        .until(ctx, || async {
            let live = jobs
                .get(name)
                .await
                .map_err(|e| api_error("read", &resource, e))?;
            Ok(match observe(&live) {
                Observed::Failed(status) => {
                    // Why it failed is in its Pods: what each failed container said.
                    let exits = failed_containers(&pods, name).await;
                    let message = [status.message.clone(), exits]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("; ");
                    Observed::Failed(Status::new(status.status).with_message(Some(message)))
                }
                other => other,
            })
        })
        .await;
    waited.map_err(|err| match err.kind() {
        // The Job goes on in the cluster without us: say where its end will be.
        ErrorKind::Timeout | ErrorKind::Cancelled => err.with_hint(format!(
            "the Job goes on in the cluster: {}",
            hints.left_running
        )),
        _ => err,
    })
}

/// The Job of `cron_job`'s template, named `name`, owned by the CronJob.
fn job_from(cron_job: &CronJob, name: &str) -> Result<Job> {
    let cron_name = cron_job.metadata.name.clone().unwrap_or_default();
    let template = cron_job
        .spec
        .as_ref()
        .map(|spec| spec.job_template.clone())
        .ok_or_else(|| {
            Error::internal(format!("CronJob {cron_name} has no spec"))
                .with_resource(format!("CronJob {cron_name}"))
        })?;
    let template_meta = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = template_meta.annotations.unwrap_or_default();
    annotations.insert(ANNOTATION_INSTANTIATE.to_string(), "manual".to_string());
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cron_job.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_string(),
                kind: "CronJob".to_string(),
                name: cron_name,
                uid: cron_job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// `<cron_job>-manual-<unix time>`, within the 63 characters of a label value (the
/// Job controller labels the Pods with the Job's name).
fn job_name(cron_job: &str, unix: u64) -> String {
    let suffix = format!("-manual-{unix}");
    let keep = 63usize.saturating_sub(suffix.len());
    let prefix: String = cron_job.chars().take(keep).collect();
    format!("{}{suffix}", prefix.trim_end_matches('-'))
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub(super) fn owned_by(job: &Job, uid: &str) -> bool {
    job.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == "CronJob" && owner.uid == uid)
}

/// Whether the Job has a `Complete` or `Failed` condition that is true.
pub(super) fn finished(job: &Job) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

fn condition<'a>(
    job: &'a Job,
    kind: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// What one look at the Job says: complete (with its duration), failed (with the
/// condition's reason and message), or on its way (how many Pods run, failed).
fn observe(job: &Job) -> Observed<Option<Duration>> {
    if let Some(failed) = condition(job, "Failed") {
        let reason = failed
            .reason
            .clone()
            .unwrap_or_else(|| "Failed".to_string());
        return Observed::Failed(Status::new(reason).with_message(failed.message.clone()));
    }
    let status = job.status.clone().unwrap_or_default();
    if condition(job, "Complete").is_some() {
        let duration = match (&status.start_time, &status.completion_time) {
            (Some(start), Some(end)) => Duration::try_from(end.0.duration_since(start.0)).ok(),
            _ => None,
        };
        return Observed::Ready(duration);
    }
    // FailureTarget: the Job controller decided the Job fails and waits for its Pods
    // to end before it says `Failed`.
    if let Some(failing) = condition(job, "FailureTarget") {
        let reason = failing.reason.clone().unwrap_or_default();
        return Observed::Pending(Status::new("failing").with_message(Some(reason)));
    }
    let active = status.active.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    let state = if active > 0 { "running" } else { "pending" };
    let message = (failed > 0).then(|| format!("{failed} failed Pod(s), retrying"));
    Observed::Pending(Status::new(state).with_message(message))
}

/// The failed containers of the Job's Pods: `pod/container exited N (reason)`, or
/// `None` when none can be read (the failure is then the condition's alone).
async fn failed_containers(pods: &Api<Pod>, job: &str) -> Option<String> {
    let listed = pods
        .list(&ListParams::default().labels(&format!("{LABEL_JOB_NAME}={job}")))
        .await
        .ok()?;
    let exits: Vec<String> = listed
        .items
        .iter()
        .flat_map(|pod| {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            status
                .init_container_statuses
                .unwrap_or_default()
                .into_iter()
                .chain(status.container_statuses.unwrap_or_default())
                .filter_map(move |c| {
                    let terminated = c.state?.terminated?;
                    (terminated.exit_code != 0).then(|| {
                        let reason = terminated.reason.unwrap_or_else(|| "Error".to_string());
                        format!(
                            "{pod_name}/{} exited {} ({reason})",
                            c.name, terminated.exit_code
                        )
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (!exits.is_empty()).then(|| exits.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use comind_core::config::{Config, EnvironmentName};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn env() -> Environment {
        let mut config = Config::default();
        config.environment = EnvironmentName::new("dev").unwrap();
        Environment::with_state_root(config, "/nonexistent")
    }

    fn with_conditions(conditions: &[(&str, &str)]) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(kind, reason)| JobCondition {
                            type_: kind.to_string(),
                            status: "True".to_string(),
                            reason: Some(reason.to_string()),
                            message: Some(format!("{reason} happened")),
                            ..JobCondition::default()
                        })
                        .collect(),
                ),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn the_job_is_the_cron_jobs_template_owned_by_it_and_marked_manual() {
        let env = env();
        let mut cron_job = super::super::postgres_cron_job(&env);
        cron_job.metadata.uid = Some("uid-1".to_string());
        let job = job_from(&cron_job, "postgres-backup-manual-1").unwrap();
        let template = cron_job.spec.clone().unwrap().job_template;
        assert_eq!(job.spec, template.spec, "the nightly run's spec, unchanged");
        assert_eq!(job.metadata.labels, template.metadata.unwrap().labels);
        assert_eq!(
            job.metadata.annotations.unwrap()[ANNOTATION_INSTANTIATE],
            "manual"
        );
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("CronJob", POSTGRES_CRONJOB, "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn job_names_fit_a_label_value() {
        assert_eq!(
            job_name("postgres-backup", 1_700_000_000),
            "postgres-backup-manual-1700000000"
        );
        let long = job_name(&"x".repeat(80), 1_700_000_000);
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-manual-1700000000"));
    }

    #[test]
    fn a_look_at_the_job_reads_its_conditions() {
        assert!(matches!(
            observe(&with_conditions(&[("Failed", "BackoffLimitExceeded")])),
            Observed::Failed(status) if status.status == "BackoffLimitExceeded"
                && status.message.as_deref() == Some("BackoffLimitExceeded happened")
        ));
        let mut complete = with_conditions(&[("SuccessCriteriaMet", "x"), ("Complete", "x")]);
        let start = Time("2026-12-03T03:00:00Z".parse().unwrap());
        let end = Time("2026-12-03T03:00:12Z".parse().unwrap());
        let status = complete.status.as_mut().unwrap();
        status.start_time = Some(start);
        status.completion_time = Some(end);
        assert!(matches!(
            observe(&complete),
            Observed::Ready(Some(d)) if d == Duration::from_secs(12)
        ));
        let running = Job {
            status: Some(JobStatus {
                active: Some(1),
                failed: Some(1),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        assert!(matches!(
            observe(&running),
            Observed::Pending(status) if status.status == "running"
                && status.message.as_deref() == Some("1 failed Pod(s), retrying")
        ));
        assert!(finished(&with_conditions(&[("Complete", "x")])));
        assert!(!finished(&running));
    }
}

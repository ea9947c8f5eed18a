//! `platform/backups`: the daily backups of the platform services, as CronJobs in
//! `platform-<env>` that run scripts Comind ships (a ConfigMap), so what runs in the
//! cluster is exactly what the tests run against real PostgreSQL and S3.
//!
//! - `postgres-backup` (default 03:00): `pg_dumpall`, gzip, verified (whole gzip,
//!   non-empty, pg_dumpall's completion line) on a scratch volume by the dump step
//!   (the PostgreSQL image), then uploaded with its SHA-256 to
//!   `<backup bucket>/postgres/<env>/<stamp>.sql.gz` by the upload step (rclone),
//!   which then removes backups older than the retention but never the newest
//!   complete one. Any failing step fails the Job, and a failed dump uploads nothing.
//! - `objects-backup` (default 04:00): every other bucket mirrored incrementally into
//!   `<backup bucket>/objects/<bucket>/`.
//!
//! Both read the services' credentials from the `platform-postgres` and
//! `platform-object-store` Secrets of `platform/services`, in environment variables
//! (never arguments), with `concurrencyPolicy: Forbid`, a time zone, resource
//! requests, and non-root, read-only containers. A NetworkPolicy lets their Pods
//! (only) reach the services' ports past the baseline's default-deny.

pub mod restore;
pub mod run;

use std::collections::BTreeMap;

use comind_core::cluster::BACKUP_SERVICE_ACCOUNT;
use comind_core::config::Profile;
use comind_core::{Environment, Result, ServiceKind};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SecretKeySelector,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::baseline;
use super::services::secret_name;
use crate::apply::{Kind, Object, ObjectSet};

/// The phase's id.
pub const ID: &str = "platform/backups";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-backups";
/// The ConfigMap that carries the scripts.
pub const SCRIPTS: &str = "platform-backup-scripts";
/// The PostgreSQL backup's CronJob.
pub const POSTGRES_CRONJOB: &str = "postgres-backup";
/// The object-store mirror's CronJob.
pub const OBJECTS_CRONJOB: &str = "objects-backup";
/// The label on the backup Jobs' Pods (their NetworkPolicy selects it).
pub const LABEL_BACKUP: &str = "comind.dev/backup";

/// Where the scripts are mounted in the containers.
pub const SCRIPTS_DIR: &str = "/scripts";
/// The scratch volume's mount point (`BACKUP_DIR`).
pub const SCRATCH_DIR: &str = "/backup";

/// The scripts, by file name, as the ConfigMap holds them.
pub const SCRIPT_FILES: [(&str, &str); 7] = [
    ("common.sh", include_str!("scripts/common.sh")),
    ("postgres-dump.sh", include_str!("scripts/postgres-dump.sh")),
    (
        "postgres-upload.sh",
        include_str!("scripts/postgres-upload.sh"),
    ),
    ("retention.sh", include_str!("scripts/retention.sh")),
    (
        "objects-mirror.sh",
        include_str!("scripts/objects-mirror.sh"),
    ),
    (
        "postgres-fetch.sh",
        include_str!("scripts/postgres-fetch.sh"),
    ),
    (
        "postgres-restore.sh",
        include_str!("scripts/postgres-restore.sh"),
    ),
];

/// The PrometheusRule of kube-prometheus-stack (the monitoring add-on's CRD).
pub fn prometheus_rule_kind() -> Kind {
    Kind::custom(
        "monitoring.coreos.com",
        "v1",
        "PrometheusRule",
        "prometheusrules",
        crate::apply::Scope::Namespaced,
    )
}

/// The alert rules' name.
pub const ALERTS: &str = "comind-backups";

/// The kinds the phase owns (and prunes). The PrometheusRule's CRD may be absent
/// (monitoring off): a kind that is not served has nothing to prune.
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<ConfigMap>(),
        Kind::of::<CronJob>(),
        Kind::of::<NetworkPolicy>(),
        Kind::of::<ServiceAccount>(),
        prometheus_rule_kind(),
    ]
}

/// Whether the backups' alerts go to the monitoring add-on (it installs the
/// PrometheusRule CRD and the Prometheus that reads it).
pub fn alerted(env: &Environment) -> bool {
    let config = env.config();
    config.gitops.argocd.enabled && config.gitops.addons.monitoring.enabled
}

/// What the phase does once its objects are applied: it lifts a hold on the nightly
/// PostgreSQL backup left by a restore that ended while nobody watched (see
/// [`restore`]), so a stopped `comind restore` never leaves the backups suspended
/// past the next `up`.
pub(crate) fn converge() -> crate::platform::Converge {
    use futures_util::FutureExt as _;
    std::sync::Arc::new(|ctx: &comind_core::PhaseContext, client: &kube::Client| {
        async move {
            if restore::release_ended_hold(client, ctx.env()).await? {
                ctx.progress(format!(
                    "resumed CronJob {}/{POSTGRES_CRONJOB}: the restore that held it has ended",
                    baseline::services_namespace(ctx.env())
                ));
            }
            Ok(())
        }
        .boxed()
    })
}

/// The phases the backups run after: the services' Secrets, and the add-ons when the
/// alerts need monitoring's CRD.
pub fn after(env: &Environment) -> Vec<comind_core::PhaseId> {
    let mut after = vec![comind_core::PhaseId::new(super::services::ID)];
    if enabled(env) && alerted(env) {
        after.push(comind_core::PhaseId::new(super::addons::ID));
    }
    after
}

/// The alerts: a backup Job of the last 26 hours that failed (its retries spent; the
/// failed Jobs kept in history stop alerting once they are older), and a backup that
/// has not succeeded for more than a day and two hours (a CronJob that stopped
/// running, fails before its Job starts, or never succeeded since it was made). The
/// 26 hours suit the daily default schedules. Kubernetes records each failed Job as an event
/// itself; these make it a page.
pub fn alerts(env: &Environment) -> Result<Object> {
    let namespace = baseline::services_namespace(env);
    let jobs = format!("{POSTGRES_CRONJOB}|{OBJECTS_CRONJOB}");
    let rules = serde_json::json!([
        {
            "alert": "ComindBackupFailed",
            "expr": format!(
                "max by (namespace, job_name) (kube_job_status_failed{{namespace=\"{namespace}\", job_name=~\"({jobs})-.*\"}}) > 0 \
                 and on (namespace, job_name) (time() - kube_job_status_start_time{{namespace=\"{namespace}\"}} < 26 * 3600)"
            ),
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "A backup Job failed",
                "description": "Job {{ $labels.job_name }} in {{ $labels.namespace }} failed: nothing was uploaded. Its Pod's log says which step failed (`kubectl -n {{ $labels.namespace }} logs job/{{ $labels.job_name }} --all-containers`).",
            },
        },
        {
            "alert": "ComindBackupMissing",
            "expr": format!(
                "time() - max by (namespace, cronjob) ({{__name__=~\"kube_cronjob_status_last_successful_time|kube_cronjob_created\", namespace=\"{namespace}\", cronjob=~\"{jobs}\"}}) > 26 * 3600"
            ),
            "for": "30m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "No successful backup for over a day",
                "description": "CronJob {{ $labels.cronjob }} in {{ $labels.namespace }} has not succeeded for more than 26 hours.",
            },
        },
    ]);
    Object::dynamic(
        prometheus_rule_kind(),
        serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": ALERTS,
                "namespace": namespace,
                // kube-prometheus-stack's Prometheus reads the rules of its release.
                "labels": {"release": super::addons::MONITORING.name},
            },
            "spec": {"groups": [{"name": "comind-backups", "rules": rules}]},
        }),
    )
}

/// Whether `env` has backups: enabled, with PostgreSQL or buckets to back up into
/// the object store.
pub fn enabled(env: &Environment) -> bool {
    let config = env.config();
    config.platform.backups.enabled && config.services.object_store.enabled
}

/// The image of the dump and restore steps: configured, else the local PostgreSQL
/// service's own (its `pg_dumpall` is the server's version), else on AWS the
/// official image of the RDS engine's major version.
pub fn postgres_image(env: &Environment) -> String {
    let config = env.config();
    if let Some(image) = &config.platform.backups.postgres_image {
        return image.to_string();
    }
    match config.profile {
        Profile::Local => config.services.postgres.local.image.to_string(),
        Profile::Aws => {
            let version = &config.services.postgres.aws.engine_version;
            let major = version.split('.').next().unwrap_or(version);
            format!("postgres:{major}-alpine")
        }
    }
}

/// The buckets `objects-backup` mirrors: every configured one but the backup bucket,
/// by their real names.
pub fn mirrored_buckets(env: &Environment) -> Vec<String> {
    let store = &env.config().services.object_store;
    store
        .buckets
        .iter()
        .filter(|b| *b != &store.backup_bucket)
        .map(|b| env.resource_name(b.as_str()))
        .collect()
}

/// The environment the upload, mirror and fetch steps run with: the object store's
/// Secret, and where the backups go.
pub fn object_store_env(env: &Environment) -> Vec<EnvVar> {
    let store = &env.config().services.object_store;
    let secret = secret_name(ServiceKind::ObjectStore);
    let mut vars: Vec<EnvVar> = [
        ("S3_ENDPOINT", false),
        ("S3_REGION", false),
        ("S3_FORCE_PATH_STYLE", true),
        // Absent on AWS, where the Pod's identity signs: optional.
        ("S3_ACCESS_KEY_ID", true),
        ("S3_SECRET_ACCESS_KEY", true),
    ]
    .into_iter()
    .map(|(key, optional)| from_secret(key, &secret, key, optional))
    .collect();
    vars.extend([
        plain(
            "BACKUP_BUCKET",
            &env.resource_name(store.backup_bucket.as_str()),
        ),
        plain("ENVIRONMENT", env.name()),
        plain("RETENTION_DAYS", &store.backup_retention_days.to_string()),
        plain("BACKUP_DIR", SCRATCH_DIR),
        // rclone keeps its cache and logs under HOME; the root filesystem is read-only.
        plain("HOME", "/tmp"),
    ]);
    vars
}

/// The environment the dump and restore steps run with: libpq's variables from the
/// PostgreSQL Secret.
pub fn postgres_env(env: &Environment) -> Vec<EnvVar> {
    let secret = secret_name(ServiceKind::Postgres);
    let mut vars = vec![
        from_secret("PGHOST", &secret, "POSTGRES_HOST", false),
        from_secret("PGPORT", &secret, "POSTGRES_PORT", false),
        from_secret("PGUSER", &secret, "POSTGRES_USER", false),
        from_secret("PGPASSWORD", &secret, "POSTGRES_PASSWORD", false),
        plain("BACKUP_DIR", SCRATCH_DIR),
        plain("HOME", "/tmp"),
    ];
    // RDS takes TLS; libpq's default (`prefer`) would fall back to plain text.
    if env.profile() == Profile::Aws {
        vars.push(plain("PGSSLMODE", "require"));
    }
    vars
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn from_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn meta(env: &Environment, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(baseline::services_namespace(env)),
        ..ObjectMeta::default()
    }
}

/// A step of a backup Job: `script` of the ConfigMap in `image`.
fn step(name: &str, image: &str, script: &str, env: Vec<EnvVar>, production: bool) -> Container {
    let quantity = |q: &str| Quantity(q.to_string());
    let (cpu, memory) = if production {
        ("250m", "256Mi")
    } else {
        ("50m", "64Mi")
    };
    Container {
        name: name.to_string(),
        image: Some(image.to_string()),
        command: Some(vec![
            "/bin/sh".to_string(),
            format!("{SCRIPTS_DIR}/{script}"),
        ]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity(cpu)),
                ("memory".to_string(), quantity(memory)),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), quantity("1Gi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "scripts".to_string(),
                mount_path: SCRIPTS_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "scratch".to_string(),
                mount_path: SCRATCH_DIR.to_string(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".to_string(),
                mount_path: "/tmp".to_string(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The labels of a backup (or restore) Job and its Pods named `name`: the backups'
/// NetworkPolicy selects [`LABEL_BACKUP`].
fn job_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_BACKUP.to_string(), name.to_string()),
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "comind-platform".to_string(),
        ),
    ])
}

/// The Pod of a backup (or restore) Job running `steps`: all but the last run first,
/// in order, as init containers, sharing the scratch volume.
fn pod_spec(env: &Environment, mut steps: Vec<Container>) -> PodSpec {
    let settings = &env.config().platform.backups;
    let main = steps.pop().into_iter().collect();
    PodSpec {
        restart_policy: Some("Never".to_string()),
        // Its own service account: on AWS, EKS Pod Identity gives it the backup role
        // (write and list on the backup bucket, read on the others).
        service_account_name: Some(BACKUP_SERVICE_ACCOUNT.to_string()),
        // A backup never talks to the Kubernetes API. (Pod Identity mounts a token of
        // its own audience, whatever this says.)
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65534),
            run_as_group: Some(65534),
            fs_group: Some(65534),
            seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        init_containers: (!steps.is_empty()).then_some(steps),
        containers: main,
        volumes: Some(vec![
            Volume {
                name: "scripts".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: SCRIPTS.to_string(),
                    default_mode: Some(0o555),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "scratch".to_string(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity(settings.scratch_size.to_string())),
                    medium: None,
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".to_string(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("256Mi".to_string())),
                    medium: None,
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// A CronJob of `steps` (see [`pod_spec`]).
fn cron_job(env: &Environment, name: &str, schedule: &str, steps: Vec<Container>) -> CronJob {
    let settings = &env.config().platform.backups;
    let labels = job_labels(name);
    let pod = pod_spec(env, steps);
    let mut metadata = meta(env, name);
    metadata.labels = Some(labels.clone());
    CronJob {
        metadata,
        spec: Some(CronJobSpec {
            schedule: schedule.to_string(),
            time_zone: Some(settings.time_zone.clone()),
            concurrency_policy: Some("Forbid".to_string()),
            // A run missed by more than an hour (the cluster was down) is skipped,
            // not started late on top of the next one.
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    // One retry: a second failure is a failed backup, and alerts.
                    backoff_limit: Some(1),
                    active_deadline_seconds: Some(6 * 3600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}

/// The PostgreSQL backup's CronJob.
pub fn postgres_cron_job(env: &Environment) -> CronJob {
    let settings = &env.config().platform.backups;
    let production = env.is_production();
    cron_job(
        env,
        POSTGRES_CRONJOB,
        &settings.postgres_schedule,
        vec![
            step(
                "dump",
                &postgres_image(env),
                "postgres-dump.sh",
                postgres_env(env),
                production,
            ),
            step(
                "upload",
                settings.rclone_image.as_str(),
                "postgres-upload.sh",
                object_store_env(env),
                production,
            ),
        ],
    )
}

/// The object-store mirror's CronJob.
pub fn objects_cron_job(env: &Environment) -> CronJob {
    let settings = &env.config().platform.backups;
    let mut vars = object_store_env(env);
    vars.push(plain("MIRROR_BUCKETS", &mirrored_buckets(env).join(" ")));
    cron_job(
        env,
        OBJECTS_CRONJOB,
        &settings.objects_schedule,
        vec![step(
            "mirror",
            settings.rclone_image.as_str(),
            "objects-mirror.sh",
            vars,
            env.is_production(),
        )],
    )
}

/// The scripts' ConfigMap.
pub fn scripts(env: &Environment) -> ConfigMap {
    ConfigMap {
        metadata: meta(env, SCRIPTS),
        data: Some(
            SCRIPT_FILES
                .iter()
                .map(|(name, text)| (name.to_string(), text.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// The backup Pods' service account: no API token, an identity for Pod Identity.
pub fn service_account(env: &Environment) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(env, BACKUP_SERVICE_ACCOUNT),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The backup Pods' way out past the default-deny: the services' ports.
fn egress(env: &Environment) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(env, "allow-backups-to-services"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: LABEL_BACKUP.to_string(),
                        operator: "Exists".to_string(),
                        values: None,
                    },
                ]),
                match_labels: None,
            }),
            policy_types: Some(vec!["Egress".to_string()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![baseline::anywhere()]),
                ports: Some(
                    baseline::SERVICE_PORTS
                        .iter()
                        .map(|p| baseline::tcp(*p))
                        .collect(),
                ),
            }]),
            ingress: None,
        }),
    }
}

/// The phase's objects: a pure function of the environment.
///
/// # Errors
/// Internal only (an object that does not encode).
pub fn render(env: &Environment) -> Result<ObjectSet> {
    let mut objects = Vec::new();
    if enabled(env) {
        objects.push(Object::typed(&service_account(env))?);
        objects.push(Object::typed(&scripts(env))?);
        objects.push(Object::typed(&egress(env))?);
        if env.config().services.postgres.enabled {
            objects.push(Object::typed(&postgres_cron_job(env))?);
        }
        if !mirrored_buckets(env).is_empty() {
            objects.push(Object::typed(&objects_cron_job(env))?);
        }
        if alerted(env) {
            objects.push(alerts(env)?);
        }
    }
    // CronJobs are ready once accepted: their Jobs are judged when they run.
    Ok(ObjectSet::new(COMPONENT, objects, kinds()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use comind_core::config::{Config, EnvironmentName};

    fn env(edit: impl FnOnce(&mut Config)) -> Environment {
        let mut config = Config::default();
        config.environment = EnvironmentName::new("dev").unwrap();
        edit(&mut config);
        Environment::with_state_root(config, "/nonexistent")
    }

    #[test]
    fn the_cron_jobs_follow_the_config_and_hold_no_secret_value() {
        let env = env(|c| {
            c.platform.backups.time_zone = "Europe/Berlin".into();
            c.platform.backups.postgres_schedule = "30 2 * * *".into();
        });
        let job = postgres_cron_job(&env);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.schedule, "30 2 * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = spec
            .job_template
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let dump = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            dump.image.as_deref(),
            Some(comind_core::config::DEFAULT_POSTGRES_IMAGE)
        );
        assert_eq!(pod.containers[0].name, "upload");
        // The identity EKS Pod Identity maps to the backup role; no API token.
        assert_eq!(pod.service_account_name.as_deref(), Some("comind-backup"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let objects = render(&env).unwrap();
        assert!(
            objects
                .objects
                .iter()
                .any(|o| o.reference().kind == "ServiceAccount" && o.name() == "comind-backup"),
            "the service account is part of the phase"
        );
        for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
            assert!(container.resources.as_ref().unwrap().requests.is_some());
            for var in container.env.iter().flatten() {
                if var.name.contains("PASSWORD") || var.name.contains("SECRET") {
                    assert!(var.value.is_none() && var.value_from.is_some(), "{var:?}");
                }
            }
        }
        let objects = objects_cron_job(&env);
        let vars = &objects
            .spec
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap();
        let mirror = vars.iter().find(|v| v.name == "MIRROR_BUCKETS").unwrap();
        assert_eq!(mirror.value.as_deref(), Some("comind-dev-uploads"));
    }

    #[test]
    fn the_alerts_come_with_monitoring_and_name_the_environment_s_jobs() {
        let with = env(|_| {});
        let rule = render(&with)
            .unwrap()
            .objects
            .into_iter()
            .find(|o| o.name() == ALERTS)
            .expect("alerts with monitoring on");
        let text = serde_json::to_string(&rule.object).unwrap();
        assert!(
            text.contains("platform-dev") && text.contains("postgres-backup|objects-backup"),
            "{text}"
        );
        assert!(after(&with).contains(&comind_core::PhaseId::new(crate::platform::addons::ID)));
        let without = env(|c| c.gitops.addons.monitoring.enabled = false);
        assert!(
            render(&without)
                .unwrap()
                .objects
                .iter()
                .all(|o| o.name() != ALERTS)
        );
        assert_eq!(
            after(&without),
            [comind_core::PhaseId::new(crate::platform::services::ID)]
        );
    }

    #[test]
    fn the_dump_image_is_the_server_s_version_and_disabled_backups_render_nothing() {
        let aws = env(|c| {
            c.profile = Profile::Aws;
            c.services.postgres.aws.engine_version = "17.2".into();
        });
        assert_eq!(postgres_image(&aws), "postgres:17-alpine");
        let off = env(|c| c.platform.backups.enabled = false);
        assert!(render(&off).unwrap().objects.is_empty());
        let only_backups = env(|c| {
            c.services.object_store.buckets = vec![c.services.object_store.backup_bucket.clone()]
        });
        let set = render(&only_backups).unwrap();
        assert!(set.objects.iter().all(|o| o.name() != OBJECTS_CRONJOB));
    }
}

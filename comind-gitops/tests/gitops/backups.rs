//! A backup run now (`backup::run`), on the real control plane: the Job is made from
//! the CronJob the platform lays, the real Job controller makes its Pods and judges
//! them, and the test plays the kubelet's part only, by writing each Pod's end (no
//! Pod runs here: that the scripts work is proven by the composition tests, which run
//! them against real PostgreSQL and S3). A restore (`backup::restore`) likewise.

use std::time::Duration;

use comind_core::{ErrorKind, Operation};
use comind_gitops::platform::backups::{self, restore, run};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::kubelet::end_job_pod;
use comind_test_support::require_peer;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::support;

#[tokio::test]
async fn a_backup_run_now_is_the_cron_jobs_job_and_reports_how_it_ended() {
    let peer = require_peer!(KubePeer::shared());
    let admin = support::client(peer, User::Admin).await;
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "bkrun", state.path(), |_| {});
    let ctx = support::ctx(&env, Operation::Apply);
    let ns = comind_gitops::platform::baseline::services_namespace(&env);
    support::create_namespace(&admin, &ns).await;

    // Before the backups are laid: a clear error, nothing made.
    let missing = run::start(&admin, &env, run::BackupKind::Postgres)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert!(missing.to_string().contains("postgres-backup"), "{missing}");

    // The CronJobs and their ServiceAccount as the platform lays them.
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &backups::service_account(&env))
        .await
        .unwrap();
    let cron_jobs: Api<CronJob> = Api::namespaced(admin.clone(), &ns);
    for mut cron_job in [
        backups::postgres_cron_job(&env),
        backups::objects_cron_job(&env),
    ] {
        // Suspended, so no scheduled run falls into the test (a manual Job is not
        // held back by it).
        cron_job.spec.as_mut().unwrap().suspend = Some(true);
        cron_jobs
            .create(&PostParams::default(), &cron_job)
            .await
            .unwrap();
    }
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);

    // Started: the CronJob's template, owned by it, marked manual.
    let started = run::start(&admin, &env, run::BackupKind::Postgres)
        .await
        .unwrap();
    assert!(
        started.name.starts_with("postgres-backup-manual-"),
        "{started:?}"
    );
    let job = jobs.get(&started.name).await.unwrap();
    let cron_job = cron_jobs.get(backups::POSTGRES_CRONJOB).await.unwrap();
    let template = cron_job.spec.unwrap().job_template.spec.unwrap();
    assert_eq!(
        job.spec.as_ref().unwrap().template.spec,
        template.template.spec,
        "the nightly run's Pod, unchanged"
    );
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[run::ANNOTATION_INSTANTIATE],
        "manual"
    );
    assert_eq!(
        job.metadata.owner_references.as_ref().unwrap()[0].uid,
        cron_job.metadata.uid.unwrap()
    );

    // The CronJob counts it as running, so its Forbid holds off a scheduled run.
    let active = cron_jobs
        .get_status(backups::POSTGRES_CRONJOB)
        .await
        .unwrap()
        .status
        .and_then(|s| s.active)
        .unwrap_or_default();
    assert_eq!(
        active
            .iter()
            .map(|r| r.name.clone().unwrap())
            .collect::<Vec<_>>(),
        vec![started.name.clone()]
    );
    assert!(started.counted);

    // The CronJob forbids a second run at the same time.
    let again = run::start(&admin, &env, run::BackupKind::Postgres)
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");
    assert!(again.to_string().contains(&started.name), "{again}");

    // Its Pod succeeds: the Job controller marks the Job complete, the wait ends.
    let waiting = {
        let admin = admin.clone();
        let ctx = ctx.clone();
        let started = started.clone();
        tokio::spawn(
            async move { run::wait(&admin, &ctx, &started, Duration::from_secs(120)).await },
        )
    };
    end_job_pod(&pods, &started.name, 0).await;
    let completed = waiting.await.unwrap().unwrap();
    assert_eq!(completed.job, started);
    // The real CronJob controller takes the ended Job out of its active list, and
    // the next run may start.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cron_jobs
        .get_status(backups::POSTGRES_CRONJOB)
        .await
        .unwrap()
        .status
        .and_then(|s| s.active)
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the CronJob controller never took the ended Job out of status.active"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run::check(&admin, &env, run::BackupKind::Postgres)
        .await
        .unwrap();

    // The object-store mirror fails twice (its one retry included): the wait fails,
    // naming the Job's reason and the container that failed and how.
    let started = run::start(&admin, &env, run::BackupKind::Objects)
        .await
        .unwrap();
    let waiting = {
        let admin = admin.clone();
        let ctx = ctx.clone();
        let started = started.clone();
        tokio::spawn(
            async move { run::wait(&admin, &ctx, &started, Duration::from_secs(120)).await },
        )
    };
    for _ in 0..2 {
        end_job_pod(&pods, &started.name, 3).await;
    }
    let failed = waiting.await.unwrap().unwrap_err();
    let text = failed.to_string();
    assert_eq!(failed.kind(), ErrorKind::Unavailable, "{text}");
    assert!(text.contains("BackoffLimitExceeded"), "{text}");
    assert!(text.contains("/mirror exited 3 (Error)"), "{text}");
    assert!(!failed.is_transient(), "{text}");

    support::delete_namespace(&admin, &ns).await;
}

#[tokio::test]
async fn a_restore_runs_as_the_administrator_from_a_secret_that_ends_with_it() {
    let peer = require_peer!(KubePeer::shared());
    let admin = support::client(peer, User::Admin).await;
    let state = tempfile::tempdir().unwrap();
    let env = support::env(peer, "bkrestore", state.path(), |_| {});
    let ctx = support::ctx(&env, Operation::Apply);
    let ns = comind_gitops::platform::baseline::services_namespace(&env);
    support::create_namespace(&admin, &ns).await;
    let superuser = restore::RestoreCredentials {
        admin: comind_core::state::Credentials {
            username: "postgres".to_string(),
            password: comind_core::Secret::new("restore-admin-secret-value"),
        },
        app_role: Some((
            "app".to_string(),
            comind_core::Secret::new("SCRAM-SHA-256$4096:verifier-value"),
        )),
    };

    // Before the backups are laid: refused, nothing made.
    let missing = restore::start(&admin, &env, &superuser, "20261203T030000Z.sql.gz")
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");

    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &backups::service_account(&env))
        .await
        .unwrap();
    // Not suspended: the restore's hold is what suspends it. Its schedule (30
    // February) never comes, so the CronJob controller starts nothing of its own.
    let mut cron_job = backups::postgres_cron_job(&env);
    cron_job.spec.as_mut().unwrap().schedule = "0 3 30 2 *".to_string();
    let cron_jobs: Api<CronJob> = Api::namespaced(admin.clone(), &ns);
    cron_jobs
        .create(&PostParams::default(), &cron_job)
        .await
        .unwrap();
    let hold_of = |cron_job: CronJob| {
        let suspended = cron_job.spec.unwrap().suspend == Some(true);
        let by = cron_job
            .metadata
            .annotations
            .unwrap_or_default()
            .remove(restore::ANNOTATION_HELD_BY);
        (suspended, by)
    };
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);

    // A backup running holds a restore off.
    let backup = run::start(&admin, &env, run::BackupKind::Postgres)
        .await
        .unwrap();
    let held = restore::start(&admin, &env, &superuser, "20261203T030000Z.sql.gz")
        .await
        .unwrap_err();
    assert_eq!(held.kind(), ErrorKind::Conflict, "{held}");
    assert!(held.to_string().contains(&backup.name), "{held}");
    end_job_pod(&pods, &backup.name, 0).await;
    run::wait(&admin, &ctx, &backup, Duration::from_secs(120))
        .await
        .unwrap();

    // The restore: the Job the API server accepted, and the administrator's Secret
    // owned by it; the password is in the Secret, nowhere in the Job.
    let started = restore::start(&admin, &env, &superuser, "20261203T030000Z.sql.gz")
        .await
        .unwrap();
    let job = jobs.get(&started.name).await.unwrap();
    let secret = secrets.get(&started.admin_secret()).await.unwrap();
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        job.metadata.uid.clone().unwrap()
    );
    assert_eq!(
        secret.data.as_ref().unwrap()["password"].0,
        b"restore-admin-secret-value"
    );
    let job_text = serde_json::to_string(&job).unwrap();
    assert!(
        !job_text.contains("restore-admin-secret-value"),
        "{job_text}"
    );
    assert!(!job_text.contains("verifier-value"), "{job_text}");
    assert_eq!(secret.data.as_ref().unwrap()["app-user"].0, b"app");
    assert!(job_text.contains("20261203T030000Z.sql.gz"), "{job_text}");
    // The nightly backup is held off while it runs, and `up`'s apply of the CronJob
    // (Comind's field manager, forced) leaves the hold be.
    assert_eq!(
        hold_of(cron_jobs.get(backups::POSTGRES_CRONJOB).await.unwrap()),
        (true, Some(started.name.clone()))
    );
    let mut applied = serde_json::to_value(backups::postgres_cron_job(&env)).unwrap();
    applied["spec"]["schedule"] = "0 3 30 2 *".into();
    cron_jobs
        .patch(
            backups::POSTGRES_CRONJOB,
            &PatchParams::apply(comind_gitops::apply::FIELD_MANAGER).force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(
        hold_of(cron_jobs.get(backups::POSTGRES_CRONJOB).await.unwrap()),
        (true, Some(started.name.clone()))
    );
    assert!(
        !restore::release_ended_hold(&admin, &env).await.unwrap(),
        "the hold of a running restore was lifted"
    );
    // A second restore at the same time is refused.
    let twice = restore::start(&admin, &env, &superuser, "20261203T030000Z.sql.gz")
        .await
        .unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::Conflict, "{twice}");

    // It fails once: no retry (backoffLimit 0), the failed step is named, and the
    // administrator's Secret is gone.
    let waiting = {
        let admin = admin.clone();
        let ctx = ctx.clone();
        let started = started.clone();
        tokio::spawn(async move {
            restore::wait(&admin, &ctx, &started, Duration::from_secs(120)).await
        })
    };
    end_job_pod(&pods, &started.name, 1).await;
    let failed = waiting.await.unwrap().unwrap_err();
    let text = failed.to_string();
    assert_eq!(failed.kind(), ErrorKind::Unavailable, "{text}");
    assert!(text.contains("BackoffLimitExceeded"), "{text}");
    assert!(text.contains("/restore exited 1 (Error)"), "{text}");
    assert!(restore::finish(&admin, &started).await.unwrap());
    assert!(
        secrets
            .get_opt(&started.admin_secret())
            .await
            .unwrap()
            .is_none(),
        "the administrator's Secret outlived the restore"
    );
    // The hold is lifted with it: the CronJob runs on schedule again.
    assert_eq!(
        hold_of(cron_jobs.get(backups::POSTGRES_CRONJOB).await.unwrap()),
        (false, None)
    );

    // Again, and it completes; its Secret is gone too.
    let started = restore::start(&admin, &env, &superuser, "20261203T030000Z.sql.gz")
        .await
        .unwrap();
    let waiting = {
        let admin = admin.clone();
        let ctx = ctx.clone();
        let started = started.clone();
        tokio::spawn(async move {
            restore::wait(&admin, &ctx, &started, Duration::from_secs(120)).await
        })
    };
    // While it runs, the Secret stays (the Job needs it), and a manual backup is
    // refused (it would dump half-restored data).
    assert!(!restore::finish(&admin, &started).await.unwrap());
    assert!(
        secrets
            .get_opt(&started.admin_secret())
            .await
            .unwrap()
            .is_some()
    );
    let refused = run::start(&admin, &env, run::BackupKind::Postgres)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(refused.to_string().contains("being restored"), "{refused}");
    end_job_pod(&pods, &started.name, 0).await;
    waiting.await.unwrap().unwrap();
    // Nobody called `finish` (the command was stopped while the Job ran): the hold
    // of a restore that ended is lifted by the next one to look (a restore, or the
    // backups phase on `up`).
    assert_eq!(
        hold_of(cron_jobs.get(backups::POSTGRES_CRONJOB).await.unwrap()),
        (true, Some(started.name.clone()))
    );
    assert!(restore::release_ended_hold(&admin, &env).await.unwrap());
    assert_eq!(
        hold_of(cron_jobs.get(backups::POSTGRES_CRONJOB).await.unwrap()),
        (false, None)
    );
    assert!(restore::finish(&admin, &started).await.unwrap());
    assert!(
        secrets
            .get_opt(&started.admin_secret())
            .await
            .unwrap()
            .is_none(),
        "the administrator's Secret outlived the restore"
    );

    support::delete_namespace(&admin, &ns).await;
}

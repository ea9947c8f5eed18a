//! The backup scripts, run for real: the exact scripts and environment variables of
//! the `platform/backups` CronJobs (rendered by comind-gitops), each step in a
//! container of its CronJob's image (the stand-ins) on the environment's Docker
//! network, against the real local PostgreSQL and object store that comind-local
//! brings up. What a CronJob's Secret reference would give is resolved the way
//! `platform/services` fills those Secrets, with the containers' network names for the
//! in-cluster ones. No kubelet runs the Jobs here; the manifests themselves are
//! checked by the real API server in comind-gitops' tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use comind::gitops::platform::backups;
use comind_core::engine::RunOptions;
use comind_core::{Environment, PhaseId, ServiceKind, UpOptions};
use comind_test_support::docker::{self, POSTGRES_IMAGE, RCLONE_IMAGE, SERVICE_IMAGES};
use comind_test_support::ports::free_port;
use comind_test_support::require_peer;
use k8s_openapi::api::core::v1::{Container, EnvVar};

use crate::support::LocalEnv;

/// The stand-in for each image the CronJobs name.
fn stand_in(image: &str, env: &Environment) -> &'static str {
    if image == backups::postgres_image(env) {
        POSTGRES_IMAGE
    } else if image == env.config().platform.backups.rclone_image.as_str() {
        RCLONE_IMAGE
    } else {
        panic!("no stand-in for {image}")
    }
}

/// A running local environment with what the backup scripts need around it.
struct World {
    local: LocalEnv,
    scripts: tempfile::TempDir,
    network: String,
    /// What each Secret key of `platform-postgres` and `platform-object-store` holds,
    /// with the services' container names for the in-cluster names.
    secrets: BTreeMap<(String, String), String>,
    postgres_url: String,
}

impl World {
    async fn up() -> World {
        let local = LocalEnv::new(None);
        let only = RunOptions {
            only: vec![PhaseId::new("postgres"), PhaseId::new("object-store")],
            ..Default::default()
        };
        let report = local
            .bootstrap
            .up(&only, &UpOptions::default())
            .await
            .unwrap();
        assert!(report.succeeded(), "{:?}", report.summary);
        let env = local.bootstrap.env();
        let outputs = |id: &str| report.outputs[&PhaseId::new(id)].clone();
        let network = outputs("network")
            .require("LOCAL_NETWORK")
            .unwrap()
            .to_string();
        let pg = outputs("postgres");
        let s3 = outputs("object-store");
        let pg_secret = comind::gitops::platform::services::secret_name(ServiceKind::Postgres);
        let s3_secret = comind::gitops::platform::services::secret_name(ServiceKind::ObjectStore);
        let mut secrets = BTreeMap::new();
        let mut put = |secret: &str, key: &str, value: String| {
            secrets.insert((secret.to_string(), key.to_string()), value);
        };
        put(&pg_secret, "POSTGRES_HOST", env.resource_name("postgres"));
        put(&pg_secret, "POSTGRES_PORT", "5432".into());
        for key in ["POSTGRES_USER", "POSTGRES_PASSWORD"] {
            put(&pg_secret, key, pg.get(key).unwrap().expose().to_string());
        }
        put(
            &s3_secret,
            "S3_ENDPOINT",
            format!("http://{}:9000", env.resource_name("object-store")),
        );
        for key in [
            "S3_REGION",
            "S3_ACCESS_KEY_ID",
            "S3_SECRET_ACCESS_KEY",
            "S3_FORCE_PATH_STYLE",
        ] {
            if let Some(value) = s3.get(key) {
                put(&s3_secret, key, value.expose().to_string());
            }
        }
        let scripts = tempfile::tempdir().unwrap();
        let data = backups::scripts(env).data.unwrap();
        for (name, text) in &data {
            let path = scripts.path().join(name);
            std::fs::write(&path, text).unwrap();
            set_mode(&path, 0o555);
        }
        set_mode(scripts.path(), 0o755);
        let postgres_url = pg.get("DATABASE_URL").unwrap().expose().to_string();
        World {
            local,
            scripts,
            network,
            secrets,
            postgres_url,
        }
    }

    fn env(&self) -> &Environment {
        self.local.bootstrap.env()
    }

    /// The environment of `container` as its Pod would have it.
    fn resolve(&self, container: &Container) -> Vec<(String, String)> {
        container
            .env
            .iter()
            .flatten()
            .filter_map(|var: &EnvVar| {
                if let Some(value) = &var.value {
                    return Some((var.name.clone(), value.clone()));
                }
                let reference = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
                let value = self
                    .secrets
                    .get(&(reference.name.clone(), reference.key.clone()));
                match value {
                    Some(value) => Some((var.name.clone(), value.clone())),
                    None if reference.optional == Some(true) => None,
                    None => panic!(
                        "the Secret {}/{} has no such key here",
                        reference.name, reference.key
                    ),
                }
            })
            .collect()
    }

    /// Runs `container` (a CronJob step) with `scratch` as its scratch volume, as the
    /// Pod's user, with its environment (in a 0600 file: never on a command line)
    /// changed by `edit`. Its exit code and output.
    fn run(
        &self,
        container: &Container,
        scratch: &Scratch,
        edit: impl FnOnce(&mut Vec<(String, String)>),
    ) -> (i32, String) {
        let mut vars = self.resolve(container);
        edit(&mut vars);
        let image = stand_in(container.image.as_deref().unwrap(), self.env());
        let command = container.command.clone().unwrap();
        self.docker_run(image, &command, &vars, scratch, &[])
    }

    fn docker_run(
        &self,
        image: &str,
        command: &[String],
        vars: &[(String, String)],
        scratch: &Scratch,
        extra: &[&str],
    ) -> (i32, String) {
        let env_file = tempfile::NamedTempFile::new().unwrap();
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(env_file.path(), text).unwrap();
        let mut cmd = Command::new("docker");
        cmd.args([
            "run",
            "--rm",
            "--network",
            &self.network,
            "--user",
            "65534:65534",
        ])
        .args([
            "--label",
            &format!(
                "{}={}",
                comind_core::environment::LABEL_ENVIRONMENT,
                self.env().name()
            ),
        ])
        .arg("--env-file")
        .arg(env_file.path())
        .arg("-v")
        .arg(format!(
            "{}:{}:ro",
            self.scripts.path().display(),
            backups::SCRIPTS_DIR
        ))
        .args(["--tmpfs", "/tmp:size=64m,mode=1777"])
        .args(scratch.docker_args())
        .args(extra)
        .arg("--entrypoint")
        .arg(&command[0])
        .arg(image)
        .args(&command[1..]);
        let out = cmd.output().unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), log)
    }

    /// Runs `script` (sh, with common.sh loaded and the object store's remote set)
    /// in the rclone image: the test's own look into the bucket.
    fn rclone(&self, script: &str) -> String {
        let upload = &backups::postgres_cron_job(self.env());
        let step = &pod_of(upload).containers[0];
        let vars = self.resolve(step);
        let command = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!(
                ". {}/common.sh && s3_remote && {script}",
                backups::SCRIPTS_DIR
            ),
        ];
        let (code, log) = self.docker_run(RCLONE_IMAGE, &command, &vars, &Scratch::host(), &[]);
        assert_eq!(code, 0, "{script}: {log}");
        log
    }

    fn bucket(&self) -> String {
        let store = &self.env().config().services.object_store;
        self.env().resource_name(store.backup_bucket.as_str())
    }

    /// The names under `postgres/<env>/` of the backup bucket.
    fn backups(&self, environment: &str) -> Vec<String> {
        let listing = self.rclone(&format!(
            "rclone lsf --files-only store:{}/postgres/{environment} || true",
            self.bucket()
        ));
        let mut names: Vec<String> = listing
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn pod_of(job: &k8s_openapi::api::batch::v1::CronJob) -> k8s_openapi::api::core::v1::PodSpec {
    job.spec
        .clone()
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
}

/// A Job's scratch volume: a host directory (shared by the steps), or a tiny tmpfs
/// (a full disk).
enum Scratch {
    Host(tempfile::TempDir),
    Tiny(&'static str),
}

impl Scratch {
    fn host() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o777);
        Scratch::Host(dir)
    }

    fn path(&self) -> PathBuf {
        match self {
            Scratch::Host(dir) => dir.path().to_path_buf(),
            Scratch::Tiny(_) => panic!("a tmpfs has no host path"),
        }
    }

    fn docker_args(&self) -> Vec<String> {
        match self {
            Scratch::Host(dir) => vec![
                "-v".into(),
                format!("{}:{}", dir.path().display(), backups::SCRATCH_DIR),
            ],
            Scratch::Tiny(size) => vec![
                "--tmpfs".into(),
                format!("{}:size={size},mode=1777", backups::SCRATCH_DIR),
            ],
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("PostgreSQL at {url} does not answer: {e}"),
        }
    }
}

async fn rows(client: &tokio_postgres::Client) -> Vec<(i32, String)> {
    client
        .query("SELECT id, body FROM notes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Dump, verify and upload for real; restore into a fresh server and find the same
/// rows; a wrong password and a full disk fail the dump and upload nothing; retention
/// keeps the newest complete backup even when every backup is old.
#[tokio::test]
async fn the_backup_scripts_back_up_restore_and_fail_loudly() {
    require_peer!(docker::ready(&[SERVICE_IMAGES.as_slice(), &[RCLONE_IMAGE]].concat()).await);
    let mut world = World::up().await;
    // Owned, so the test may add Secrets to the world as it goes.
    let env = world.local.bootstrap.env().clone();
    let env = &*env;
    let db = connect(&world.postgres_url).await;
    db.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);
         INSERT INTO notes SELECT g, md5(g::text) || md5(g || 'a') || md5(g || 'b') || md5(g || 'c') \
         FROM generate_series(1, 2000) g;",
    )
    .await
    .unwrap();
    let expected = rows(&db).await;

    let job = backups::postgres_cron_job(env);
    let pod = pod_of(&job);
    let dump = &pod.init_containers.as_ref().unwrap()[0];
    let upload = &pod.containers[0];

    // The backup.
    let scratch = Scratch::host();
    let (code, log) = world.run(dump, &scratch, |_| {});
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("dumped and verified"), "{log}");
    assert!(scratch.path().join("postgres.sql.gz").is_file());
    let (code, log) = world.run(upload, &scratch, |_| {});
    assert_eq!(code, 0, "{log}");
    let after_one = world.backups(env.name());
    assert_eq!(after_one.len(), 2, "a dump and its .sha256: {after_one:?}");
    assert!(after_one[0].ends_with(".sql.gz") && after_one[1].ends_with(".sql.gz.sha256"));
    // No secret in what the steps print.
    let password = &world.secrets[&(
        comind::gitops::platform::services::secret_name(ServiceKind::Postgres),
        "POSTGRES_PASSWORD".to_string(),
    )];
    assert!(!log.contains(password.as_str()), "{log}");

    // The restore, into a fresh server: the newest backup fetched and checked, then
    // played in.
    let fresh_name = format!("{}-restore", env.resource_name("postgres"));
    let fresh_port = free_port();
    let fresh_password = "fresh-superuser-pw";
    let started = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--name",
            &fresh_name,
            "--network",
            &world.network,
        ])
        .args([
            "--label",
            &format!(
                "{}={}",
                comind_core::environment::LABEL_ENVIRONMENT,
                env.name()
            ),
        ])
        .args(["-p", &format!("127.0.0.1:{fresh_port}:5432")])
        .args(["-e", &format!("POSTGRES_PASSWORD={fresh_password}")])
        .arg(POSTGRES_IMAGE)
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let fresh_url =
        format!("postgresql://postgres:{fresh_password}@127.0.0.1:{fresh_port}/postgres");
    connect(&fresh_url).await;
    // Exactly the restore Job's two steps, its administrator Secret holding the fresh
    // server's superuser and the application role's verifier (from the state
    // directory, as `comind restore postgres` makes it).
    let key = after_one[0].clone();
    let restore_job = backups::restore::restore_job(env, "postgres-restore-1", &key);
    let restore_pod = restore_job.spec.unwrap().template.spec.unwrap();
    let fetch_step = &restore_pod.init_containers.as_ref().unwrap()[0];
    let restore_step = &restore_pod.containers[0];
    let credentials = comind::backups::restore_credentials(env).unwrap();
    let (app_user, app_verifier) = credentials.app_role.clone().unwrap();
    for (k, v) in [
        ("username", "postgres".to_string()),
        ("password", fresh_password.to_string()),
        ("app-user", app_user.clone()),
        ("app-verifier", app_verifier.expose().to_string()),
    ] {
        world
            .secrets
            .insert(("postgres-restore-1-admin".to_string(), k.to_string()), v);
    }
    let restore_scratch = Scratch::host();
    let (code, log) = world.run(fetch_step, &restore_scratch, |_| {});
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(&format!("fetched {key}")), "{log}");
    // A dump that is not the one its checksum names is refused before any database
    // is touched.
    let fetched = restore_scratch.path().join("postgres.sql.gz");
    let good = std::fs::read(&fetched).unwrap();
    let mut tampered = good.clone();
    tampered.extend_from_slice(b"tampered");
    std::fs::write(&fetched, &tampered).unwrap();
    let (code, log) = world.run(restore_step, &restore_scratch, |vars| {
        for (name, value) in vars.iter_mut() {
            if name == "PGHOST" {
                *value = fresh_name.clone();
            }
        }
    });
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("does not match its SHA-256"), "{log}");
    std::fs::write(&fetched, &good).unwrap();
    let (code, log) = world.run(restore_step, &restore_scratch, |vars| {
        for (name, value) in vars.iter_mut() {
            if name == "PGHOST" {
                *value = fresh_name.clone();
            }
        }
    });
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(&format!("role {app_user} has its password again")),
        "{log}"
    );
    assert!(!log.contains(app_verifier.expose()), "{log}");
    // The application logs in to the restored server with its own password (the
    // dump has none), and finds its rows.
    let database = env.config().services.postgres.databases[0].to_string();
    let app_password = &world.secrets[&(
        comind::gitops::platform::services::secret_name(ServiceKind::Postgres),
        "POSTGRES_PASSWORD".to_string(),
    )];
    let restored = connect(&format!(
        "postgresql://{app_user}:{app_password}@127.0.0.1:{fresh_port}/{database}"
    ))
    .await;
    assert_eq!(
        rows(&restored).await,
        expected,
        "the restored rows are the backed-up ones"
    );
    let _ = Command::new("docker")
        .args(["rm", "-f", &fresh_name])
        .output();

    // A wrong password: the dump fails, leaves no file, and the upload step (which a
    // Job would not even start) finds nothing to upload.
    let scratch = Scratch::host();
    let (code, log) = world.run(dump, &scratch, |vars| {
        for (key, value) in vars.iter_mut() {
            if key == "PGPASSWORD" {
                *value = "not-the-password".into();
            }
        }
    });
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("pg_dumpall failed"), "{log}");
    assert!(!scratch.path().join("postgres.sql.gz").exists());
    let (code, log) = world.run(upload, &scratch, |_| {});
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("no verified dump"), "{log}");
    assert_eq!(world.backups(env.name()), after_one, "nothing was uploaded");

    // A full disk (a 64 KiB scratch volume for a dump of ~100 KiB compressed).
    let (code, log) = world.run(dump, &Scratch::Tiny("64k"), |_| {});
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("scratch volume is full") || log.contains("scratch volume full"),
        "the failure says what failed: {log}"
    );
    assert_eq!(world.backups(env.name()), after_one, "nothing was uploaded");

    // Retention when every backup is old: only the newest complete one stays (with
    // its checksum); an incomplete newer one (no .sha256) does not count as newest.
    let old = "old-env";
    let prefix = format!("store:{}/postgres/{old}", world.bucket());
    world.rclone(&format!(
        "for s in 20200101T030000Z 20200102T030000Z 20200103T030000Z; do \
           echo dump | rclone rcat {prefix}/$s.sql.gz && echo sum | rclone rcat {prefix}/$s.sql.gz.sha256; done; \
         echo partial | rclone rcat {prefix}/20200104T030000Z.sql.gz"
    ));
    let mut retention = upload.clone();
    retention.command = Some(vec![
        "/bin/sh".into(),
        format!("{}/retention.sh", backups::SCRIPTS_DIR),
        prefix.clone(),
        ".sql.gz".into(),
    ]);
    let (code, log) = world.run(&retention, &Scratch::host(), |_| {});
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        world.backups(old),
        ["20200103T030000Z.sql.gz", "20200103T030000Z.sql.gz.sha256"],
        "{log}"
    );
    // And the fresh backup of this environment is not touched by its own retention.
    assert_eq!(world.backups(env.name()), after_one);
}

/// The object-store mirror copies every other bucket into the backup bucket, then
/// only what is new; what the bucket loses, its backup keeps.
#[tokio::test]
async fn the_mirror_copies_the_other_buckets_incrementally() {
    require_peer!(docker::ready(&[SERVICE_IMAGES.as_slice(), &[RCLONE_IMAGE]].concat()).await);
    let world = World::up().await;
    let env = world.env();
    let uploads = env.resource_name("uploads");
    world.rclone(&format!(
        "echo one | rclone rcat store:{uploads}/a.txt && echo two | rclone rcat store:{uploads}/dir/b.txt"
    ));
    let job = backups::objects_cron_job(env);
    let mirror = &pod_of(&job).containers[0];
    let mirrored = || {
        let (code, log) = world.run(mirror, &Scratch::host(), |_| {});
        assert_eq!(code, 0, "{log}");
        let listing = world.rclone(&format!(
            "rclone lsf -R --files-only store:{}/objects/{uploads}",
            world.bucket()
        ));
        let mut copied: Vec<String> = listing.lines().map(str::to_string).collect();
        copied.sort();
        copied
    };
    assert_eq!(mirrored(), ["a.txt", "dir/b.txt"]);
    let content = world.rclone(&format!(
        "rclone cat store:{}/objects/{uploads}/dir/b.txt",
        world.bucket()
    ));
    assert_eq!(content.trim(), "two");

    // An object deleted from the bucket stays in its backup; a new one is added.
    world.rclone(&format!(
        "rclone deletefile store:{uploads}/a.txt && echo three | rclone rcat store:{uploads}/c.txt"
    ));
    assert_eq!(mirrored(), ["a.txt", "c.txt", "dir/b.txt"]);
}

/// The backup budget, measured (the README's figures): a database of about 100 MB
/// (generated here) backed up and restored with the real scripts against the real
/// services, each step timed, alternating with the same work done by the bare tools
/// (`pg_dumpall | gzip`, `rclone copyto`, `gzip -dc | psql`, in the same images,
/// started the same way). What the scripts add on top of the bare tools (verifying,
/// checksums, listing, retention, bookkeeping) must stay under 10% of the total.
///
/// A benchmark, run on demand (it takes minutes):
/// `cargo nextest run -p comind-tests --test composition --run-ignored only --no-capture backup_of_a_100_mb_database`
/// (`COMIND_BENCH_ROUNDS`, default 3).
#[tokio::test]
#[ignore = "a benchmark of minutes, run on demand (see its doc comment)"]
async fn backup_of_a_100_mb_database_costs_the_tools_plus_under_ten_percent() {
    require_peer!(docker::ready(&[SERVICE_IMAGES.as_slice(), &[RCLONE_IMAGE]].concat()).await);
    let rounds: usize = std::env::var("COMIND_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut world = World::up().await;
    let env = world.local.bootstrap.env().clone();
    let env = &*env;
    let db = connect(&world.postgres_url).await;
    db.batch_execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) AS body \
         FROM generate_series(1, 1000000) g;",
    )
    .await
    .unwrap();
    let size: i64 = db
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .unwrap()
        .get(0);
    assert!(size >= 100 << 20, "the database is {size} bytes");
    // No session of the test's own may hold the databases a restore drops.
    drop(db);

    let job = backups::postgres_cron_job(env);
    let pod = pod_of(&job);
    let dump = pod.init_containers.as_ref().unwrap()[0].clone();
    let upload = pod.containers[0].clone();
    let restore_job = backups::restore::restore_job(env, "postgres-restore-bench", "");
    let restore_pod = restore_job.spec.unwrap().template.spec.unwrap();
    let fetch = restore_pod.init_containers.as_ref().unwrap()[0].clone();
    let restore = restore_pod.containers[0].clone();
    let credentials = comind::backups::restore_credentials(env).unwrap();
    let (app_user, app_verifier) = credentials.app_role.clone().unwrap();
    for (k, v) in [
        ("username", credentials.admin.username.clone()),
        ("password", credentials.admin.password.expose().to_string()),
        ("app-user", app_user),
        ("app-verifier", app_verifier.expose().to_string()),
    ] {
        world.secrets.insert(
            ("postgres-restore-bench-admin".to_string(), k.to_string()),
            v,
        );
    }
    let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    let timed =
        |container: &Container, command: Option<Vec<String>>, scratch: &Scratch, key: &str| {
            let mut step = container.clone();
            if let Some(command) = command {
                step.command = Some(command);
            }
            let started = Instant::now();
            let (code, log) = world.run(&step, scratch, |vars| {
                if !key.is_empty() {
                    vars.retain(|(name, _)| name != "RESTORE_KEY");
                    vars.push(("RESTORE_KEY".to_string(), key.to_string()));
                }
            });
            let took = started.elapsed().as_secs_f64();
            assert_eq!(code, 0, "{:?}: {log}", step.command);
            took
        };
    let remote = format!(". {}/common.sh && s3_remote && ", backups::SCRIPTS_DIR);
    let mut script_backup = Vec::new();
    let mut bare_backup = Vec::new();
    let mut script_restore = Vec::new();
    let mut bare_restore = Vec::new();
    let mut steps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut dump_bytes = 0;
    for _ in 0..rounds {
        // The scripts: dump and verify, upload (and retention); fetch and check,
        // restore.
        let scratch = Scratch::host();
        let d = timed(&dump, None, &scratch, "");
        dump_bytes = std::fs::metadata(scratch.path().join("postgres.sql.gz"))
            .unwrap()
            .len();
        let u = timed(&upload, None, &scratch, "");
        let key = world
            .backups(env.name())
            .into_iter()
            .rfind(|n| n.ends_with(".sql.gz"))
            .unwrap();
        let scratch = Scratch::host();
        let f = timed(&fetch, None, &scratch, &key);
        let r = timed(&restore, None, &scratch, "");
        for (name, took) in [("dump", d), ("upload", u), ("fetch", f), ("restore", r)] {
            steps.entry(name).or_default().push(took);
        }
        script_backup.push(d + u);
        script_restore.push(f + r);

        // The bare tools, the same work (the application role's password set again
        // included: without it the next round's dump could not log in).
        let scratch = Scratch::host();
        let d = timed(
            &dump,
            Some(sh(
                "pg_dumpall --clean --if-exists --quote-all-identifiers --no-role-passwords \
                 --exclude-database=rdsadmin | gzip -c >/backup/bare.sql.gz",
            )),
            &scratch,
            "",
        );
        let u = timed(
            &upload,
            Some(sh(&format!(
                "{remote}rclone copyto /backup/bare.sql.gz store:$BACKUP_BUCKET/bench/bare.sql.gz"
            ))),
            &scratch,
            "",
        );
        let scratch = Scratch::host();
        let f = timed(
            &fetch,
            Some(sh(&format!(
                "{remote}rclone copyto store:$BACKUP_BUCKET/bench/bare.sql.gz /backup/bare.sql.gz"
            ))),
            &scratch,
            "",
        );
        let r = timed(
            &restore,
            Some(sh(
                "psql -X -q -d postgres -c \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND datname IS NOT NULL\" >/dev/null && \
                 gzip -dc /backup/bare.sql.gz | psql -X -q -d postgres >/dev/null 2>&1 && \
                 printf '%s\\n' '\\getenv u APP_USER' '\\getenv v APP_VERIFIER' \
                 \"ALTER ROLE :\\\"u\\\" PASSWORD :'v';\" | psql -X -q -d postgres >/dev/null",
            )),
            &scratch,
            "",
        );
        for (name, took) in [
            ("bare_dump", d),
            ("bare_upload", u),
            ("bare_fetch", f),
            ("bare_restore", r),
        ] {
            steps.entry(name).or_default().push(took);
        }
        bare_backup.push(d + u);
        bare_restore.push(f + r);
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let overhead = |script: &[f64], bare: &[f64]| {
        let (s, b) = (median(script), median(bare));
        (s - b) / s
    };
    let backup_overhead = overhead(&script_backup, &bare_backup);
    let restore_overhead = overhead(&script_restore, &bare_restore);
    let line = serde_json::json!({
        "bench": "backup_100mb", "rounds": rounds, "database_bytes": size,
        "dump_bytes": dump_bytes,
        "steps_s": steps.iter().map(|(k, v)| (k.to_string(), median(v))).collect::<BTreeMap<_, _>>(),
        "backup_s": median(&script_backup), "bare_backup_s": median(&bare_backup),
        "backup_overhead": backup_overhead,
        "restore_s": median(&script_restore), "bare_restore_s": median(&bare_restore),
        "restore_overhead": restore_overhead,
    });
    println!("{line}");
    assert!(
        backup_overhead < 0.10,
        "the backup scripts cost too much: {line}"
    );
    assert!(
        restore_overhead < 0.10,
        "the restore scripts cost too much: {line}"
    );
}

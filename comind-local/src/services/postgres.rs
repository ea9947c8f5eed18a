//! PostgreSQL (the `postgres` service) in a container: the configured databases,
//! owned by an application role, created over the PostgreSQL protocol.
//!
//! The superuser `postgres` gets a generated password through
//! `POSTGRES_PASSWORD_FILE`: the file `/run/comind/postgres-password` is uploaded
//! before the container first starts. It is mode 0600 in a 0700 directory, both owned
//! by the image's `postgres` user (uid/gid 70 in the alpine images): the image's
//! entrypoint reads `*_FILE` variables while it still runs as root, before it drops to
//! `postgres`, so root must be able to read it (root reads anything) and so must
//! `postgres` when the container is run as that user directly; nobody else can.
//!
//! Once the server accepts connections, Comind connects as the superuser and creates,
//! idempotently, the application role (`services.postgres.user`, a password of its
//! own, sent as a SCRAM-SHA-256 verifier so the password never appears in an SQL
//! statement) and the databases (`services.postgres.databases`) owned by it. The probe
//! is a real `SELECT 1` as the application role. Both credentials are kept in the
//! state directory.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use comind_core::environment::Environment;
use comind_core::reconcile::{Mode, Pass};
use comind_core::service::{ClusterTarget, PostgresEndpoint, ServiceEndpoint, ServiceKind};
use comind_core::state::Credentials;
use comind_core::{
    Change, DestroyOptions, Destroyed, Error, PhaseContext, PhaseId, Result, Secret, ServiceBackend,
};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;

use super::container::{ContainerSpec, LOOPBACK, ReadyBudget, ServiceContainer};
use super::ports::PublishedPort;
use crate::docker::DockerClient;
use crate::docker::archive::{ContainerFile, Ownership, Template};

/// The port PostgreSQL listens on in the container.
pub const POSTGRES_PORT: u16 = 5432;
/// The superuser.
pub const SUPERUSER: &str = "postgres";
/// The file holding the superuser's password.
pub const PASSWORD_FILE: &str = "/run/comind/postgres-password";
/// Where the data volume is mounted (the images' `PGDATA`).
const DATA_PATH: &str = "/var/lib/postgresql/data";
/// The uid and gid of `postgres` in the alpine images.
const POSTGRES_UID: u64 = 70;
/// The database every cluster has, for the superuser's connections.
const MAINTENANCE_DB: &str = "postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The two generated credentials, kept together in the state directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PostgresCredentials {
    superuser: Credentials,
    app: Credentials,
}

impl PostgresCredentials {
    fn generate(app_user: &str) -> Result<Self> {
        Ok(PostgresCredentials {
            superuser: Credentials::generate(SUPERUSER)?,
            app: Credentials::generate(app_user)?,
        })
    }

    fn placeholder(app_user: &str) -> Self {
        PostgresCredentials {
            superuser: Credentials {
                username: SUPERUSER.to_string(),
                password: Secret::new(""),
            },
            app: Credentials {
                username: app_user.to_string(),
                password: Secret::new(""),
            },
        }
    }
}

/// PostgreSQL (the `postgres` service) as a Docker container.
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    container: ServiceContainer,
    ready_timeout: Duration,
}

impl PostgresBackend {
    /// The backend for `env`, talking to Docker through `docker`; its readiness
    /// timeout is `local.ready_timeout`.
    pub fn new(docker: DockerClient, env: &Environment) -> Self {
        PostgresBackend {
            container: ServiceContainer::new(docker, ServiceKind::Postgres),
            ready_timeout: super::ready_timeout(env),
        }
    }

    /// Overrides how long the service may take to answer after starting.
    #[must_use]
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn component(&self) -> &'static str {
        self.container.component()
    }

    /// The superuser's credentials of `env`'s PostgreSQL, from the state directory:
    /// for what only the administrator may do, such as a restore, which recreates the
    /// databases and their owner.
    ///
    /// # Errors
    /// `NotFound` before the first `up` made them; when the file cannot be read.
    pub fn superuser(env: &Environment) -> Result<Credentials> {
        let component = ServiceKind::Postgres.id();
        super::stored::<PostgresCredentials>(env, component)?
            .map(|credentials| credentials.superuser)
            .ok_or_else(|| super::no_credentials(env, component))
    }

    /// The application role of `env`'s PostgreSQL and a SCRAM-SHA-256 verifier of its
    /// password (what `ALTER ROLE ... PASSWORD` takes, never the password itself):
    /// for a restore, whose dump holds the role without its password.
    ///
    /// # Errors
    /// As [`superuser`](Self::superuser).
    pub fn app_role_verifier(env: &Environment) -> Result<(String, Secret)> {
        let component = ServiceKind::Postgres.id();
        super::stored::<PostgresCredentials>(env, component)?
            .map(|credentials| {
                (
                    credentials.app.username.clone(),
                    Secret::new(verifier(&credentials.app.password)),
                )
            })
            .ok_or_else(|| super::no_credentials(env, component))
    }

    fn app_user(env: &Environment) -> String {
        env.config().services.postgres.user.to_string()
    }

    fn databases(env: &Environment) -> Vec<String> {
        env.config()
            .services
            .postgres
            .databases
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn port(env: &Environment) -> u16 {
        env.config().services.postgres.local.port.get()
    }

    fn spec(&self, env: &Environment, credentials: &PostgresCredentials) -> ContainerSpec {
        let settings = &env.config().services.postgres.local;
        let owner = Ownership {
            uid: POSTGRES_UID,
            gid: POSTGRES_UID,
            mode: 0o600,
        };
        ContainerSpec {
            name: self.container.name(env),
            image: settings.image.to_string(),
            image_field: "services.postgres.local.image",
            entrypoint: None,
            cmd: None,
            env: vec![
                ("POSTGRES_USER".to_string(), SUPERUSER.to_string()),
                (
                    "POSTGRES_PASSWORD_FILE".to_string(),
                    PASSWORD_FILE.to_string(),
                ),
                ("PGDATA".to_string(), DATA_PATH.to_string()),
            ],
            ports: vec![PublishedPort {
                container: POSTGRES_PORT,
                host: settings.port.get(),
                field: "services.postgres.local.port",
            }],
            network: env.config().local_network(),
            alias: self.component().to_string(),
            volume: self.container.volume(env),
            data_path: DATA_PATH.to_string(),
            files: vec![ContainerFile {
                path: PASSWORD_FILE.to_string(),
                file: owner,
                dir: Some(Ownership {
                    mode: 0o700,
                    ..owner
                }),
                content: Template::new()
                    .secret("superuser-password", &credentials.superuser.password),
            }],
            restart: "unless-stopped",
        }
    }

    fn credentials(&self, env: &Environment) -> Result<PostgresCredentials> {
        super::stored(env, self.component())?
            .ok_or_else(|| super::no_credentials(env, self.component()))
    }

    fn resource(&self, env: &Environment) -> String {
        format!("container {}", self.container.name(env))
    }

    /// Creates the application role and the databases that are missing, gives the
    /// databases to the role, and resets the role's password if it no longer matches
    /// the stored one; on a planning pass, only says what it would do. Each call is a
    /// pass of its own from live state, so a wait can repeat it until the server
    /// answers.
    async fn converge_contents(
        &self,
        env: &Environment,
        credentials: &PostgresCredentials,
        mode: Mode,
    ) -> Result<Vec<Change>> {
        let mut pass = Pass::new(mode);
        let resource = self.resource(env);
        let port = Self::port(env);
        let user = &credentials.app.username;
        let client = connect(port, &credentials.superuser, MAINTENANCE_DB)
            .await
            .map_err(|e| superuser_refused(env, &resource, &e))?;
        let query = |e: tokio_postgres::Error| pg_error("read roles and databases", &resource, &e);
        let role = client
            .query_opt(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[user],
            )
            .await
            .map_err(query)?;
        let wanted = Self::databases(env);
        let owners: BTreeMap<String, String> = client
            .query(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY($1)",
                &[&wanted],
            )
            .await
            .map_err(query)?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();

        let run = |sql: String| {
            let client = &client;
            async move { client.batch_execute(&sql).await }
        };
        let failed = |what: &str, e: &tokio_postgres::Error| pg_error(what, &resource, e);
        let set_password = format!(
            "ALTER ROLE {} LOGIN PASSWORD {}",
            quote_ident(user),
            quote_literal(&verifier(&credentials.app.password))
        );
        match role {
            None => {
                if pass.will(Change::create("role", user)) {
                    let create = format!(
                        "CREATE ROLE {} LOGIN PASSWORD {}",
                        quote_ident(user),
                        quote_literal(&verifier(&credentials.app.password))
                    );
                    match run(create).await {
                        Ok(()) => {}
                        // An earlier run, killed while it created the role, committed it
                        // after this pass read the roles: it exists now, which is what
                        // was wanted; make sure it has the stored password and login.
                        Err(e) if is_lost_race(&e) => run(set_password)
                            .await
                            .map_err(|e| failed(&format!("set the password of role {user}"), &e))?,
                        Err(e) => return Err(failed(&format!("create role {user}"), &e)),
                    }
                }
            }
            Some(row) => {
                let can_login: bool = row.get(0);
                let password_ok = can_login
                    && match connect(port, &credentials.app, MAINTENANCE_DB).await {
                        Ok(_) => true,
                        Err(e) if is_auth_failure(&e) => false,
                        Err(e) => return Err(failed("connect as the application role", &e)),
                    };
                if !password_ok
                    && pass.will(
                        Change::update("role", user)
                            .because("its password or login did not match the stored credentials"),
                    )
                {
                    run(set_password)
                        .await
                        .map_err(|e| failed(&format!("reset the password of role {user}"), &e))?;
                }
            }
        }
        let give_to_user = |db: &str| {
            format!(
                "ALTER DATABASE {} OWNER TO {}",
                quote_ident(db),
                quote_ident(user)
            )
        };
        for db in &wanted {
            match owners.get(db) {
                None => {
                    if pass.will(Change::create("database", db).because(format!("owned by {user}")))
                    {
                        let create = format!(
                            "CREATE DATABASE {} OWNER {}",
                            quote_ident(db),
                            quote_ident(user)
                        );
                        match run(create).await {
                            Ok(()) => {}
                            // Made meanwhile by an earlier run's statement that outlived
                            // it: adopt it once its owner is right.
                            Err(e) if is_lost_race(&e) => {
                                let owner: Option<String> = client
                                    .query_opt(
                                        "SELECT pg_get_userbyid(datdba) FROM pg_database \
                                         WHERE datname = $1",
                                        &[db],
                                    )
                                    .await
                                    .map_err(query)?
                                    .map(|row| row.get(0));
                                match owner {
                                    Some(owner) if owner == *user => {}
                                    Some(_) => run(give_to_user(db)).await.map_err(|e| {
                                        failed(&format!("change the owner of database {db}"), &e)
                                    })?,
                                    // Created and dropped again by someone else: the
                                    // next attempt reads everything afresh.
                                    None => {
                                        return Err(Error::unavailable(format!(
                                            "database {db} was being created by another \
                                             session, which did not keep it"
                                        ))
                                        .with_resource(resource.clone()));
                                    }
                                }
                            }
                            Err(e) => return Err(failed(&format!("create database {db}"), &e)),
                        }
                    }
                }
                Some(owner) if owner != user => {
                    if pass.will(
                        Change::update("database", db).because(format!("owner {owner} -> {user}")),
                    ) {
                        run(give_to_user(db)).await.map_err(|e| {
                            failed(&format!("change the owner of database {db}"), &e)
                        })?;
                    }
                }
                Some(_) => {}
            }
        }
        Ok(pass.into_changes())
    }
}

impl PostgresBackend {
    /// The planning pass: reads only, with placeholder credentials when none are
    /// stored yet.
    async fn plan(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let user = Self::app_user(env);
        let mut stored = super::stored::<PostgresCredentials>(env, self.component())?;
        if let Some(credentials) = &mut stored
            && credentials.app.username != user
        {
            // Renamed in comind.yaml: `up` makes the new role with a new password.
            credentials.app = PostgresCredentials::placeholder(&user).app;
        }
        let credentials = stored
            .clone()
            .unwrap_or_else(|| PostgresCredentials::placeholder(&user));
        let spec = self.spec(env, &credentials);
        let assessment = self.container.assess(ctx, &spec, None).await?;
        let mut changes = assessment.changes(&spec);
        let mut everything = vec![Change::create("role", &user)];
        everything.extend(
            Self::databases(env)
                .into_iter()
                .map(|db| Change::create("database", db).because(format!("owned by {user}"))),
        );
        let contents = match &stored {
            Some(credentials) => {
                super::planned_contents(&assessment, &spec, everything, || {
                    self.converge_contents(env, credentials, Mode::Plan)
                })
                .await?
            }
            None => everything,
        };
        changes.extend(contents);
        pass.record(changes);
        Ok(())
    }

    /// The applying pass: credentials are generated once, the container is made and
    /// started, then its contents converge once it answers.
    async fn ensure(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        let env = ctx.env();
        let user = Self::app_user(env);
        let (mut credentials, _) = super::stored_or_generated(env, self.component(), || {
            PostgresCredentials::generate(&user)
        })?;
        // The application role was renamed in comind.yaml since the credentials were
        // made: the new role gets a password of its own.
        if credentials.app.username != user {
            credentials.app = Credentials::generate(&user)?;
            env.state().remove_credentials(self.component())?;
            let replacement = credentials.clone();
            credentials = env
                .state()
                .credentials(self.component(), || Ok(replacement))?;
        }
        let spec = self.spec(env, &credentials);
        let changes = self.container.ensure(ctx, &spec, None).await?;
        ctx.checkpoint()?;
        // The first answer and the setup share one readiness timeout.
        let budget = ReadyBudget::start(self.ready_timeout);
        let secrets = [&credentials.superuser.password, &credentials.app.password];
        let resource = self.resource(env);
        ctx.step(
            "first_answer",
            self.container.wait_until(
                ctx,
                "waiting for PostgreSQL to accept connections",
                &budget,
                &secrets,
                || async {
                    connect(Self::port(env), &credentials.superuser, MAINTENANCE_DB)
                        .await
                        .map(drop)
                        .map_err(|e| superuser_refused(env, &resource, &e))
                },
            ),
        )
        .await?;
        let contents = ctx
            .step(
                "setup",
                self.container.wait_until(
                    ctx,
                    "waiting for PostgreSQL to create the role and databases",
                    &budget,
                    &secrets,
                    || self.converge_contents(env, &credentials, Mode::Apply),
                ),
            )
            .await?;
        pass.record(changes);
        pass.record(contents);
        Ok(())
    }
}

#[async_trait]
impl ServiceBackend for PostgresBackend {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Postgres
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        super::network_dependency()
    }

    fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let env = ctx.env();
        let spec = self.spec(env, &PostgresCredentials::placeholder(&Self::app_user(env)));
        self.container.preflight(ctx, &spec).await
    }

    async fn reconcile(&self, ctx: &PhaseContext, pass: &mut Pass) -> Result<()> {
        // Planning cannot generate credentials or wait for the container, so the two
        // modes take their own route to the container; what lives inside it is
        // converged by one function on the same pass.
        if pass.is_apply() {
            self.ensure(ctx, pass).await
        } else {
            self.plan(ctx, pass).await
        }
    }

    async fn probe(&self, ctx: &PhaseContext) -> Result<()> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        let resource = self.resource(env);
        let db = Self::databases(env)
            .into_iter()
            .next()
            .unwrap_or_else(|| MAINTENANCE_DB.to_string());
        let client = connect(Self::port(env), &credentials.app, &db)
            .await
            .map_err(|e| {
                pg_error(
                    &format!("connect to database {db} as the application role"),
                    &resource,
                    &e,
                )
            })?;
        let row = client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| pg_error("run SELECT 1", &resource, &e))?;
        let one: i32 = row.get(0);
        if one == 1 {
            Ok(())
        } else {
            Err(Error::internal(format!("SELECT 1 returned {one}")).with_resource(resource))
        }
    }

    async fn endpoint(&self, ctx: &PhaseContext) -> Result<ServiceEndpoint> {
        let env = ctx.env();
        let credentials = self.credentials(env)?;
        Ok(ServiceEndpoint::Postgres(PostgresEndpoint {
            host: LOOPBACK.to_string(),
            port: Self::port(env),
            username: credentials.app.username,
            password: credentials.app.password,
            databases: Self::databases(env),
            require_tls: false,
        }))
    }

    async fn cluster_target(
        &self,
        ctx: &PhaseContext,
        _endpoint: &ServiceEndpoint,
    ) -> Result<ClusterTarget> {
        self.container
            .cluster_target(ctx.env(), POSTGRES_PORT)
            .await
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.container.destroy(ctx, options.purge).await
    }

    async fn diagnostics(&self, ctx: &PhaseContext) -> Option<String> {
        let credentials = self.credentials(ctx.env()).ok();
        let secrets: Vec<&Secret> = credentials
            .iter()
            .flat_map(|c| [&c.superuser.password, &c.app.password])
            .collect();
        self.container.diagnostics(ctx.env(), &secrets).await
    }
}

/// A connection to database `db` on 127.0.0.1:`port` as `credentials`; the
/// connection task ends when the client is dropped.
async fn connect(
    port: u16,
    credentials: &Credentials,
    db: &str,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(LOOPBACK)
        .port(port)
        .user(&credentials.username)
        .password(credentials.password.expose())
        .dbname(db)
        .application_name("comind")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The connection's own error reaches the client's next call; nothing to do here.
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether a create failed only because the object appeared since it was looked up:
/// another session (typically an earlier run's statement that outlived its process)
/// created it first. The name check of `CREATE` reports it as a duplicate; when both
/// got past that check, the catalog's unique index does.
fn is_lost_race(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|c| {
        *c == SqlState::DUPLICATE_DATABASE
            || *c == SqlState::DUPLICATE_OBJECT
            || *c == SqlState::UNIQUE_VIOLATION
    })
}

fn is_auth_failure(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// Refused credentials: permission, permanent. Starting up, shutting down, too many
/// connections, or no answer: unavailable, transient. A missing database: not found.
/// Any other server error: internal.
/// The superuser's connection failed: when the password is refused, the data volume
/// was initialized with other credentials than the stored ones.
fn superuser_refused(env: &Environment, resource: &str, err: &tokio_postgres::Error) -> Error {
    pg_error("connect as the superuser", resource, err).with_hint(format!(
        "if PostgreSQL refuses the password, its data volume was initialized with other \
         credentials than those in {}; restore that file, or run `comind down --purge` to \
         start over (this deletes the data)",
        env.state().path().display()
    ))
}

fn pg_error(action: &str, resource: &str, err: &tokio_postgres::Error) -> Error {
    let detail = match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => err.to_string(),
    };
    let message = format!("cannot {action}: {detail}");
    let error = match err.code() {
        _ if is_auth_failure(err) => Error::permission(message),
        Some(c)
            if *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN =>
        {
            Error::unavailable(message)
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => Error::not_found(message),
        Some(_) => Error::internal(message),
        None => Error::unavailable(message),
    };
    error.with_resource(resource)
}

/// The SCRAM-SHA-256 verifier of `password`, as `CREATE ROLE ... PASSWORD` takes it.
fn verifier(password: &Secret) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn the_verifier_does_not_contain_the_password() {
        let password = Secret::new("plain-password-1234");
        let v = verifier(&password);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("plain-password-1234"));
    }

    #[test]
    fn the_password_file_is_private_and_absent_from_the_hash() {
        let env =
            comind_core::Environment::with_state_root(comind_core::Config::default(), "/tmp/x");
        let backend = PostgresBackend::new(DockerClient::new("unix:///nonexistent"), &env);
        let mut credentials = PostgresCredentials::placeholder("app");
        credentials.superuser.password = Secret::new("superuser-secret-value");
        let spec = backend.spec(&env, &credentials);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("superuser-secret-value"), "{json}");
        let file = &spec.files[0];
        assert_eq!(file.path, PASSWORD_FILE);
        assert_eq!(file.file.mode, 0o600);
        assert_eq!(file.dir.map(|d| d.mode), Some(0o700));
        assert!(
            spec.env
                .iter()
                .all(|(_, v)| !v.contains("superuser-secret-value"))
        );
        assert_eq!(spec.name, "comind-dev-postgres");
        assert_eq!(spec.volume, "comind-dev-postgres-data");
    }
}

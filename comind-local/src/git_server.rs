//! The local Git server (`git-server`): the GitOps repository Argo CD deploys from
//! when `gitops.repo.url` is `local`, as one more container on the environment's
//! network (`comind-<env>-git-server`), running `git daemon` over a named volume that
//! `down` keeps.
//!
//! The user fills it with `comind gitops push`, through the port published on
//! 127.0.0.1 (`GITOPS_REPO_URL`, `git://127.0.0.1:<port>/gitops.git`); Argo CD's repo
//! server, in the k3d cluster on the same network, pulls from the container's address
//! there (`GIT_SERVER_CLUSTER_HOST`:`GIT_SERVER_CLUSTER_PORT`). The Git protocol has
//! no authentication: anyone who reaches the port can push, so the port is published
//! on the loopback address only, and on the Docker network only the environment's own
//! containers (the cluster's nodes) reach it.
//!
//! The container's command makes the bare repository on first start (`git init
//! --bare` leaves an existing one as it is), points its `HEAD` at
//! `gitops.repo.revision`, and then becomes `git daemon` with pushes enabled. The
//! server accepts forced pushes (`receive.denyNonFastForwards` stays off): the client
//! refuses a non-fast-forward unless the user asks for `--force`, and a server that
//! refused it too would leave no way to replace a history the user rewrote.

use std::time::Duration;

use async_trait::async_trait;
use comind_core::config::{Config, Profile};
use comind_core::environment::Environment;
use comind_core::phase::status_from_plan;
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Error, Outputs, Phase, PhaseContext, PhaseId,
    PhaseStatus, Plan, Result,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docker::DockerClient;
use crate::network::NETWORK_PHASE_ID;
use crate::services::container::{ContainerSpec, LOOPBACK, ReadyBudget, ServiceContainer};
use crate::services::ports::PublishedPort;

/// The id of the Git server phase, and the component name on its labels (core's
/// contract, which the in-cluster layer reads).
pub use comind_core::cluster::GIT_SERVER_PHASE_ID;
use comind_core::cluster::{
    GIT_SERVER_CLUSTER_HOST, GIT_SERVER_CLUSTER_PORT, GIT_SERVER_REPOSITORY, GITOPS_REPO_HEAD,
    GITOPS_REPO_URL,
};

/// The Git protocol's port, inside the container.
pub const GIT_DAEMON_PORT: u16 = 9418;
/// Where the repositories live in the container (the named volume).
const BASE_PATH: &str = "/srv/git";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest ref advertisement line the probe reads (pkt-line's own limit).
const MAX_PKT_LINE: usize = 65520;

/// Whether `config` runs the local Git server: on the local profile, when Argo CD is
/// installed (`gitops.argocd.enabled`) and the repository is the local one
/// (`gitops.repo.url: local`).
pub fn runs_git_server(config: &Config) -> bool {
    config.profile == Profile::Local
        && config.gitops.argocd.enabled
        && config.gitops.repo.is_local()
}

/// The Git server phase (after `network`).
#[derive(Debug, Clone)]
pub struct GitServerPhase {
    container: ServiceContainer,
}

impl GitServerPhase {
    /// The phase, talking to Docker through `docker`.
    pub fn new(docker: DockerClient) -> Self {
        GitServerPhase {
            container: ServiceContainer::named(docker, GIT_SERVER_PHASE_ID),
        }
    }

    /// The server's container name, which is also its name on the network.
    pub fn container_name(env: &Environment) -> String {
        env.resource_name(GIT_SERVER_PHASE_ID)
    }

    /// `git://127.0.0.1:<port>/gitops.git`: the repository from this machine.
    pub fn repository_url(env: &Environment) -> String {
        format!(
            "git://{LOOPBACK}:{}/{GIT_SERVER_REPOSITORY}",
            Self::host_port(env)
        )
    }

    fn host_port(env: &Environment) -> u16 {
        env.config().gitops.repo.local.port.get()
    }

    fn spec(&self, env: &Environment) -> ContainerSpec {
        let repo = &env.config().gitops.repo;
        ContainerSpec {
            name: self.container.name(env),
            image: repo.local.image.to_string(),
            image_field: "gitops.repo.local.image",
            // The image's entrypoint is `git`; the repository must exist before the
            // daemon serves it.
            entrypoint: Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
            cmd: Some(vec![command(&repo.revision)]),
            env: Vec::new(),
            ports: vec![PublishedPort {
                container: GIT_DAEMON_PORT,
                host: Self::host_port(env),
                field: "gitops.repo.local.port",
            }],
            network: env.config().local_network(),
            alias: GIT_SERVER_PHASE_ID.to_string(),
            volume: self.container.volume(env),
            data_path: BASE_PATH.to_string(),
            files: Vec::new(),
            restart: "unless-stopped",
        }
    }

    async fn outputs(&self, env: &Environment) -> Result<Outputs> {
        let target = self.container.cluster_target(env, GIT_DAEMON_PORT).await?;
        let resource = format!("container {}", env.resource_name(GIT_SERVER_PHASE_ID));
        let head = probe(Self::host_port(env), &resource).await?;
        Ok(Outputs::new()
            .text(GITOPS_REPO_URL, Self::repository_url(env))
            .text(GITOPS_REPO_HEAD, head.unwrap_or_default())
            .text(GIT_SERVER_CLUSTER_HOST, target.host)
            .text(GIT_SERVER_CLUSTER_PORT, target.port.to_string()))
    }
}

/// The container's command: make the bare repository if it is missing, point its
/// `HEAD` at `revision`, serve.
fn command(revision: &str) -> String {
    let repository = format!("{BASE_PATH}/{GIT_SERVER_REPOSITORY}");
    let head = shell_quote(&format!("refs/heads/{revision}"));
    format!(
        "set -eu; git init --quiet --bare {repository}; \
         git --git-dir={repository} symbolic-ref HEAD {head}; \
         exec git daemon --verbose --reuseaddr --base-path={BASE_PATH} --export-all \
         --enable=receive-pack --informative-errors {BASE_PATH}"
    )
}

/// `text` as one word for `/bin/sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `payload` as one pkt-line: four hex digits of the whole line's length, then it.
fn pkt_line(payload: &str) -> Vec<u8> {
    let mut line = format!("{:04x}", payload.len() + 4).into_bytes();
    line.extend_from_slice(payload.as_bytes());
    line
}

/// Asks the server on 127.0.0.1:`port` for the repository's refs, as `git fetch` does
/// (`git-upload-pack /gitops.git`): `Ok` once it advertises them, with the commit its
/// `HEAD` (the configured revision) points at, or `None` for a repository nothing was
/// pushed to yet (which advertises only its capabilities); `Unavailable` (transient)
/// while it does not answer or answers with an error.
///
/// # Errors
/// As above.
pub async fn probe(port: u16, resource: &str) -> Result<Option<String>> {
    let request = pkt_line(&format!(
        "git-upload-pack /{GIT_SERVER_REPOSITORY}\0host={LOOPBACK}:{port}\0"
    ));
    match first_pkt_line(port, &request).await {
        Ok(line) if line.starts_with("ERR ") => Err(Error::unavailable(format!(
            "the Git server answered git-upload-pack /{GIT_SERVER_REPOSITORY} with `{}`",
            line.trim_end()
        ))
        .with_resource(resource)),
        Ok(line) if line == "0000" => Ok(None),
        Ok(line) if is_ref_advertisement(&line) => {
            let id = &line[..line.find(' ').unwrap_or(0)];
            // An empty repository advertises the null object id.
            Ok(
                (id.bytes().any(|b| b != b'0') && line[id.len()..].starts_with(" HEAD"))
                    .then(|| id.to_string()),
            )
        }
        Ok(line) => Err(Error::unavailable(format!(
            "the Git server answered with `{}`, not a ref advertisement",
            line.chars().take(80).collect::<String>()
        ))
        .with_resource(resource)),
        Err(e) => Err(
            Error::unavailable(format!("the Git server does not answer: {e}"))
                .with_resource(resource),
        ),
    }
}

/// Whether `line` starts a ref advertisement: an object id and a ref name (with the
/// capabilities after a NUL on the first line).
fn is_ref_advertisement(line: &str) -> bool {
    let (id, _) = line.split_at(line.find(' ').unwrap_or(0));
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Sends `request` to 127.0.0.1:`port` and reads the first pkt-line of the answer,
/// then ends the exchange with a flush (wanting nothing), as a client that found
/// nothing to fetch does.
async fn first_pkt_line(port: u16, request: &[u8]) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((LOOPBACK, port)).await?;
        stream.write_all(request).await?;
        let mut length = [0u8; 4];
        // Docker's proxy accepts the connection before the daemon listens, and then
        // closes it: an early end is "not yet".
        stream.read_exact(&mut length).await?;
        let length = std::str::from_utf8(&length)
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(|| std::io::Error::other("the answer is not a pkt-line"))?;
        if length == 0 {
            // A flush first: an empty advertisement, which servers older than Git 1.8
            // send for an empty repository. It is served.
            return Ok(String::from("0000"));
        }
        if !(4..=MAX_PKT_LINE).contains(&length) {
            return Err(std::io::Error::other(format!(
                "the answer's pkt-line length {length} is out of range"
            )));
        }
        let mut payload = vec![0u8; length - 4];
        stream.read_exact(&mut payload).await?;
        // Best effort: the answer is read, and the server copes with a client that
        // just goes away.
        let _ = stream.write_all(b"0000").await;
        Ok(String::from_utf8_lossy(&payload).into_owned())
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 3 s"))?
}

#[async_trait]
impl Phase for GitServerPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(GIT_SERVER_PHASE_ID)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![PhaseId::new(NETWORK_PHASE_ID)]
    }

    fn description(&self) -> String {
        "the local Git server of the GitOps repository".to_string()
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        self.container.preflight(ctx, &self.spec(ctx.env())).await
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let spec = self.spec(ctx.env());
        let assessment = self.container.assess(ctx, &spec, None).await?;
        if !assessment.in_sync() {
            return Ok(Plan::changes(assessment.changes(&spec)));
        }
        Ok(Plan::in_sync(self.outputs(ctx.env()).await?))
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let env = ctx.env();
        let spec = self.spec(env);
        let changes: Vec<Change> = self.container.ensure(ctx, &spec, None).await?;
        let resource = format!("container {}", spec.name);
        self.container
            .wait_until(
                ctx,
                "waiting for the Git server to advertise the repository's refs",
                &ReadyBudget::start(env.config().local.ready_timeout.get()),
                &[],
                || probe(Self::host_port(env), &resource),
            )
            .await?;
        Ok(Applied {
            changes,
            outputs: self.outputs(env).await?,
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, options: DestroyOptions) -> Result<Destroyed> {
        self.container.destroy(ctx, options.purge).await
    }

    async fn status(&self, ctx: &PhaseContext) -> Result<PhaseStatus> {
        let plan = self.plan(ctx).await?;
        let mut status = status_from_plan(plan);
        if status.outputs.is_some() {
            let env = ctx.env();
            let resource = format!("container {}", Self::container_name(env));
            if let Err(err) = probe(Self::host_port(env), &resource).await {
                status.health = comind_core::Health::Degraded;
                status.detail = format!("not advertising the repository's refs: {err}");
                status.outputs = None;
            }
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pkt_line_counts_its_own_length() {
        assert_eq!(pkt_line("a\n"), b"0006a\n");
        let request = pkt_line("git-upload-pack /gitops.git\0host=127.0.0.1:9418\0");
        assert_eq!(&request[..4], b"0034");
        assert_eq!(request.len(), 0x34);
    }

    #[test]
    fn ref_advertisements_are_told_from_errors() {
        let zero = "0".repeat(40);
        assert!(is_ref_advertisement(&format!(
            "{zero} capabilities^{{}}\0report-status"
        )));
        assert!(is_ref_advertisement(&format!("{} HEAD\0", "a".repeat(64))));
        assert!(!is_ref_advertisement("ERR no such repository"));
        assert!(!is_ref_advertisement(""));
        assert!(!is_ref_advertisement(&format!("{}x HEAD", "a".repeat(39))));
    }

    #[test]
    fn the_command_makes_the_repository_and_serves_it_with_pushes() {
        let command = command("it's");
        assert!(command.contains("git init --quiet --bare /srv/git/gitops.git"));
        assert!(
            command.contains(r"symbolic-ref HEAD 'refs/heads/it'\''s'"),
            "{command}"
        );
        assert!(command.contains("exec git daemon"));
        assert!(command.contains("--enable=receive-pack"));
        assert!(command.contains("--base-path=/srv/git"));
    }

    #[test]
    fn the_server_runs_for_the_local_repository_with_argo_cd_on_the_local_profile() {
        let mut config = Config::default();
        assert!(runs_git_server(&config));
        config.gitops.argocd.enabled = false;
        assert!(!runs_git_server(&config));
        config.gitops.argocd.enabled = true;
        config.gitops.repo.url = "https://git.example/o/r.git".to_string();
        assert!(!runs_git_server(&config));
        config.gitops.repo.url = "local".to_string();
        config.profile = Profile::Aws;
        assert!(!runs_git_server(&config));
    }

    #[test]
    fn the_spec_publishes_on_the_configured_port_and_names_the_url() {
        let mut config = Config::default();
        config.gitops.repo.local.port = comind_core::config::Port::new(19418).unwrap();
        let env = Environment::with_state_root(config, "/tmp/x");
        let phase = GitServerPhase::new(DockerClient::for_config(env.config()));
        let spec = phase.spec(&env);
        assert_eq!(spec.name, "comind-dev-git-server");
        assert_eq!(spec.image, "alpine/git:v2.49.1");
        assert_eq!(spec.ports[0].host, 19418);
        assert_eq!(spec.ports[0].container, 9418);
        assert_eq!(spec.volume, "comind-dev-git-server-data");
        assert_eq!(
            GitServerPhase::repository_url(&env),
            "git://127.0.0.1:19418/gitops.git"
        );
    }
}

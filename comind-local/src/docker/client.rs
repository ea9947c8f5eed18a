//! The connection to the Docker Engine: which endpoint, connected once, shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use comind_core::config::Config;
use comind_core::{Error, Result};
use tokio::sync::OnceCell;

use super::error::{START_DOCKER_HINT, docker_error};

/// The Docker socket used when neither `local.docker_host` nor `DOCKER_HOST` says
/// otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long one Docker API call may take to answer (pull and log streams are not cut
/// off by it: it bounds the wait for the response headers).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A lazily connected, shared client of one Docker Engine.
///
/// Creating one is cheap and touches nothing; the first call connects and negotiates
/// the API version, and every clone shares that connection, so all phases of a run
/// (and every run of one [`LocalProvider`](crate::LocalProvider)) talk to the daemon
/// through one client.
#[derive(Clone)]
pub struct DockerClient {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    origin: &'static str,
    docker: OnceCell<Docker>,
}

impl std::fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClient")
            .field("host", &self.inner.host)
            .field("connected", &self.inner.docker.initialized())
            .finish()
    }
}

/// What the daemon says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    /// The engine version (`20.10.24+dfsg1`).
    pub version: String,
    /// The highest API version the daemon speaks (`1.41`).
    pub api_version: String,
    /// The API version this client settled on.
    pub negotiated: String,
    /// How long the ping took.
    pub ping: Duration,
}

impl DockerClient {
    /// A client of the engine named by `config.local.docker_host`, else `DOCKER_HOST`,
    /// else the local socket. Does not connect.
    pub fn for_config(config: &Config) -> Self {
        let (host, origin) = match (&config.local.docker_host, std::env::var("DOCKER_HOST")) {
            (Some(host), _) => (host.clone(), "local.docker_host"),
            (None, Ok(host)) if !host.trim().is_empty() => (host, "DOCKER_HOST"),
            _ => (DEFAULT_DOCKER_HOST.to_string(), "the default"),
        };
        Self::for_host(host, origin)
    }

    /// A client of the engine at `host` (`unix:///var/run/docker.sock`,
    /// `tcp://127.0.0.1:2375`). Does not connect.
    pub fn new(host: impl Into<String>) -> Self {
        Self::for_host(host.into(), "the caller")
    }

    fn for_host(host: String, origin: &'static str) -> Self {
        DockerClient {
            inner: Arc::new(Inner {
                host,
                origin,
                docker: OnceCell::new(),
            }),
        }
    }

    /// The endpoint, as configured.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The connected bollard client, connecting on first use.
    ///
    /// # Errors
    /// `InvalidInput` for an endpoint bollard cannot use; `Unavailable` (with a hint on
    /// how to start Docker) when the daemon cannot be reached.
    pub async fn docker(&self) -> Result<&Docker> {
        self.inner
            .docker
            .get_or_try_init(|| connect(&self.inner.host, self.inner.origin))
            .await
    }

    /// Pings the daemon and reads its version.
    ///
    /// # Errors
    /// When the daemon cannot be reached.
    pub async fn info(&self) -> Result<DaemonInfo> {
        let docker = self.docker().await?;
        let started = Instant::now();
        docker
            .ping()
            .await
            .map_err(|e| docker_error("ping", &self.resource(), e))?;
        let ping = started.elapsed();
        let version = docker
            .version()
            .await
            .map_err(|e| docker_error("read the version of", &self.resource(), e))?;
        let negotiated = docker.client_version();
        Ok(DaemonInfo {
            version: version.version.unwrap_or_else(|| "unknown".to_string()),
            api_version: version.api_version.unwrap_or_else(|| "unknown".to_string()),
            negotiated: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
            ping,
        })
    }

    fn resource(&self) -> String {
        format!("Docker daemon at {}", self.inner.host)
    }
}

async fn connect(host: &str, origin: &str) -> Result<Docker> {
    let resource = format!("Docker daemon at {host}");
    let docker = Docker::connect_with_host(host).map_err(|e| match e {
        bollard::errors::Error::UnsupportedURISchemeError { .. } => Error::invalid_input(format!(
            "the Docker endpoint `{host}` (from {origin}) is not supported"
        ))
        .with_resource(resource.clone())
        .with_hint("use a unix:// socket or a tcp:// or http:// address"),
        other => docker_error("connect to", &resource, other),
    })?;
    // Negotiation costs one round trip and is what makes requests valid against an
    // older daemon once bollard sends its API version (see the research notes on
    // bollard 0.21, which currently sends none).
    let docker = docker
        .with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
        .negotiate_version()
        .await
        .map_err(|e| {
            let err = docker_error("connect to", &resource, e);
            if err.hint().is_none() {
                err.with_hint(START_DOCKER_HINT)
            } else {
                err
            }
        })?;
    Ok(docker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_says_how_to_start_docker() {
        let client = DockerClient::new("unix:///nonexistent/comind-test.sock");
        let err = client.docker().await.unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::Unavailable);
        assert!(
            err.hint()
                .unwrap_or_default()
                .contains("systemctl start docker"),
            "{err}"
        );
        assert!(
            err.to_string().contains("/nonexistent/comind-test.sock"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unsupported_scheme_is_invalid_input() {
        let err = DockerClient::new("ftp://example")
            .docker()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_configured_host_wins() {
        let mut config = Config::default();
        config.local.docker_host = Some("tcp://127.0.0.1:1".to_string());
        assert_eq!(
            DockerClient::for_config(&config).host(),
            "tcp://127.0.0.1:1"
        );
    }
}

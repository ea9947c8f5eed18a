//! Where `comind seal` gets the certificate: the environment's stored key, or the
//! controller itself through the API server's service proxy (what `kubeseal
//! --fetch-cert` does), for a cluster whose key Comind did not make.

use std::fmt;

use comind_core::{Environment, Error, Result};

use super::{SealingCertificate, SealingKey};
use crate::apply::error::api_error;
use crate::platform::addons::SEALED_SECRETS;

/// The state directory's name for the sealing key (`credentials/sealed-secrets.json`).
pub const CREDENTIALS: &str = "sealed-secrets";

/// The controller's Service (the chart's `fullnameOverride` that Comind sets).
pub const CONTROLLER_SERVICE: &str = "sealed-secrets-controller";

/// The controller's namespace.
pub const CONTROLLER_NAMESPACE: &str = SEALED_SECRETS.namespace;

/// The controller's HTTP port, where it serves `/v1/cert.pem`.
const CONTROLLER_PORT: u16 = 8080;

/// Where a certificate came from, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateOrigin {
    /// The environment's key in the state directory.
    State(std::path::PathBuf),
    /// The controller, through the API server's service proxy.
    Controller(String),
}

impl fmt::Display for CertificateOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateOrigin::State(path) => {
                write!(f, "the environment's key ({})", path.display())
            }
            CertificateOrigin::Controller(path) => write!(f, "the controller ({path})"),
        }
    }
}

/// The environment's sealing key, if Comind made one (never writes).
///
/// # Errors
/// When the stored key cannot be read.
pub fn stored_key(env: &Environment) -> Result<Option<SealingKey>> {
    env.state().stored_credentials(CREDENTIALS)
}

/// The certificate to seal with for `env`: the stored key's, else the controller's.
///
/// # Errors
/// `Unavailable` when there is no stored key and the controller does not answer,
/// with the ways out (`--cert`, `comind up`).
pub async fn environment_certificate(
    env: &Environment,
) -> Result<(SealingCertificate, CertificateOrigin)> {
    if let Some(key) = stored_key(env)? {
        let origin = CertificateOrigin::State(env.state().credentials_path(CREDENTIALS));
        return Ok((key.certificate()?, origin));
    }
    let cluster = crate::access::connect_env(env).await.map_err(|e| {
        e.with_hint(format!(
            "environment `{}` has no sealing key in its state directory and its cluster cannot \
             be reached: run `comind up`, or pass the controller's certificate with --cert FILE",
            env.name()
        ))
    })?;
    let path = format!(
        "/api/v1/namespaces/{CONTROLLER_NAMESPACE}/services/http:{CONTROLLER_SERVICE}:{CONTROLLER_PORT}/proxy/v1/cert.pem"
    );
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| Error::internal(format!("cannot build the request for {path}: {e}")))?;
    let pem = cluster.client.request_text(request).await.map_err(|e| {
        api_error(
            "fetch the sealing certificate from",
            &format!("service {CONTROLLER_NAMESPACE}/{CONTROLLER_SERVICE}"),
            e,
        )
        .with_hint(
            "the Sealed Secrets controller does not answer (is the environment up, and the \
             controller running?); or pass its certificate with --cert FILE",
        )
    })?;
    let certificate = SealingCertificate::from_pem(&pem).map_err(|e| {
        e.with_resource(format!(
            "service {CONTROLLER_NAMESPACE}/{CONTROLLER_SERVICE}"
        ))
    })?;
    Ok((certificate, CertificateOrigin::Controller(path)))
}

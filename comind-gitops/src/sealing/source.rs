//! Where `comind seal` gets the certificate: the environment's stored key, or the
//! controller itself through the API server's service proxy (what `kubeseal
//! --fetch-cert` does), for a cluster whose key Comind did not make.

use std::fmt;

use comind_core::{Environment, Error, Result, Secret, SecretStore};

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
    /// The environment's key in its secret store (a path, a secret's name).
    Stored(String),
    /// The controller, through the API server's service proxy.
    Controller(String),
}

impl fmt::Display for CertificateOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateOrigin::Stored(location) => {
                write!(f, "the environment's key ({location})")
            }
            CertificateOrigin::Controller(path) => write!(f, "the controller ({path})"),
        }
    }
}

/// The environment's sealing key in `store`, if Comind made one (never writes).
///
/// # Errors
/// When the store cannot be read, or what it holds is not a sealing key.
pub async fn stored_key(store: &dyn SecretStore) -> Result<Option<SealingKey>> {
    let Some(value) = store.get(CREDENTIALS).await? else {
        return Ok(None);
    };
    parse_key(store, &value).map(Some)
}

/// The sealing key in `value`, read from `store`.
pub(crate) fn parse_key(store: &dyn SecretStore, value: &Secret) -> Result<SealingKey> {
    // serde_json's message names a position, never the text: no key material leaks.
    serde_json::from_str(value.expose()).map_err(|e| {
        Error::internal(format!("the stored sealing key is not readable: {e}"))
            .with_resource(store.location(CREDENTIALS))
            .with_hint(
                "restore it from a backup; removing it makes Comind make a new key, which \
                 cannot decrypt the SealedSecrets sealed with the old one",
            )
    })
}

/// The certificate to seal with for `env`: the key's in `store` (the environment's
/// secret store), else the controller's.
///
/// # Errors
/// `Unavailable` when there is no stored key and the controller does not answer,
/// with the ways out (`--cert`, `comind up`).
pub async fn environment_certificate(
    env: &Environment,
    store: &dyn SecretStore,
) -> Result<(SealingCertificate, CertificateOrigin)> {
    if let Some(key) = stored_key(store).await? {
        let origin = CertificateOrigin::Stored(store.location(CREDENTIALS));
        return Ok((key.certificate()?, origin));
    }
    let cluster = crate::access::connect_env(env).await.map_err(|e| {
        e.with_hint(format!(
            "environment `{}` has no sealing key in {} and its cluster cannot \
             be reached: run `comind up`, or pass the controller's certificate with --cert FILE",
            env.name(),
            store.location(CREDENTIALS)
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

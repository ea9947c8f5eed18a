//! Sealed Secrets, natively: the environment's sealing key, and sealing a Secret into
//! a `SealedSecret` for the GitOps repository (`comind seal`), with no `kubeseal`.
//!
//! The wire format is the controller's (`pkg/crypto` of bitnami-labs/sealed-secrets),
//! so the controller decrypts what Comind seals:
//!
//! ```text
//! u16 (big-endian) length of the RSA ciphertext
//! RSA-OAEP(SHA-256, label = the scope's label) of a fresh 32-byte session key
//! AES-256-GCM(session key, nonce = 12 zero bytes, no associated data) of the value
//! ```
//!
//! A session key is used once (one per value), which is what makes the fixed nonce
//! safe. The label binds a value to where it may be unsealed ([`Scope`]):
//! `namespace/name` (strict), `namespace` (namespace-wide), or empty (cluster-wide).
//!
//! The key pair ([`SealingKey`]) is made by Comind once per environment and kept in
//! its secret store ([`comind_core::SecretStore`]: the state directory, or AWS Secrets
//! Manager with `aws.secret_store: secrets-manager`); the `platform/sealing-key` phase gives it to the controller
//! before the controller starts, so SealedSecrets in Git outlive `down`, `up` and a
//! rebuilt cluster.

mod key;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use comind_core::{Error, Result};
use k8s_openapi::api::core::v1::Secret as SecretObject;
use rand_core::{OsRng, RngCore};
use rsa::Oaep;
use serde::Serialize;

pub use key::{CERTIFICATE_VALIDITY, KEY_BITS, SealingCertificate, SealingKey};
pub(crate) use source::parse_key;
pub use source::{
    CONTROLLER_NAMESPACE, CONTROLLER_SERVICE, CREDENTIALS, CertificateOrigin,
    environment_certificate, stored_key,
};

/// The annotation that makes a SealedSecret namespace-wide.
pub const NAMESPACE_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/namespace-wide";
/// The annotation that makes a SealedSecret cluster-wide.
pub const CLUSTER_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/cluster-wide";

/// Where a sealed value may be unsealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Only as the Secret of this name in this namespace (the default): a copy of the
    /// SealedSecret under another name or namespace does not decrypt.
    #[default]
    Strict,
    /// Under any name, in this namespace.
    NamespaceWide,
    /// Under any name, in any namespace.
    ClusterWide,
}

impl Scope {
    /// The command-line spelling: `strict`, `namespace-wide`, `cluster-wide`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        }
    }

    /// The OAEP label the value is sealed under, as the controller computes it.
    pub fn label(self, namespace: &str, name: &str) -> String {
        match self {
            Scope::Strict => format!("{namespace}/{name}"),
            Scope::NamespaceWide => namespace.to_string(),
            Scope::ClusterWide => String::new(),
        }
    }

    /// The annotation that tells the controller the scope (none for strict).
    fn annotation(self) -> Option<&'static str> {
        match self {
            Scope::Strict => None,
            Scope::NamespaceWide => Some(NAMESPACE_WIDE_ANNOTATION),
            Scope::ClusterWide => Some(CLUSTER_WIDE_ANNOTATION),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "strict" => Ok(Scope::Strict),
            "namespace-wide" => Ok(Scope::NamespaceWide),
            "cluster-wide" => Ok(Scope::ClusterWide),
            other => Err(Error::invalid_input(format!(
                "unknown scope `{other}`: use strict, namespace-wide or cluster-wide"
            ))),
        }
    }
}

/// A Secret to seal: its name, namespace, type, metadata, and values in the clear.
/// `Debug` lists the keys, never the values.
#[derive(Clone, Default)]
pub struct PlainSecret {
    name: String,
    namespace: String,
    secret_type: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for PlainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainSecret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("type", &self.secret_type)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PlainSecret {
    /// An empty Secret `name` in `namespace`.
    ///
    /// # Errors
    /// Invalid input when the name is not a DNS-1123 subdomain or the namespace not a
    /// DNS-1123 label.
    pub fn new(name: &str, namespace: &str) -> Result<Self> {
        check_name(name)?;
        comind_core::config::check_dns_label(namespace, "the namespace")
            .map_err(Error::invalid_input)?;
        Ok(PlainSecret {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ..PlainSecret::default()
        })
    }

    /// A Secret from its manifest (YAML or JSON, `kind: Secret`): `data` (base64) and
    /// `stringData` (which wins on a shared key, as the API server does), its type,
    /// labels and annotations. `name` and `namespace` fill in what the manifest lacks;
    /// where both give one, they must agree.
    ///
    /// # Errors
    /// Invalid input when the manifest is not a Secret, has no values, or names
    /// another Secret than `name`/`namespace`.
    pub fn from_manifest(text: &str, name: Option<&str>, namespace: Option<&str>) -> Result<Self> {
        let value: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            // The parser's message can quote the input, which holds the secret values:
            // give only where it failed.
            Error::invalid_input(format!(
                "the Secret manifest is not YAML or JSON{}",
                e.location()
                    .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                    .unwrap_or_default()
            ))
        })?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("Secret") {
            return Err(Error::invalid_input(
                "the manifest on standard input is not a Secret (`kind: Secret`)",
            ));
        }
        let secret: SecretObject = serde_json::from_value(value).map_err(|_| {
            Error::invalid_input(
                "the Secret manifest does not parse as a Secret (are the `data` values base64?)",
            )
        })?;
        let pick =
            |flag: Option<&str>, manifest: Option<&String>, what: &str| match (flag, manifest) {
                (Some(flag), Some(manifest)) if flag != manifest => Err(Error::invalid_input(
                    format!("--{what} {flag} does not match the manifest's {what} `{manifest}`"),
                )),
                (Some(flag), _) => Ok(flag.to_string()),
                (None, Some(manifest)) => Ok(manifest.clone()),
                (None, None) => Err(Error::invalid_input(format!(
                    "the Secret has no {what}: give --{what} or set metadata.{what}"
                ))),
            };
        let name = pick(name, secret.metadata.name.as_ref(), "name")?;
        let namespace = pick(namespace, secret.metadata.namespace.as_ref(), "namespace")?;
        let mut plain = PlainSecret::new(&name, &namespace)?;
        plain.secret_type = secret.type_;
        plain.labels = secret.metadata.labels.unwrap_or_default();
        plain.annotations = secret.metadata.annotations.unwrap_or_default();
        // What `kubectl apply` leaves behind would carry the plain values into Git.
        plain
            .annotations
            .remove("kubectl.kubernetes.io/last-applied-configuration");
        for (key, value) in secret.data.unwrap_or_default() {
            plain.insert(&key, value.0)?;
        }
        for (key, value) in secret.string_data.unwrap_or_default() {
            plain.insert(&key, value.into_bytes())?;
        }
        Ok(plain)
    }

    /// Sets the value of `key`.
    ///
    /// # Errors
    /// Invalid input when `key` is not a valid Secret key (`[-._a-zA-Z0-9]+`, at most
    /// 253 characters).
    pub fn insert(&mut self, key: &str, value: Vec<u8>) -> Result<()> {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(Error::invalid_input(format!(
                "`{key}` is not a valid Secret key: use letters, digits, `-`, `_` and `.`, at most 253 characters"
            )));
        }
        self.data.insert(key.to_string(), value);
        Ok(())
    }

    /// Sets a value from `KEY=VALUE` (`--from-literal`). The value is never quoted
    /// back in an error.
    ///
    /// # Errors
    /// Invalid input without a `=`, or for an invalid key.
    pub fn insert_literal(&mut self, literal: &str) -> Result<()> {
        let Some((key, value)) = literal.split_once('=') else {
            return Err(Error::invalid_input(
                "--from-literal takes KEY=VALUE (no `=` in one of them)",
            ));
        };
        self.insert(key, value.as_bytes().to_vec())
    }

    /// Sets a value from a file: `KEY=PATH`, or `PATH` with the file's name as the key
    /// (`--from-file`, as `kubectl create secret` takes it).
    ///
    /// # Errors
    /// Invalid input when the file cannot be read or the key is invalid.
    pub fn insert_file(&mut self, item: &str) -> Result<()> {
        let (key, path) = match item.split_once('=') {
            Some((key, path)) => (key.to_string(), std::path::PathBuf::from(path)),
            None => {
                let path = std::path::PathBuf::from(item);
                let key = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (key, path)
            }
        };
        let value = std::fs::read(&path).map_err(|e| {
            Error::invalid_input(format!("cannot read --from-file {}: {e}", path.display()))
        })?;
        self.insert(&key, value)
    }

    /// Sets the Secret's type (`Opaque` when unset).
    pub fn set_type(&mut self, secret_type: impl Into<String>) {
        self.secret_type = Some(secret_type.into());
    }

    /// The Secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Secret's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The keys it holds.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }
}

fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= 253
        && name
            .split('.')
            .all(|label| comind_core::config::check_dns_label(label, "").is_ok());
    if !valid {
        return Err(Error::invalid_input(format!(
            "the Secret name `{name}` is not valid: use lowercase letters, digits, `-` and `.`, \
             starting and ending with a letter or digit, at most 253 characters"
        )));
    }
    Ok(())
}

/// A `SealedSecret` (`bitnami.com/v1alpha1`), as it goes into Git.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecret {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: SealedSecretSpec,
}

#[derive(Debug, Clone, Serialize)]
struct Metadata {
    name: String,
    namespace: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SealedSecretSpec {
    encrypted_data: BTreeMap<String, String>,
    template: Template,
}

#[derive(Debug, Clone, Serialize)]
struct Template {
    metadata: Metadata,
    #[serde(rename = "type")]
    secret_type: String,
}

impl SealedSecret {
    /// The manifest as YAML, for stdout or a file in the GitOps repository.
    ///
    /// # Errors
    /// Never in practice (the types serialise); internal if they did not.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| Error::internal(format!("cannot encode the SealedSecret: {e}")))
    }

    /// The manifest as JSON (for the API server).
    ///
    /// # Errors
    /// Never in practice; internal if the types did not serialise.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self)
            .map_err(|e| Error::internal(format!("cannot encode the SealedSecret: {e}")))
    }

    /// The sealed values, base64, by key.
    pub fn encrypted_data(&self) -> &BTreeMap<String, String> {
        &self.spec.encrypted_data
    }
}

/// Seals `secret` with `certificate` under `scope`: every value encrypted on its own
/// with a fresh session key.
///
/// # Errors
/// Invalid input when the Secret has no values or the certificate has expired.
pub fn seal(
    certificate: &SealingCertificate,
    secret: &PlainSecret,
    scope: Scope,
) -> Result<SealedSecret> {
    certificate.check_valid()?;
    if secret.data.is_empty() {
        return Err(Error::invalid_input(format!(
            "the Secret {}/{} has no values to seal: give --from-literal K=V or --from-file K=PATH",
            secret.namespace, secret.name
        )));
    }
    let label = scope.label(&secret.namespace, &secret.name);
    let encrypted_data = secret
        .data
        .iter()
        .map(|(key, value)| {
            let sealed = encrypt(certificate, label.as_bytes(), value)?;
            Ok((
                key.clone(),
                base64::engine::general_purpose::STANDARD.encode(sealed),
            ))
        })
        .collect::<Result<_>>()?;
    // The scope is `scope`'s alone: one an input manifest named is not carried over.
    let mut annotations = secret.annotations.clone();
    annotations.remove(NAMESPACE_WIDE_ANNOTATION);
    annotations.remove(CLUSTER_WIDE_ANNOTATION);
    if let Some(annotation) = scope.annotation() {
        annotations.insert(annotation.to_string(), "true".to_string());
    }
    let metadata = Metadata {
        name: secret.name.clone(),
        namespace: secret.namespace.clone(),
        labels: BTreeMap::new(),
        annotations: scope
            .annotation()
            .map(|a| BTreeMap::from([(a.to_string(), "true".to_string())]))
            .unwrap_or_default(),
    };
    Ok(SealedSecret {
        api_version: "bitnami.com/v1alpha1",
        kind: "SealedSecret",
        metadata,
        spec: SealedSecretSpec {
            encrypted_data,
            template: Template {
                metadata: Metadata {
                    name: secret.name.clone(),
                    namespace: secret.namespace.clone(),
                    labels: secret.labels.clone(),
                    annotations,
                },
                secret_type: secret
                    .secret_type
                    .clone()
                    .unwrap_or_else(|| "Opaque".to_string()),
            },
        },
    })
}

/// The controller's hybrid encryption of one value under `label`.
///
/// # Errors
/// Internal when the system's random source or the RSA encryption fails.
pub fn encrypt(
    certificate: &SealingCertificate,
    label: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut session_key = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut session_key)
        .map_err(|e| Error::internal(format!("the system's random source failed: {e}")))?;
    // rsa's OAEP takes the label as a string; every label the controller uses is one
    // (namespace and name are DNS names).
    let label = std::str::from_utf8(label)
        .map_err(|_| Error::invalid_input("a sealing label must be UTF-8"))?;
    let padding = Oaep::new_with_label::<sha2::Sha256, _>(label);
    let wrapped = certificate
        .public
        .encrypt(&mut OsRng, padding, &session_key)
        .map_err(|e| Error::internal(format!("cannot encrypt the session key: {e}")))?;
    let length = u16::try_from(wrapped.len()).map_err(|_| {
        Error::internal("the RSA ciphertext is longer than the wire format's 16-bit length")
    })?;
    let cipher = Aes256Gcm::new_from_slice(&session_key)
        .map_err(|e| Error::internal(format!("cannot key AES-256-GCM: {e}")))?;
    // The zero nonce is the controller's: safe because each session key seals one value.
    let sealed = cipher
        .encrypt(Nonce::from_slice(&[0u8; 12]), plaintext)
        .map_err(|e| Error::internal(format!("cannot encrypt with AES-256-GCM: {e}")))?;
    let mut out = Vec::with_capacity(2 + wrapped.len() + sealed.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&sealed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scope_labels_are_the_controllers() {
        assert_eq!(Scope::Strict.label("team", "db"), "team/db");
        assert_eq!(Scope::NamespaceWide.label("team", "db"), "team");
        assert_eq!(Scope::ClusterWide.label("team", "db"), "");
        assert_eq!(
            "namespace-wide".parse::<Scope>().unwrap(),
            Scope::NamespaceWide
        );
        assert!("wide".parse::<Scope>().is_err());
    }

    #[test]
    fn bad_names_and_keys_are_refused() {
        assert!(PlainSecret::new("Db", "team").is_err());
        assert!(PlainSecret::new("db", "team.x").is_err());
        assert!(PlainSecret::new("db.creds", "team").is_ok());
        let mut secret = PlainSecret::new("db", "team").unwrap();
        assert!(secret.insert("a/b", vec![]).is_err());
        assert!(secret.insert("..", vec![]).is_err());
        assert!(secret.insert("DB_URL.v1-x", vec![]).is_ok());
    }

    #[test]
    fn a_manifest_gives_name_type_and_values_and_debug_hides_them() {
        let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: team\n  \
                        annotations:\n    kubectl.kubernetes.io/last-applied-configuration: leak\n\
                        type: kubernetes.io/basic-auth\ndata:\n  username: YWRtaW4=\n\
                        stringData:\n  password: hunter2\n";
        let secret = PlainSecret::from_manifest(manifest, None, Some("team")).unwrap();
        assert_eq!((secret.name(), secret.namespace()), ("db", "team"));
        assert_eq!(secret.keys().collect::<Vec<_>>(), ["password", "username"]);
        assert_eq!(secret.data["username"], b"admin");
        assert!(secret.annotations.is_empty());
        assert!(!format!("{secret:?}").contains("hunter2"));
        let err = PlainSecret::from_manifest(manifest, Some("other"), None).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let err = PlainSecret::from_manifest("kind: ConfigMap\n", None, None).unwrap_err();
        assert!(err.to_string().contains("not a Secret"), "{err}");
        let err = PlainSecret::from_manifest(
            "kind: Secret\ndata: {a: 'hunter2!'}\n",
            Some("a"),
            Some("b"),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

//! Argo CD's released `install.yaml`: where it comes from, the checksum it must have,
//! and the cache that makes it a one-time download.
//!
//! By default the manifest of the pinned release is downloaded from the release's URL
//! and checked against the pinned SHA-256. `gitops.argocd.manifest` names a local file
//! (air-gapped installs) or another URL (a mirror) instead, and `gitops.argocd.sha256`
//! the sum it must have (required for a URL or another release). A download is kept
//! in the cache directory under its checksum, so later runs read it from there; a
//! cached file is checked again before use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use comind_core::config::{ArgocdSettings, DEFAULT_ARGOCD_VERSION};
use comind_core::{Error, Result};
use http_body_util::{BodyExt, Empty, Limited};
use sha2::{Digest, Sha256};

/// The SHA-256 of the pinned release's `install.yaml`
/// ([`DEFAULT_ARGOCD_VERSION`], `manifests/install.yaml` at its tag).
pub const PINNED_SHA256: &str = "795a3a972224da6a7f9d32c3e946445f062b60fb46028476715affeb688236e3";

/// How long a download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest manifest accepted (v3.5's is 1.9 MB).
const MAX_MANIFEST_BYTES: usize = 32 << 20;
/// Redirects followed (release assets redirect to a CDN).
const MAX_REDIRECTS: usize = 5;

/// The URL of `version`'s `install.yaml`.
pub fn release_url(version: &str) -> String {
    format!("https://raw.githubusercontent.com/argoproj/argo-cd/{version}/manifests/install.yaml")
}

/// Where the manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file.
    File(PathBuf),
    /// A URL.
    Url(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Url(url) => f.write_str(url),
        }
    }
}

/// The manifest the settings select: its origin and the checksum it must have
/// (`None` only for a local file given without one).
pub fn origin(settings: &ArgocdSettings) -> (Origin, Option<String>) {
    let expected = settings
        .sha256
        .clone()
        .map(|s| s.to_ascii_lowercase())
        .or_else(|| {
            (settings.manifest.is_none() && settings.version == DEFAULT_ARGOCD_VERSION)
                .then(|| PINNED_SHA256.to_string())
        });
    let origin = match &settings.manifest {
        Some(m) if m.starts_with("https://") || m.starts_with("http://") => Origin::Url(m.clone()),
        Some(path) => Origin::File(crate::access::expand_home(Path::new(path))),
        None => Origin::Url(release_url(&settings.version)),
    };
    (origin, expected)
}

/// A manifest read and checked.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its text.
    pub text: String,
    /// Where it came from.
    pub origin: Origin,
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify(origin: &Origin, bytes: &[u8], expected: Option<&str>) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = sha256_hex(bytes);
    if actual == expected {
        return Ok(());
    }
    Err(Error::invalid_input(format!(
        "the Argo CD manifest has SHA-256 {actual}, not the expected {expected}; nothing was \
         applied"
    ))
    .with_resource(origin.to_string())
    .with_hint(
        "a mirror or a local copy must be the release's install.yaml unchanged; if you chose \
         another release or manifest on purpose, put its checksum in `gitops.argocd.sha256`",
    ))
}

/// The manifest of `settings`, read from its file, or from the cache under
/// `cache_root`, or downloaded (then cached), and checked against its checksum.
///
/// # Errors
/// `InvalidInput` for a checksum mismatch (naming both sums), a missing file, a URL
/// that answers 4xx, or a manifest that is not UTF-8; `Unavailable` for a network
/// failure or a 5xx answer (worth retrying).
pub async fn load(settings: &ArgocdSettings, cache_root: &Path) -> Result<Manifest> {
    let (origin, expected) = origin(settings);
    let bytes = match &origin {
        Origin::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| {
                Error::invalid_input(format!("cannot read the Argo CD manifest: {e}"))
                    .with_resource(path.display().to_string())
                    .with_hint("point `gitops.argocd.manifest` at the release's install.yaml")
            })?;
            verify(&origin, &bytes, expected.as_deref())?;
            bytes
        }
        Origin::Url(url) => {
            // Validation requires a checksum for every URL.
            let expected = expected.ok_or_else(|| {
                Error::invalid_input("a manifest from a URL needs `gitops.argocd.sha256`")
            })?;
            let cached = cache_root.join("argocd").join(format!("{expected}.yaml"));
            match tokio::fs::read(&cached).await {
                Ok(bytes) if sha256_hex(&bytes) == expected => bytes,
                // Missing, or damaged: fetched again.
                _ => {
                    let bytes = download(url).await?;
                    verify(&origin, &bytes, Some(&expected))?;
                    store(&cached, &bytes).await?;
                    bytes
                }
            }
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::invalid_input("the Argo CD manifest is not UTF-8 text")
            .with_resource(origin.to_string())
    })?;
    Ok(Manifest { text, origin })
}

/// What `doctor` says of the manifest `settings` select, without a download: a local
/// file is read and checked, a cached download is checked, and one not yet fetched is
/// a warning naming where it will come from.
pub fn diagnose(settings: &ArgocdSettings, cache_root: &Path) -> comind_core::Diagnosis {
    use comind_core::Diagnosis;
    const CHECK: &str = "argocd manifest";
    let (origin, expected) = origin(settings);
    match &origin {
        Origin::File(path) => match std::fs::read(path) {
            Ok(bytes) => match verify(&origin, &bytes, expected.as_deref()) {
                Ok(()) => Diagnosis::ok(CHECK, format!("Argo CD's manifest is {}", path.display())),
                Err(e) => Diagnosis::failed(
                    CHECK,
                    e.to_string(),
                    "use the release's install.yaml unchanged, or fix `gitops.argocd.sha256`",
                ),
            },
            Err(e) => Diagnosis::failed(
                CHECK,
                format!("cannot read {}: {e}", path.display()),
                "point `gitops.argocd.manifest` at the release's install.yaml",
            ),
        },
        Origin::Url(url) => {
            let cached = expected
                .as_deref()
                .map(|sum| cache_root.join("argocd").join(format!("{sum}.yaml")))
                .filter(|path| std::fs::read(path).is_ok_and(|b| Some(sha256_hex(&b)) == expected));
            match cached {
                Some(path) => Diagnosis::ok(
                    CHECK,
                    format!(
                        "Argo CD {} is cached at {}",
                        settings.version,
                        path.display()
                    ),
                ),
                None => Diagnosis::warning(
                    CHECK,
                    format!(
                        "Argo CD {}'s install.yaml is downloaded from {url} by the first `up`",
                        settings.version
                    ),
                    "without internet access, download it elsewhere and set `gitops.argocd.manifest` to the file",
                ),
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file, so a reader never sees half.
async fn store(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::internal(format!("cannot write the manifest cache: {e}"))
            .with_resource(path.display().to_string())
            .with_hint("make the cache directory writable, or set COMIND_CACHE_DIR")
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    tokio::fs::write(&partial, bytes).await.map_err(io)?;
    tokio::fs::rename(&partial, path).await.map_err(io)
}

/// GETs `url`, following redirects.
async fn download(url: &str) -> Result<Vec<u8>> {
    let failed = |what: String| {
        Error::unavailable(format!("cannot download the Argo CD manifest: {what}"))
            .with_resource(url.to_string())
            .with_hint(
                "check the network or a proxy; without internet access, set \
                 `gitops.argocd.manifest` to a local copy of the release's install.yaml",
            )
    };
    let client = crate::https::client::<Empty<Bytes>>(true).map_err(failed)?;
    let fetch = async {
        let mut current = url::Url::parse(url).map_err(|e| {
            Error::invalid_input(format!("`{url}` is not a URL: {e}"))
                .with_hint("fix `gitops.argocd.manifest`")
        })?;
        for _ in 0..=MAX_REDIRECTS {
            let request = hyper::Request::get(current.as_str())
                .header(hyper::header::USER_AGENT, "comind")
                .body(Empty::<Bytes>::new())
                .map_err(|e| failed(e.to_string()))?;
            let response = client
                .request(request)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| failed(format!("{status} without a Location")))?;
                current = current
                    .join(location)
                    .map_err(|e| failed(format!("a redirect to `{location}`: {e}")))?;
                continue;
            }
            if status.is_client_error() {
                return Err(Error::invalid_input(format!(
                    "the Argo CD manifest's URL answered {status}"
                ))
                .with_resource(current.to_string())
                .with_hint("check `gitops.argocd.version` (a release tag such as v3.5.1) or `gitops.argocd.manifest`"));
            }
            if !status.is_success() {
                return Err(failed(format!("{current} answered {status}")));
            }
            let body = Limited::new(response.into_body(), MAX_MANIFEST_BYTES)
                .collect()
                .await
                .map_err(|e| failed(format!("the download broke off: {e}")))?;
            return Ok(body.to_bytes().to_vec());
        }
        Err(failed(format!("more than {MAX_REDIRECTS} redirects")))
    };
    tokio::time::timeout(DOWNLOAD_TIMEOUT, fetch)
        .await
        .map_err(|_| failed(format!("no answer in {}s", DOWNLOAD_TIMEOUT.as_secs())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_select_the_origin_and_its_checksum() {
        let default = ArgocdSettings::default();
        assert_eq!(
            origin(&default),
            (
                Origin::Url(release_url(DEFAULT_ARGOCD_VERSION)),
                Some(PINNED_SHA256.to_string())
            )
        );
        let file = ArgocdSettings {
            manifest: Some("/srv/install.yaml".into()),
            ..ArgocdSettings::default()
        };
        assert_eq!(
            origin(&file),
            (Origin::File("/srv/install.yaml".into()), None),
            "a local file of the user's is checked only against a sum they give"
        );
    }

    #[test]
    fn doctor_tells_a_missing_download_from_a_cached_or_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let default = ArgocdSettings::default();
        assert_eq!(
            diagnose(&default, dir.path()).status,
            comind_core::CheckStatus::Warning
        );
        let path = dir.path().join("install.yaml");
        std::fs::write(&path, "kind: List\n").unwrap();
        let bad = ArgocdSettings {
            manifest: Some(path.display().to_string()),
            sha256: Some(PINNED_SHA256.to_string()),
            ..ArgocdSettings::default()
        };
        assert_eq!(
            diagnose(&bad, dir.path()).status,
            comind_core::CheckStatus::Failed
        );
    }

    #[tokio::test]
    async fn a_file_with_another_checksum_is_refused_naming_both_sums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.yaml");
        std::fs::write(&path, "kind: List\n").unwrap();
        let settings = ArgocdSettings {
            manifest: Some(path.display().to_string()),
            sha256: Some(PINNED_SHA256.to_string()),
            ..ArgocdSettings::default()
        };
        let err = load(&settings, dir.path()).await.unwrap_err().to_string();
        assert!(
            err.contains(PINNED_SHA256) && err.contains(&sha256_hex(b"kind: List\n")),
            "{err}"
        );
        assert!(err.contains("nothing was applied"), "{err}");
    }
}

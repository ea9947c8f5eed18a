//! EKS authentication tokens, generated in-process from STS.
//!
//! EKS authenticates an AWS identity by a bearer token that is a presigned STS
//! `GetCallerIdentity` URL: the API server calls STS with it and learns who signed it.
//! The URL is signed with SigV4 in its query string, covers the header
//! `x-k8s-aws-id: <cluster>` (so a token for one cluster is useless for another), and
//! is encoded as `k8s-aws-v1.` followed by the URL in unpadded base64url. This is what
//! `aws eks get-token` and aws-iam-authenticator produce; here it is done with
//! `aws-sigv4` and the SDK's credentials, so no `aws` CLI is needed.
//!
//! EKS accepts a token for 15 minutes after it was signed. Kubeconfigs therefore run
//! `comind eks-token` as an exec credential plugin ([`exec_credential`]), and
//! in-process clients call [`token`] again before [`EksToken::expires_at`].

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use comind_core::{Error, Result, Secret};

/// What every EKS token starts with.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The signed header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// `apiVersion` of the ExecCredential that `comind eks-token` prints.
pub const EXEC_CREDENTIAL_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

/// How long the presigned URL claims to be valid; EKS ignores it and allows 15
/// minutes from signing, but aws-iam-authenticator sends 60 seconds and so do we.
const PRESIGN_EXPIRY: Duration = Duration::from_secs(60);
/// How long a client may use a token: EKS's 15 minutes, less a minute of margin for
/// clock skew.
const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// A bearer token for one EKS cluster.
#[derive(Debug, Clone)]
pub struct EksToken {
    token: Secret,
    expires_at: SystemTime,
}

impl EksToken {
    /// The bearer token (`k8s-aws-v1.…`). A secret: it grants the signer's access to
    /// the cluster until it expires.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// When clients should stop using it and ask for a new one.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The Kubernetes ExecCredential a kubeconfig's `exec` plugin prints:
    /// `{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential",
    /// "status":{"token":…,"expirationTimestamp":…}}`. It holds the token: print it
    /// only to the Kubernetes client that asked.
    pub fn exec_credential_json(&self) -> String {
        serde_json::json!({
            "apiVersion": EXEC_CREDENTIAL_API_VERSION,
            "kind": "ExecCredential",
            "spec": {},
            "status": {
                "token": self.token.expose(),
                "expirationTimestamp":
                    humantime::format_rfc3339_seconds(self.expires_at).to_string(),
            }
        })
        .to_string()
    }
}

/// A token for `cluster`, signed with the credentials of `sdk` for STS in the region
/// of `sdk` (or at its endpoint override).
///
/// # Errors
/// `InvalidInput` without a region; `Permission` when no credentials can be found;
/// `Internal` if signing fails.
pub async fn token(sdk: &SdkConfig, cluster: &str) -> Result<EksToken> {
    let region = sdk.region().map(ToString::to_string).ok_or_else(|| {
        Error::invalid_input("no AWS region is set for the EKS token")
            .with_hint("pass --region, or set AWS_REGION")
    })?;
    let provider = sdk.credentials_provider().ok_or_else(no_credentials)?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| no_credentials().with_source(e))?;
    let sts = sts_url(sdk, &region).await?;
    presign(&credentials, &region, &sts, cluster, SystemTime::now())
}

/// The ExecCredential JSON (see [`EksToken::exec_credential_json`]) with a fresh
/// token for `cluster`: what `comind eks-token` prints.
///
/// # Errors
/// As [`token`].
pub async fn exec_credential(sdk: &SdkConfig, cluster: &str) -> Result<String> {
    Ok(token(sdk, cluster).await?.exec_credential_json())
}

/// [`exec_credential`] with the SDK configuration loaded from the standard AWS chain,
/// `region` and `endpoint_url` winning over it: the whole of `comind eks-token
/// --cluster NAME --region REGION [--endpoint-url URL]`.
///
/// # Errors
/// As [`token`].
pub async fn exec_credential_for(
    cluster: &str,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> Result<String> {
    let sdk = crate::clients::load_sdk_config(region, endpoint_url).await;
    exec_credential(&sdk, cluster).await
}

fn no_credentials() -> Error {
    Error::permission("no AWS credentials were found to sign an EKS token")
        .with_resource("aws credentials")
        .with_hint(
            "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws sso login`",
        )
}

/// The STS endpoint the token is signed for: the endpoint override if one is set,
/// else STS's regional endpoint for `region` as the STS client resolves it (FIPS,
/// dual-stack and partitions included).
async fn sts_url(sdk: &SdkConfig, region: &str) -> Result<String> {
    use aws_sdk_sts::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    if let Some(url) = sdk.endpoint_url() {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let params = Params::builder()
        .region(region)
        .use_fips(sdk.use_fips().unwrap_or(false))
        .use_dual_stack(sdk.use_dual_stack().unwrap_or(false))
        .use_global_endpoint(false)
        .build()
        .map_err(|e| Error::internal(format!("cannot resolve the STS endpoint: {e}")))?;
    let endpoint = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| {
            Error::invalid_input(format!("no STS endpoint for region `{region}`: {e}"))
                .with_hint("check the region")
        })?;
    Ok(endpoint.url().trim_end_matches('/').to_string())
}

/// Signs a token for `cluster` with `credentials`, for STS at `sts_url` in `region`,
/// as of `now`. Pure: no I/O.
///
/// # Errors
/// `Internal` if the URL or signature cannot be built.
pub fn presign(
    credentials: &Credentials,
    region: &str,
    sts_url: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<EksToken> {
    let url = format!(
        "{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_url.trim_end_matches('/')
    );
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRY);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| Error::internal(format!("cannot sign the EKS token: {e}")))?
        .into();
    let request = SignableRequest::new(
        "GET",
        &url,
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| Error::internal(format!("cannot sign the EKS token: {e}")))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| Error::internal(format!("cannot sign the EKS token: {e}")))?
        .into_parts();
    let mut signed = url::Url::parse(&url).map_err(|e| {
        Error::invalid_input(format!("the STS endpoint `{sts_url}` is not a URL: {e}"))
    })?;
    {
        let mut query = signed.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
    }
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed.as_str());
    Ok(EksToken {
        token: Secret::new(format!("{TOKEN_PREFIX}{encoded}")),
        expires_at: now + TOKEN_LIFETIME,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(token: &EksToken) -> url::Url {
        let encoded = token
            .token()
            .expose()
            .strip_prefix(TOKEN_PREFIX)
            .expect("prefix");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .expect("base64url");
        url::Url::parse(&String::from_utf8(bytes).unwrap()).unwrap()
    }

    #[test]
    fn a_token_is_a_presigned_get_caller_identity_bound_to_the_cluster() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".into()),
            None,
            "test",
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = presign(
            &credentials,
            "eu-west-1",
            "https://sts.eu-west-1.amazonaws.com",
            "comind-dev-cluster",
            now,
        )
        .unwrap();
        let url = decode(&token);
        assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(query["Action"], "GetCallerIdentity");
        assert_eq!(query["Version"], "2011-06-15");
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(query["X-Amz-Expires"], "60");
        assert_eq!(query["X-Amz-Date"], "20231114T221320Z");
        assert!(query["X-Amz-Credential"].starts_with("AKIDEXAMPLE/20231114/eu-west-1/sts/"));
        assert_eq!(query["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(query["X-Amz-Security-Token"], "session");
        assert_eq!(query["X-Amz-Signature"].len(), 64);
        assert!(!token.token().expose().contains('='), "unpadded");
        assert!(
            !format!("{token:?}").contains(TOKEN_PREFIX),
            "Debug hides the token"
        );

        let other = presign(
            &credentials,
            "eu-west-1",
            "https://sts.eu-west-1.amazonaws.com",
            "other",
            now,
        )
        .unwrap();
        assert_ne!(
            decode(&other)
                .query_pairs()
                .find(|(k, _)| k == "X-Amz-Signature"),
            url.query_pairs().find(|(k, _)| k == "X-Amz-Signature"),
            "the signature covers the cluster name"
        );
    }

    #[test]
    fn exec_credential_has_the_kubernetes_shape() {
        let credentials = Credentials::new("AKID", "secret", None, None, "test");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = presign(
            &credentials,
            "us-east-1",
            "http://127.0.0.1:5000/",
            "c",
            now,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&token.exec_credential_json()).unwrap();
        assert_eq!(json["apiVersion"], EXEC_CREDENTIAL_API_VERSION);
        assert_eq!(json["kind"], "ExecCredential");
        assert_eq!(json["status"]["token"], token.token().expose());
        assert_eq!(
            json["status"]["expirationTimestamp"],
            "2023-11-14T22:27:20Z"
        );
        assert_eq!(
            decode(&token).as_str().split('?').next(),
            Some("http://127.0.0.1:5000/")
        );
    }
}

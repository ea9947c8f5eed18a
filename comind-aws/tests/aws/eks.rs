//! EKS tokens made in-process, checked against moto's STS.

use std::collections::HashMap;
use std::io::{Read, Write};

use base64::Engine as _;
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

fn decode(token: &str) -> url::Url {
    let encoded = token.strip_prefix("k8s-aws-v1.").expect("token prefix");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .expect("unpadded base64url");
    url::Url::parse(std::str::from_utf8(&bytes).unwrap()).unwrap()
}

/// What the EKS authenticator does with a token: GET the URL with the cluster header.
/// (moto routes it to STS by its credential scope: hook 6 of `moto_launcher.py`.)
fn get_with_cluster_header(url: &url::Url, cluster: &str) -> String {
    let host = url.host_str().unwrap();
    let port = url.port().unwrap();
    let mut stream = std::net::TcpStream::connect((host, port)).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap());
    write!(
        stream,
        "GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nx-k8s-aws-id: {cluster}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_token_is_a_presigned_get_caller_identity_for_the_cluster() {
    let moto = require_peer!(Moto::start());
    let cluster = "comind-dev-cluster";
    let token = comind_aws::eks::token(&moto.sdk_config(), cluster)
        .await
        .unwrap();
    let url = decode(token.token().expose());
    assert!(url.as_str().starts_with(&moto.url()), "{url}");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["Action"], "GetCallerIdentity");
    assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    assert!(
        query["X-Amz-SignedHeaders"]
            .split(';')
            .any(|h| h == "x-k8s-aws-id"),
        "{query:?}"
    );
    assert!(
        query["X-Amz-Credential"].starts_with("testing/"),
        "{query:?}"
    );
    assert!(query["X-Amz-Credential"].contains("/us-east-1/sts/aws4_request"));
    let remaining = token
        .expires_at()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(remaining.as_secs() > 13 * 60 && remaining.as_secs() <= 14 * 60);

    let answer = get_with_cluster_header(&url, cluster);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("<Account>123456789012</Account>"),
        "{answer}"
    );

    let exec: serde_json::Value = serde_json::from_str(
        &comind_aws::exec_credential(&moto.sdk_config(), cluster)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(exec["kind"], "ExecCredential");
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
    assert!(
        exec["status"]["token"]
            .as_str()
            .unwrap()
            .starts_with("k8s-aws-v1.")
    );
    assert!(
        exec["status"]["expirationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_plugin_loads_the_chain_with_its_region_and_endpoint_winning() {
    // What `comind eks-token --cluster c --region eu-west-1 --endpoint-url URL` loads
    // before signing (credentials come from the environment's chain).
    let sdk = comind_aws::load_sdk_config(Some("eu-west-1"), Some("http://127.0.0.1:9")).await;
    assert_eq!(
        sdk.region().map(ToString::to_string).as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:9"));
    let timeouts = sdk.timeout_config().unwrap();
    assert!(
        timeouts.connect_timeout().is_some(),
        "a stalled connection must not hang"
    );
}

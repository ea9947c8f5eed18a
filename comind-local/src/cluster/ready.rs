//! Whether the cluster is ready, asked of its API server, never read from k3d's log
//! lines: `/readyz` answers, every node is `Ready`, the `default` ServiceAccount
//! exists (the controllers run), and CoreDNS is available (Pods can resolve names).

use comind_core::{Error, Result, Secret};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client of the cluster, from the kubeconfig k3d gave (`context` in it).
///
/// # Errors
/// `Internal` when the kubeconfig cannot be used (k3d wrote something unexpected).
pub async fn client(kubeconfig: &Secret, context: &str, resource: &str) -> Result<kube::Client> {
    // kube's TLS takes the process's default rustls provider; a binary that also links
    // the AWS SDK has two and no default. Ours is ring; an embedder that installed one
    // already keeps theirs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = Kubeconfig::from_yaml(kubeconfig.expose()).map_err(|e| {
        Error::internal(format!("k3d's kubeconfig cannot be read: {e}")).with_resource(resource)
    })?;
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        cluster: None,
        user: None,
    };
    let config = kube::Config::from_custom_kubeconfig(parsed, &options)
        .await
        .map_err(|e| {
            Error::internal(format!("k3d's kubeconfig cannot be used: {e}")).with_resource(resource)
        })?;
    kube::Client::try_from(config).map_err(|e| {
        Error::internal(format!("cannot make a client of the cluster: {e}")).with_resource(resource)
    })
}

/// One look: `Ok` when the cluster is ready for the platform, `Unavailable`
/// (transient) naming what is not yet.
///
/// # Errors
/// As above.
pub async fn check(client: &kube::Client, nodes: usize, resource: &str) -> Result<()> {
    let not_yet = |what: String| Error::unavailable(what).with_resource(resource);
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| Error::internal(format!("cannot ask /readyz: {e}")))?;
    client
        .request_text(request)
        .await
        .map_err(|e| not_yet(format!("the API server is not ready: {e}")))?;

    let listed = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| not_yet(format!("cannot list the nodes: {e}")))?;
    let waiting: Vec<String> = listed
        .items
        .iter()
        .filter(|n| !node_ready(n))
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    if listed.items.len() < nodes || !waiting.is_empty() {
        return Err(not_yet(format!(
            "{} of {nodes} nodes are Ready{}",
            listed.items.len() - waiting.len(),
            if waiting.is_empty() {
                String::new()
            } else {
                format!(" (waiting for {})", waiting.join(", "))
            }
        )));
    }

    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
    if accounts
        .get_opt("default")
        .await
        .map_err(|e| not_yet(format!("cannot read the default ServiceAccount: {e}")))?
        .is_none()
    {
        return Err(not_yet(
            "the controllers have not made the default ServiceAccount yet".to_string(),
        ));
    }

    let coredns = Api::<Deployment>::namespaced(client.clone(), "kube-system")
        .get_opt("coredns")
        .await
        .map_err(|e| not_yet(format!("cannot read the CoreDNS Deployment: {e}")))?;
    match coredns {
        Some(deployment) if available(&deployment) => Ok(()),
        Some(_) => Err(not_yet("CoreDNS is not available yet".to_string())),
        None => Err(not_yet("k3s has not deployed CoreDNS yet".to_string())),
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn available(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1)
}

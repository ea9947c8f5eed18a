//! A console's way in through the API server (`consoles::PortForward`), on the real
//! control plane: the Service and its Pods are found and chosen as they would be on a
//! cluster, and the forward is asked of the real API server. No kubelet runs here, so
//! the API server cannot complete a forward: what this proves is that Comind finds
//! the right Pod and port, and says clearly when the forward cannot be made, before
//! it prints any address. (The data path is kube-rs's own.)

use comind_core::ErrorKind;
use comind_gitops::consoles::{PortForward, ServiceRef};
use comind_test_support::kube::{KubePeer, User};
use comind_test_support::kubelet::Kubelet;
use comind_test_support::{names, require_peer};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support;

#[tokio::test]
async fn a_port_forward_finds_the_ready_pod_behind_the_service_or_says_why_not() {
    let peer = require_peer!(KubePeer::shared());
    let admin = support::client(peer, User::Admin).await;
    let ns = names::unique("consoles");
    support::create_namespace(&admin, &ns).await;
    let target = ServiceRef {
        namespace: ns.clone(),
        name: "monitoring-kube-prometheus-prometheus".to_string(),
        port: 9090,
    };

    // No Service: not found, and nothing listens.
    let missing = PortForward::open(&admin, &target, 0).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert!(missing.to_string().contains("does not exist"), "{missing}");

    // The Service, with a named target port, and no Pod yet.
    Api::<Service>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": target.name},
                "spec": {
                    "selector": {"app.kubernetes.io/name": "prometheus"},
                    "ports": [{"name": "http-web", "port": 9090, "targetPort": "web"}],
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let no_pod = PortForward::open(&admin, &target, 0).await.unwrap_err();
    assert_eq!(no_pod.kind(), ErrorKind::NotFound, "{no_pod}");
    assert!(no_pod.to_string().contains("no ready Pod"), "{no_pod}");

    // A ready Pod (the kubelet played): the forward is asked of the API server for
    // the Pod's port named `web`, and its refusal (no kubelet behind it) is the error.
    let _kubelet = Kubelet::start(admin.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "prometheus-0", "labels": {"app.kubernetes.io/name": "prometheus"}},
            "spec": {
                "nodeName": "node-without-kubelet",
                "containers": [{
                    "name": "prometheus", "image": "prometheus",
                    "ports": [{"name": "web", "containerPort": 9095}],
                }],
            },
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        let err = PortForward::open(&admin, &target, 0).await.unwrap_err();
        if err.kind() != ErrorKind::NotFound {
            break err;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Pod never became ready: {err}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let text = refused.to_string();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{text}");
    assert!(
        text.contains(&format!("Pod {ns}/prometheus-0 port 9095")),
        "the Pod and its named port: {text}"
    );

    support::delete_namespace(&admin, &ns).await;
}

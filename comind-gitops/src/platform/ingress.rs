//! How the platform's consoles (Argo CD, Grafana, the registry) are served outside the
//! cluster: an Ingress per console, under one host-name scheme on each profile.
//!
//! | profile | controller (`ingressClassName`) | host | URL |
//! | --- | --- | --- | --- |
//! | local | the Traefik k3s ships (`traefik`) | `<console>.<env>.127.0.0.1.nip.io` | `http://<host>:<http_port>` |
//! | aws | the AWS Load Balancer Controller (`alb`) | `<console>.<gitops.domain>` | `https://<host>` |
//!
//! `gitops.domain` replaces the nip.io name on the local profile too. nip.io resolves
//! `*.127.0.0.1.nip.io` to 127.0.0.1, where k3d's load balancer listens; ingress-nginx,
//! the seed's controller, was retired upstream in March 2026.

use std::collections::BTreeMap;

use comind_core::Environment;
use comind_core::config::Profile;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use kube::api::ObjectMeta;

/// The ingress class of the profile's controller.
pub fn class(env: &Environment) -> &'static str {
    match env.profile() {
        Profile::Local => "traefik",
        Profile::Aws => "alb",
    }
}

/// The host name of `console` (`argocd`, `grafana`, `registry`).
pub fn host(env: &Environment, console: &str) -> String {
    match &env.config().gitops.domain {
        Some(domain) => format!("{console}.{domain}"),
        None => format!("{console}.{}.127.0.0.1.nip.io", env.name()),
    }
}

/// The URL people open for `console`.
pub fn url(env: &Environment, console: &str) -> String {
    let host = host(env, console);
    match env.profile() {
        Profile::Local => match env.config().local.cluster.http_port.get() {
            80 => format!("http://{host}"),
            port => format!("http://{host}:{port}"),
        },
        Profile::Aws => format!("https://{host}"),
    }
}

/// The annotations of a console's Ingress on `env`'s controller: on AWS the load
/// balancer faces the internet and sends to the Pods' addresses (the VPC CNI gives
/// Pods VPC addresses), terminating TLS on 443; Traefik needs none. Shared by the
/// Ingresses Comind writes and those a chart writes from its values (Grafana's).
pub fn annotations(env: &Environment) -> Option<BTreeMap<String, String>> {
    match env.profile() {
        Profile::Local => None,
        Profile::Aws => Some(BTreeMap::from([
            (
                "alb.ingress.kubernetes.io/scheme".to_string(),
                "internet-facing".to_string(),
            ),
            (
                "alb.ingress.kubernetes.io/target-type".to_string(),
                "ip".to_string(),
            ),
            (
                "alb.ingress.kubernetes.io/listen-ports".to_string(),
                r#"[{"HTTPS":443}]"#.to_string(),
            ),
        ])),
    }
}

/// The Ingress `name` in `namespace` that serves `console` from the Service `service`
/// at `port`, with `meta`'s labels.
pub fn console(
    env: &Environment,
    console: &str,
    metadata: ObjectMeta,
    service: &str,
    port: u16,
) -> Ingress {
    let annotations = annotations(env);
    Ingress {
        metadata: ObjectMeta {
            annotations,
            ..metadata
        },
        spec: Some(IngressSpec {
            ingress_class_name: Some(class(env).to_string()),
            rules: Some(vec![IngressRule {
                host: Some(host(env, console)),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_string()),
                        path_type: "Prefix".to_string(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service.to_string(),
                                port: Some(ServiceBackendPort {
                                    number: Some(i32::from(port)),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

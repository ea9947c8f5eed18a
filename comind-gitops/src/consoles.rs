//! The platform's consoles (Argo CD, Grafana, Prometheus, Alertmanager, the registry,
//! the queue and object-store endpoints): where each is, whether it answers, and a
//! way in through the API server when its ingress does not answer.
//!
//! A console's URL is its ingress's (`platform::ingress`), or the service endpoint's
//! for the queue and the object store. Whether it answers is one HTTP request with a
//! short timeout. The local profile's `*.127.0.0.1.nip.io` names are reached at the
//! address they spell, without asking DNS (nip.io is a public resolver: a machine
//! offline, or a resolver that drops private answers, would otherwise make a
//! running console look down).
//!
//! A console that runs in the cluster can be reached without its ingress: a port
//! forward to one of its Service's ready Pods, through the API server (kube-rs; no
//! `kubectl`), on a local port. The forward is tried once before its address is
//! given, so an address Comind prints is one that worked.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use comind_core::config::Profile;
use comind_core::{Environment, Error, Outputs, Result};
use http_body_util::Empty;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use crate::apply::error::api_error;
use crate::platform::{addons, argocd, ingress};

/// How long a console may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the API server may take to open a forward.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the first forward is watched for an error before its address is given.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// A Service in the cluster that serves a console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Service's port.
    pub port: u16,
}

/// One console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Console {
    /// Its name, as `comind open` takes it.
    pub name: &'static str,
    /// Where people open it, when it has an address outside the cluster.
    pub url: Option<String>,
    /// The Service a port forward reaches it through, when it runs in the cluster.
    pub service: Option<ServiceRef>,
    /// Whether its URL is served by the cluster's ingress, which itself answers when
    /// the console does not (404 without a route, 502 to 504 without a backend).
    pub ingress: bool,
}

/// Every console name, in the order `status` lists them.
pub const NAMES: [&str; 7] = [
    "argocd",
    "grafana",
    "prometheus",
    "alertmanager",
    "registry",
    "queue",
    "object-store",
];

/// The consoles `env` has (what its configuration enables), with the URLs of the
/// queue and the object store from `outputs` (the services' endpoints).
pub fn consoles(env: &Environment, outputs: &Outputs) -> Vec<Console> {
    let config = env.config();
    let argocd_on = config.gitops.argocd.enabled;
    let monitoring_on = argocd_on && config.gitops.addons.monitoring.enabled;
    let ingress_url = |name: &str| match env.profile() {
        // On AWS a console has a host name only under `gitops.domain`.
        Profile::Aws if config.gitops.domain.is_none() => None,
        _ => Some(ingress::url(env, name)),
    };
    let in_cluster = |namespace: &str, name: String, port: u16| ServiceRef {
        namespace: namespace.to_string(),
        name,
        port,
    };
    // kube-prometheus-stack names its objects after the release: its full name is
    // `<release>-kube-prometheus` (the chart's 26-character cut of
    // `<release>-kube-prometheus-stack`), and Grafana's is `<release>-grafana`.
    let release = addons::MONITORING.name;
    let monitoring = addons::MONITORING.namespace;
    let output = |key: &str| outputs.get(key).map(|v| v.expose().to_string());
    let mut all = Vec::new();
    if argocd_on {
        all.push(Console {
            name: "argocd",
            url: ingress_url("argocd"),
            ingress: true,
            service: Some(in_cluster(
                argocd::NAMESPACE,
                "argocd-server".to_string(),
                80,
            )),
        });
    }
    if monitoring_on {
        all.push(Console {
            name: "grafana",
            url: ingress_url("grafana"),
            ingress: true,
            service: Some(in_cluster(monitoring, format!("{release}-grafana"), 80)),
        });
        all.push(Console {
            name: "prometheus",
            url: None,
            ingress: false,
            service: Some(in_cluster(
                monitoring,
                format!("{release}-kube-prometheus-prometheus"),
                9090,
            )),
        });
        all.push(Console {
            name: "alertmanager",
            url: None,
            ingress: false,
            service: Some(in_cluster(
                monitoring,
                format!("{release}-kube-prometheus-alertmanager"),
                9093,
            )),
        });
    }
    // The local registry, served by the cluster's ingress: there when Comind makes
    // the cluster (and with it the registry).
    if config.makes_local_cluster() {
        all.push(Console {
            name: "registry",
            url: Some(ingress::url(env, "registry")),
            service: None,
            ingress: true,
        });
    }
    if config.services.queue.enabled {
        all.push(Console {
            name: "queue",
            url: output("SQS_ENDPOINT"),
            service: None,
            ingress: false,
        });
    }
    if config.services.object_store.enabled {
        all.push(Console {
            name: "object-store",
            url: output("S3_ENDPOINT"),
            service: None,
            ingress: false,
        });
    }
    all
}

/// Whether a console answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// It answered HTTP (any status: a login page, a 403 of an S3 endpoint).
    Answered {
        /// The HTTP status.
        status: u16,
    },
    /// It did not: refused, timed out, not HTTP.
    NoAnswer {
        /// Why.
        reason: String,
    },
}

impl Answer {
    /// Whether it answered.
    pub fn answered(&self) -> bool {
        matches!(self, Answer::Answered { .. })
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Answered { status } => write!(f, "answers (HTTP {status})"),
            Answer::NoAnswer { reason } => write!(f, "does not answer ({reason})"),
        }
    }
}

impl Console {
    /// Asks the console once: [`answer`] of its URL, where an ingress's own answers
    /// for a console behind it that does not (404, 502 to 504) are no answer.
    pub async fn answer(&self) -> Answer {
        let Some(url) = &self.url else {
            return Answer::NoAnswer {
                reason: "it has no URL".to_string(),
            };
        };
        match answer(url).await {
            Answer::Answered { status } if self.ingress && matches!(status, 404 | 502..=504) => {
                Answer::NoAnswer {
                    reason: format!(
                        "the ingress answers HTTP {status}: no route to the console, or no \
                         backend behind it yet"
                    ),
                }
            }
            other => other,
        }
    }
}

/// Asks `url` once (`GET`, a few seconds at most).
pub async fn answer(url: &str) -> Answer {
    match tokio::time::timeout(ANSWER_TIMEOUT, request(url)).await {
        Ok(Ok(status)) => Answer::Answered { status },
        Ok(Err(reason)) => Answer::NoAnswer { reason },
        Err(_) => Answer::NoAnswer {
            reason: format!(
                "no answer within {}",
                humantime::format_duration(ANSWER_TIMEOUT)
            ),
        },
    }
}

async fn request(url: &str) -> std::result::Result<u16, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = parsed.host_str().ok_or("no host")?.to_string();
    let port = parsed.port_or_known_default().ok_or("no port")?;
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    if parsed.scheme() == "http" {
        // Plain HTTP on a connection of our own, to the address a nip.io name spells.
        let address = nip_io_address(&host).map_or_else(|| host.clone(), |ip| ip.to_string());
        let stream = TcpStream::connect((address.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host_header(&host, parsed.port()))
            .header(hyper::header::USER_AGENT, "comind")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| {
            if e.is_canceled() || e.is_incomplete_message() {
                "the connection closed without an answer".to_string()
            } else {
                e.to_string()
            }
        })?;
        driver.abort();
        return Ok(response.status().as_u16());
    }
    let client = crate::https::client::<Empty<Bytes>>(false)?;
    let request = hyper::Request::get(url)
        .header(hyper::header::USER_AGENT, "comind")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| crate::https::with_causes(&e))?;
    Ok(response.status().as_u16())
}

fn host_header(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The IPv4 address a `*.A.B.C.D.nip.io` name resolves to, read from the name.
pub fn nip_io_address(host: &str) -> Option<Ipv4Addr> {
    let name = host.strip_suffix(".nip.io")?;
    let labels: Vec<&str> = name.rsplit('.').take(4).collect();
    if labels.len() < 4 {
        return None;
    }
    let octets: Vec<u8> = labels
        .iter()
        .rev()
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// A port forward to a console's Service, listening on the loopback.
pub struct PortForward {
    listener: TcpListener,
    pods: Api<Pod>,
    pod: String,
    port: u16,
}

impl std::fmt::Debug for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForward")
            .field("pod", &self.pod)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PortForward {
    /// Finds a ready Pod behind `service`, checks that the API server forwards to it
    /// (one forward, opened and closed), and listens on `127.0.0.1:local_port` (`0`:
    /// a free port).
    ///
    /// # Errors
    /// `NotFound` when the Service or a ready Pod behind it does not exist;
    /// `Unavailable` when the API server does not forward to the Pod (its error
    /// says why) or the local port cannot be had.
    pub async fn open(
        client: &kube::Client,
        service: &ServiceRef,
        local_port: u16,
    ) -> Result<Self> {
        let resource = format!("Service {}/{}", service.namespace, service.name);
        let services: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &service.namespace);
        let found = services
            .get_opt(&service.name)
            .await
            .map_err(|e| api_error("read", &resource, e))?
            .ok_or_else(|| {
                Error::not_found(format!("{resource} does not exist"))
                    .with_resource(resource.clone())
                    .with_hint("run `comind up`, and check `comind status` for the add-on's sync")
            })?;
        let spec = found.spec.unwrap_or_default();
        let selector = spec
            .selector
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        if selector.is_empty() {
            return Err(Error::not_found(format!(
                "{resource} selects no Pods (it has no selector), so there is nothing to forward to"
            ))
            .with_resource(resource));
        }
        let target = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.port == i32::from(service.port))
            .map(|p| p.target_port.unwrap_or(IntOrString::Int(p.port)))
            .ok_or_else(|| {
                Error::not_found(format!("{resource} has no port {}", service.port))
                    .with_resource(resource.clone())
            })?;
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error("list", &format!("the Pods of {resource}"), e))?;
        let pod = listed.items.into_iter().find(ready).ok_or_else(|| {
            Error::not_found(format!("no ready Pod serves {resource}"))
                .with_resource(resource.clone())
                .with_hint("check the add-on in `comind status`; its Pods may still be starting")
        })?;
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let port = match target {
            IntOrString::Int(port) => u16::try_from(port).ok(),
            IntOrString::String(name) => pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
        .ok_or_else(|| {
            Error::not_found(format!(
                "Pod {}/{pod_name} has no port for {resource}'s port {}",
                service.namespace, service.port
            ))
            .with_resource(resource.clone())
        })?;
        let pod_resource = format!("Pod {}/{pod_name}", service.namespace);
        // One forward now: an address is printed only when the API server forwards.
        let mut probe = tokio::time::timeout(FORWARD_TIMEOUT, pods.portforward(&pod_name, &[port]))
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "the API server did not open a forward to {pod_resource} within {}",
                    humantime::format_duration(FORWARD_TIMEOUT)
                ))
                .with_resource(pod_resource.clone())
            })?
            .map_err(|e| forward_error(&pod_resource, port, e))?;
        // The kubelet reports a port it cannot reach on the forward's error channel at
        // once, and a forward that ends closes it; one that works says nothing, so a
        // short wait suffices.
        if let Some(error) = probe.take_error(port)
            && let Ok(message) = tokio::time::timeout(PROBE_WAIT, error).await
        {
            probe.abort();
            let message = message.unwrap_or_else(|| "the forward closed at once".to_string());
            return Err(Error::unavailable(format!(
                "the API server cannot forward to {pod_resource} port {port}: {message}"
            ))
            .with_resource(pod_resource)
            .with_hint("check that the Pod runs and listens on that port (`comind status`)"));
        }
        probe.abort();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, local_port))
            .await
            .map_err(|e| {
                Error::unavailable(format!("cannot listen on 127.0.0.1:{local_port}: {e}"))
                    .with_hint("choose another --port, or 0 for a free one")
            })?;
        Ok(PortForward {
            listener,
            pods,
            pod: pod_name,
            port,
        })
    }

    /// Where it listens.
    ///
    /// # Errors
    /// When the socket has no address (it always has one once bound).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::internal(format!("the forward's socket has no address: {e}")))
    }

    /// The Pod it forwards to.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// Forwards every connection to the Pod, each through a forward of its own,
    /// until the future is dropped (Ctrl-C). A connection whose forward fails is
    /// closed, and the reason reported to `on_error`.
    pub async fn serve(self, on_error: impl Fn(String) + Send + Sync + 'static) {
        let on_error = std::sync::Arc::new(on_error);
        loop {
            let mut connection = match self.listener.accept().await {
                Ok((connection, _)) => connection,
                Err(e) => {
                    // Out of file descriptors, say: said, and tried again in a moment
                    // rather than in a busy loop.
                    on_error(format!("cannot accept a connection: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let pods = self.pods.clone();
            let pod = self.pod.clone();
            let port = self.port;
            let on_error = on_error.clone();
            tokio::spawn(async move {
                let forwarded = async {
                    let mut forward =
                        tokio::time::timeout(FORWARD_TIMEOUT, pods.portforward(&pod, &[port]))
                            .await
                            .map_err(|_| "the API server did not open the forward".to_string())?
                            .map_err(|e| e.to_string())?;
                    let mut upstream = forward
                        .take_stream(port)
                        .ok_or_else(|| "the forward has no stream".to_string())?;
                    let error = forward.take_error(port);
                    let copied = tokio::io::copy_bidirectional(&mut connection, &mut upstream);
                    // The kubelet's own errors (the port refused, the Pod gone) come on
                    // the error channel, not as a failed copy.
                    let outcome = match error {
                        Some(error) => tokio::select! {
                            copied = copied => copied.map(|_| ()).map_err(|e| e.to_string()),
                            Some(message) = error => Err(message),
                        },
                        None => copied.await.map(|_| ()).map_err(|e| e.to_string()),
                    };
                    forward.abort();
                    outcome
                };
                if let Err(reason) = forwarded.await {
                    on_error(format!(
                        "a connection to Pod {pod} port {port} failed: {reason}"
                    ));
                }
            });
        }
    }
}

fn forward_error(pod: &str, port: u16, err: kube::Error) -> Error {
    let reason = match &err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    Error::unavailable(format!(
        "the API server cannot forward to {pod} port {port}: {reason}"
    ))
    .with_resource(pod.to_string())
    .with_hint("check that the Pod runs on a node the API server reaches (`comind status`)")
}

/// Whether the Pod runs and is Ready.
fn ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nip_io_names_spell_their_address() {
        assert_eq!(
            nip_io_address("argocd.dev.127.0.0.1.nip.io"),
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            nip_io_address("10.1.2.3.nip.io"),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(nip_io_address("argocd.example.com"), None);
        assert_eq!(nip_io_address("a.dev.nip.io"), None);
        assert_eq!(nip_io_address("x.300.0.0.1.nip.io"), None);
    }

    /// A server that answers every request with `status`, once per connection.
    async fn answering(status: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn an_ingress_without_a_backend_is_no_answer_but_an_endpoint_error_is_one() {
        let port = answering("503 Service Unavailable").await;
        let console = |ingress| Console {
            name: "argocd",
            url: Some(format!("http://argocd.dev.127.0.0.1.nip.io:{port}/")),
            service: None,
            ingress,
        };
        let behind_ingress = console(true).answer().await;
        assert!(!behind_ingress.answered(), "{behind_ingress}");
        assert!(
            behind_ingress.to_string().contains("HTTP 503"),
            "{behind_ingress}"
        );
        assert_eq!(
            console(false).answer().await,
            Answer::Answered { status: 503 }
        );
        let port = answering("200 OK").await;
        let ok = Console {
            url: Some(format!("http://argocd.dev.127.0.0.1.nip.io:{port}/")),
            ..console(true)
        };
        assert_eq!(ok.answer().await, Answer::Answered { status: 200 });
    }

    #[tokio::test]
    async fn a_port_that_nothing_serves_does_not_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let answer = answer(&format!("http://x.127.0.0.1.nip.io:{port}/")).await;
        assert!(!answer.answered(), "{answer}");
    }
}

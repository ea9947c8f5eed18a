//! Host ports: is a port free, and if not, who holds it.

use std::net::{Ipv4Addr, TcpListener};

use comind_core::environment::Environment;
use comind_core::{Error, Result};

use crate::docker::DockerClient;
use crate::docker::container::ContainerSummary;

/// A host port published by a service container, with the configuration field that
/// sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PublishedPort {
    /// The port inside the container.
    pub container: u16,
    /// The port on 127.0.0.1.
    pub host: u16,
    /// The field of comind.yaml that sets `host`.
    #[serde(skip)]
    pub field: &'static str,
}

/// Whether nothing listens on 127.0.0.1:`port` (a wildcard listener on the port
/// counts as listening there).
pub(crate) fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Who holds a port that is not free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A container of this environment (name, component).
    Ours(String, String),
    /// Another container.
    Container(String),
    /// Something that is not a container.
    Program,
}

impl Holder {
    /// A phrase: `is published by container x`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Holder::Ours(name, component) => format!(
                "is published by container {name} (this environment's `{component}` service)"
            ),
            Holder::Container(name) => format!("is published by container {name}"),
            Holder::Program => "is in use by another program".to_string(),
        }
    }
}

/// Who holds `port`, asking Docker which container publishes it.
pub(crate) async fn holder_of(docker: &DockerClient, env: &Environment, port: u16) -> Holder {
    let containers: Vec<ContainerSummary> =
        docker.containers_publishing(port).await.unwrap_or_default();
    match containers.into_iter().find(|c| c.running) {
        Some(c) if env.owns(&c.labels, None) => {
            let component = c
                .labels
                .get(comind_core::environment::LABEL_COMPONENT)
                .cloned()
                .unwrap_or_default();
            Holder::Ours(c.name, component)
        }
        Some(c) => Holder::Container(c.name),
        None => Holder::Program,
    }
}

/// The error for a taken port: invalid input (the configuration asks for a port this
/// machine cannot give), naming the port, the field and the fix.
pub(crate) fn port_taken(port: &PublishedPort, holder: &Holder) -> Error {
    Error::invalid_input(format!(
        "host port {} (`{}`) {}; nothing was changed",
        port.host,
        port.field,
        holder.describe()
    ))
    .with_resource(format!("port 127.0.0.1:{}", port.host))
    .with_hint(format!(
        "change `{}` in comind.yaml to a free port, or stop what holds port {}",
        port.field, port.host
    ))
}

/// Checks that each of `ports` is free or held by `own` (the service's own running
/// container, which publishes exactly its ports).
///
/// # Errors
/// `InvalidInput` naming the first port that is taken, who holds it and the field.
pub(crate) async fn check_ports(
    docker: &DockerClient,
    env: &Environment,
    ports: &[PublishedPort],
    own: Option<(&[u16], bool)>,
) -> Result<()> {
    for port in ports {
        if let Some((published, true)) = own
            && published.contains(&port.host)
        {
            continue;
        }
        if !is_free(port.host) {
            let holder = holder_of(docker, env, port.host).await;
            return Err(port_taken(port, &holder));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_not_free() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        drop(listener);
        assert!(is_free(port));
    }

    #[test]
    fn the_error_names_port_field_and_fix() {
        let port = PublishedPort {
            container: 5432,
            host: 15432,
            field: "services.postgres.local.port",
        };
        let err = port_taken(&port, &Holder::Program);
        assert_eq!(err.kind(), comind_core::ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(text.contains("15432"), "{text}");
        assert!(text.contains("services.postgres.local.port"), "{text}");
        assert!(text.contains("comind.yaml"), "{text}");
    }
}

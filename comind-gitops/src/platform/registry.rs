//! The environment's image registry through the ingress (`platform/registry`, where a
//! profile makes a registry: the local one): `http://registry.<env>.127.0.0.1.nip.io:<http_port>`,
//! the seed's URL, served by the cluster's ingress controller (the k3s Traefik).
//!
//! The registry is a container on the environment's network, so it is bound into the
//! cluster as the platform services are: a Service `registry` in `platform-<env>` with
//! no selector and an EndpointSlice listing the container's address, then an Ingress
//! for the host name. Pulls by the nodes do not go this way (they use the mirror k3d
//! configures); this is for people and tools outside the cluster. Docker pushes to a
//! name other than `localhost` only over TLS unless it is listed in the daemon's
//! `insecure-registries`; `REGISTRY_URL` (`127.0.0.1:<port>`) needs neither.

use comind_core::cluster::{REGISTRY_CLUSTER_HOST, REGISTRY_CLUSTER_PORT, REGISTRY_PHASE_ID};
use comind_core::{Environment, Error, Input, PhaseContext, PhaseId, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;

use super::baseline;
use super::services::{endpoint_slice, meta, reachable, selectorless_service};
use crate::apply::{Kind, Object, ObjectSet, Pending};

/// The phase's id.
pub const ID: &str = "platform/registry";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-registry";
/// The name of the Service and the Ingress.
const NAME: &str = "registry";

/// The registry's host name: `registry.<env>.127.0.0.1.nip.io` (nip.io resolves it to
/// 127.0.0.1, where the cluster's load balancer listens).
pub fn host(env: &Environment) -> String {
    super::ingress::host(env, NAME)
}

/// The kinds the phase owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![
        Kind::of::<Service>(),
        Kind::of::<EndpointSlice>(),
        Kind::of::<Ingress>(),
    ]
}

/// The desired objects, from the registry phase's outputs in `ctx`.
///
/// # Errors
/// `Internal` when the registry phase publishes no address (a broken contract);
/// `InvalidInput` when its address is one no Pod can reach.
pub fn render(ctx: &PhaseContext) -> Result<ObjectSet> {
    let env = ctx.env();
    let namespace = baseline::services_namespace(env);
    let registry = PhaseId::new(REGISTRY_PHASE_ID);
    let value = |key: &str| match ctx.input(&registry, key) {
        Input::Known(value) => Ok(Some(value.expose().to_string())),
        Input::KnownAfterApply => Ok(None),
        Input::Missing => Err(Error::internal(format!(
            "the registry phase published no `{key}`"
        ))),
    };
    let (Some(host), Some(port)) = (value(REGISTRY_CLUSTER_HOST)?, value(REGISTRY_CLUSTER_PORT)?)
    else {
        let service = Object::typed(&Service {
            metadata: meta(NAME, NAME, &namespace),
            ..Service::default()
        })?;
        // Known by name only: the content is ignored.
        let ingress = Object::typed(&ingress(env, &namespace, 0))?;
        return Ok(
            ObjectSet::new(COMPONENT, Vec::new(), kinds()).with_pending(Pending {
                objects: vec![service, ingress],
                label: (super::services::LABEL_SERVICE.to_string(), NAME.to_string()),
                reason: "the registry changes in this run: its address is known after apply"
                    .to_string(),
            }),
        );
    };
    let ip = host.parse().map_err(|_| {
        Error::internal(format!(
            "the registry's cluster address `{host}` is not an IP address"
        ))
    })?;
    reachable(NAME, ip)?;
    let port: u16 = port.parse().map_err(|_| {
        Error::internal(format!(
            "the registry's cluster port `{port}` is not a port"
        ))
    })?;
    let objects = vec![
        Object::typed(&selectorless_service(NAME, &namespace, port))?,
        Object::typed(&endpoint_slice(NAME, &namespace, ip, port))?,
        Object::typed(&ingress(env, &namespace, port))?,
    ];
    Ok(ObjectSet::new(COMPONENT, objects, kinds()))
}

fn ingress(env: &Environment, namespace: &str, port: u16) -> Ingress {
    super::ingress::console(env, NAME, meta(NAME, NAME, namespace), NAME, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use comind_core::{Operation, Outputs};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn ctx(outputs: Outputs) -> PhaseContext {
        let env = Arc::new(Environment::with_state_root(
            comind_core::Config::default(),
            "/tmp/x",
        ));
        PhaseContext::standalone(
            PhaseId::new(ID),
            Operation::Plan,
            env,
            HashMap::from([(PhaseId::new(REGISTRY_PHASE_ID), outputs)]),
        )
    }

    #[test]
    fn the_registry_is_served_by_traefik_under_the_seeds_host_name() {
        let set = render(&ctx(Outputs::new()
            .text(REGISTRY_CLUSTER_HOST, "172.20.0.9")
            .text(REGISTRY_CLUSTER_PORT, "5000")))
        .unwrap();
        let ingress = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "Ingress")
            .unwrap();
        let spec = &ingress.object.data["spec"];
        assert_eq!(spec["ingressClassName"], "traefik");
        assert_eq!(spec["rules"][0]["host"], "registry.dev.127.0.0.1.nip.io");
        assert_eq!(
            spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
            5000
        );
        let slice = set
            .objects
            .iter()
            .find(|o| o.kind.resource.kind == "EndpointSlice")
            .unwrap();
        assert_eq!(
            slice.object.data["endpoints"][0]["addresses"][0],
            "172.20.0.9"
        );
    }

    #[test]
    fn a_registry_without_its_address_breaks_the_contract() {
        let missing = render(&ctx(Outputs::new()));
        assert!(
            missing.is_err(),
            "a registry without its address breaks the contract"
        );
    }
}

//! The environment's Docker network: one user-defined bridge that the service
//! containers join (each under its service id as an alias), so that the k3d cluster
//! can later join it and reach them by name.

use async_trait::async_trait;
use comind_core::environment::{Environment, spec_hash};
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Error, Outputs, Phase, PhaseContext, PhaseId, Plan,
    Result,
};
use serde::Serialize;

use crate::docker::DockerClient;
use crate::docker::network::NetworkInfo;

/// The id of the network phase, and the component name on its labels.
pub const NETWORK_PHASE_ID: &str = "network";

/// Output: the network's name.
pub const OUTPUT_NETWORK: &str = "LOCAL_NETWORK";
/// Output: the network's id.
pub const OUTPUT_NETWORK_ID: &str = "LOCAL_NETWORK_ID";
/// Output: the network's IPv4 subnet (`172.18.0.0/16`), as Docker's IPAM chose it.
pub const OUTPUT_NETWORK_SUBNET: &str = "LOCAL_NETWORK_SUBNET";

/// The environment's network (`local.network`, default `comind-<env>`).
///
/// A network of that name that does not carry this environment's ownership labels is
/// never touched: plan, preflight and apply fail with a conflict, and destroy leaves it
/// alone. Destroy removes only what carries the labels, and the engine runs it after
/// the services (which depend on this phase) are gone.
#[derive(Debug, Clone)]
pub struct NetworkPhase {
    docker: DockerClient,
}

#[derive(Serialize)]
struct NetworkSpec<'a> {
    name: &'a str,
    driver: &'a str,
}

impl NetworkPhase {
    /// The phase, talking to Docker through `docker`.
    pub fn new(docker: DockerClient) -> Self {
        NetworkPhase { docker }
    }

    fn outputs(network: &NetworkInfo) -> Outputs {
        let mut outputs = Outputs::new()
            .text(OUTPUT_NETWORK, &network.name)
            .text(OUTPUT_NETWORK_ID, &network.id);
        // An IPv4 subnet, for the load balancer's address pool.
        if let Some(subnet) = network.subnets.iter().find(|s| !s.contains(':')) {
            outputs.insert_text(OUTPUT_NETWORK_SUBNET, subnet);
        }
        outputs
    }

    /// The network named as configured, if it exists and is ours.
    ///
    /// # Errors
    /// `Conflict` when a network of that name exists that is not ours, or several do.
    async fn find(&self, env: &Environment) -> Result<Option<NetworkInfo>> {
        let name = env.config().local_network();
        let mut found = self.docker.networks_named(&name).await?;
        if found
            .iter()
            .any(|n| !env.owns(&n.labels, Some(NETWORK_PHASE_ID)))
        {
            return Err(Error::conflict(format!(
                "a Docker network named `{name}` exists but was not created by Comind for \
                 environment `{}`; it is left untouched",
                env.name()
            ))
            .with_resource(format!("network {name}"))
            .with_hint(format!(
                "remove it (`docker network rm {name}`) if nothing uses it, or set \
                 `local.network` in comind.yaml to another name"
            )));
        }
        if found.len() > 1 {
            let ids: Vec<&str> = found.iter().map(|n| n.id.as_str()).collect();
            return Err(Error::conflict(format!(
                "{} Docker networks are named `{name}` ({}); names must be unique for \
                 containers to join the right one",
                found.len(),
                ids.join(", ")
            ))
            .with_resource(format!("network {name}"))
            .with_hint("remove all but one with `docker network rm <id>`"));
        }
        Ok(found.pop())
    }
}

#[async_trait]
impl Phase for NetworkPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(NETWORK_PHASE_ID)
    }

    fn description(&self) -> String {
        "Docker network".to_string()
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        self.find(ctx.env()).await.map(|_| ())
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        match self.find(ctx.env()).await? {
            Some(network) => Ok(Plan::in_sync(Self::outputs(&network))),
            None => Ok(Plan::changes(vec![Change::create(
                "network",
                ctx.env().config().local_network(),
            )])),
        }
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let env = ctx.env();
        if let Some(network) = self.find(env).await? {
            return Ok(Applied {
                changes: Vec::new(),
                outputs: Self::outputs(&network),
            });
        }
        let name = env.config().local_network();
        let hash = spec_hash(&NetworkSpec {
            name: &name,
            driver: "bridge",
        });
        let labels = env.labels(NETWORK_PHASE_ID, Some(&hash));
        let id = self.docker.create_network(&name, &labels).await?;
        // Read back for the subnet Docker's IPAM chose.
        let network = self
            .docker
            .networks_named(&name)
            .await?
            .into_iter()
            .find(|n| n.id == id)
            .unwrap_or(NetworkInfo {
                id,
                name: name.clone(),
                labels,
                subnets: Vec::new(),
            });
        Ok(Applied {
            changes: vec![Change::create("network", name)],
            outputs: Self::outputs(&network),
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        // By label, not by name: a network left under an earlier `local.network` is
        // found too, and a same-named network that is not ours is never matched.
        let selector = ctx.env().selector(Some(NETWORK_PHASE_ID));
        let mut destroyed = Destroyed::default();
        for network in self.docker.networks_labelled(&selector).await? {
            if self
                .docker
                .remove_network(&network.id, &network.name)
                .await?
            {
                destroyed
                    .changes
                    .push(Change::delete("network", network.name));
            }
        }
        Ok(destroyed)
    }
}

//! The environment's k3d cluster (`cluster`, after `network` and `registry`): one
//! server and two agents by default, on the environment's Docker network, pulling from
//! its registry, with the k3s Traefik as the ingress controller on
//! `127.0.0.1:<http_port>`/`<https_port>`.
//!
//! Comind drives the `k3d` CLI with a configuration file it writes into the state
//! directory ([`config`]), and converges rather than recreates:
//!
//! - no cluster of the name: `k3d cluster create --config FILE`;
//! - a cluster whose node containers carry the environment's labels and the spec hash
//!   of the desired file: adopted; started if any node is stopped;
//! - a cluster of ours whose spec changed, or that an interrupted create left
//!   half-made (fewer nodes than its spec): a `replace` in the plan, done by `up`
//!   (a production environment needs `--allow-destructive`);
//! - a cluster of the name without the labels: never touched; the run stops and says
//!   so.
//!
//! Readiness is asked of the API server ([`ready`]): `/readyz`, every node `Ready`,
//! the `default` ServiceAccount, CoreDNS available. The kubeconfig goes to the state
//! directory (0600) and is published as the core contract's `KUBECONFIG` and
//! `KUBE_CONTEXT`; `~/.kube/config` is never touched. `down` deletes the cluster (its
//! node containers and k3d's image volume).

pub mod config;
pub mod k3d;
pub mod nodes;
pub mod ready;

use std::time::Duration;

use async_trait::async_trait;
use comind_core::cluster::{CLUSTER_PHASE_ID, KUBE_CONTEXT, KUBECONFIG};
use comind_core::config::LoadBalancer;
use comind_core::phase::{Kept, status_from_plan};
use comind_core::wait::{self, Backoff};
use comind_core::{
    Applied, Change, DestroyOptions, Destroyed, Environment, Error, Health, Input, Outputs, Phase,
    PhaseContext, PhaseId, PhaseStatus, Plan, Result, Secret,
};

use crate::docker::DockerClient;
use crate::network::NETWORK_PHASE_ID;
use crate::registry::{
    OUTPUT_REGISTRY_PASSWORD, OUTPUT_REGISTRY_USER, REGISTRY_PHASE_ID, RegistryPhase,
};
use crate::services::ports::{PublishedPort, check_ports};
use config::{K3dConfig, RegistryAccess, cluster_name, context_name};
use k3d::K3d;
use nodes::ClusterNodes;

/// The component on the node containers' labels.
pub const CLUSTER_COMPONENT: &str = "cluster";
/// Output: the cluster's name (`comind-<env>`), as on AWS.
pub const OUTPUT_CLUSTER_NAME: &str = "CLUSTER_NAME";
/// The name of the k3d configuration file in the state directory.
const CONFIG_FILE: &str = "k3d-config.yaml";
/// How often the cluster's readiness is asked: each check is four API requests to a
/// server that is still starting on the same cores, so the interval grows from the
/// start (25 ms to 1 s) instead of staying tight like a service's.
const API_READINESS: Backoff = Backoff {
    initial: Duration::from_millis(25),
    steady: Duration::ZERO,
    max: Duration::from_secs(1),
    factor: 1.5,
};

/// How long the API may take to report the cluster ready after k3d returns.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// What the live cluster is, against the desired one.
#[derive(Debug)]
enum Live {
    Missing,
    /// Ours and as desired.
    InSync,
    /// Ours, as desired, but some node is stopped.
    Stopped(ClusterNodes),
    /// Ours, but not as desired: why.
    Changed(String),
}

/// The k3d cluster phase.
#[derive(Debug, Clone)]
pub struct ClusterPhase {
    docker: DockerClient,
    k3d: K3d,
}

impl ClusterPhase {
    /// The phase for `env`, checking ports through `docker` and driving the k3d binary
    /// of `local.cluster.k3d`.
    pub fn new(docker: DockerClient, env: &Environment) -> Self {
        ClusterPhase {
            docker,
            k3d: K3d::new(env.config().local.cluster.k3d.clone()),
        }
    }

    /// Where the phase writes k3d's configuration file.
    pub fn config_path(env: &Environment) -> std::path::PathBuf {
        env.state().path().join(CONFIG_FILE)
    }

    /// What the cluster needs of the registry; the password is a placeholder while it
    /// is known only after apply (the spec hash does not depend on it).
    fn registry_access(ctx: &PhaseContext) -> RegistryAccess {
        let env = ctx.env();
        let registry = PhaseId::new(REGISTRY_PHASE_ID);
        let known = |key: &str| match ctx.input(&registry, key) {
            Input::Known(value) => Some(value.expose().to_string()),
            _ => None,
        };
        RegistryAccess {
            cluster_name: RegistryPhase::cluster_name(env),
            host_port: env.config().local.cluster.registry_port.get(),
            data_volume: RegistryPhase::data_volume(env),
            username: known(OUTPUT_REGISTRY_USER).unwrap_or_default(),
            password: Secret::new(known(OUTPUT_REGISTRY_PASSWORD).unwrap_or_default()),
        }
    }

    fn desired(ctx: &PhaseContext) -> K3dConfig {
        K3dConfig::render(ctx.env(), Some(&Self::registry_access(ctx)))
    }

    /// Our cluster's node containers, if any: one Docker query by k3d's labels
    /// ([`nodes`]), no k3d process.
    ///
    /// # Errors
    /// `Conflict` for a cluster of the name that Comind did not make.
    async fn find(&self, env: &Environment) -> Result<Option<ClusterNodes>> {
        let name = cluster_name(env);
        let containers = self
            .docker
            .containers_labelled(&ClusterNodes::selector(&name))
            .await?;
        let Some(found) = ClusterNodes::from_containers(containers) else {
            return Ok(None);
        };
        let labels = &found.labels;
        if !env.owns(labels, Some(CLUSTER_COMPONENT)) {
            return Err(Error::conflict(format!(
                "a k3d cluster named `{name}` exists but was not created by Comind for \
                 environment `{}`; it is left untouched",
                env.name()
            ))
            .with_resource(format!("k3d cluster {name}"))
            .with_hint(format!(
                "delete it (`k3d cluster delete {name}`) if it is not needed, or use \
                 another environment name"
            )));
        }
        Ok(Some(found))
    }

    async fn live(&self, ctx: &PhaseContext, desired: &K3dConfig) -> Result<Live> {
        let Some(found) = self.find(ctx.env()).await? else {
            return Ok(Live::Missing);
        };
        let (servers, agents) = desired.nodes();
        if found.servers() == 0 {
            return Ok(Live::Changed(
                "it has no server node (an interrupted create?); it is deleted and made \
                 again"
                    .to_string(),
            ));
        }
        let hash = found.labels.get(comind_core::environment::LABEL_SPEC_HASH);
        if hash != Some(&desired.hash()) {
            let mut what = Vec::new();
            if found.servers() != servers {
                what.push(format!("servers {} -> {servers}", found.servers()));
            }
            if found.agents() != agents {
                what.push(format!("agents {} -> {agents}", found.agents()));
            }
            return Ok(Live::Changed(if what.is_empty() {
                "its spec changed".to_string()
            } else {
                format!("its spec changed: {}", what.join(", "))
            }));
        }
        if found.servers() != servers
            || found.agents() != agents
            || found.has_loadbalancer() != desired.has_loadbalancer()
        {
            return Ok(Live::Changed(format!(
                "it is half-made (an interrupted create?): {} of {servers} servers and {} of \
                 {agents} agents; it is deleted and made again",
                found.servers(),
                found.agents()
            )));
        }
        if !found.all_running() {
            return Ok(Live::Stopped(found));
        }
        Ok(Live::InSync)
    }

    fn changes(env: &Environment, live: &Live) -> Vec<Change> {
        let name = cluster_name(env);
        let kind = "k3d cluster";
        match live {
            Live::Missing => vec![Change::create(kind, name)],
            Live::InSync => Vec::new(),
            Live::Stopped(found) => {
                vec![Change::update(kind, name).because(format!(
                    "stopped ({}): start it",
                    found.stopped().join(", ")
                ))]
            }
            Live::Changed(why) => vec![Change::replace(kind, name).because(why.clone())],
        }
    }

    fn outputs(ctx: &PhaseContext) -> Result<Outputs> {
        let env = ctx.env();
        let mut outputs = Outputs::new()
            .text(
                KUBECONFIG,
                env.state().kubeconfig_path().display().to_string(),
            )
            .text(KUBE_CONTEXT, context_name(env))
            .text(OUTPUT_CLUSTER_NAME, cluster_name(env));
        if env.config().local.cluster.load_balancer == LoadBalancer::Metallb {
            let network = PhaseId::new(NETWORK_PHASE_ID);
            if let comind_core::Input::Known(subnet) =
                ctx.input(&network, crate::network::OUTPUT_NETWORK_SUBNET)
            {
                outputs.insert_text(
                    comind_core::cluster::LOAD_BALANCER_ADDRESSES,
                    load_balancer_pool(subnet.expose())?,
                );
            }
        }
        Ok(outputs)
    }

    /// Writes the configuration file (0600: it holds the registry's credentials).
    fn write_config(env: &Environment, desired: &K3dConfig) -> Result<std::path::PathBuf> {
        env.state().ensure()?;
        env.state()
            .write_private(CONFIG_FILE, desired.to_yaml()?.as_bytes())
    }

    /// Whether the cluster answers ready at once with the kubeconfig the state
    /// directory kept: a cluster left as it was needs nothing fetched again.
    async fn ready_with_kept_kubeconfig(&self, env: &Environment, nodes: usize) -> bool {
        let Ok(kept) = std::fs::read_to_string(env.state().kubeconfig_path()) else {
            return false;
        };
        let resource = format!("k3d cluster {}", cluster_name(env));
        match ready::client(&Secret::new(kept), &context_name(env), &resource).await {
            Ok(client) => ready::check(&client, nodes, &resource).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Fetches the kubeconfig into the state directory, then waits until the API
    /// says the cluster is ready.
    async fn until_ready(&self, ctx: &PhaseContext, nodes: usize) -> Result<()> {
        let env = ctx.env();
        let name = cluster_name(env);
        let resource = format!("k3d cluster {name}");
        let kubeconfig = ctx.step("kubeconfig", self.k3d.kubeconfig(&name)).await?;
        env.state().ensure()?;
        comind_core::state::write_private_file(
            &env.state().kubeconfig_path(),
            kubeconfig.expose().as_bytes(),
        )?;
        let client = ready::client(&kubeconfig, &context_name(env), &resource).await?;
        let ready = async {
            wait::until(
                ctx,
                "waiting for the cluster's API, nodes, controllers and CoreDNS",
                READY_TIMEOUT,
                API_READINESS,
                || ready::check(&client, nodes, &resource),
            )
            .await
            .map_err(|failed| failed.into_error(CLUSTER_PHASE_ID, READY_TIMEOUT, None))
        };
        ctx.step("ready", ready).await
    }

    fn api_ports(env: &Environment) -> Vec<PublishedPort> {
        let k = &env.config().local.cluster;
        vec![
            PublishedPort {
                container: 6443,
                host: k.api_port.get(),
                field: "local.cluster.api_port",
            },
            PublishedPort {
                container: 80,
                host: k.http_port.get(),
                field: "local.cluster.http_port",
            },
            PublishedPort {
                container: 443,
                host: k.https_port.get(),
                field: "local.cluster.https_port",
            },
        ]
    }

    async fn check_k3d(&self) -> Result<()> {
        let version = self.k3d.version().await?;
        if k3d::is_v5(&version) {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "`{}` is k3d {version}; Comind drives k3d v5",
                self.k3d.binary().display()
            ))
            .with_resource("k3d")
            .with_hint("install k3d v5 (https://k3d.io), or point `local.cluster.k3d` at it"))
        }
    }
}

#[async_trait]
impl Phase for ClusterPhase {
    fn id(&self) -> PhaseId {
        PhaseId::new(CLUSTER_PHASE_ID)
    }

    fn dependencies(&self) -> Vec<PhaseId> {
        vec![
            PhaseId::new(NETWORK_PHASE_ID),
            PhaseId::new(REGISTRY_PHASE_ID),
        ]
    }

    fn description(&self) -> String {
        "the k3d cluster".to_string()
    }

    fn default_timeout(&self) -> Option<Duration> {
        // k3d's own create timeout, then the API's readiness, with room for a replace.
        Some(Duration::from_secs(900))
    }

    async fn preflight(&self, ctx: &PhaseContext) -> Result<()> {
        let env = ctx.env();
        // A cluster of ours publishes these ports itself, so only a new one needs them
        // checked; any cluster that `up` must create, start or replace needs a k3d
        // that Comind can drive, and one left as it is needs no k3d at all.
        let desired = Self::desired(ctx);
        match self.live(ctx, &desired).await? {
            Live::InSync => {}
            Live::Missing => {
                self.check_k3d().await?;
                check_ports(&self.docker, env, &Self::api_ports(env), None).await?;
            }
            Live::Stopped(_) | Live::Changed(_) => self.check_k3d().await?,
        }
        Ok(())
    }

    async fn plan(&self, ctx: &PhaseContext) -> Result<Plan> {
        let desired = Self::desired(ctx);
        let live = self.live(ctx, &desired).await?;
        let env = ctx.env();
        let mut changes = Self::changes(env, &live);
        if changes.is_empty() && !env.state().kubeconfig_path().exists() {
            changes.push(
                Change::create(
                    "kubeconfig",
                    env.state().kubeconfig_path().display().to_string(),
                )
                .because("the state directory has none; k3d gives it again"),
            );
        }
        Ok(if changes.is_empty() {
            Plan::in_sync(Self::outputs(ctx)?)
        } else {
            Plan::changes(changes)
        })
    }

    async fn apply(&self, ctx: &PhaseContext) -> Result<Applied> {
        let env = ctx.env();
        let name = cluster_name(env);
        let desired = Self::desired(ctx);
        let live = ctx.step("inspect", self.live(ctx, &desired)).await?;
        let changes = Self::changes(env, &live);
        let registry = Self::registry_access(ctx);
        let secrets = [&registry.password];
        match &live {
            Live::InSync => {}
            Live::Stopped(_) => {
                ctx.progress(format!("starting k3d cluster {name}"));
                ctx.step("start", self.k3d.start(&name)).await?;
            }
            Live::Missing | Live::Changed(_) => {
                if let Live::Changed(why) = &live {
                    ctx.progress(format!("deleting k3d cluster {name}: {why}"));
                    ctx.step("delete", self.k3d.delete(&name)).await?;
                }
                ctx.checkpoint()?;
                let path = Self::write_config(env, &desired)?;
                ctx.progress(format!("creating k3d cluster {name}"));
                ctx.step("create", self.k3d.create(&name, &path, &secrets))
                    .await?;
            }
        }
        let (servers, agents) = desired.nodes();
        let nodes = (servers + agents) as usize;
        if !(matches!(live, Live::InSync) && self.ready_with_kept_kubeconfig(env, nodes).await) {
            self.until_ready(ctx, nodes).await?;
        }
        Ok(Applied {
            changes,
            outputs: Self::outputs(ctx)?,
        })
    }

    async fn destroy(&self, ctx: &PhaseContext, _options: DestroyOptions) -> Result<Destroyed> {
        let env = ctx.env();
        let name = cluster_name(env);
        let mut destroyed = Destroyed::default();
        // Finding the cluster needs only Docker: `down` of an environment that never
        // had a cluster goes on without the k3d binary.
        let found = self.find(env).await;
        match found {
            Ok(Some(_)) => {
                self.k3d.delete(&name).await?;
                destroyed.changes.push(Change::delete("k3d cluster", &name));
            }
            Ok(None) => {}
            Err(err) if err.kind() == comind_core::ErrorKind::Conflict => {
                destroyed.kept.push(Kept {
                    kind: "k3d cluster".into(),
                    name: name.clone(),
                    reason: "not created by Comind (no ownership labels); left untouched".into(),
                });
            }
            Err(err) => return Err(err),
        }
        for path in [env.state().kubeconfig_path(), Self::config_path(env)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(
                        Error::internal(format!("cannot remove {}: {e}", path.display()))
                            .with_resource(path.display().to_string()),
                    );
                }
            }
        }
        Ok(destroyed)
    }

    async fn status(&self, ctx: &PhaseContext) -> Result<PhaseStatus> {
        let desired = Self::desired(ctx);
        let mut status = status_from_plan(self.plan(ctx).await?);
        if status.outputs.is_some() {
            let env = ctx.env();
            let resource = format!("k3d cluster {}", cluster_name(env));
            let checked = async {
                let kubeconfig = self.k3d.kubeconfig(&cluster_name(env)).await?;
                let client = ready::client(&kubeconfig, &context_name(env), &resource).await?;
                let (servers, agents) = desired.nodes();
                ready::check(&client, (servers + agents) as usize, &resource).await
            };
            if let Err(err) = checked.await {
                status.health = Health::Degraded;
                status.detail = format!("not ready: {err}");
                status.outputs = None;
            }
        }
        Ok(status)
    }
}

/// The addresses MetalLB may give out on the network `subnet` (IPv4, `a.b.c.d/p`): 51
/// addresses near its top, five short of the broadcast address. Docker's IPAM hands
/// out container addresses from the bottom of the subnet, so the top is free unless
/// the network holds hundreds of containers.
///
/// # Errors
/// `InvalidInput` for a subnet that is not IPv4 or is smaller than a /24.
pub fn load_balancer_pool(subnet: &str) -> Result<String> {
    let invalid = |why: &str| {
        Error::invalid_input(format!(
            "the cluster's network `{subnet}` {why}: MetalLB's pool cannot be carved from it"
        ))
        .with_hint("set `local.network` to a network with an IPv4 subnet of /24 or larger, or use `local.cluster.load_balancer: servicelb`")
    };
    let (address, prefix) = subnet
        .split_once('/')
        .ok_or_else(|| invalid("has no prefix length"))?;
    let address: std::net::Ipv4Addr = address.parse().map_err(|_| invalid("is not IPv4"))?;
    let prefix: u32 = prefix
        .parse()
        .map_err(|_| invalid("has no prefix length"))?;
    if !(8..=24).contains(&prefix) {
        return Err(invalid("is not between /8 and /24"));
    }
    let host_bits = 32 - prefix;
    let broadcast = u32::from(address) | ((1u32 << host_bits) - 1);
    let last = std::net::Ipv4Addr::from(broadcast - 5);
    let first = std::net::Ipv4Addr::from(broadcast - 55);
    Ok(format!("{first}-{last}"))
}

#[cfg(test)]
mod tests {
    use super::load_balancer_pool;

    #[test]
    fn the_pool_is_carved_from_the_top_of_the_network_s_real_subnet() {
        assert_eq!(
            load_balancer_pool("172.18.0.0/16").unwrap(),
            "172.18.255.200-172.18.255.250"
        );
        assert_eq!(
            load_balancer_pool("192.168.32.0/20").unwrap(),
            "192.168.47.200-192.168.47.250"
        );
        assert_eq!(
            load_balancer_pool("10.5.7.0/24").unwrap(),
            "10.5.7.200-10.5.7.250"
        );
        for bad in ["10.5.7.0/28", "fd00::/64", "10.0.0.0"] {
            assert!(load_balancer_pool(bad).is_err(), "{bad}");
        }
    }
}

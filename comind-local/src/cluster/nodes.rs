//! The cluster's node containers, read from the Docker engine by k3d's own labels.
//!
//! k3d v5 keeps no state of its own: `k3d cluster list` is a Docker query for
//! containers labelled `k3d.cluster=<name>`, grouped by `k3d.role`. Comind asks the
//! engine the same question directly, which costs one API call instead of a k3d
//! process (and, for the labels Comind put on the nodes, a container inspect), so a
//! no-op `up` runs no k3d command at all.

use std::collections::BTreeMap;

use crate::docker::container::ContainerSummary;

/// k3d's label naming a node container's cluster.
pub const LABEL_CLUSTER: &str = "k3d.cluster";
/// k3d's label naming a node container's role (`server`, `agent`, `loadbalancer`, ...).
pub const LABEL_ROLE: &str = "k3d.role";

/// The roles of the containers that make a cluster's shape.
const NODE_ROLES: [&str; 3] = ["server", "agent", "loadbalancer"];

/// One node container of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The container's name.
    pub name: String,
    /// Its k3d role.
    pub role: String,
    /// Whether it runs.
    pub running: bool,
}

/// The node containers of one cluster, as the Docker engine has them.
#[derive(Debug, Clone, Default)]
pub struct ClusterNodes {
    /// Every node container of the cluster, by name.
    pub nodes: Vec<Node>,
    /// The labels of a server's container (Comind's ownership labels and spec hash
    /// are on every node; a server's are read because a server always exists in a
    /// cluster k3d finished making).
    pub labels: BTreeMap<String, String>,
}

impl ClusterNodes {
    /// The selector of the node containers of the cluster `name`.
    pub fn selector(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            // k3d's own mark on every container it makes, as its listing asks for.
            ("app".to_string(), "k3d".to_string()),
            (LABEL_CLUSTER.to_string(), name.to_string()),
        ])
    }

    /// The cluster made of `containers` (the engine's answer to [`Self::selector`]),
    /// or `None` when none of them is a server, agent or load balancer.
    pub(crate) fn from_containers(containers: Vec<ContainerSummary>) -> Option<Self> {
        let role = |c: &ContainerSummary| c.labels.get(LABEL_ROLE).cloned().unwrap_or_default();
        // k3d's passing helpers (the `tools` node of `kubeconfig get` and image
        // imports, role `noRole`) are not part of the cluster's shape.
        let containers: Vec<ContainerSummary> = containers
            .into_iter()
            .filter(|c| NODE_ROLES.contains(&role(c).as_str()))
            .collect();
        let labels = containers
            .iter()
            .find(|c| role(c) == "server")
            .or_else(|| containers.first())?
            .labels
            .clone();
        let nodes = containers
            .into_iter()
            .map(|c| Node {
                role: role(&c),
                name: c.name,
                running: c.running,
            })
            .collect();
        Some(ClusterNodes { nodes, labels })
    }

    fn count(&self, role: &str) -> u32 {
        let n = self.nodes.iter().filter(|n| n.role == role).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// How many server nodes it has.
    pub fn servers(&self) -> u32 {
        self.count("server")
    }

    /// How many agent nodes it has.
    pub fn agents(&self) -> u32 {
        self.count("agent")
    }

    /// Whether it has its load balancer node.
    pub fn has_loadbalancer(&self) -> bool {
        self.count("loadbalancer") > 0
    }

    /// Whether every node container runs.
    pub fn all_running(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.iter().all(|n| n.running)
    }

    /// The names of the node containers that do not run.
    pub fn stopped(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| !n.running)
            .map(|n| n.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(
        name: &str,
        role: &str,
        running: bool,
        extra: &[(&str, &str)],
    ) -> ContainerSummary {
        let mut labels = BTreeMap::from([
            (LABEL_CLUSTER.to_string(), "comind-dev".to_string()),
            (LABEL_ROLE.to_string(), role.to_string()),
        ]);
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ContainerSummary {
            id: format!("id-{name}"),
            name: name.to_string(),
            labels,
            running,
            host_ports: Vec::new(),
        }
    }

    #[test]
    fn no_node_container_is_no_cluster() {
        assert!(ClusterNodes::from_containers(Vec::new()).is_none());
        let tools = container("k3d-comind-dev-tools", "noRole", false, &[]);
        assert!(ClusterNodes::from_containers(vec![tools]).is_none());
    }

    #[test]
    fn nodes_are_counted_by_role_and_labels_come_from_a_server() {
        let nodes = ClusterNodes::from_containers(vec![
            container("k3d-comind-dev-agent-0", "agent", true, &[]),
            container("k3d-comind-dev-agent-1", "agent", false, &[]),
            container("k3d-comind-dev-serverlb", "loadbalancer", true, &[]),
            container(
                "k3d-comind-dev-server-0",
                "server",
                true,
                &[("comind.env", "dev")],
            ),
            container("k3d-comind-dev-tools", "noRole", false, &[]),
        ])
        .unwrap();
        assert_eq!((nodes.servers(), nodes.agents()), (1, 2));
        assert_eq!(
            nodes.nodes.len(),
            4,
            "the tools node is not a node of the cluster"
        );
        assert!(nodes.has_loadbalancer());
        assert!(!nodes.all_running());
        assert_eq!(nodes.stopped(), vec!["k3d-comind-dev-agent-1"]);
        assert_eq!(
            nodes.labels.get("comind.env").map(String::as_str),
            Some("dev")
        );
    }

    #[test]
    fn a_cluster_without_a_server_still_has_labels_to_judge_ownership_by() {
        let nodes = ClusterNodes::from_containers(vec![container(
            "k3d-comind-dev-agent-0",
            "agent",
            true,
            &[("comind.env", "dev")],
        )])
        .unwrap();
        assert_eq!(nodes.servers(), 0);
        assert!(!nodes.has_loadbalancer());
        assert!(nodes.all_running());
        assert_eq!(
            nodes.labels.get("comind.env").map(String::as_str),
            Some("dev")
        );
    }
}

//! Networks: find by exact name, create, remove.

use std::collections::{BTreeMap, HashMap};

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use comind_core::{Error, Result};

use super::DockerClient;
use super::error::{docker_error, is_not_found, resource, status_of};

/// A network as found on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The subnets Docker's IPAM gave it (`172.18.0.0/16`).
    pub subnets: Vec<String>,
}

fn subnets(ipam: Option<bollard::models::Ipam>) -> Vec<String> {
    ipam.and_then(|i| i.config)
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet)
        .collect()
}

impl DockerClient {
    /// Every network named exactly `name`. The daemon accepts duplicate names, so
    /// there may be more than one.
    pub(crate) async fn networks_named(&self, name: &str) -> Result<Vec<NetworkInfo>> {
        let docker = self.docker().await?;
        // The name filter matches substrings; anchor it and compare exactly as well.
        let exact = format!("^{name}$");
        let filters = HashMap::from([("name", vec![exact.as_str()])]);
        let found = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| docker_error("look up", &resource("network", name), e))?;
        Ok(found
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default().into_iter().collect(),
                subnets: subnets(n.ipam),
            })
            .collect())
    }

    /// Networks carrying every label of `selector`.
    pub(crate) async fn networks_labelled(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<NetworkInfo>> {
        let docker = self.docker().await?;
        let filters = super::volume::label_filters(selector);
        let found = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| docker_error("list", "networks", e))?;
        let mut networks: Vec<NetworkInfo> = found
            .into_iter()
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default().into_iter().collect(),
                subnets: subnets(n.ipam),
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    }

    /// Creates a bridge network; returns its id. If the daemon reports that a
    /// same-named network appeared meanwhile, the new duplicate is removed again and
    /// a `Conflict` returned.
    pub(crate) async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String> {
        let docker = self.docker().await?;
        let created = docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                attachable: Some(true),
                labels: Some(labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map_err(|e| docker_error("create", &resource("network", name), e))?;
        if !created.warning.is_empty() {
            // Another process created the same name between our look-up and the
            // create: two networks now share the name, which makes every by-name
            // operation ambiguous. Take ours back.
            let _ = docker.remove_network(&created.id).await;
            return Err(Error::conflict(format!(
                "another network named `{name}` appeared while creating it: {}",
                created.warning
            ))
            .with_resource(resource("network", name))
            .transient(true));
        }
        Ok(created.id)
    }

    /// Removes a network by id. Returns whether it existed.
    pub(crate) async fn remove_network(&self, id: &str, name: &str) -> Result<bool> {
        let docker = self.docker().await?;
        match docker.remove_network(id).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) if status_of(&e) == Some(403) => Err(Error::conflict(
                "cannot remove: containers are still attached to it",
            )
            .with_resource(resource("network", name))
            .with_source(e)
            .with_hint(format!(
                "remove the containers attached to it (`docker network inspect {name}`), \
                 then run `comind down` again"
            ))),
            Err(e) => Err(docker_error("remove", &resource("network", name), e)),
        }
    }
}

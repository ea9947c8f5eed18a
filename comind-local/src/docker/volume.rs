//! Volumes: inspect, create, list by label, remove.

use std::collections::{BTreeMap, HashMap};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptions};
use comind_core::Result;

use super::DockerClient;
use super::error::{docker_error, is_not_found, resource};

/// A volume as found on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Label filters for list calls: every pair must match.
pub(crate) fn label_filters(labels: &BTreeMap<String, String>) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

impl DockerClient {
    /// The volume `name`, if it exists.
    pub(crate) async fn volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        let docker = self.docker().await?;
        match docker.inspect_volume(name).await {
            Ok(volume) => Ok(Some(VolumeInfo {
                name: volume.name,
                labels: volume.labels.into_iter().collect(),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(docker_error("inspect", &resource("volume", name), e)),
        }
    }

    /// Creates the volume `name` with `labels`.
    pub(crate) async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map_err(|e| docker_error("create", &resource("volume", name), e))?;
        Ok(())
    }

    /// Volumes carrying every label of `selector`.
    pub(crate) async fn volumes_labelled(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<VolumeInfo>> {
        let docker = self.docker().await?;
        let filters = label_filters(selector);
        let list = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| docker_error("list", "volumes", e))?;
        let mut volumes: Vec<VolumeInfo> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Removes the volume `name`. Returns whether it existed.
    pub(crate) async fn remove_volume(&self, name: &str) -> Result<bool> {
        let docker = self.docker().await?;
        match docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(docker_error("remove", &resource("volume", name), e)),
        }
    }
}

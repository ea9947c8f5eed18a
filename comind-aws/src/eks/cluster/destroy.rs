//! `down`: the node group, the cluster, the launch template and the kubeconfig go; the
//! cluster holds no data of its own. The Secrets key stays unless purged (see
//! [`super::secrets_key`]).

use aws_sdk_eks::types::{ClusterStatus, NodegroupStatus};
use comind_core::{Change, Error, Kept, Result};

use super::control_plane::describe_cluster;
use super::node_group::describe_node_group;
use super::{COMPONENT, Run};
use crate::error::AwsResultExt;
use crate::tags;

impl Run<'_> {
    pub(super) async fn destroy(&mut self, purge: bool) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        let cluster = describe_cluster(self.clients, &self.name).await?;
        if let Some(cluster) = &cluster {
            if !self
                .env
                .owns(&tags::from_map(cluster.tags()), Some(COMPONENT))
            {
                kept.push(Kept {
                    kind: "eks-cluster".into(),
                    name: self.name.clone(),
                    reason: "not created by Comind (no ownership tags); left untouched".into(),
                });
                return Ok(kept);
            }
            if let Some(ng) =
                describe_node_group(self.clients, &self.name, &self.node_group).await?
                && self.env.owns(&tags::from_map(ng.tags()), Some(COMPONENT))
            {
                self.pass
                    .record([Change::delete("eks-nodegroup", &self.node_group)]);
                if ng.status() == Some(&NodegroupStatus::Deleting) {
                    self.wait_node_group_gone().await?;
                } else {
                    self.delete_node_group().await?;
                }
            }
            self.ctx.checkpoint()?;
            self.pass
                .record([Change::delete("eks-cluster", &self.name)]);
            if cluster.status() != Some(&ClusterStatus::Deleting) {
                self.clients
                    .eks
                    .delete_cluster()
                    .name(&self.name)
                    .send()
                    .await
                    .found("eks:DeleteCluster", self.resource())?;
            }
            self.wait_cluster_gone().await?;
        }
        let resource = format!("launch-template {}", self.template);
        let found = self
            .clients
            .ec2
            .describe_launch_templates()
            .launch_template_names(&self.template)
            .send()
            .await
            .found("ec2:DescribeLaunchTemplates", &resource)?;
        if let Some(template) = found.as_ref().and_then(|o| o.launch_templates().first())
            && self
                .env
                .owns(&tags::from_ec2(template.tags()), Some(COMPONENT))
        {
            self.pass
                .record([Change::delete("launch-template", &self.template)]);
            self.clients
                .ec2
                .delete_launch_template()
                .launch_template_id(template.launch_template_id().unwrap_or_default())
                .send()
                .await
                .found("ec2:DeleteLaunchTemplate", &resource)?;
        }
        let path = self.env.state().kubeconfig_path();
        match std::fs::remove_file(&path) {
            Ok(()) => self
                .pass
                .record([Change::delete("kubeconfig", path.display().to_string())]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::internal(format!("cannot remove {}", path.display()))
                    .with_source(e)
                    .with_resource(path.display().to_string()));
            }
        }
        kept.extend(self.destroy_secrets_key(purge).await?);
        Ok(kept)
    }
}
